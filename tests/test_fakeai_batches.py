"""Tests of the fake's Batch API (tests/fakeai_batches.py), driven through the real openai SDK."""

from __future__ import annotations

import io
import json

import openai
import pytest

from tests.fakeai import FakeAI


@pytest.fixture
def fake():
    with FakeAI(words=20) as server:
        yield server


@pytest.fixture
def client(fake):
    c = openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=0, timeout=10)
    yield c
    c.close()


def request_line(title: str, custom_id: str | None = None, **body) -> dict:
    return {
        "custom_id": custom_id or title, "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "max_tokens": 4000,
                 "messages": [{"role": "system", "content": "You are a reporter."},
                              {"role": "user", "content": f"Write it.\nTitle: {title}"}],
                 **body},
    }


def upload(client, lines: list) -> str:
    data = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    return client.files.create(file=("input.jsonl", data.encode()), purpose="batch").id


def create_batch(client, titles: list[str], **kwargs):
    file_id = upload(client, [request_line(t) for t in titles])
    return client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                 completion_window="24h", **kwargs)


def wait_status(fake, client, batch_id: str, *statuses: str, timeout: float = 5.0):
    """Poll through the SDK (as the app does) until the batch is in one of ``statuses``."""
    def reached():
        batch = client.batches.retrieve(batch_id)
        return batch if batch.status in statuses else None

    return fake.wait_for(reached, timeout, f"batch {batch_id} never reached {statuses}")


def read_jsonl(client, file_id: str) -> list[dict]:
    return [json.loads(line) for line in client.files.content(file_id).content.splitlines()]


# -- files ----------------------------------------------------------------


def test_file_upload_retrieve_content_and_delete(fake, client):
    data = b'{"a": "\xc3\xa9t\xc3\xa9"}\r\n{"b": 2}\n'
    created = client.files.create(file=("in.jsonl", data), purpose="batch")
    assert created.id.startswith("file-") and created.object == "file"
    assert (created.bytes, created.filename, created.purpose, created.status) == (
        len(data), "in.jsonl", "batch", "processed")
    assert client.files.retrieve(created.id) == created
    assert client.files.content(created.id).content == data

    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "file", True)
    assert fake.batches.deleted == [created.id]
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)


def test_upload_from_a_stream_and_any_purpose(fake, client):
    # A non-seekable stream has no known length: httpx sends it chunked.
    class Stream(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            piece = self._data.read(len(buffer))
            buffer[: len(piece)] = piece
            return len(piece)

    created = client.files.create(file=Stream(b"x" * 100_000), purpose="user_data")
    assert created.bytes == 100_000 and created.purpose == "user_data"
    assert fake.batches.files[0].data == b"x" * 100_000


def test_large_output_file_streams_intact(fake, client):
    fake.words = 3000
    fake.batches.validate_seconds = fake.batches.finalize_seconds = 0
    fake.batches.seconds_per_request = 0
    batch = create_batch(client, [f"Story {i}" for i in range(300)])
    batch = wait_status(fake, client, batch.id, "completed")
    expected = fake.batches.files[-1].data
    assert len(expected) > 5_000_000  # many 64 KiB pieces
    with client.files.with_streaming_response.content(batch.output_file_id) as response:
        assert response.headers["content-type"] == "application/octet-stream"
        received = b"".join(response.iter_bytes())
    assert received == expected
    assert len(received.splitlines()) == 300


# -- batch lifecycle -------------------------------------------------------


def test_lifecycle_in_real_time(fake, client):
    fake.batches.seconds_per_request = 0.05
    batch = create_batch(client, [f"Story {i}" for i in range(10)], metadata={"run": "7"})
    assert batch.id.startswith("batch_") and batch.object == "batch"
    assert batch.status == "validating" and batch.metadata == {"run": "7"}
    assert batch.expires_at == batch.created_at + 24 * 3600
    assert batch.request_counts.total == 0 and batch.in_progress_at is None

    running = fake.wait_for(lambda: (b := client.batches.retrieve(batch.id)).status
                            == "in_progress" and 0 < b.request_counts.completed < 10 and b)
    assert running.request_counts.total == 10 and running.in_progress_at is not None
    finalizing = wait_status(fake, client, batch.id, "finalizing")
    assert finalizing.request_counts.completed == 10
    done = wait_status(fake, client, batch.id, "completed")
    assert (done.request_counts.completed, done.request_counts.failed) == (10, 0)
    assert (batch.created_at <= done.in_progress_at <= done.finalizing_at <= done.completed_at)
    assert done.error_file_id is None and done.errors is None
    assert done.failed_at is done.expired_at is done.cancelled_at is None

    lines = read_jsonl(client, done.output_file_id)
    assert [line["custom_id"] for line in lines] == [f"Story {i}" for i in range(10)]
    first = lines[0]
    assert first["id"].startswith("batch_req_") and first["error"] is None
    assert first["response"]["status_code"] == 200 and first["response"]["request_id"]
    completion = first["response"]["body"]
    assert completion["object"] == "chat.completion" and completion["model"] == "gpt-4o-mini"
    choice = completion["choices"][0]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].startswith("# Story 0\n\n")
    assert len(choice["message"]["content"].split()) == 3 + 20
    assert completion["usage"] == {"prompt_tokens": 9, "completion_tokens": 20,
                                   "total_tokens": 29}
    output = client.files.retrieve(done.output_file_id)
    assert output.purpose == "batch_output"
    # Batch requests stay out of the chat request log.
    assert fake.requests == []
    assert fake.batches.created[0].titles == [f"Story {i}" for i in range(10)]


def test_hold_and_advance_control_exactly_when_things_happen(fake, client):
    b = fake.batches
    b.validate_seconds, b.seconds_per_request, b.finalize_seconds = 1.0, 0.5, 2.0
    b.hold()
    batch = create_batch(client, ["A", "B", "C", "D"])
    b.advance(0.99)
    assert client.batches.retrieve(batch.id).status == "validating"
    b.advance(0.01)
    assert client.batches.retrieve(batch.id).status == "in_progress"
    b.advance(1.5, batch.id)
    assert client.batches.retrieve(batch.id).request_counts.completed == 3
    b.seconds_per_request = 10  # settings apply to what is still to come
    b.advance(9.9)
    assert client.batches.retrieve(batch.id).request_counts.completed == 3
    b.advance(0.1)
    finalizing = client.batches.retrieve(batch.id)
    assert finalizing.status == "finalizing"
    assert finalizing.finalizing_at == int(fake.batches.created[0].created + 12.5)
    b.finalize_seconds = 0.1  # less than the 12.5 s already on the clock: next read finishes
    b.release()
    done = wait_status(fake, client, batch.id, "completed")
    assert done.request_counts.completed == 4


def test_create_validation(fake, client):
    file_id = upload(client, [request_line("A")])
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-missing", endpoint="/v1/chat/completions",
                              completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=file_id, endpoint="/v1/embeddings",
                              completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                              completion_window="48h")
    assert fake.batches.created == []


@pytest.mark.parametrize("bad_line, code, param", [
    ("{not json", "invalid_json_line", None),
    (request_line("A", custom_id="A"), "duplicate_custom_id", "custom_id"),
    ({k: v for k, v in request_line("B").items() if k != "custom_id"},
     "missing_required_parameter", "custom_id"),
    ({**request_line("B"), "url": "/v1/embeddings"}, "url_mismatch", "url"),
])
def test_bad_input_line_fails_the_batch_after_validating(fake, client, bad_line, code, param):
    file_id = upload(client, [request_line("A"), bad_line, request_line("C")])
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    assert batch.status == "validating"  # content is checked later, not at create time
    failed = wait_status(fake, client, batch.id, "failed")
    assert failed.failed_at is not None and failed.output_file_id is None
    assert failed.errors.object == "list"
    (error,) = failed.errors.data
    assert (error.code, error.param, error.line) == (code, param, 2) and error.message


def test_more_than_50000_requests_fails(fake, client):
    fake.batches.validate_seconds = 0
    lines = [json.dumps({"custom_id": str(i), "url": "/v1/chat/completions"})
             for i in range(50_001)]
    file_id = upload(client, lines)
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    failed = wait_status(fake, client, batch.id, "failed")
    assert [e.code for e in failed.errors.data] == ["too_many_tasks"]


# -- per-request outcomes --------------------------------------------------


def test_outcomes_chosen_by_title(fake, client):
    b = fake.batches
    for kind in ("length", "content_filter", "empty", "no_finish", "refusal"):
        b.outcome(kind.title(), kind)
    b.outcome("Broken", "error")
    b.outcome("Rejected", "error", status=400)
    titles = ["Fine", "Length", "Content_Filter", "Empty", "No_Finish", "Refusal",
              "Broken", "Rejected"]
    file_id = upload(client, [request_line(t) for t in titles]
                     + [{**request_line("No messages"), "body": {"model": "gpt-4o-mini"}}])
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    done = wait_status(fake, client, batch.id, "completed")
    assert (done.request_counts.total, done.request_counts.completed,
            done.request_counts.failed) == (9, 6, 3)

    output = {line["custom_id"]: line["response"]["body"]["choices"][0]
              for line in read_jsonl(client, done.output_file_id)}
    assert output["Fine"]["finish_reason"] == "stop"
    assert output["Length"]["finish_reason"] == "length"
    assert len(output["Length"]["message"]["content"].split()) < 3 + 20
    assert output["Content_Filter"]["finish_reason"] == "content_filter"
    assert output["Empty"]["message"]["content"] == ""
    assert output["Empty"]["finish_reason"] == "stop"
    assert output["No_Finish"]["finish_reason"] is None
    assert output["No_Finish"]["message"]["content"].startswith("# No_Finish")
    assert output["Refusal"]["message"]["content"] is None
    assert output["Refusal"]["message"]["refusal"]

    errors = {line["custom_id"]: line for line in read_jsonl(client, done.error_file_id)}
    assert {k: v["response"]["status_code"] for k, v in errors.items()} == {
        "Broken": 500, "Rejected": 400, "No messages": 400}
    broken = errors["Broken"]
    assert broken["error"] is None and broken["id"].startswith("batch_req_")
    assert broken["response"]["body"]["error"]["type"] == "server_error"
    assert errors["Rejected"]["response"]["body"]["error"]["type"] == "invalid_request_error"


def test_max_tokens_truncates_with_length(fake, client):
    file_id = upload(client, [request_line("Short", max_tokens=5)])
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    done = wait_status(fake, client, batch.id, "completed")
    (line,) = read_jsonl(client, done.output_file_id)
    body = line["response"]["body"]
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5


# -- batch-level scenarios -------------------------------------------------


def test_expire_after_n_requests(fake, client):
    fake.batches.expire_after(2)
    batch = create_batch(client, ["A", "B", "C", "D", "E"])
    expired = wait_status(fake, client, batch.id, "expired")
    assert expired.expired_at is not None and expired.completed_at is None
    assert expired.request_counts.completed == 2
    assert [line["custom_id"] for line in read_jsonl(client, expired.output_file_id)] == [
        "A", "B"]
    errors = read_jsonl(client, expired.error_file_id)
    assert [line["custom_id"] for line in errors] == ["C", "D", "E"]
    assert all(line["response"] is None and line["error"]["code"] == "batch_expired"
               and line["error"]["message"] for line in errors)
    # Only the next batch was affected.
    later = create_batch(client, ["F"])
    assert wait_status(fake, client, later.id, "completed", "expired").status == "completed"


def test_cancel_keeps_what_completed_before(fake, client):
    b = fake.batches
    b.hold()
    batch = create_batch(client, ["A", "B", "C", "D", "E"])
    b.advance(b.validate_seconds + 3 * b.seconds_per_request)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    assert cancelling.request_counts.completed == 3
    b.advance(b.cancel_seconds - 0.01)
    assert client.batches.retrieve(batch.id).status == "cancelling"
    b.advance(0.01)
    cancelled = client.batches.retrieve(batch.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    assert [line["custom_id"] for line in read_jsonl(client, cancelled.output_file_id)] == [
        "A", "B", "C"]
    errors = read_jsonl(client, cancelled.error_file_id)
    assert [(line["custom_id"], line["error"]["code"]) for line in errors] == [
        ("D", "batch_cancelled"), ("E", "batch_cancelled")]
    assert all(line["response"] is None for line in errors)


def test_cancel_a_finished_batch_is_400(fake, client):
    batch = create_batch(client, ["A"])
    wait_status(fake, client, batch.id, "completed")
    with pytest.raises(openai.BadRequestError):
        client.batches.cancel(batch.id)


def test_unknown_ids_are_404_with_openai_error_body(fake, client):
    calls = [
        lambda: client.files.retrieve("file-nope"),
        lambda: client.files.content("file-nope"),
        lambda: client.files.delete("file-nope"),
        lambda: client.batches.retrieve("batch_nope"),
        lambda: client.batches.cancel("batch_nope"),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as info:
            call()
        error = info.value.response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"]
        assert error["param"] is None and error["code"] is None


def test_unsupported_answers_404_everywhere(fake, client):
    file_id = upload(client, [request_line("A")])
    fake.batches.supported = False
    calls = [
        lambda: client.files.create(file=("x.jsonl", b"{}\n"), purpose="batch"),
        lambda: client.files.retrieve(file_id),
        lambda: client.files.content(file_id),
        lambda: client.files.delete(file_id),
        lambda: client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                      completion_window="24h"),
        lambda: client.batches.retrieve("batch_x"),
        lambda: client.batches.cancel("batch_x"),
        lambda: client.batches.list(),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError):
            call()
    assert [c.status for c in fake.batches.calls[1:]] == [404] * len(calls)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user",
                                                                   "content": "x"}])


def test_list_newest_first_with_pagination(fake, client):
    ids = [create_batch(client, [f"S{i}"]).id for i in range(5)]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]  # auto-paginates
    assert [b.id for b in client.batches.list(limit=10, after=ids[2])] == ids[1::-1]


# -- observability ---------------------------------------------------------


def test_call_log_counts_polls(fake, client):
    batch = create_batch(client, ["A"])
    wait_status(fake, client, batch.id, "completed")
    calls = fake.batches.calls
    assert [(c.method, c.path) for c in calls[:2]] == [("POST", "/v1/files"),
                                                       ("POST", "/v1/batches")]
    assert all(a.time <= b.time for a, b in zip(calls, calls[1:]))
    assert fake.batches.polls(batch.id) == fake.batches.polls() == len(calls) - 2 >= 1
    assert fake.batches.batch(batch.id).status == "completed"  # no HTTP call
    assert fake.batches.polls() == len(calls) - 2
    assert fake.batches.created[0].lines[0]["custom_id"] == "A"


def test_reset_clears_batches_files_calls_and_scenarios(fake, client):
    b = fake.batches
    batch = create_batch(client, ["A"])
    client.files.delete(batch.input_file_id)
    b.outcome("A", "error")
    b.expire_after(0)
    b.supported = False
    b.hold()
    b.seconds_per_request = 1.0

    fake.reset()
    assert b.created == [] and b.files == [] and b.deleted == [] and b.calls == []
    assert b.supported and b.seconds_per_request == 1.0  # settings stay, as in fake.reset()
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve(batch.id)
    fake.reset(restore_settings=True)
    assert b.seconds_per_request == 0.01
    again = create_batch(client, ["A"])  # not held, not expired, not an error
    done = b.wait_status(again.id, "completed", "expired")
    assert done.status == "completed" and done.completed == 1
