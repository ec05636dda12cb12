"""Operations: health and readiness, metrics, the system page, the CLI and the reconciler.

These use the fault infrastructure (their own Redis, workers and database) because they stop
Redis, freeze a worker, purge queues and fake lost leases.
"""
from __future__ import annotations

import json
import re
import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from tests.support import SECRET_KEY, activate_celery
from tests.faults.conftest import (HEARTBEAT_EVERY, LEASE_SECONDS, MAX_ATTEMPTS, METRICS_TOKEN,
                                   article_rows, assert_exactly_once, build_app, elapsed,
                                   own_database, preserved_globals, record_figure)
from tests.helpers import FINISH_TIMEOUT, batch_state, wait_batch_final, wait_until

OUTSIDE = {"REMOTE_ADDR": "203.0.113.7"}  # not in METRICS_ALLOW (loopback only)
BEARER = {"Authorization": f"Bearer {METRICS_TOKEN}"}


def _assert_no_secrets(text: str, env, database_url: str | None = None) -> None:
    """Machine endpoints say what is wrong, never where or with which credentials."""
    lowered = text.lower()
    for secret in ("redis://", "postgresql", "sqlite:", "password", SECRET_KEY,
                   METRICS_TOKEN, env.redis.url, database_url or env.database_url):
        assert secret.lower() not in lowered, f"{secret!r} leaked"


# -- /healthz and /readyz -------------------------------------------------------------------

def test_healthz_and_readyz_when_all_is_well(env):
    anon = env.app.test_client()
    health = anon.get("/healthz")
    assert health.status_code == 200 and health.get_json() == {"status": "ok"}
    ready = anon.get("/readyz")
    assert ready.status_code == 200, ready.get_json()
    body = ready.get_json()
    assert body["status"] == "ready"
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": True, "redis": True, "migrations": True}
    _assert_no_secrets(ready.get_data(as_text=True), env)


@pytest.mark.slow
def test_readyz_names_redis_when_it_is_stopped(env):
    anon = env.app.test_client()
    env.redis.stop()
    ready, seconds = elapsed(anon.get, "/readyz")
    record_figure("/readyz with Redis stopped", f"{seconds:.3f} s")
    assert ready.status_code == 503
    assert seconds < 3
    body = ready.get_json()
    assert body["status"] == "not ready"
    assert body["checks"]["redis"]["ok"] is False and body["checks"]["redis"]["detail"]
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["migrations"]["ok"] is True
    _assert_no_secrets(ready.get_data(as_text=True), env)
    # Alive all the same: a load balancer should not restart the web process for this.
    assert anon.get("/healthz").status_code == 200

    env.redis.start()
    assert wait_until(lambda: anon.get("/readyz").status_code == 200, 10, "ready again")


@pytest.fixture
def database_one_revision_behind(tmp_path):
    """A database of its own, to be migrated to head and then down by one revision."""
    with own_database("behind", tmp_path) as url:
        yield url


def test_readyz_names_migrations_when_the_database_is_one_revision_behind(
        env, database_one_revision_behind):
    from alembic.script import ScriptDirectory
    from flask_migrate import downgrade, upgrade

    from webapp.extensions import db

    url = database_one_revision_behind
    with preserved_globals():
        behind = build_app(url, env.redis.url, env.fake.base_url)
        with behind.app_context():
            upgrade()
            downgrade(revision="-1")
            script = ScriptDirectory(behind.extensions["migrate"].directory)
            head = script.get_current_head()
            previous = script.get_revision(head).down_revision
        ready = behind.test_client().get("/readyz")
        with behind.app_context():
            db.engine.dispose()
    activate_celery(env.app)
    assert ready.status_code == 503
    checks = ready.get_json()["checks"]
    assert checks["database"]["ok"] and checks["redis"]["ok"]
    assert checks["migrations"]["ok"] is False
    assert checks["migrations"]["detail"] == f"database at {previous}, code at {head}"
    _assert_no_secrets(ready.get_data(as_text=True), env, url)


# -- /metrics -------------------------------------------------------------------------------

def test_metrics_need_the_token_or_an_allowed_address(env):
    anon = env.app.test_client()
    refused = anon.get("/metrics", environ_base=OUTSIDE)
    assert refused.status_code == 403
    assert "METRICS_TOKEN" in refused.get_data(as_text=True)
    wrong = anon.get("/metrics", environ_base=OUTSIDE,
                     headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 403
    allowed = anon.get("/metrics", environ_base=OUTSIDE, headers=BEARER)
    assert allowed.status_code == 200
    assert allowed.mimetype == "text/plain"
    # Loopback is in the default METRICS_ALLOW: Prometheus on the same host needs no token.
    assert anon.get("/metrics").status_code == 200

    # Gauges read from the database and Redis: three articles queued, three messages waiting.
    client = env.client()
    env.submit(client, "Metrics queue", ["Metrics queued 1", "Metrics queued 2",
                                         "Metrics queued 3"])
    text = anon.get("/metrics", environ_base=OUTSIDE, headers=BEARER).get_data(as_text=True)
    # Whole lines, in prometheus-client's format (values as floats, labels sorted by name).
    lines = text.splitlines()
    assert 'pressroom_articles{status="queued"} 3.0' in lines
    assert 'pressroom_articles{status="succeeded"} 0.0' in lines
    assert 'pressroom_queue_length{queue="generation"} 3.0' in lines
    assert 'pressroom_queue_length{queue="celery"} 0.0' in lines
    assert "pressroom_redis_up 1.0" in lines
    assert "pressroom_database_up 1.0" in lines
    _assert_no_secrets(text, env)


@pytest.mark.slow
def test_metrics_after_a_batch_show_provider_histograms(env):
    env.workers.start(concurrency=4)
    client = env.client()
    batch_id = env.submit(client, "Metrics batch", ["Measured one", "Measured two"])
    assert wait_batch_final(env.app, batch_id)["status"] == "succeeded"

    def scraped():
        # The batch's own figures are written just after its final status is committed, and
        # each article's provider figures in its task's last round trip, after the article's
        # status (the last article's can land after the batch's).
        text = env.app.test_client().get("/metrics", environ_base=OUTSIDE,
                                         headers=BEARER).get_data(as_text=True)
        lines = text.splitlines()
        done = ("pressroom_batch_duration_seconds_count 1.0" in lines
                and 'pressroom_provider_request_seconds_count{model="gpt-4o-mini"} 2.0' in lines)
        return text if done else None
    text = wait_until(scraped, FINISH_TIMEOUT, "the finished batch's metrics")
    lines = text.splitlines()
    assert 'pressroom_articles{status="succeeded"} 2.0' in lines
    model = 'model="gpt-4o-mini"'
    assert f'pressroom_provider_request_seconds_bucket{{le="+Inf",{model}}} 2.0' in lines
    assert f"pressroom_provider_request_seconds_count{{{model}}} 2.0" in lines
    assert re.search(rf"^pressroom_provider_request_seconds_sum{{{model}}} [0-9.]+$", text, re.M)
    assert f'pressroom_provider_completion_tokens_bucket{{le="+Inf",{model}}} 2.0' in lines
    assert f"pressroom_provider_completion_tokens_count{{{model}}} 2.0" in lines
    assert 'pressroom_batches_finished_total{status="succeeded"} 1.0' in lines
    assert "pressroom_batch_duration_seconds_count 1.0" in lines
    assert "# TYPE pressroom_provider_request_seconds histogram" in lines
    assert "# TYPE pressroom_batches_finished_total counter" in lines
    assert assert_exactly_once(env, [batch_id]) == {"Measured one": 1, "Measured two": 1}


@pytest.mark.slow
def test_metrics_with_redis_stopped_still_answer_from_the_database(env):
    anon = env.app.test_client()
    env.redis.stop()
    response, seconds = elapsed(anon.get, "/metrics")
    assert response.status_code == 200 and seconds < 3
    lines = response.get_data(as_text=True).splitlines()
    assert "pressroom_redis_up 0.0" in lines
    assert "pressroom_database_up 1.0" in lines
    assert [line for line in lines if line.startswith('pressroom_articles{status="queued"} ')]
    assert not [line for line in lines if line.startswith("pressroom_queue_length{")]
    env.redis.start()
    assert wait_until(lambda: "pressroom_redis_up 1.0" in anon.get("/metrics").get_data(
        as_text=True).splitlines(), 10, "Redis counted up again")


# -- the system page --------------------------------------------------------------------------

def _worker_row(html: str, hostname: str) -> str:
    match = re.search(r"<tr class=\"(?:stale)?\"><td><code>" + re.escape(hostname)
                      + r"</code></td>.*?</tr>", html, re.S)
    assert match, f"no row for {hostname} on the system page"
    return match.group(0)


def _queue_length(html: str, queue: str) -> int:
    match = re.search(rf"<dt>queue {queue}</dt><dd>(\d+)</dd>", html)
    assert match, f"no length for queue {queue}"
    return int(match.group(1))


@pytest.mark.slow
def test_system_page_answers_fast_with_a_frozen_worker_and_shows_it_stale(env):
    worker = env.workers.start(concurrency=2)
    admin = env.client("admin")
    page = admin.get("/admin/system")
    assert page.status_code == 200
    row = _worker_row(page.get_data(as_text=True), worker.hostname)
    assert "not responding" not in row and "<code>thread</code>" in row  # the pool

    worker.freeze()  # SIGSTOP: its heartbeat thread stops with it
    frozen_at = time.monotonic()
    try:
        editor = env.client()
        batch_id = env.submit(editor, "While frozen", ["Frozen worker 1", "Frozen worker 2",
                                                       "Frozen worker 3"])
        slowest = 0.0

        def shows_stale():
            nonlocal slowest
            panel, seconds = elapsed(admin.get, "/admin/system/panel")
            slowest = max(slowest, seconds)
            assert panel.status_code == 200 and seconds < 2, seconds
            html = panel.get_data(as_text=True)
            return "not responding" in _worker_row(html, worker.hostname) and html
        html = wait_until(shows_stale, 3 * HEARTBEAT_EVERY + 15,
                          "the frozen worker to be shown as not responding")
        stale_after = time.monotonic() - frozen_at
        record_figure("system panel slowest answer with a frozen worker", f"{slowest:.3f} s")
        record_figure(f"frozen worker shown stale after (heartbeat every {HEARTBEAT_EVERY:g} s)",
                      f"{stale_after:.1f} s")
        # The frozen worker's blocked read may already hold one message; the rest wait.
        assert _queue_length(html, "generation") >= 2
        assert _queue_length(html, "celery") == 0
        full, seconds = elapsed(admin.get, "/admin/system")
        assert full.status_code == 200 and seconds < 2
        out = env.app.test_cli_runner().invoke(args=["workers"])
        assert out.exit_code == 0
        line = next(row for row in out.output.splitlines() if worker.hostname in row)
        assert "NOT RESPONDING" in line
    finally:
        worker.thaw()
    wait_until(lambda: "not responding" not in _worker_row(
        admin.get("/admin/system/panel").get_data(as_text=True), worker.hostname),
        3 * HEARTBEAT_EVERY + 10, "the thawed worker's heartbeat to be fresh again")
    assert wait_batch_final(env.app, batch_id)["status"] == "succeeded"
    env.wait_queue_drained()
    assert assert_exactly_once(env, [batch_id]) == {f"Frozen worker {i}": 1 for i in (1, 2, 3)}


# -- the command line ---------------------------------------------------------------------------

def _cli(env, *args, input=None, ok=True):
    result = env.app.test_cli_runner().invoke(args=list(args), input=input)
    if ok:
        assert result.exit_code == 0, (args, result.output, result.exception)
    return result


@pytest.mark.slow
def test_cli_batches_workers_and_queues(env):
    titles = ["Command line 1", "Command line 2", "Command line 3"]
    client = env.client()
    batch_id = env.submit(client, "CLI batch", titles)
    assert env.queue_state() == (3, 0)

    listing = _cli(env, "batches", "list").output
    line = next(row for row in listing.splitlines() if row.split()[:1] == [str(batch_id)])
    assert "queued" in line and "0/3" in line and "CLI batch" in line
    shown = _cli(env, "batches", "show", str(batch_id)).output
    assert f"batch {batch_id}: CLI batch" in shown and "status: queued" in shown
    assert all(t in shown for t in titles)
    missing = _cli(env, "batches", "show", "999999", ok=False)
    assert missing.exit_code != 0 and "No batch 999999" in missing.output

    assert "is paused" in _cli(env, "batches", "pause", str(batch_id)).output
    assert batch_state(env.app, batch_id)["status"] == "paused"
    assert "is resumed" in _cli(env, "batches", "resume", str(batch_id)).output
    assert batch_state(env.app, batch_id)["status"] == "running"
    resumed = _cli(env, "batches", "resume", str(batch_id), ok=False)
    assert resumed.exit_code != 0 and "not paused" in resumed.output
    # Resuming sends the queued articles again (harmless: the claim keeps one body).
    assert env.queue_state() == (6, 0)

    queues = _cli(env, "queues").output
    assert re.search(r"^generation\s+6$", queues, re.M) and re.search(r"^celery\s+0$", queues, re.M)
    refused = _cli(env, "queues", "--purge", input="n\n", ok=False)
    assert refused.exit_code == 1 and "Aborted" in refused.output
    assert env.queue_state() == (6, 0)
    purged = _cli(env, "queues", "--purge", input="y\n").output
    assert "Purged 6 messages." in purged
    assert env.queue_state() == (0, 0)
    # The articles are still queued in the database; requeue sends them again.
    assert {a.status for a in article_rows(env, batch_id)} == {"queued"}
    assert f"Sent 3 articles of batch {batch_id}" in _cli(env, "batches", "requeue",
                                                          str(batch_id)).output
    assert env.queue_state() == (3, 0)

    # A second batch, cancelled from the command line before any worker runs.
    other = env.submit(client, "CLI cancel", ["Cancelled from the CLI"])
    assert "is cancelling" in _cli(env, "batches", "cancel", str(other)).output
    assert batch_state(env.app, other)["status"] == "cancelled"
    assert "No worker has reported" in _cli(env, "workers").output

    worker = env.workers.start(concurrency=4)
    workers = _cli(env, "workers").output
    assert (worker.hostname in workers and "pool=thread" in workers
            and "NOT RESPONDING" not in workers)
    assert wait_batch_final(env.app, batch_id)["status"] == "succeeded"
    env.wait_queue_drained()
    assert assert_exactly_once(env, [batch_id, other]) == {**{t: 1 for t in titles},
                                                           "Cancelled from the CLI": 0}
    assert "succeeded" in _cli(env, "batches", "show", str(batch_id)).output


# -- the reconciler ------------------------------------------------------------------------------

def _set_article(env, article_id: int, **values) -> None:
    from webapp.extensions import db
    from webapp.models import Article

    with env.app.app_context():
        db.session.execute(update(Article).where(Article.id == article_id).values(**values))
        db.session.commit()


def _purge(env) -> None:
    probe = env.redis.client()
    probe.delete("generation")
    probe.close()


def _metric(env, name: str, labels: str) -> int:
    text = env.app.test_client().get("/metrics", headers=BEARER).get_data(as_text=True)
    match = re.search(rf"^{name}{{{re.escape(labels)}}} (\d+)\.0$", text, re.M)
    return int(match.group(1)) if match else 0


@pytest.mark.slow
def test_reconciler_requeues_fails_and_closes_and_counts_its_actions(env):
    from webapp.extensions import db
    from webapp.models import Batch, utcnow

    client = env.client()
    lost = env.submit(client, "Lost leases", ["Lease lost once", "Lease lost for good",
                                              "Message lost"])
    closed = env.submit(client, "Finished but open", ["Finished 1", "Finished 2"])
    # The messages were taken by a worker that died: nothing left in Redis.
    _purge(env)
    expired = utcnow() - timedelta(seconds=LEASE_SECONDS + 1)
    once, for_good, message_lost = article_rows(env, lost)
    _set_article(env, once.id, status="running", claim_token="dead-worker", attempts=1,
                 lease_expires_at=expired, words=40)
    _set_article(env, for_good.id, status="running", claim_token="dead-worker",
                 attempts=MAX_ATTEMPTS, lease_expires_at=expired)
    # All articles final, batch still open: its last worker died before closing it.
    for article in article_rows(env, closed):
        _set_article(env, article.id, status="failed", error="Provider said no.",
                     finished_at=utcnow())
    with env.app.app_context():
        db.session.execute(update(Batch).where(Batch.id == closed).values(status="running"))
        db.session.commit()

    done = env.reconcile()
    assert done["requeued_lost_running"] == 1
    assert done["failed_lost_running"] == 1
    assert done["closed_batches"] == 1
    assert done["redispatched_lost_queue"] == 0  # its dispatch marker is still there

    once, for_good, message_lost = article_rows(env, lost)
    assert once.status == "queued" and once.claim_token is None and once.words == 0
    assert "stopped responding" in once.note
    assert for_good.status == "failed"
    assert for_good.error == (f"The worker writing this article stopped responding "
                              f"{MAX_ATTEMPTS} times; giving up.")
    assert message_lost.status == "queued"
    closed_state = batch_state(env.app, closed)
    assert closed_state["status"] == "failed" and closed_state["finished_at"] is not None
    # The lost article's own task id is back on the queue.
    probe = env.redis.client()
    messages = [json.loads(m) for m in probe.lrange("generation", 0, -1)]
    probe.close()
    assert [m["headers"]["id"] for m in messages] == [once.task_id]

    # A second pass finds nothing to do.
    again = env.reconcile()
    assert not any(again.values()), again
    for action in ("requeued_lost_running", "failed_lost_running", "closed_batches"):
        assert _metric(env, "pressroom_reconciler_actions_total", f'action="{action}"') == 1

    # The article whose message vanished while Redis stayed up is the operator's to send
    # (`flask batches requeue`); then everything finishes, each body written once.
    _cli(env, "batches", "requeue", str(lost))
    env.workers.start(concurrency=4)
    assert wait_batch_final(env.app, lost)["status"] == "failed"  # one article gave up
    env.wait_queue_drained()
    assert assert_exactly_once(env, [lost, closed]) == {
        "Lease lost once": 1, "Lease lost for good": 0, "Message lost": 1,
        "Finished 1": 0, "Finished 2": 0}


@pytest.mark.slow
def test_an_article_whose_worker_dies_on_its_last_attempt_fails_with_a_message(env):
    title = "Third worker lost"
    env.fake.latency, env.fake.chunks = 4.0, 40
    client = env.client()
    # No worker yet: take the message back, record two earlier lost attempts (as two dead
    # workers would have left them), then send it again.
    batch_id = env.submit(client, "Last attempt", [title])
    _purge(env)
    [article] = article_rows(env, batch_id)
    _set_article(env, article.id, attempts=MAX_ATTEMPTS - 1)
    with env.app.app_context():
        from webapp.generation import dispatch
        dispatch.publish_articles([(article.id, article.task_id)])
    worker = env.workers.start(concurrency=1)
    env.fake.wait_for(lambda: any(r.chunks_sent >= 5 for r in env.fake.requests_for(title)),
                      timeout=30, message="the article to be half-written")
    worker.kill()
    assert article_rows(env, batch_id)[0].attempts == MAX_ATTEMPTS

    wait_until(lambda: env.reconcile()["failed_lost_running"], LEASE_SECONDS + 15,
               "the reconciler to give up on the article")
    [article] = article_rows(env, batch_id)
    assert article.status == "failed" and article.body is None
    assert f"stopped responding {MAX_ATTEMPTS} times" in article.error
    assert batch_state(env.app, batch_id)["status"] == "failed"
    assert assert_exactly_once(env, [batch_id]) == {title: 1}
    assert _metric(env, "pressroom_reconciler_actions_total", 'action="failed_lost_running"') == 1
