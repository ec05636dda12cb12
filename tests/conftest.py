"""Fixtures for the integration suite: every part is real.

- a `redis-server` of our own on a free port (never a developer's 127.0.0.1:6379),
- a real Celery worker process (threads pool, the production command line),
- the real `openai` SDK in that worker, talking over HTTP to tests/fakeai.py,
- the real database: an SQLite file, or PostgreSQL when TEST_DATABASE_URL is set, with the
  schema built by the real migrations (Flask-Migrate's upgrade), not create_all.

`task_always_eager` is never used: tasks go through the broker to the worker process.
The worker's log and Redis's log are kept under test-artifacts/ (worker-<pytest pid>.log,
redis-<pytest pid>.log) to diagnose failures.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import sqlalchemy
from sqlalchemy import delete, update

from tests.fakeai import FakeAI
from tests.fakewp import FakeWordPress
from tests.helpers import login, wait_until
from tests.support import (ACCOUNTS, ARTIFACTS, ECONOMY_POLL_SECONDS, PUBLISH_ALLOWED_HOSTS,
                           PUBLISH_RETRY_BASE, PUBLISH_TIMEOUT, PUBLISHER_WORKER_NAME,
                           RETRY_BASE, ROOT, SECRET_KEY, WEBHOOK_WORKER_NAME, WORKER_NAME,
                           activate_celery, app_config, free_port, migrate_and_seed,
                           stop_process, worker_idle)

# pg_advisory_lock key that serialises test sessions sharing one PostgreSQL database.
PG_SESSION_LOCK = 7_272_024


# -- Redis ------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory, artifacts):
    """A private redis-server: no persistence, its own directory, killed at the end."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed; `make test` installs it "
                    "(apt-get install redis-server)")
    workdir = tmp_path_factory.mktemp("redis")
    # A free port can be taken between our probe and redis binding it: try a few.
    for _ in range(5):
        port = free_port()
        log = open(artifacts / f"redis-{os.getpid()}.log", "w")
        proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir), "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)

        def up():
            if proc.poll() is not None:
                return "exited"
            try:
                return client.ping()
            except redis.ConnectionError:
                return False

        result = wait_until(up, 10, "redis-server to answer PING")
        if result is True:
            break
        log.close()
    else:
        pytest.fail(f"could not start redis-server; see {artifacts}/redis-{os.getpid()}.log")
    client.close()
    yield f"redis://127.0.0.1:{port}/0"
    stop_process(proc, grace=5)
    log.close()


@pytest.fixture(scope="session")
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


# -- the fake provider ---------------------------------------------------------------------

@pytest.fixture(scope="session")
def fake_server():
    with FakeAI() as server:
        yield server


@pytest.fixture
def fake(fake_server):
    """The session's FakeAI with its log, faults and settings reset for this test."""
    fake_server.reset(restore_settings=True)
    return fake_server


# -- the fake WordPress site (publishing) -----------------------------------------------------

@pytest.fixture(scope="session")
def fakewp_server():
    with FakeWordPress() as server:
        yield server


@pytest.fixture
def fakewp(fakewp_server):
    """The session's FakeWordPress as a fresh site for this test: default users, no posts,
    no faults, an empty log (its address: fakewp.url)."""
    fakewp_server.reset()
    return fakewp_server


# -- database and app ---------------------------------------------------------------------

@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        yield "sqlite:///" + str(tmp_path_factory.mktemp("db") / "pressroom-test.sqlite3")
        return
    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT",
                                      poolclass=sqlalchemy.pool.NullPool)
    # Two sessions on the same database would drop each other's schema mid-run: the second
    # waits here for the first to finish (the lock is held by this connection until the end).
    guard = engine.connect()
    guard.exec_driver_sql(f"SELECT pg_advisory_lock({PG_SESSION_LOCK})")
    # A clean schema every session, so the migrations below run from nothing.
    with engine.connect() as conn:
        conn.exec_driver_sql("DROP SCHEMA public CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA public")
    yield url
    guard.close()
    engine.dispose()


@pytest.fixture(scope="session")
def _app(database_url, redis_url, fake_server):
    """The app, with its schema made by the real migrations and two signed-up users."""
    from webapp import create_app
    from webapp.extensions import db

    app = create_app(app_config(database_url, redis_url, fake_server.base_url))
    migrate_and_seed(app)
    yield app
    with app.app_context():
        db.engine.dispose()


class Worker:
    def __init__(self, proc: subprocess.Popen, log_path: Path, celery_app,
                 hooks: subprocess.Popen, hooks_log_path: Path,
                 publisher: subprocess.Popen, publisher_log_path: Path):
        self.proc, self.log_path, self.celery = proc, log_path, celery_app
        # The webhook deliveries' own process (queue `webhooks`), as in the Procfile.
        self.hooks, self.hooks_log_path = hooks, hooks_log_path
        # Publishing to WordPress has its own process too (queue `publishing`).
        self.publisher, self.publisher_log_path = publisher, publisher_log_path

    def check_alive(self) -> None:
        for proc, log_path in ((self.proc, self.log_path), (self.hooks, self.hooks_log_path),
                               (self.publisher, self.publisher_log_path)):
            if proc.poll() is not None:
                pytest.fail(f"a Celery worker exited ({proc.returncode}); see {log_path}")

    def ping(self) -> bool:
        self.check_alive()
        names = {WORKER_NAME, WEBHOOK_WORKER_NAME, PUBLISHER_WORKER_NAME}
        replies = self.celery.control.ping(destination=sorted(names), timeout=0.5)
        return names <= {name for reply in replies for name in reply}


@pytest.fixture(scope="session")
def worker(_app, database_url, redis_url, fake_server, artifacts):
    """One real worker process, as the Procfile runs it, pointed at our Redis, DB and fake."""
    env = dict(os.environ)
    env.pop("PRESSROOM_ENV", None)
    env.update({
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "OPENAI_API_KEY": "test",
        "OPENAI_BASE_URL": fake_server.base_url,
        "OPENAI_MODEL": "gpt-4o-mini",
        "OPENAI_TIMEOUT": "30",
        "GENERATION_RETRY_BASE": str(RETRY_BASE),
        "SECRET_KEY": SECRET_KEY,
        "PYTHONUNBUFFERED": "1",
        # Economy parts are asked about often here (the fake's batches take seconds).
        "ECONOMY_POLL_SECONDS": str(ECONOMY_POLL_SECONDS),
        "ECONOMY_POLL_MAX_SECONDS": "1",
        "OFFLINE_BATCH_STAGE_SECONDS": "0.5",
        "OFFLINE_BATCH_SECONDS_PER_REQUEST": "0.1",
        "PUBLISH_ALLOWED_HOSTS": PUBLISH_ALLOWED_HOSTS,
        "PUBLISH_TIMEOUT": str(PUBLISH_TIMEOUT),
        "PUBLISH_RETRY_BASE": str(PUBLISH_RETRY_BASE),
    })
    celery_bin = Path(sys.executable).with_name("celery")
    # Named after this pytest process: sessions run side by side keep their own logs.
    log_path = artifacts / f"worker-{os.getpid()}.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [str(celery_bin), "-A", "wsgi:celery_app", "worker", "--pool", "threads",
         "--concurrency", "16", "--queues", "generation,celery", "--loglevel", "INFO",
         "-n", WORKER_NAME,
         # One worker only: skip waiting for replies from (non-existent) peers at start-up.
         "--without-mingle", "--without-gossip"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    hooks_log_path = artifacts / f"worker-webhooks-{os.getpid()}.log"
    hooks_log = open(hooks_log_path, "w")
    hooks = subprocess.Popen(
        [str(celery_bin), "-A", "wsgi:celery_app", "worker", "--pool", "threads",
         "--concurrency", "2", "--queues", "webhooks", "--loglevel", "INFO",
         "-n", WEBHOOK_WORKER_NAME, "--without-mingle", "--without-gossip"],
        cwd=ROOT, env=env, stdout=hooks_log, stderr=subprocess.STDOUT)
    publisher_log_path = artifacts / f"worker-publisher-{os.getpid()}.log"
    publisher_log = open(publisher_log_path, "w")
    publisher = subprocess.Popen(
        [str(celery_bin), "-A", "wsgi:celery_app", "worker", "--pool", "threads",
         "--concurrency", "4", "--queues", "publishing", "--loglevel", "INFO",
         "-n", PUBLISHER_WORKER_NAME, "--without-mingle", "--without-gossip"],
        cwd=ROOT, env=env, stdout=publisher_log, stderr=subprocess.STDOUT)
    handle = Worker(proc, log_path, _app.extensions["celery"], hooks, hooks_log_path,
                    publisher, publisher_log_path)
    try:
        wait_until(handle.ping, 60, f"the Celery workers to answer a ping (logs: {log_path}, "
                                    f"{hooks_log_path}, {publisher_log_path})")
        yield handle
    finally:
        stop_process(proc)
        stop_process(hooks)
        stop_process(publisher)
        log.close()
        hooks_log.close()
        publisher_log.close()


# -- per-test state ---------------------------------------------------------------------------

def reset_state(app, worker, redis_client, fake_server) -> None:
    """Let leftover work finish, then delete batches, articles and live keys.

    Waiting first matters: on SQLite, ids are reused once the rows are gone, so a stale
    task message could otherwise act on the next test's article of the same id.
    Redis is not flushed: Celery's `_kombu.binding.*` keys must stay.
    """
    from webapp.extensions import db
    from webapp.models import (Article, ArticleVersion, Batch, BulkAction, BulkActionItem,
                               Destination, ProviderBatch, Publication, User, WebhookDelivery)
    from webapp.services import pollcache

    # Leftovers (a failed test's batch) run fast and fault-free from now on.
    fake_server.reset(restore_settings=True)
    wait_until(lambda: worker_idle(worker, redis_client, fake_server), 90,
               "the worker to finish the previous test's tasks")
    fake_server.wait_idle(timeout=30)
    with app.app_context():
        # Children first: versions and webhook deliveries point at articles and batches,
        # and PostgreSQL (like SQLite with foreign_keys=ON) refuses to orphan them.
        db.session.execute(delete(ArticleVersion))
        db.session.execute(delete(WebhookDelivery))
        db.session.execute(delete(BulkActionItem))
        db.session.execute(delete(BulkAction))
        db.session.execute(delete(ProviderBatch))
        # Publications point at articles and destinations (which a test's admin made).
        db.session.execute(delete(Publication))
        db.session.execute(delete(Destination))
        db.session.execute(delete(Article))
        db.session.execute(delete(Batch))
        # A test that chose a language or a theme for an account leaves the others in English,
        # following the system's theme.
        db.session.execute(update(User).values(ui_language=None, theme=None))
        db.session.commit()
    for pattern in ("pressroom:*", "celery-task-meta-*"):
        keys = list(redis_client.scan_iter(match=pattern, count=1000))
        if keys:
            redis_client.delete(*keys)
    # And this process's copies of the progress renders just deleted from Redis: the next
    # test's batch may have the same id, in the same tick.
    with app.app_context():
        pollcache.forget_recent()


@pytest.fixture
def app(_app, worker, redis_client, fake):
    """The session's app, with a clean slate for each test (and cleaned up after it)."""
    reset_state(_app, worker, redis_client, fake)
    fake.reset(restore_settings=True)
    yield _app
    reset_state(_app, worker, redis_client, fake)


@pytest.fixture
def celery_app(app):
    return app.extensions["celery"]


@pytest.fixture
def accounts():
    return ACCOUNTS


@pytest.fixture
def anon_client(app):
    return app.test_client()


@pytest.fixture
def client(app):
    """A browser signed in as an editor, through the real sign-in form (CSRF on)."""
    c = app.test_client()
    login(c, *ACCOUNTS["editor"])
    return c


@pytest.fixture
def admin_client(app):
    c = app.test_client()
    login(c, *ACCOUNTS["admin"])
    return c


@pytest.fixture
def api_headers(app):
    """Bearer token of the editor, made by webapp.services.users.create_user."""
    return {"Authorization": f"Bearer {app.config['TEST_TOKENS']['editor']}"}


@pytest.fixture
def make_app(_app, database_url, redis_url, fake_server):
    """Build a second app with different settings (e.g. a broker that is down).

    create_app() makes its Celery app the process default and re-binds the shared
    Flask-Limiter instance, so both are put back for the main app afterwards.
    """
    from webapp import create_app
    from webapp.extensions import db, limiter

    made = []
    saved = (limiter._storage, limiter._limiter, dict(limiter._storage_options))

    def build(**overrides):
        other = create_app(app_config(database_url, redis_url, fake_server.base_url, **overrides))
        made.append(other)
        return other

    yield build
    for other in made:
        with other.app_context():
            db.engine.dispose()
    limiter._storage, limiter._limiter = saved[0], saved[1]
    limiter._storage_options.clear()
    limiter._storage_options.update(saved[2])
    activate_celery(_app)
