"""Workers that die, overlap or forget: every article is still written exactly once.

Each test starts its own worker processes (tests/faults/conftest.py) and breaks them by pid.
"""
from __future__ import annotations

import kombu
import pytest

from tests.faults.conftest import (LEASE_SECONDS, article_rows, assert_exactly_once,
                                   record_figure, task_log_lines)
from tests.helpers import csrf_from, wait_batch_final, wait_until

pytestmark = pytest.mark.slow


def _cancel(client, batch_id: int) -> None:
    page = client.get(f"/batches/{batch_id}").get_data(as_text=True)
    response = client.post(f"/batches/{batch_id}/cancel", data={"csrf_token": csrf_from(page)})
    assert response.status_code == 303, response.status_code


def _restore_all_unacked(redis_url: str) -> None:
    """Act as if the visibility timeout of every unacknowledged message had run out: kombu
    puts them back on their queues, exactly as a consumer's periodic scan would."""
    with kombu.Connection(redis_url, transport_options={"visibility_timeout": 0}) as conn:
        conn.default_channel.qos.restore_visible(num=1000, interval=1)


def test_worker_killed_mid_article_is_finished_once_after_restart(env):
    title = "Killed mid-article"
    # A 4 s stream: time enough to kill the worker while words are arriving.
    env.fake.latency, env.fake.chunks = 4.0, 40
    first = env.workers.start(concurrency=2)
    client = env.client()
    batch_id = env.submit(client, "Killed worker", [title])
    env.fake.wait_for(lambda: any(r.chunks_sent >= 8 for r in env.fake.requests_for(title)),
                      timeout=30, message="the article to be half-written")
    [article] = article_rows(env, batch_id)
    assert article.status == "running" and article.claim_token

    first.kill()
    # The provider sees the client vanish; nobody is left to finish or fail the article.
    env.fake.wait_for(lambda: all(r.done for r in env.fake.requests_for(title)), timeout=10)
    [cut] = env.fake.requests_for(title)
    assert cut.client_disconnected and cut.chunks_sent < 40
    assert article_rows(env, batch_id)[0].status == "running"
    # The dead worker's message is delivered-but-unacknowledged in Redis: it would only
    # come back after the visibility timeout (an hour), so the reconciler must act.
    assert env.queue_state() == (0, 1)

    # The replacement starts while the 3 s lease runs out (start-up takes about as long).
    second = env.workers.start(concurrency=2)
    # Full speed from now on: the second attempt is quick.
    env.fake.latency, env.fake.chunks = 0.2, 5
    passes = []

    def requeued():
        done = env.reconcile()
        passes.append(done)
        return done.get("requeued_lost_running")
    wait_until(requeued, LEASE_SECONDS + 30, "the reconciler to re-queue the lost article")
    batch = wait_batch_final(env.app, batch_id)
    assert batch["status"] == "succeeded"
    [article] = article_rows(env, batch_id)
    assert article.attempts == 2
    assert len(env.fake.requests_for(title)) == 2

    # When the dead worker's own message finally comes back (its visibility timeout), the
    # task finds the article final and does nothing: no third request, no second body.
    _restore_all_unacked(env.redis.url)
    env.wait_queue_drained()
    requests = assert_exactly_once(env, [batch_id], max_requests=2)
    assert requests == {title: 2}
    # The second worker wrote it (the log line follows the acknowledgement: wait for it).
    wait_until(lambda: any("'status': 'succeeded'" in line
                           for line in task_log_lines(second, article.task_id)),
               10, "the second worker's log to show the article written")
    record_figure("worker SIGKILL: reconciler passes until re-queued", str(len(passes)))


def test_start_up_refuses_a_visibility_timeout_shorter_than_an_article(env):
    """The guard itself: with OPENAI_TIMEOUT 30 s, a 2 s visibility timeout is refused."""
    refused = env.workers.start(wait=False, CELERY_VISIBILITY_TIMEOUT=2)
    wait_until(lambda: not refused.alive(), 60, "the misconfigured worker to exit")
    assert refused.proc.returncode != 0
    assert "CELERY_VISIBILITY_TIMEOUT (2 s) must be longer" in refused.log_text()


def test_redelivery_during_a_long_article_is_skipped_by_the_claim(env):
    """Two workers, a visibility timeout (2 s) shorter than one article (8 s): Redis hands
    the running article's message to the second worker, whose claim fails."""
    title = "Longer than the visibility timeout"
    env.fake.latency, env.fake.chunks = 8.0, 40
    # One thread each: the busy worker cannot take the redelivered message itself.
    settings = dict(concurrency=1, app_module="tests.faults.short_visibility:celery_app",
                    FAULT_VISIBILITY_TIMEOUT=2)
    workers = [env.workers.start(**settings), env.workers.start(**settings)]
    client = env.client()
    batch_id = env.submit(client, "Short visibility", [title])
    [article] = article_rows(env, batch_id)

    def delivered_twice():
        received = [line for w in workers for line in task_log_lines(w, article.task_id)
                    if "received" in line.lower()]
        return len(received) >= 2
    wait_until(delivered_twice, 20, "Redis to deliver the running article a second time")
    # The second delivery arrived while the first was still streaming.
    assert article_rows(env, batch_id)[0].status == "running"
    assert len(env.fake.requests_for(title)) == 1 and not env.fake.requests_for(title)[0].done

    assert wait_batch_final(env.app, batch_id)["status"] == "succeeded"
    env.wait_queue_drained()

    def outcomes():
        lines = [line for w in workers for line in task_log_lines(w, article.task_id)]
        return (any("'status': 'skipped'" in line for line in lines)
                and any("'status': 'succeeded'" in line for line in lines))
    wait_until(outcomes, 10, "one delivery skipped and one succeeded, in the workers' logs")
    assert assert_exactly_once(env, [batch_id]) == {title: 1}


def test_the_same_task_delivered_twice_writes_one_body(env):
    from webapp.generation import dispatch

    titles = [f"Duplicate delivery {i}" for i in range(1, 6)]
    env.fake.latency, env.fake.chunks = 1.5, 10
    worker = env.workers.start(concurrency=8)
    client = env.client()
    batch_id = env.submit(client, "Delivered twice", titles)
    articles = article_rows(env, batch_id)
    with env.app.app_context():
        # Each article again with its own task id (a broker redelivery) and with a new one
        # (a second publish, e.g. a resumed or re-dispatched batch), while the first runs.
        dispatch.publish_articles([(a.id, a.task_id) for a in articles])
        dispatch.publish_articles([(a.id, f"{a.task_id}-again") for a in articles])
    assert wait_batch_final(env.app, batch_id)["status"] == "succeeded"
    env.wait_queue_drained()
    assert assert_exactly_once(env, [batch_id]) == {t: 1 for t in titles}
    # Fifteen deliveries, five bodies: the extra ten were skipped by the claim, or found
    # the article already finished. (Result lines follow the acknowledgement: wait.)
    wait_until(lambda: worker.log_text().count(" succeeded in ") >= 15, 10,
               "the worker to log the fifteen results")
    log = worker.log_text()
    skipped = log.count("'status': 'skipped'")
    finished = log.count("'status': 'succeeded'")
    assert finished == 5 + (10 - skipped), (skipped, finished)
    record_figure("duplicate deliveries skipped by the claim (of 10)", str(skipped))

    # Once finished, another delivery returns at once: no request, no second version.
    with env.app.app_context():
        dispatch.publish_articles([(articles[0].id, f"{articles[0].task_id}-late")])
    env.wait_queue_drained()
    assert assert_exactly_once(env, [batch_id]) == {t: 1 for t in titles}


def test_cancel_with_no_worker_running_then_start_one(env):
    titles = ["Cancelled before any worker 1", "Cancelled before any worker 2",
              "Cancelled before any worker 3"]
    client = env.client()
    batch_id = env.submit(client, "No worker yet", titles)
    assert env.queue_state() == (3, 0)
    _cancel(client, batch_id)
    assert wait_batch_final(env.app, batch_id, timeout=5)["status"] == "cancelled"

    # A worker that never heard the revoke gets the three messages.
    env.workers.start(concurrency=2)
    env.wait_queue_drained()
    assert env.fake.request_count() == 0
    assert assert_exactly_once(env, [batch_id]) == {t: 0 for t in titles}


def test_cancelled_articles_never_run_after_a_worker_restart_without_saved_revokes(env):
    busy_title = "Keeps the first worker busy"
    titles = ["Revoked then restarted 1", "Revoked then restarted 2"]
    env.fake.latency, env.fake.chunks = 3.0, 15
    # One thread: while it writes the first batch, the second batch waits in Redis.
    first = env.workers.start(concurrency=1)
    client = env.client()
    busy_batch = env.submit(client, "Busy", [busy_title])
    env.fake.wait_for(lambda: env.fake.requests_for(busy_title), timeout=30)
    batch_id = env.submit(client, "Revoked", titles)
    assert env.queue_state()[0] == 2
    _cancel(client, batch_id)
    task_ids = {a.task_id for a in article_rows(env, batch_id)}

    # The running worker heard the revoke (it keeps it in memory only: no --statedb).
    control = env.app.extensions["celery"].control

    def revoked_by(worker):
        replies = control.inspect(destination=[worker.hostname], timeout=1.0).revoked() or {}
        return set(replies.get(worker.hostname, []))
    assert wait_until(lambda: task_ids <= revoked_by(first), 10, "the revoke to reach the worker")

    # Warm shutdown: the busy article finishes; the cancelled messages stay in Redis.
    first.terminate()
    assert env.queue_state() == (2, 0)
    second = env.workers.start(concurrency=2)
    assert not (task_ids & revoked_by(second)), "the new worker should not know the revokes"
    env.wait_queue_drained()

    assert [r.title for r in env.fake.requests] == [busy_title]
    assert assert_exactly_once(env, [busy_batch, batch_id]) == {busy_title: 1, titles[0]: 0,
                                                               titles[1]: 0}
    wait_until(lambda: sum("'status': 'cancelled'" in line for t in task_ids
                           for line in task_log_lines(second, t)) == 2,
               10, "the new worker to log both cancelled articles as done with")
