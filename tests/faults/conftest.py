"""Processes that the fault tests own, and may kill, freeze or wipe.

Each test module gets its own:

- `redis-server` (with a pid file, on a free port that is kept across restarts, so a Redis
  "restarted empty" comes back where every client expects it),
- database: an SQLite file, or, when TEST_DATABASE_URL is set, a PostgreSQL database of its
  own (`pr_faults_<pid>_<module>`, created and dropped here, so other suites using the same
  server are never disturbed), with the schema built by the real migrations,
- FakeAI (the OpenAI-compatible server with fault injection and a request log),
- app, from `webapp.create_app(test_config)` with short leases and socket timeouts.

Each test starts the Celery worker processes it needs (the production command line, each
with a `--pidfile`) through the `env.workers` factory; they are killed when the test ends.
Every process is signalled by the pid we started, never by name.

Between tests Redis is flushed (it is ours alone), the batch tables are emptied and the
FakeAI log is reset, so no message, flag or row survives into the next test.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest
import redis
import sqlalchemy
from sqlalchemy import delete, func, select

from tests.support import (ACCOUNTS, ARTIFACTS, RETRY_BASE, ROOT, SECRET_KEY, activate_celery,
                           app_config, free_port, migrate_and_seed)
from tests.fakeai import FakeAI
from tests.helpers import batch_id_from_location, login, submit_form, wait_until

# Short enough that a lost worker's article is taken over within seconds.
LEASE_SECONDS = 3
# A frozen or stopped Redis must fail a request in about this long, not hang it.
SOCKET_TIMEOUT = 1.0
OPENAI_TIMEOUT = 30.0
MAX_ATTEMPTS = 3
# Heartbeats every second (WORKER_HEARTBEAT_EVERY), so "not responding" shows after ~3 s.
HEARTBEAT_EVERY = 1.0
METRICS_TOKEN = "faults-metrics-token-0123456789"
# Worker start-up: importing the app and connecting, on a loaded 2-core machine.
START_TIMEOUT = 60.0
FAULT_ARTIFACTS = ARTIFACTS / "faults"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


# -- Redis ------------------------------------------------------------------------------

class RedisServer:
    """A redis-server of our own: no persistence, so a restart really comes back empty."""

    def __init__(self, workdir: Path, log_path: Path):
        self.workdir, self.log_path = workdir, log_path
        self.pidfile = workdir / "redis.pid"
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        self.frozen = False
        self._log = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def client(self, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=timeout,
                           socket_connect_timeout=timeout)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed; `make test` installs it")
        # The first start picks a free port; restarts reuse it (a free port can be taken
        # between our probe and redis binding it, hence the retries the first time).
        for _ in range(1 if self.port else 5):
            port = self.port or free_port()
            self._log = open(self.log_path, "a")
            self.pidfile.unlink(missing_ok=True)
            self.proc = subprocess.Popen(
                [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.workdir), "--pidfile", str(self.pidfile),
                 "--daemonize", "no"],
                stdout=self._log, stderr=subprocess.STDOUT)
            self.frozen = False
            probe = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1,
                                socket_connect_timeout=1)

            def up():
                if self.proc.poll() is not None:
                    return "exited"
                try:
                    return probe.ping()
                except redis.RedisError:
                    return False
            try:
                result = wait_until(up, 15, "redis-server to answer PING")
            finally:
                probe.close()
            if result is True:
                self.port = port
                # The pid file is how an operator would find it; it must name our child.
                wait_until(lambda: self.pidfile.exists() and self.pidfile.read_text().strip(),
                           5, "redis-server to write its pid file")
                assert int(self.pidfile.read_text()) == self.proc.pid
                return
            self._log.close()
        pytest.fail(f"could not start redis-server; see {self.log_path}")

    def _signal(self, sig: int) -> None:
        if self.running():
            os.kill(self.proc.pid, sig)

    def freeze(self) -> None:
        """SIGSTOP: connections are accepted by the kernel but nothing is answered."""
        self._signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)
        self.frozen = False

    def stop(self) -> None:
        """A clean shutdown (SIGTERM); no data is saved (no persistence)."""
        if not self.running():
            return
        self.thaw()
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL (works on a frozen process too): everything in memory is lost."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.frozen = False
        if self._log:
            self._log.close()

    def restart_empty(self) -> None:
        self.kill()
        self.start()


# -- Celery workers ----------------------------------------------------------------------

class FaultWorker:
    """One `celery worker` process (threads pool, as the Procfile runs it)."""

    def __init__(self, hostname: str, proc: subprocess.Popen, pidfile: Path, log_path: Path, log):
        self.hostname, self.proc, self.pidfile, self.log_path = hostname, proc, pidfile, log_path
        self._log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no warm shutdown, no acknowledgement, no goodbye."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 30.0) -> None:
        """SIGTERM: Celery's warm shutdown (running tasks finish, nothing new starts)."""
        if self.alive():
            os.kill(self.pid, signal.SIGCONT)
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGCONT)

    def close(self) -> None:
        self.kill()
        self._log.close()


class Workers:
    """Starts workers for one test, and kills every one of them when the test ends."""

    def __init__(self, env: "FaultEnv", test_name: str):
        self.env, self.test_name = env, test_name
        self.started: list[FaultWorker] = []

    def environment(self, **overrides) -> dict:
        env = dict(os.environ)
        env.pop("PRESSROOM_ENV", None)
        env.update({
            "DATABASE_URL": self.env.database_url,
            "REDIS_URL": self.env.redis.url,
            "OPENAI_API_KEY": "test",
            "OPENAI_BASE_URL": self.env.fake.base_url,
            "OPENAI_MODEL": "gpt-4o-mini",
            "OPENAI_TIMEOUT": str(OPENAI_TIMEOUT),
            "GENERATION_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
            "GENERATION_RETRY_BASE": str(RETRY_BASE),
            "ARTICLE_LEASE_SECONDS": str(LEASE_SECONDS),
            "REDIS_SOCKET_TIMEOUT": str(SOCKET_TIMEOUT),
            "WORKER_HEARTBEAT_EVERY": str(HEARTBEAT_EVERY),
            "SECRET_KEY": SECRET_KEY,
            "PYTHONUNBUFFERED": "1",
            # These tests read the per-task log lines (off by default in production).
            "CELERY_TASK_LOG": "1",
        })
        env.update({k: str(v) for k, v in overrides.items()})
        return env

    def start(self, concurrency: int = 4, queues: str = "generation,celery",
              app_module: str = "wsgi:celery_app", wait: bool = True, **env) -> FaultWorker:
        n = len(self.started) + 1
        hostname = f"faults-{os.getpid()}-{self.test_name[:40]}-{n}@localhost"
        pidfile = self.env.tmp / f"worker-{n}.pid"
        # Written in this run's own directory (tests read it; a concurrent run of the suite
        # must not write into it), copied to test-artifacts/faults/ when the test ends.
        log_path = self.env.tmp / f"worker-{n}.log"
        log = open(log_path, "w")
        celery_bin = Path(sys.executable).with_name("celery")
        proc = subprocess.Popen(
            [str(celery_bin), "-A", app_module, "worker", "--pool", "threads",
             "--concurrency", str(concurrency), "--queues", queues, "--loglevel", "INFO",
             "-n", hostname, "--pidfile", str(pidfile),
             "--without-mingle", "--without-gossip"],
            cwd=ROOT, env=self.environment(**env), stdout=log, stderr=subprocess.STDOUT)
        worker = FaultWorker(hostname, proc, pidfile, log_path, log)
        self.started.append(worker)
        if wait:
            self.wait_ready(worker)
        return worker

    def wait_ready(self, worker: FaultWorker, timeout: float = START_TIMEOUT) -> None:
        """Ready once its heartbeat (written at Celery's worker_ready) names its pid."""
        client = self.env.redis.client()

        def ready():
            if not worker.alive():
                pytest.fail(f"worker {worker.hostname} exited ({worker.proc.returncode}):\n"
                            + worker.log_text()[-3000:])
            try:
                pid = client.hget("pressroom:worker:" + worker.hostname, "pid")
            except redis.RedisError:
                return False
            return pid is not None and int(pid) == worker.pid
        try:
            wait_until(ready, timeout, f"worker {worker.hostname} to be ready ({worker.log_path})")
        finally:
            client.close()
        # Celery writes the pid file; it names the process we started.
        assert int(worker.pidfile.read_text().strip()) == worker.pid

    def close_all(self) -> None:
        for n, worker in enumerate(self.started, 1):
            worker.close()
            shutil.copyfile(worker.log_path, FAULT_ARTIFACTS / f"{self.test_name}-worker-{n}.log")


# -- the database --------------------------------------------------------------------------

@contextlib.contextmanager
def own_database(name: str, sqlite_dir: Path):
    """An SQLite file, or a PostgreSQL database `pr_faults_<pid>_<name>` on the server of
    TEST_DATABASE_URL, created empty and dropped afterwards (other suites share the server)."""
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        yield "sqlite:///" + str(sqlite_dir / f"{name}.sqlite3")
        return
    database = f"pr_faults_{os.getpid()}_{name}"[:63]
    admin = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{database}"')
    try:
        yield sqlalchemy.engine.make_url(base).set(database=database).render_as_string(
            hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="module")
def fault_database_url(tmp_path_factory, request):
    module = _slug(request.module.__name__.rpartition(".")[2])
    with own_database(module, tmp_path_factory.mktemp("faultdb")) as url:
        yield url


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


# -- the module's processes and app ----------------------------------------------------------

@pytest.fixture(scope="module")
def fault_redis(tmp_path_factory, request):
    FAULT_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    module = _slug(request.module.__name__.rpartition(".")[2])
    workdir = tmp_path_factory.mktemp("faultredis")
    server = RedisServer(workdir, workdir / "redis.log")
    server.start()
    yield server
    server.kill()
    shutil.copyfile(server.log_path, FAULT_ARTIFACTS / f"{module}-redis.log")


@pytest.fixture(scope="module")
def fault_fake():
    with FakeAI() as server:
        yield server


@contextlib.contextmanager
def preserved_globals():
    """create_app() re-binds the shared Flask-Limiter and makes its Celery the default:
    put both back afterwards, for the rest of the suite (as tests/conftest.py's make_app)."""
    from celery import _state

    from webapp.extensions import limiter

    saved = (limiter._storage, limiter._limiter, dict(limiter._storage_options))
    saved_celery = _state.default_app
    try:
        yield
    finally:
        limiter._storage, limiter._limiter = saved[0], saved[1]
        limiter._storage_options.clear()
        limiter._storage_options.update(saved[2])
        if saved_celery is not None:
            saved_celery.set_default()
            saved_celery.set_current()


def fault_settings(database_url: str, redis_url: str, fake_url: str, **overrides) -> dict:
    return app_config(database_url, redis_url, fake_url, **{
        "ARTICLE_LEASE_SECONDS": LEASE_SECONDS,
        "REDIS_SOCKET_TIMEOUT": SOCKET_TIMEOUT,
        "OPENAI_TIMEOUT": OPENAI_TIMEOUT,
        "GENERATION_MAX_ATTEMPTS": MAX_ATTEMPTS,
        "GENERATION_RETRY_BASE": RETRY_BASE,
        "METRICS_TOKEN": METRICS_TOKEN,
        **overrides})


def build_app(database_url: str, redis_url: str, fake_url: str, **overrides):
    """create_app with the fault settings, its Celery client timeouts matching them.

    celeryconfig reads REDIS_SOCKET_TIMEOUT from the environment once, at import (this test
    process imported it with the default); a web process started with REDIS_SOCKET_TIMEOUT=1
    would have these values, so they are set to match.
    """
    from webapp import create_app

    app = create_app(fault_settings(database_url, redis_url, fake_url, **overrides))
    conf = app.extensions["celery"].conf
    timeout = app.config["REDIS_SOCKET_TIMEOUT"]
    conf.broker_transport_options = {**conf.broker_transport_options,
                                     "socket_timeout": timeout, "socket_connect_timeout": timeout}
    conf.broker_connection_timeout = timeout
    conf.redis_socket_timeout = timeout
    conf.redis_socket_connect_timeout = timeout
    return app


@pytest.fixture(scope="module")
def fault_app(fault_database_url, fault_redis, fault_fake):
    from webapp.extensions import db

    with preserved_globals():
        app = build_app(fault_database_url, fault_redis.url, fault_fake.base_url)
        migrate_and_seed(app)
        yield app
        with app.app_context():
            db.engine.dispose()


# -- per test --------------------------------------------------------------------------------

class FaultEnv:
    """What a fault test works with: the app, its Redis, FakeAI, and a worker factory."""

    def __init__(self, app, redis_server: RedisServer, fake: FakeAI, database_url: str,
                 tmp: Path, test_name: str):
        self.app, self.redis, self.fake = app, redis_server, fake
        self.database_url, self.tmp = database_url, tmp
        self.workers = Workers(self, test_name)

    @property
    def sqlite(self) -> bool:
        return is_sqlite(self.database_url)

    def client(self, role: str = "editor"):
        c = self.app.test_client()
        login(c, *ACCOUNTS[role])
        return c

    def submit(self, client, name: str, titles: list[str], **fields) -> int:
        response = submit_form(client, name, titles, **fields)
        return batch_id_from_location(response)

    def reconcile(self) -> dict:
        """One reconciler pass, as beat would run it (the task body, in this process)."""
        from webapp.generation import reconciler
        with self.app.app_context():
            return reconciler.reconcile()

    def queue_state(self) -> tuple[int, int]:
        """(messages waiting in `generation`, messages delivered but not acknowledged)."""
        client = self.redis.client()
        try:
            return client.llen("generation"), client.hlen("unacked")
        finally:
            client.close()

    def wait_queue_drained(self, timeout: float = 60.0) -> None:
        wait_until(lambda: self.queue_state() == (0, 0), timeout,
                   "every message to be consumed and acknowledged")


def _clean_tables(app) -> None:
    from webapp.extensions import db
    from webapp.models import Article, ArticleVersion, Batch, WebhookDelivery

    with app.app_context():
        # Children first: PostgreSQL (and SQLite with foreign_keys=ON) refuses orphans.
        for model in (ArticleVersion, WebhookDelivery, Article, Batch):
            db.session.execute(delete(model))
        db.session.commit()


@pytest.fixture
def env(fault_app, fault_redis, fault_fake, fault_database_url, tmp_path, request,
        monkeypatch):
    from webapp import workerstate

    # The web side must judge heartbeats by the same period the workers use.
    monkeypatch.setattr(workerstate, "EVERY", HEARTBEAT_EVERY)
    if fault_redis.frozen:
        fault_redis.thaw()
    if not fault_redis.running():
        fault_redis.start()
    client = fault_redis.client()
    client.flushall()
    client.close()
    _clean_tables(fault_app)
    fault_fake.reset(restore_settings=True)
    activate_celery(fault_app)
    environment = FaultEnv(fault_app, fault_redis, fault_fake, fault_database_url, tmp_path,
                           _slug(request.node.name)[:60])
    yield environment
    environment.workers.close_all()
    if fault_redis.frozen:
        fault_redis.thaw()
    fault_fake.reset(restore_settings=True)


# -- what every fault test checks at the end ------------------------------------------------

def assert_exactly_once(env: FaultEnv, batch_ids: list[int], max_requests: int = 1) -> dict:
    """Every article has one final state, a body iff it succeeded, one stored 'generated'
    version iff it succeeded, and at most `max_requests` provider requests for its title.

    Returns {title: requests} for the caller's own, tighter checks.
    """
    from webapp.extensions import db
    from webapp.models import Article, ArticleStatus as A, ArticleVersion, Batch, BatchStatus as B

    with env.app.app_context():
        articles = db.session.scalars(select(Article).where(Article.batch_id.in_(batch_ids))
                                      .order_by(Article.id)).all()
        versions = dict(db.session.execute(
            select(ArticleVersion.article_id, func.count())
            .where(ArticleVersion.source == "generated")
            .group_by(ArticleVersion.article_id)).all())
        batch_states = dict(db.session.execute(
            select(Batch.id, Batch.status).where(Batch.id.in_(batch_ids))).all())
    assert articles, "no articles to check"
    for batch_id in batch_ids:
        assert batch_states[batch_id] in B.FINAL, (batch_id, batch_states[batch_id])
    requests = {}
    for a in articles:
        assert a.status in A.FINAL, (a.title, a.status)
        assert a.finished_at is not None, (a.title, "no finished_at")
        succeeded = a.status == A.SUCCEEDED
        assert (a.body is not None) == succeeded, (a.title, a.status, a.body and a.body[:40])
        assert versions.get(a.id, 0) == (1 if succeeded else 0), \
            (a.title, a.status, f"{versions.get(a.id, 0)} generated versions")
        if succeeded:
            assert a.body.startswith(f"# {a.title}\n"), (a.title, a.body[:60])
        n = len(env.fake.requests_for(a.title))
        assert n <= max_requests, f"{a.title}: {n} provider requests (at most {max_requests})"
        if succeeded:
            assert n >= 1, f"{a.title}: a body without a provider request"
        requests[a.title] = n
    return requests


def elapsed(fn, *args, **kwargs):
    """(result, seconds) of one call."""
    started = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - started


def record_figure(name: str, value: str) -> None:
    """Keep a measured figure (latencies, counts) in test-artifacts/faults/figures.txt."""
    FAULT_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    db_kind = "postgresql" if os.environ.get("TEST_DATABASE_URL") else "sqlite"
    with open(FAULT_ARTIFACTS / "figures.txt", "a") as out:
        out.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [{db_kind}] {name}: {value}\n")


def article_rows(env: FaultEnv, batch_id: int) -> list:
    from webapp.extensions import db
    from webapp.models import Article

    with env.app.app_context():
        rows = db.session.scalars(select(Article).where(Article.batch_id == batch_id)
                                  .order_by(Article.position)).all()
        db.session.expunge_all()
        return rows


def task_log_lines(worker: FaultWorker, task_id: str) -> list[str]:
    """The worker's log lines about one task id (received, succeeded with its result...)."""
    return [line for line in worker.log_text().splitlines() if task_id in line]
