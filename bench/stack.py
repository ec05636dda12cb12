"""The system under test, shared by every phase: Redis, FakeAI, the database, the app and
its Celery workers, and the small helpers the phases measure with.

`Bench` holds what one run started (bench/procs.py starts and stops the processes) and
what the phases record: `figures` (the headline numbers, see GOALS in bench/run.py),
`details` (the breakdown) and `errors`. A phase is a function of a `Bench`; the runner
(bench/run.py) starts the workers it asks for before its clocks start.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import subprocess
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from bench.procs import (ROOT, VENV_BIN, FakeAIProcess, Procs, cpu_seconds, free_port,
                         start_redis, wait_for_port)

# 32 articles in flight, as two worker processes of 16 threads: a worker spends about
# 13 ms of CPU per article, and one process runs Python on one core at a time (the GIL),
# so one process of 32 threads would measure the GIL, not Pressroom as deployed.
WORKER_PROCESSES, WORKER_THREADS = 2, 16
CONCURRENCY = WORKER_PROCESSES * WORKER_THREADS
# The per-batch cap on the bench workers: at least the articles in flight, so that it
# never holds back a phase that measures 32 at once.
BATCH_CAP = max(32, CONCURRENCY)


def worker_env(**extra) -> tuple:
    return tuple(sorted(extra.items()))


# Which workers a phase runs against: (processes, threads per process, extra env).
DEFAULT_WORKERS = (WORKER_PROCESSES, WORKER_THREADS, ())


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.01):
    """Poll predicate() until it returns something truthy; TimeoutError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Bench:
    def __init__(self, args, tmp: Path, procs: Procs):
        self.args, self.tmp, self.procs = args, tmp, procs
        self.figures: dict = {}
        self.details: dict = {}
        self.errors: dict = {}
        self.workers: list[subprocess.Popen] = []
        self.worker_spec = None
        self.worker_starts = 0
        self.gunicorn_starts = 0
        self.session_cookie = None
        # Handed from one phase to a later one: poll's URL to load, submit's batch to memory.
        self.poll_path: str | None = None
        self.submit_batch_id: int | None = None

    # -- set-up -------------------------------------------------------------------------

    def setup(self, fake_latency: float) -> None:
        self.redis_url, _ = start_redis(self.procs)
        self.fake = FakeAIProcess(self.procs, latency=fake_latency)
        db_path = self.tmp / "bench.sqlite3"
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{db_path}",
            "REDIS_URL": self.redis_url,
            "OPENAI_API_KEY": "bench",
            "OPENAI_BASE_URL": self.fake.base_url,
            "SECRET_KEY": "bench-" + uuid.uuid4().hex,
            "BATCH_MAX_CONCURRENCY": str(BATCH_CAP),
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                          if p),
        }
        self.env.pop("PRESSROOM_ENV", None)
        # The in-process app reads the same settings as the worker and gunicorn.
        os.environ.update({k: v for k, v in self.env.items() if k != "PYTHONPATH"})
        os.environ.pop("PRESSROOM_ENV", None)

        from flask_migrate import upgrade

        from webapp import create_app
        from webapp.models import Role
        from webapp.services import users

        self.app = create_app({"SQLALCHEMY_DATABASE_URI": self.env["DATABASE_URL"],
                               "REDIS_URL": self.redis_url})
        self.ctx = self.app.app_context()
        self.ctx.push()
        upgrade()
        user, self.password, self.api_token = users.create_user("bench@localhost", Role.ADMIN)
        self.user_id = user.id
        self.celery = self.app.extensions["celery"]
        from webapp.extensions import get_redis
        self.redis = get_redis()
        log(f"redis {self.redis_url}, fake {self.fake.base_url}, db {db_path}")

    # -- workers ----------------------------------------------------------------------------

    def ensure_workers(self, spec) -> None:
        """Run the workers a phase asks for: (processes, threads each, extra env)."""
        if spec is None or spec == self.worker_spec:
            return
        self.stop_workers()
        processes, threads, extra_env = spec
        self.worker_starts += 1
        env = {**self.env, **dict(extra_env)}
        include = ",".join(["bench.seedtasks"]
                           + [m for m in self.args.worker_include.split(",") if m])
        started = time.monotonic()
        names = []
        for i in range(processes):
            name = f"worker{self.worker_starts}.{i + 1}"
            names.append(name)
            self.workers.append(self.procs.spawn(name, [
                str(VENV_BIN / "celery"), "-A", "wsgi:celery_app", "worker", "--pool", "threads",
                "--concurrency", str(threads), "--queues", "generation,celery",
                "--include", include, "--loglevel", "INFO",
                "-n", f"bench{self.worker_starts}-{i + 1}-{os.getpid()}@%h",
                *self.args.worker_args.split(),
            ], env=env))
        self.worker_spec = spec
        # Every process must be consuming before a phase starts (else the first one takes
        # the first messages alone); then a task end to end proves the whole path works.
        try:
            wait_until(lambda: all(" ready." in self.procs.tail(n, 200) for n in names), 90,
                       "the Celery workers to be ready", interval=0.1)
            self.wait_results(self.send_noops(processes), timeout=60)
            # Warm: a first article pays for connections, compiled statements and the SDK
            # client in each thread; a long-running deployment has paid for them already.
            self.set_fake(latency=0.0, chunks=10, words=120)
            self.wait_batch_final(self.submit([f"Warm-up article {i}" for i in
                                               range(processes * threads * 2)],
                                              "bench warm-up"), timeout=120)
        except TimeoutError:
            raise RuntimeError("the Celery workers did not start:\n"
                               + "\n".join(self.procs.tail(n) for n in names))
        log(f"{processes} worker process(es) × {threads} threads ready in "
            f"{time.monotonic() - started:.1f} s"
            + (f" with {', '.join(k for k, _ in extra_env)}" if extra_env else ""))

    def stop_workers(self) -> None:
        for proc in self.workers:
            self.procs.stop(proc, grace=10)
        self.workers, self.worker_spec = [], None

    def workers_cpu(self) -> float:
        """CPU seconds of the running worker processes together."""
        return sum(cpu_seconds(w.pid) for w in self.workers)

    def cpu(self) -> dict:
        """CPU seconds so far of this process, each started process and the workers."""
        out = {"bench": sum(os.times()[:2])}
        for name, proc in self.procs.started:
            # gunicorn's work is in forked workers; see the load figures.
            if not name.startswith(("gunicorn", "worker")):
                out[name] = cpu_seconds(proc.pid)
        out["workers"] = self.workers_cpu()
        return out

    # -- batches, tasks and the provider ----------------------------------------------------

    @property
    def user(self):
        """The bench's user in the current session (sessions end when the test client's
        requests pop the bench's app context, which would detach a kept instance)."""
        from webapp.extensions import db
        from webapp.models import User
        return db.session.get(User, self.user_id)

    def submit(self, titles: list[str], name: str):
        from webapp.services import submission
        sub = submission.submit(self.user, {"name": name, "titles": titles, "target_words": 600})
        if sub.batch is None or sub.dispatch_error:
            raise RuntimeError(f"submit failed: {sub.errors.fields or sub.dispatch_error}")
        return sub.batch.id

    def batch_status(self, batch_id: int) -> str:
        from webapp.extensions import db
        from webapp.models import Batch
        status = db.session.scalar(db.select(Batch.status).where(Batch.id == batch_id))
        db.session.rollback()  # no read transaction left open between polls
        return status

    def wait_batch_final(self, batch_id: int, timeout: float) -> str:
        from webapp.models import BatchStatus
        return wait_until(lambda: (s := self.batch_status(batch_id)) in BatchStatus.FINAL and s,
                          timeout, f"batch {batch_id} to finish", interval=0.02)

    def article_counts(self, batch_id: int) -> dict:
        from webapp.extensions import db
        from webapp.models import Article
        rows = db.session.execute(db.select(Article.status, db.func.count())
                                  .where(Article.batch_id == batch_id)
                                  .group_by(Article.status)).all()
        db.session.rollback()
        return dict(rows)

    def article_timings(self, batch_id: int, t_submit: datetime) -> dict:
        """Where the time went, from the rows: queueing before start, and article durations."""
        from webapp.extensions import db
        from webapp.models import Article
        rows = db.session.execute(db.select(Article.started_at, Article.finished_at)
                                  .where(Article.batch_id == batch_id)).all()
        db.session.rollback()
        durations = [(f - s).total_seconds() for s, f in rows if s and f]
        starts = sorted((s - t_submit).total_seconds() for s, _ in rows if s)
        if not durations:
            return {}
        return {"article_duration_p50_s": round(statistics.median(durations), 3),
                "article_duration_max_s": round(max(durations), 3),
                "first_start_after_submit_s": round(starts[0], 3),
                "last_start_after_submit_s": round(starts[-1], 3)}

    def send_noops(self, n: int) -> list[str]:
        ids = [str(uuid.uuid4()) for _ in range(n)]
        # The same producer pattern and queue as control.dispatch uses for articles.
        with self.celery.producer_or_acquire() as producer:
            for tid in ids:
                self.celery.send_task("bench.noop", task_id=tid, queue="generation",
                                      producer=producer)
        return ids

    def wait_results(self, task_ids: list[str], timeout: float) -> None:
        """Until every task's result in the backend says SUCCESS (MGET, not one call each)."""
        pending = list(task_ids)

        def done():
            nonlocal pending
            raw = self.redis.mget(["celery-task-meta-" + t for t in pending])
            pending = [t for t, v in zip(pending, raw)
                       if not v or json.loads(v).get("status") != "SUCCESS"]
            return not pending
        wait_until(done, timeout, f"{len(pending)} task results", interval=0.005)

    def set_fake(self, fail_rate: float = 0.0, **settings) -> None:
        self.fake.command(cmd="set", **settings)
        self.fake.command(cmd="reset")  # also clears any faults
        if fail_rate:
            self.fake.command(cmd="fail_rate", rate=fail_rate, retry_after=0)

    def cancel_leftovers(self) -> None:
        """Cancel batches a failed phase left running, so that they do not load the next."""
        from webapp.extensions import db
        from webapp.models import Batch, BatchStatus as B
        from webapp.services import control
        for batch in db.session.scalars(db.select(Batch).where(Batch.status.not_in(B.FINAL))):
            if batch.name != "bench poll":  # poll's batch is only rows, nothing runs
                log(f"cancelling batch {batch.id} ({batch.name}) left by an earlier phase")
                control.cancel_batch(self.user, batch)
        db.session.rollback()

    # -- signed-in requests and gunicorn ------------------------------------------------------

    @contextlib.contextmanager
    def no_app_context(self):
        """Each test-client request must get its own app context and database session, as
        under gunicorn; with the bench's context pushed, the test client would reuse it
        (and its identity map, so the signed-in user would never be loaded)."""
        self.ctx.pop()
        try:
            yield
        finally:
            self.ctx.push()

    def signed_in_cookie(self) -> str:
        """A signed-in session cookie, valid for gunicorn too (same SECRET_KEY)."""
        if self.session_cookie is None:
            client = self.app.test_client()
            with self.no_app_context():
                self.sign_in(client)
            self.session_cookie = client.get_cookie("session").value
        return self.session_cookie

    def sign_in(self, client) -> None:
        """Through the real sign-in form, CSRF token and all, like a browser: the browser
        whose User-Agent the load generators send too (bench/loadgen.USER_AGENT)."""
        from bench.loadgen import USER_AGENT
        client.environ_base["HTTP_USER_AGENT"] = USER_AGENT
        page = client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
        if token is None:
            raise RuntimeError("no CSRF token on the sign-in page")
        response = client.post("/login", data={"email": "bench@localhost",
                                               "password": self.password,
                                               "csrf_token": token.group(1)})
        if response.status_code not in (302, 303):
            raise RuntimeError(f"sign-in answered {response.status_code}")
        # And on to the page it sends the browser to, as a browser goes: that page's forms
        # put the CSRF secret in the session cookie. A cookie taken before it would make
        # every poll that renders a Cancel button add that secret and send a new cookie,
        # which wrk, keeping its first cookie, would pay on every request.
        landing = client.get(response.headers["Location"])
        if landing.status_code != 200:
            raise RuntimeError(f"the page after sign-in answered {landing.status_code}")

    def start_gunicorn(self) -> tuple[subprocess.Popen, str]:
        port = free_port()
        self.gunicorn_starts += 1
        # gunicorn reads ./gunicorn.conf.py when it exists, as every deployment does; the
        # flags here override only the worker count, the worker class and the address.
        gunicorn = self.procs.spawn(f"gunicorn{self.gunicorn_starts}", [
            str(VENV_BIN / "gunicorn"), "-w", "2", "-k", "sync", "-b", f"127.0.0.1:{port}",
            *self.args.gunicorn_args.split(), "wsgi:app"], env=self.env)
        try:
            wait_for_port(port, 30, gunicorn)
        except BaseException:
            self.procs.stop(gunicorn)
            raise
        return gunicorn, f"http://127.0.0.1:{port}"
