"""Redis stopped, frozen, restarted empty or partly flushed; a crash before the publish.

The database is the source of truth: the user gets a quick, clear answer, nothing is
half-created, and the reconciler brings the queue back in line, each article written once.
"""
from __future__ import annotations

import re
import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update

from tests.support import ACCOUNTS
from tests.faults.conftest import (SOCKET_TIMEOUT, article_rows, assert_exactly_once, elapsed,
                                   record_figure)
from tests.helpers import (batch_state, done_of, percent_of, submit_form, wait_batch_final,
                           wait_until)

# The brief: a clear answer within about two seconds; a hang would be a socket default
# (minutes). The figures are recorded in test-artifacts/faults/figures.txt.
ANSWER_WITHIN = 5.0
UNREACHABLE = "The task queue (Redis) is unreachable"


def _age(env, batch_id: int, seconds: float) -> None:
    """Move a batch's creation back in time (instead of waiting out the reconciler's grace
    period for batches that a web request may still be sending)."""
    from webapp.extensions import db
    from webapp.models import Batch

    with env.app.app_context():
        created = db.session.scalar(select(Batch.created_at).where(Batch.id == batch_id))
        db.session.execute(update(Batch).where(Batch.id == batch_id)
                           .values(created_at=created - timedelta(seconds=seconds)))
        db.session.commit()


def _grace() -> float:
    from webapp.generation import reconciler
    return reconciler.DISPATCH_GRACE.total_seconds()


def _assert_stored_but_not_sent(env, batch_id: int, titles: list[str]) -> None:
    """The batch and all its articles are stored, marked undispatched, none started."""
    batch = batch_state(env.app, batch_id)
    assert batch["status"] == "queued"
    assert batch["dispatched_at"] is None
    assert batch["dispatch_error"] and UNREACHABLE in batch["dispatch_error"]
    assert batch["total"] == len(titles)
    rows = article_rows(env, batch_id)
    assert [a.title for a in rows] == titles
    assert {a.status for a in rows} == {"queued"}
    assert all(a.task_id for a in rows)


def _assert_no_result_subscriptions(env, batch_id: int) -> None:
    """Celery subscribes to a task's result channel before publishing it; a publish that
    failed must not leave that subscription behind in the web process (webapp.dispatch)."""
    channels = {f"celery-task-meta-{a.task_id}" for a in article_rows(env, batch_id)}
    consumer = env.app.extensions["celery"].backend.result_consumer
    assert not channels & set(consumer.subscribed_to)
    probe = env.redis.client()
    assert not channels & {c.decode() for c in probe.pubsub_channels()}
    probe.close()


def _reconcile_until(env, key: str, timeout: float = 30.0) -> list[dict]:
    passes = []

    def acted():
        done = env.reconcile()
        passes.append(done)
        return done.get(key)
    wait_until(acted, timeout, f"the reconciler to report {key}")
    return passes


@pytest.mark.slow
def test_submit_with_redis_stopped_then_the_reconciler_dispatches(env):
    titles = ["Stopped Redis 1", "Stopped Redis 2", "Stopped Redis 3"]
    client = env.client()
    env.redis.stop()

    response, seconds = elapsed(submit_form, client, "Redis stopped", titles)
    record_figure("submit with Redis stopped (GET form + POST)", f"{seconds:.3f} s")
    assert seconds < ANSWER_WITHIN, f"the submit took {seconds:.1f} s with Redis stopped"
    assert response.status_code == 303
    batch_id = int(response.headers["Location"].rsplit("/", 1)[1])
    _assert_stored_but_not_sent(env, batch_id, titles)

    # The page the editor lands on says what happened and offers to retry.
    page, seconds = elapsed(client.get, response.headers["Location"])
    assert page.status_code == 200 and seconds < ANSWER_WITHIN
    html = page.get_data(as_text=True)
    assert UNREACHABLE in html and "generation has not started" in html
    assert "Retry dispatch" in html
    # Polls still answer from the database, and say live progress is unavailable.
    poll, seconds = elapsed(client.get, f"/batches/{batch_id}/progress",
                            headers={"HX-Request": "true"})
    record_figure("progress poll with Redis stopped", f"{seconds:.3f} s")
    assert poll.status_code == 200 and seconds < ANSWER_WITHIN
    assert "Live progress is unavailable" in poll.get_data(as_text=True)
    assert "0 / 3" in poll.get_data(as_text=True)

    # Redis is back (empty, like any restart without persistence); a worker is running.
    env.redis.start()
    _assert_no_result_subscriptions(env, batch_id)
    env.workers.start(concurrency=4)
    # Within the grace period the reconciler leaves a batch to the web request sending it.
    assert env.reconcile()["dispatched_undelivered"] == 0
    assert env.queue_state() == (0, 0)
    _age(env, batch_id, _grace() + 1)
    passes = _reconcile_until(env, "dispatched_undelivered")
    assert passes[-1]["dispatched_undelivered"] == 1
    assert wait_batch_final(env.app, batch_id)["status"] == "succeeded"
    batch = batch_state(env.app, batch_id)
    assert batch["dispatch_error"] is None and batch["dispatched_at"] is not None
    # A later pass sends nothing again.
    assert env.reconcile()["dispatched_undelivered"] == 0
    env.wait_queue_drained()
    assert assert_exactly_once(env, [batch_id]) == {t: 1 for t in titles}


@pytest.mark.slow
def test_frozen_redis_submit_and_polls_answer_within_their_timeouts(env):
    titles = ["Frozen Redis 1", "Frozen Redis 2"]
    env.workers.start(concurrency=4)
    client = env.client()
    running_id = env.submit(client, "Before the freeze", ["Written before the freeze"])
    assert wait_batch_final(env.app, running_id)["status"] == "succeeded"
    # The task acknowledges its message after it has stored the article (late ack): a freeze
    # in between would leave that message unacknowledged until the visibility timeout, and
    # the drained-queue check below would wait for it.
    env.wait_queue_drained()

    env.redis.freeze()  # SIGSTOP: connections are accepted, nothing is ever answered
    try:
        response, submit_s = elapsed(submit_form, client, "Redis frozen", titles)
        record_figure("submit with Redis frozen (SIGSTOP)", f"{submit_s:.3f} s")
        assert response.status_code == 303, response.status_code
        assert submit_s < ANSWER_WITHIN, f"the submit took {submit_s:.1f} s with Redis frozen"
        batch_id = int(response.headers["Location"].rsplit("/", 1)[1])
        _assert_stored_but_not_sent(env, batch_id, titles)

        page, page_s = elapsed(client.get, f"/batches/{batch_id}")
        assert page.status_code == 200 and page_s < ANSWER_WITHIN
        assert UNREACHABLE in page.get_data(as_text=True)
        for path in (f"/batches/{batch_id}/progress", f"/batches/{running_id}/progress", "/",
                     "/batches/rows"):
            poll, poll_s = elapsed(client.get, path, headers={"HX-Request": "true"})
            record_figure(f"GET {re.sub(r'[0-9]+', 'N', path)} with Redis frozen",
                          f"{poll_s:.3f} s")
            assert poll.status_code in (200, 286), (path, poll.status_code)
            assert poll_s < ANSWER_WITHIN, (path, poll_s)
        live = client.get(f"/batches/{batch_id}/progress", headers={"HX-Request": "true"})
        assert "Live progress is unavailable" in live.get_data(as_text=True)
        # A finished batch renders from the database alone: no Redis needed at all.
        done, done_s = elapsed(client.get, f"/batches/{running_id}/progress")
        assert done.status_code == 286 and done_s < SOCKET_TIMEOUT
    finally:
        env.redis.thaw()
    _assert_no_result_subscriptions(env, batch_id)

    # After SIGCONT, Redis may still run commands that reached it while frozen (a publish
    # whose answer timed out), and the reconciler sends the batch again: two messages for
    # an article, one body.
    _age(env, batch_id, _grace() + 1)
    _reconcile_until(env, "dispatched_undelivered")
    assert wait_batch_final(env.app, batch_id)["status"] == "succeeded"
    env.wait_queue_drained()
    assert assert_exactly_once(env, [running_id, batch_id]) == {
        "Written before the freeze": 1, **{t: 1 for t in titles}}


@pytest.mark.slow
def test_redis_restarted_empty_mid_batch_is_redispatched(env):
    titles = [f"Restarted Redis {i:02d}" for i in range(1, 9)]
    env.fake.latency, env.fake.chunks = 1.0, 10
    worker = env.workers.start(concurrency=2)
    client = env.client()
    batch_id = env.submit(client, "Redis restarts", titles)

    def mid_batch():
        statuses = [a.status for a in article_rows(env, batch_id)]
        return statuses.count("succeeded") >= 2 and statuses.count("queued") >= 4
    wait_until(mid_batch, 30, "some articles written, most still queued")
    assert env.queue_state()[0] >= 2

    env.redis.restart_empty()  # SIGKILL, no persistence: queue, results, marker all gone
    client_ = env.redis.client()
    assert client_.dbsize() == 0
    client_.close()
    passes = []

    def finished():
        passes.append(env.reconcile())
        return batch_state(env.app, batch_id)["status"] in ("succeeded", "failed")
    # Each pass: articles whose worker lost Redis mid-stream are re-queued once their lease
    # lapses; the batch whose marker vanished is sent again.
    wait_until(finished, 90, "the batch to finish after Redis came back empty")
    assert any(p["redispatched_lost_queue"] for p in passes), passes
    assert batch_state(env.app, batch_id)["status"] == "succeeded"
    assert worker.alive()
    env.wait_queue_drained()
    requests = assert_exactly_once(env, [batch_id], max_requests=2)
    record_figure("Redis restarted empty: provider requests per article",
                  str(sorted(requests.values())))


@pytest.mark.slow
def test_crash_between_commit_and_publish_is_dispatched_once_by_the_reconciler(env, monkeypatch):
    from webapp.extensions import db
    from webapp.models import User
    from webapp.services import submission

    class Crash(BaseException):
        """The web process dies here: after the commit, before anything is published."""

    def crash(batch_id):
        raise Crash()
    monkeypatch.setattr(submission, "dispatch", crash)
    titles = ["Crashed before publish 1", "Crashed before publish 2", "Crashed before publish 3"]
    with env.app.app_context():
        user = db.session.scalar(select(User).where(User.email == ACCOUNTS["editor"][0]))
        with pytest.raises(Crash):
            submission.submit(user, {"name": "Crashed", "titles": "\n".join(titles),
                                  "target_words": 200})
        db.session.rollback()
    monkeypatch.undo()
    batch_id = _only_batch(env)
    batch = batch_state(env.app, batch_id)
    assert batch["dispatched_at"] is None and batch["dispatch_error"] is None
    assert {a.status for a in article_rows(env, batch_id)} == {"queued"}
    assert env.queue_state() == (0, 0)

    env.workers.start(concurrency=4)
    # Young: the web request might still be publishing it. Nothing is sent.
    assert env.reconcile()["dispatched_undelivered"] == 0
    assert env.queue_state() == (0, 0)
    _age(env, batch_id, _grace() + 1)
    assert env.reconcile()["dispatched_undelivered"] == 1
    # Dispatched now: the next passes (beat runs every 10 s) leave it alone.
    assert env.reconcile()["dispatched_undelivered"] == 0
    assert wait_batch_final(env.app, batch_id)["status"] == "succeeded"
    assert env.reconcile()["dispatched_undelivered"] == 0
    env.wait_queue_drained()
    assert assert_exactly_once(env, [batch_id]) == {t: 1 for t in titles}


def _done_in_db(env, batch_id: int) -> int:
    return sum(a.status in ("succeeded", "failed", "cancelled")
               for a in article_rows(env, batch_id))


def _only_batch(env) -> int:
    from webapp.extensions import db
    from webapp.models import Batch

    with env.app.app_context():
        [batch_id] = db.session.scalars(select(Batch.id)).all()
        return batch_id


@pytest.mark.slow
def test_result_backend_flushed_mid_batch_progress_stays_true(env):
    titles = [f"Flushed results {i:02d}" for i in range(1, 13)]
    env.fake.latency, env.fake.chunks = 0.8, 8
    env.workers.start(concurrency=3)
    client = env.client()
    batch_id = env.submit(client, "Results flushed", titles)
    redis_client = env.redis.client()
    seen: list[tuple[int, int]] = []
    flushed = 0
    deadline = time.monotonic() + 90
    while True:
        response = client.get(f"/batches/{batch_id}/progress", headers={"HX-Request": "true"})
        assert response.status_code in (200, 286), response.status_code
        html = response.get_data(as_text=True)
        assert "PENDING" not in html
        done, percent = done_of(html), percent_of(html)
        if seen:
            # Never backwards: counts come from the database, not from Celery results.
            assert done >= seen[-1][0] and percent >= seen[-1][1], (seen[-1], (done, percent))
        seen.append((done, percent))
        if response.status_code == 286:
            break
        if done >= 3:
            # Mid-batch, and again on every poll: the result backend loses everything.
            keys = list(redis_client.scan_iter(match="celery-task-meta-*", count=1000))
            if keys:
                flushed += redis_client.delete(*keys)
        assert time.monotonic() < deadline, f"the batch did not finish: {seen[-5:]}"
        # Poll again once the database has moved on (as the page's next poll would see).
        wait_until(lambda: _done_in_db(env, batch_id) > done
                   or batch_state(env.app, batch_id)["status"] == "succeeded",
                   30, "the next article (or the batch) to finish")
    redis_client.close()
    assert flushed > 0, "no result key was ever deleted"
    assert seen[-1] == (len(titles), 100)
    record_figure("results flushed: result keys deleted mid-batch", str(flushed))
    env.wait_queue_drained()
    assert assert_exactly_once(env, [batch_id]) == {t: 1 for t in titles}


@pytest.mark.slow
def test_web_redis_connections_and_channels_do_not_grow_with_submissions(env):
    # No worker: every Redis client is this (web) process's, or the probe below.
    client = env.client()
    for i in range(2):  # warm up: pools and the result consumer are made on first use
        env.submit(client, f"Warm-up {i}", [f"Warm-up {i} a", f"Warm-up {i} b"])
    probe = env.redis.client()
    result_consumer = env.app.extensions["celery"].backend.result_consumer

    def snapshot():
        clients = [c for c in probe.client_list() if c.get("cmd") != "client|list"]
        return len(clients), len(probe.pubsub_channels()), probe.pubsub_numpat()
    before = snapshot()
    during = []
    for i in range(30):
        batch_id = env.submit(client, f"Connections {i}", [f"Connections {i} a",
                                                           f"Connections {i} b"])
        assert client.get(f"/batches/{batch_id}/progress",
                          headers={"HX-Request": "true"}).status_code == 200
        # Celery subscribes to each published task's result channel and unsubscribes when
        # the AsyncResult is dropped (sometimes one publish later): a small constant.
        during.append((snapshot(), len(result_consumer.subscribed_to)))
    after = snapshot()
    probe.close()
    record_figure("web Redis clients before/after 30 submissions", f"{before[0]} / {after[0]}")
    record_figure("pub/sub channels before / most during / after 30 submissions",
                  f"{before[1]} / {max(d[0][1] for d in during)} / {after[1]}")
    assert env.queue_state()[0] == 2 * 32
    assert max(d[0][0] for d in during) <= before[0] + 2, (before, during)
    assert max(d[0][1] for d in during) <= before[1] + 2, (before, during)
    assert max(d[1] for d in during) <= 2, during
    assert after[2] <= before[2]


@pytest.mark.slow
def test_messages_lost_while_redis_stays_up_are_sent_again_once_stalled(env):
    """A queue emptied behind Pressroom's back (a worker frozen and killed after taking a
    message, or a publish lost after a re-queue): the marker is still there, so only the
    stall rule can notice; the reconciler sends the batch again, each article is written
    once."""
    from webapp.extensions import db
    from webapp.models import Article, Batch

    titles = [f"Lost while up {i}" for i in range(1, 5)]
    client = env.client()
    batch_id = env.submit(client, "Lost messages", titles)  # no worker yet: messages wait
    assert env.queue_state()[0] == len(titles)
    raw = env.redis.client()
    raw.delete("generation")  # the messages are gone; the dispatch marker is not
    raw.close()
    # Young: the articles might just be waiting for a busy worker. Nothing is sent.
    assert env.reconcile()["redispatched_stalled"] == 0
    stall = env.app.config["STALL_AFTER"]
    with env.app.app_context():
        past = datetime.utcnow() - timedelta(seconds=stall + 5)
        db.session.execute(update(Batch).where(Batch.id == batch_id).values(dispatched_at=past))
        db.session.execute(update(Article).where(Article.batch_id == batch_id)
                           .values(updated_at=past))
        db.session.commit()
    assert env.reconcile()["redispatched_stalled"] == 1
    # Sent: the batch's dispatch time moved on, so the next pass leaves it alone.
    assert env.reconcile()["redispatched_stalled"] == 0
    env.workers.start(concurrency=4)
    assert wait_batch_final(env.app, batch_id)["status"] == "succeeded"
    env.wait_queue_drained()
    assert assert_exactly_once(env, [batch_id]) == {t: 1 for t in titles}
