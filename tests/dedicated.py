"""Workers of a test module's own, for settings the session worker does not have.

The session worker (conftest) runs with the suite's defaults. A test that needs another
setting on the worker side (a short OPENAI_TIMEOUT, RATE_LIMITS, BATCH_MAX_CONCURRENCY,
WEBHOOK_SECRET...) gets a `Dedicated`: one or more worker processes started with the
production command line and their own environment, plus a second Flask app configured the
same way for the test to submit through.

Isolation: a dedicated setup uses its own Redis *database number* (broker, results, live
keys, limiter keys), so the session worker, which consumes `generation` on database 0,
never takes its tasks, and kombu's fanout channels (control/ping) are prefixed by database
number too. The SQL database and FakeAI are shared with the rest of the suite.
"""
from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import redis
from tests.support import (ACCOUNTS, PUBLISH_ALLOWED_HOSTS, PUBLISH_RETRY_BASE, PUBLISH_TIMEOUT,
                           RETRY_BASE, ROOT, SECRET_KEY, activate_celery, app_config,
                           stop_process)
from tests.helpers import login, wait_until

# Deadline for a worker process to start and answer a ping: generous for a loaded 2-core box.
START_TIMEOUT = 60.0
IDLE_TIMEOUT = 90.0


def redis_db_url(redis_url: str, db_index: int) -> str:
    """The session's Redis URL with another database number."""
    base, _, _ = redis_url.rpartition("/")
    return f"{base}/{db_index}"


class Dedicated:
    """Worker processes and an app that share one private Redis database."""

    def __init__(self, name: str, session_app, database_url: str, redis_url: str, fake,
                 artifacts: Path, db_index: int, settings: dict, processes: int = 1,
                 concurrency: int = 16, flush: bool = True, webhooks: bool = False,
                 publishing: bool = False):
        from webapp import create_app
        from webapp.extensions import limiter

        self.name, self.session_app, self.fake = name, session_app, fake
        self.redis_url = redis_db_url(redis_url, db_index)
        self.redis = redis.Redis.from_url(self.redis_url)
        # Nothing of another module that used this database number earlier in the session
        # (unless the test means to keep what an earlier setup left there).
        if flush:
            self.redis.flushdb()
        # create_app re-binds the shared Flask-Limiter and makes its Celery the default:
        # put both back for the session app (as conftest's make_app does).
        saved = (limiter._storage, limiter._limiter, dict(limiter._storage_options))
        self.app = create_app(app_config(database_url, self.redis_url, fake.base_url,
                                         **_app_types(settings)))
        limiter._storage, limiter._limiter = saved[0], saved[1]
        limiter._storage_options.clear()
        limiter._storage_options.update(saved[2])
        activate_celery(session_app)
        self.celery = self.app.extensions["celery"]

        env = dict(os.environ)
        env.pop("PRESSROOM_ENV", None)
        env.update({
            "DATABASE_URL": database_url,
            "REDIS_URL": self.redis_url,
            "OPENAI_API_KEY": "test",
            "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_MODEL": "gpt-4o-mini",
            "OPENAI_TIMEOUT": "30",
            "GENERATION_RETRY_BASE": str(RETRY_BASE),
            "SECRET_KEY": SECRET_KEY,
            "PYTHONUNBUFFERED": "1",
            # These tests read the per-task log lines (off by default in production).
            "CELERY_TASK_LOG": "1",
            "PUBLISH_ALLOWED_HOSTS": PUBLISH_ALLOWED_HOSTS,
            "PUBLISH_TIMEOUT": str(PUBLISH_TIMEOUT),
            "PUBLISH_RETRY_BASE": str(PUBLISH_RETRY_BASE),
        })
        env.update({k: str(v) for k, v in settings.items()})
        celery_bin = Path(sys.executable).with_name("celery")
        # (node name, queues, threads, log name): generation workers, and with `webhooks`
        # one process for webhook deliveries as the Procfile runs it.
        workers = [(f"pressroom-{name}-{i}-{os.getpid()}@localhost", "generation,celery",
                    concurrency, str(i)) for i in range(processes)]
        if webhooks:
            workers.append((f"pressroom-{name}-webhooks-{os.getpid()}@localhost", "webhooks",
                            2, "webhooks"))
        if publishing:
            # Publishing to WordPress, as the Procfile's `publisher` runs it.
            workers.append((f"pressroom-{name}-publisher-{os.getpid()}@localhost",
                            "publishing", 4, "publisher"))
        self._commands = {}
        self.hostnames = [worker[0] for worker in workers]
        self.procs, self.logs = [], []
        for hostname, queues, threads, log_name in workers:
            log_path = artifacts / f"worker-{name}-{log_name}.log"
            log = open(log_path, "w")
            self.logs.append((log_path, log))
            command = [str(celery_bin), "-A", "wsgi:celery_app", "worker", "--pool", "threads",
                       "--concurrency", str(threads), "--queues", queues,
                       "--loglevel", "INFO", "-n", hostname, "--without-mingle",
                       "--without-gossip"]
            self._commands[len(self.procs)] = (command, env)
            self.procs.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                               stderr=subprocess.STDOUT))
        try:
            wait_until(self.ping, START_TIMEOUT, f"the {name} worker(s) to answer a ping "
                       f"(logs: {[str(p) for p, _ in self.logs]})")
        except BaseException:
            self.stop()
            raise

    # -- health ---------------------------------------------------------------------------

    def check_alive(self) -> None:
        for proc, (log_path, _) in zip(self.procs, self.logs):
            if proc.poll() is not None:
                raise AssertionError(f"a {self.name} worker exited ({proc.returncode}); "
                                     f"see {log_path}")

    def ping(self) -> bool:
        self.check_alive()
        replies = self.celery.control.ping(destination=self.hostnames, timeout=0.5)
        answered = {name for reply in replies for name in reply}
        return answered >= set(self.hostnames)

    def idle(self) -> bool:
        """Nothing queued, nothing reserved or running on this Redis database (acks are
        late, so a message stays in `unacked` until its task has ended)."""
        self.check_alive()
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen("generation").llen("celery").llen("webhooks").llen("publishing")
        pipe.hlen("unacked")
        generation, default, hooks, publishing, unacked = pipe.execute()
        return (generation == 0 and default == 0 and hooks == 0 and publishing == 0
                and unacked == 0 and self.fake.in_flight == 0)

    def kill(self, index: int) -> None:
        """SIGKILL one of the worker processes (by the pid we started): no warm shutdown,
        no acknowledgement."""
        proc = self.procs[index]
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    def respawn(self, index: int) -> None:
        """Start a killed worker process again, with the same command line and node name,
        and wait until it answers a ping."""
        command, env = self._commands[index]
        log_path, log = self.logs[index]
        self.procs[index] = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                             stderr=subprocess.STDOUT)
        wait_until(self.ping, START_TIMEOUT, f"the respawned {self.name} worker to answer "
                   f"a ping (log: {log_path})")

    def wait_idle(self, timeout: float = IDLE_TIMEOUT) -> None:
        wait_until(self.idle, timeout, f"the {self.name} worker to finish its tasks")

    # -- per test ---------------------------------------------------------------------------

    def clean_keys(self) -> None:
        """Live keys, probes, limits and results of earlier tests: ids are reused on SQLite,
        so a stale probe or cancel flag could otherwise act on a new batch."""
        for pattern in ("pressroom:*", "pressroom-provider*", "celery-task-meta-*"):
            keys = list(self.redis.scan_iter(match=pattern, count=1000))
            if keys:
                self.redis.delete(*keys)
        from webapp.services import pollcache
        with self.app.app_context():  # the copies of the progress renders deleted above
            pollcache.forget_recent()

    @contextmanager
    def in_use(self):
        """For one test: this app's Celery is the current one; afterwards wait until the
        worker is idle (conftest's reset_state only waits for the session worker) and give
        Celery back."""
        self.wait_idle()
        self.clean_keys()
        activate_celery(self.app)
        try:
            yield self
        finally:
            # Leftovers (a failed test's batch) run fast and fault-free from now on.
            self.fake.reset(restore_settings=True)
            try:
                self.wait_idle()
                self.fake.wait_idle(timeout=30)
            finally:
                # The rows go in conftest's reset_state, which runs after this.
                self.clean_keys()
                activate_celery(self.session_app)

    def client(self, role: str = "editor"):
        """A browser of this app, signed in through the real form."""
        browser = self.app.test_client()
        login(browser, *ACCOUNTS[role])
        return browser

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            stop_process(proc)
        for _, log in self.logs:
            log.close()
        from webapp.extensions import db
        with self.app.app_context():
            db.engine.dispose()
        self.redis.close()


def _app_types(settings: dict) -> dict:
    """Environment strings as the Flask config holds them (config.py's casts)."""
    floats = {"OPENAI_TIMEOUT", "GENERATION_RETRY_BASE", "OPENAI_STREAM_IDLE_TIMEOUT",
              "WEBHOOK_TIMEOUT", "PUBLISH_TIMEOUT", "PUBLISH_RETRY_BASE", "PUBLISH_RETRY_MAX"}
    ints = {"GENERATION_MAX_ATTEMPTS", "BATCH_MAX_CONCURRENCY", "WEBHOOK_MAX_ATTEMPTS",
            "ARTICLE_LEASE_SECONDS", "DISPATCH_INLINE_MAX", "PUBLISH_CONCURRENCY",
            "PUBLISH_MAX_ATTEMPTS"}
    out = {}
    for key, value in settings.items():
        if key in floats:
            out[key] = float(value)
        elif key in ints:
            out[key] = int(value)
        else:
            out[key] = value
    return out
