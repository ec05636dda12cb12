"""The provider's HTTP connection outlives one answer: a streamed answer is read to the end
of its body, so the SDK's pool keeps the connection for the next article (with a real
provider, no new TLS handshake per article). A server slow to end the body after [DONE]
costs a short wait and a new connection, never the answer or the provider's idle timeout.

Real SDK, real HTTP, against FakeAI; one provider in this process, articles in turn.
"""
from __future__ import annotations

from tests.fakeai import Fault, build_chunks
from webapp.generation.provider import FINISH_WAIT_S, OpenAIProvider, Prompt, require_finish


def _provider(fake) -> OpenAIProvider:
    # A key of its own, so that no other test's client (and its pooled connections) is used.
    return OpenAIProvider({"OPENAI_API_KEY": "test-connection-reuse",
                           "OPENAI_BASE_URL": fake.base_url, "OPENAI_TIMEOUT": 30.0,
                           "OPENAI_STREAM_IDLE_TIMEOUT": 20.0})


def _write(provider: OpenAIProvider, title: str) -> str:
    stream = provider.stream(Prompt(title=title, words=50, user_text=f"Title: {title}\nWrite it."),
                             "gpt-4o-mini")
    try:
        text = "".join(stream)
    finally:
        stream.close()
    require_finish(stream)
    return text


def test_answers_in_turn_share_one_connection(fake):
    provider = _provider(fake)
    titles = [f"Reused connection {i}" for i in range(5)]
    for title in titles:
        assert _write(provider, title) == "".join(build_chunks(title, fake.words, fake.chunks))
    ports = [fake.requests_for(t)[0].client_port for t in titles]
    assert None not in ports
    # Without reading each body to its end, every answer came on a new connection.
    assert len(set(ports)) == 1, ports


def test_a_reused_connection_waits_for_a_slow_answer_as_long_as_a_new_one(fake):
    provider = _provider(fake)
    _write(provider, "Quick answer")  # its body read to the end, within the short wait
    # The next answer in two chunks, half a second apart: five times the short wait.
    fake.chunks, fake.latency = 2, 10 * FINISH_WAIT_S
    title = "Slow answer"
    assert _write(provider, title) == "".join(build_chunks(title, fake.words, fake.chunks))
    # On the same connection, read with the stream idle timeout again, not the short wait.
    ports = {fake.requests_for(t)[0].client_port for t in ("Quick answer", title)}
    assert len(ports) == 1


def test_a_body_held_open_after_done_keeps_the_answer_without_waiting_for_it(fake):
    provider = _provider(fake)
    _write(provider, "Before the slow server")  # a connection in the pool
    linger = 30 * FINISH_WAIT_S + 10  # far longer than the short wait; the stream idle
    fake.script(Fault.linger(linger))  # timeout (20 s) would have waited it out
    title = "Held open after done"
    assert _write(provider, title) == "".join(build_chunks(title, fake.words, fake.chunks))
    held = fake.requests_for(title)[0]
    # The client left while the server still held the body open: it did not wait for the
    # end of the body, and that connection is dropped.
    fake.wait_for(lambda: held.done, timeout=10)
    assert held.client_disconnected and held.duration < linger
    # The next answer comes on a new connection, whole.
    after = "After the slow server"
    assert _write(provider, after) == "".join(build_chunks(after, fake.words, fake.chunks))
    assert fake.requests_for(after)[0].client_port != held.client_port
