"""Tests of tests/fakeai.py itself, driven through the real openai SDK."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
import pytest

from tests.fakeai import FakeAI, Fault

PROMPT = [
    {"role": "system", "content": "You are a reporter."},
    {"role": "user", "content": "Write an article.\nTitle: Hello World\nKeep it short."},
]


@pytest.fixture
def fake():
    with FakeAI() as server:
        yield server


@pytest.fixture
def client(fake):
    c = openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=0, timeout=10)
    yield c
    c.close()


def stream_article(client, **kwargs):
    return client.chat.completions.create(
        model="gpt-4o-mini",
        messages=kwargs.pop("messages", PROMPT),
        stream=True,
        stream_options={"include_usage": True},
        **kwargs,
    )


def ask(client, content="x", **kwargs):
    return client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": content}], **kwargs
    )


# -- normal answers -----------------------------------------------------


def test_stream_with_usage(fake, client):
    chunks = list(stream_article(client))

    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content is not None]
    assert len(content_chunks) == 10  # default chunks
    assert content_chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content for c in content_chunks)
    assert text.startswith("# Hello World\n\n")
    assert len(text.split()) == 3 + 120  # "# Hello World" + default words

    finish = [c.choices[0].finish_reason for c in chunks
              if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]

    last = chunks[-1]
    assert last.choices == []
    prompt_words = sum(len(m["content"].split()) for m in PROMPT)
    assert last.usage.prompt_tokens == prompt_words
    assert last.usage.completion_tokens == 120
    assert last.usage.total_tokens == prompt_words + 120

    (record,) = fake.requests
    assert record.stream and record.title == "Hello World" and record.model == "gpt-4o-mini"
    assert record.status == 200 and record.fault is None and record.chunks_sent == 10
    # The SDK stops reading at [DONE]; the server marks the request ended a moment later,
    # after writing the last HTTP chunk, so wait for it rather than race it.
    fake.wait_for(lambda: record.done, timeout=5, message="the request to end")
    assert not record.client_disconnected


def test_stream_without_include_usage(fake, client):
    chunks = list(
        client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, stream=True)
    )
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_non_stream(fake, client):
    fake.words = 30
    result = ask(client, "Council approves budget\nsecond line of the prompt")
    text = result.choices[0].message.content
    assert text.startswith("# Council approves budget\n\n")
    assert result.object == "chat.completion"
    assert result.choices[0].finish_reason == "stop"
    assert result.usage.prompt_tokens == 8
    assert result.usage.completion_tokens == 30
    assert fake.requests_for("Council approves budget")[0].stream is False


def test_settings_change_at_run_time(fake, client):
    fake.words, fake.chunks = 7, 3
    chunks = list(stream_article(client))
    content = [c.choices[0].delta.content for c in chunks
               if c.choices and c.choices[0].delta.content is not None]
    assert len(content) == 3
    assert chunks[-1].usage.completion_tokens == 7
    with pytest.raises(ValueError):
        fake.chunks = 0


def test_max_tokens_truncates_with_length(fake, client):
    result = ask(client, max_tokens=5)
    assert result.choices[0].finish_reason == "length"
    assert result.usage.completion_tokens == 5
    assert fake.requests[0].max_tokens == 5


def test_models_list(client):
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini", "gpt-4o"]


# -- faults -------------------------------------------------------------


def test_rate_limit_raises_with_retry_after(fake, client):
    fake.script(Fault.rate_limit(retry_after=2))
    with pytest.raises(openai.RateLimitError) as info:
        ask(client)
    err = info.value
    assert err.status_code == 429
    assert err.code == "rate_limit_exceeded" and err.type == "requests"
    assert err.response.headers["Retry-After"] == "2"
    assert err.response.headers["retry-after-ms"] == "2000"
    assert fake.requests[0].status == 429 and fake.requests[0].fault == "rate_limit"


def test_quota_error_code(fake, client):
    fake.script(Fault.quota())
    with pytest.raises(openai.RateLimitError) as info:
        ask(client)
    assert info.value.code == "insufficient_quota"
    assert info.value.type == "insufficient_quota"
    assert "retry-after" not in info.value.response.headers


@pytest.mark.parametrize(
    ("fault", "exc", "code"),
    [
        (Fault.server_error(), openai.InternalServerError, None),
        (Fault.server_error(503), openai.InternalServerError, None),
        (Fault.unauthorized(), openai.AuthenticationError, "invalid_api_key"),
        (Fault.not_found_model(), openai.NotFoundError, "model_not_found"),
        (Fault.bad_request("prompt is too long"), openai.BadRequestError, None),
    ],
)
def test_error_faults(fake, client, fault, exc, code):
    fake.script(fault)
    with pytest.raises(exc) as info:
        ask(client)
    assert info.value.status_code == fault.status
    assert info.value.code == code
    assert info.value.body["param"] is None  # OpenAI's error shape
    if fault.kind == "bad_request":
        assert "prompt is too long" in str(info.value)
    if fault.kind == "not_found_model":
        assert "gpt-4o-mini" in str(info.value)


def test_error_fault_on_stream_request(fake, client):
    fake.script(Fault.server_error())
    with pytest.raises(openai.InternalServerError):
        stream_article(client)


def test_cut_stream_raises_while_iterating(fake, client):
    fake.script(Fault.cut_stream(after_chunks=3))
    received = []
    with pytest.raises(openai.APIError):  # APIConnectionError in practice
        for chunk in stream_article(client):
            received.append(chunk)
    assert len(received) == 3
    record = fake.requests[0]
    assert record.fault == "cut_stream" and record.chunks_sent == 3


def test_early_end_is_a_clean_end_the_sdk_does_not_notice(fake, client):
    # What makes this fault dangerous: the SDK iterates to the end and raises nothing.
    fake.script(Fault.early_end(after_chunks=3))
    received = list(stream_article(client))
    assert len(received) == 3
    assert all(c.choices[0].finish_reason is None for c in received)
    assert all(c.usage is None for c in received)
    record = fake.requests[0]
    assert record.fault == "early_end" and record.chunks_sent == 3 and record.finish_reason is None


def test_malformed_chunk_raises_while_iterating(fake, client):
    fake.script(Fault.malformed_chunk(after_chunks=2))
    received = []
    with pytest.raises(ValueError):  # json.JSONDecodeError from the SDK's event parsing
        for chunk in stream_article(client):
            received.append(chunk)
    assert len(received) == 2


def test_silence_mid_stream_trips_the_read_timeout(fake, client):
    fake.script(Fault.silence(seconds=5, after_chunks=2))
    received = []
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        for chunk in stream_article(client, timeout=openai.Timeout(10, read=0.5)):
            received.append(chunk)
    assert len(received) == 2 and time.monotonic() - started < 3
    # Shorter than the read timeout, the same silence is only a slow answer.
    fake.script(Fault.silence(seconds=0.2, after_chunks=2))
    chunks = list(stream_article(client, timeout=openai.Timeout(10, read=2)))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_cut_non_stream_raises(fake, client):
    fake.script(Fault.cut_stream())
    with pytest.raises(openai.APIConnectionError):
        ask(client)


def test_hang_times_out(fake, client):
    fake.script(Fault.hang(5))
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        ask(client, timeout=0.5)
    assert time.monotonic() - started < 2.5
    # The fake notices the client gave up and frees the request.
    fake.wait_for(lambda: fake.requests[0].client_disconnected, timeout=2)
    fake.wait_idle(timeout=2)
    assert fake.requests[0].status is None


def test_finish_and_empty_faults(fake, client):
    fake.script(Fault.finish("content_filter"), Fault.empty(), Fault.finish("length"))
    filtered = ask(client, "Title: A")
    assert filtered.choices[0].finish_reason == "content_filter"
    assert filtered.choices[0].message.content.startswith("# A")

    empty = ask(client)
    assert empty.choices[0].message.content == ""
    assert empty.usage.completion_tokens == 0

    chunks = list(stream_article(client))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_script_is_fifo_then_default_then_reset(fake, client):
    fake.script(Fault.server_error(), None, Fault.quota())
    fake.set_default_fault(Fault.unauthorized())
    outcomes = []
    for _ in range(4):
        try:
            ask(client)
            outcomes.append("ok")
        except openai.APIStatusError as e:
            outcomes.append(e.status_code)
    assert outcomes == [500, "ok", 429, 401]
    assert [r.fault for r in fake.requests] == ["server_error", None, "quota", "unauthorized"]
    assert fake.request_count() == 4

    # The client has its answer a moment before the server's handler counts the request as
    # ended; a request still in flight rightly counts after a reset.
    fake.wait_idle()
    fake.reset()
    assert fake.request_count() == 0 and fake.max_concurrent == 0
    ask(client)  # default fault cleared too
    assert fake.requests[0].fault is None


def test_fail_rate_is_seeded(fake, client):
    def run():
        fake.reset()
        fake.fail_rate(0.5, Fault.rate_limit(retry_after=0))
        for _ in range(20):
            try:
                ask(client)
            except openai.RateLimitError:
                pass
        return [r.status for r in fake.requests]

    first = run()
    assert 0 < first.count(429) < 20
    assert run() == first


# -- timing, concurrency, disconnects -----------------------------------


def test_latency_spreads_chunks(fake, client):
    fake.latency, fake.chunks, fake.words = 0.4, 4, 20
    started = time.monotonic()
    arrivals = []
    for chunk in stream_article(client):
        if chunk.choices and chunk.choices[0].delta.content is not None:
            arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 4
    # Chunk k (1-based) is not sent before latency * k / chunks.
    for k, arrived in enumerate(arrivals, start=1):
        assert arrived >= 0.4 * k / 4
    assert arrivals[-1] >= 0.4
    # The server thread stamps the end after the last bytes went out: wait for it.
    fake.wait_for(lambda: fake.requests[0].done, timeout=5, message="the request to end")
    assert fake.requests[0].duration >= 0.4


def test_non_stream_latency(fake, client):
    fake.latency = 0.2
    started = time.monotonic()
    ask(client)
    assert time.monotonic() - started >= 0.2


def test_max_concurrent_counts_parallel_requests(fake, client):
    fake.latency = 5  # long enough that all four overlap; released by stop()
    errors = []

    def worker():
        try:
            ask(client)
        except openai.APIError as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    fake.wait_for(lambda: fake.in_flight == 4, timeout=3)
    assert fake.max_concurrent == 4
    fake.latency = 0  # does not affect requests already running
    fake.stop()  # abandons the sleeping requests; the clients see a closed connection
    for t in threads:
        t.join(timeout=3)
    assert len(errors) == 4
    assert fake.in_flight == 0


def test_client_disconnect_is_recorded(fake, client):
    fake.latency, fake.chunks = 2.0, 10
    stream = stream_article(client)
    got = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            got += 1
            if got == 2:
                break
    stream.close()
    record = fake.wait_for(
        lambda: fake.requests[0] if fake.requests[0].client_disconnected else None, timeout=2
    )
    fake.wait_idle(timeout=2)
    assert record.chunks_sent < 10
    assert record.start < record.disconnected_at < record.start + 2.0
    assert record.end is not None and record.end < record.start + 2.0


def test_wait_for_times_out(fake):
    with pytest.raises(TimeoutError):
        fake.wait_for(lambda: False, timeout=0.05)


def test_cli_runs_as_separate_process():
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakeai", "--port", "0", "--words", "5", "--chunks", "2"],
        cwd=root, stdout=subprocess.PIPE, text=True,
    )
    try:
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        with openai.OpenAI(base_url=base_url, api_key="test", max_retries=0, timeout=5) as c:
            chunks = list(stream_article(c))
        assert chunks[-1].usage.completion_tokens == 5
    finally:
        proc.terminate()
        proc.wait(timeout=5)
