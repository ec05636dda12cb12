"""Only complete answers are stored as written.

A streamed answer is whole only when a choice carried a finish_reason. Against FakeAI and a
real worker: a stream that ends cleanly but early (no finish reason, no [DONE]), a chunk
that cannot be decoded, and a silence longer than OPENAI_STREAM_IDLE_TIMEOUT are each a
retryable "cut off" error: the article says so while the retry waits, the next attempt's
answer is stored whole, and when every attempt is cut the article fails with that reason and
no body. The worker here has a one-second idle timeout and a retry base long enough for the
waiting note to be seen.
"""
from __future__ import annotations

import pytest

from tests.dedicated import Dedicated
from tests.fakeai import Fault, build_chunks
from tests.helpers import FINISH_TIMEOUT, articles_state, wait_batch_final, wait_until

IDLE = 1.0
ATTEMPTS = 3


@pytest.fixture(scope="module")
def strict_worker(_app, database_url, redis_url, fake_server, artifacts, worker):
    dedicated = Dedicated("stream", _app, database_url, redis_url, fake_server, artifacts,
                          db_index=8, settings={"OPENAI_STREAM_IDLE_TIMEOUT": str(IDLE),
                                                "GENERATION_RETRY_BASE": "1.5",
                                                "GENERATION_MAX_ATTEMPTS": str(ATTEMPTS)})
    yield dedicated
    dedicated.stop()


@pytest.fixture
def strict(app, strict_worker):
    with strict_worker.in_use() as dedicated:
        yield dedicated


def _submit(strict, api_headers, title: str) -> int:
    response = strict.app.test_client().post(
        "/api/v1/batches", headers=api_headers,
        json={"name": f"Stream: {title}", "titles": [title], "target_words": 200})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def _note_while_waiting(app, batch_id: int) -> str:
    def note():
        (article,) = articles_state(app, batch_id)
        return article["note"] if article["status"] == "queued" and article["note"] else None
    return wait_until(note, FINISH_TIMEOUT, "the article's note while its retry waits")


@pytest.mark.parametrize("fault", [
    Fault.early_end(after_chunks=3),
    Fault.malformed_chunk(after_chunks=2),
    Fault.silence(seconds=IDLE * 4, after_chunks=2),
], ids=lambda f: f.kind)
def test_an_incomplete_answer_is_retried_and_the_next_one_stored_whole(
        app, strict, api_headers, fake, fault):
    title = f"Whole answers only ({fault.kind})"
    fake.chunks = 8
    fake.script(fault)
    batch_id = _submit(strict, api_headers, title)

    note = _note_while_waiting(app, batch_id)
    assert note.startswith("The answer was cut off — retry 2 of 3"), note

    assert wait_batch_final(app, batch_id)["status"] == "succeeded"
    first, second = fake.requests_for(title)
    assert first.fault == fault.kind and second.fault is None
    if fault.kind == "silence":
        # Hung up on after the idle timeout, long before the provider spoke again.
        fake.wait_for(lambda: first.done, timeout=10, message="the silent request to end")
        assert first.client_disconnected
        assert first.disconnected_at - first.start < IDLE * 4
    (stored,) = articles_state(app, batch_id)
    assert stored["attempts"] == 2
    # Exactly the second answer: nothing of the cut one in front of it, one heading.
    assert stored["body"] == "".join(build_chunks(title, fake.words, fake.chunks))
    assert stored["body"].count(f"# {title}") == 1
    assert stored["finish_reason"] == "stop" and stored["note"] is None


def test_an_answer_cut_off_every_time_fails_and_keeps_no_body(app, strict, api_headers, fake):
    title = "Always ends early"
    fake.set_default_fault(Fault.early_end(after_chunks=2))
    batch_id = _submit(strict, api_headers, title)

    assert wait_batch_final(app, batch_id, timeout=FINISH_TIMEOUT)["status"] == "failed"
    records = fake.requests_for(title)
    assert len(records) == ATTEMPTS
    assert all(r.chunks_sent == 2 and r.status == 200 for r in records)
    (stored,) = articles_state(app, batch_id)
    assert stored["status"] == "failed" and stored["attempts"] == ATTEMPTS
    assert stored["body"] is None and stored["words"] == 0
    assert "The answer was cut off" in stored["error"], stored["error"]
    assert f"Gave up after {ATTEMPTS} attempts" in stored["error"], stored["error"]
