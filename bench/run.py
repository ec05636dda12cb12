"""Pressroom benchmarks: throughput, polls, cancel, provider faults, scale, the dashboard.

Issue 2: throughput, poll cost and load, cancel latency; issue 4: provider faults and rate
limits; issue 5: scale (a 10,000-row submission, 50 viewers, worker memory); issue 6: the
dashboard over 10,000 batches and 1,000,000 articles.

    .venv/bin/python bench/run.py             # everything, about 7-8 minutes
    .venv/bin/python bench/run.py --no-find   # without the 1,000,000-article dashboard (-45 s)
    .venv/bin/python bench/run.py --only provider   # a group: issue2, provider, scale, find
    .venv/bin/python bench/run.py --only rpm,memory # or single phases (see --help)
    .venv/bin/python bench/run.py --quick    # seed baseline on 40 titles, extrapolated
    .venv/bin/python bench/run.py --only makespan,pipeline --profile-worker   # investigate

Everything runs on loopback and is started here: a data-less redis-server on a free port,
an SQLite database in a temporary directory (migrated with Flask-Migrate), FakeAI in its
own process (bench/fakectl.py), Celery workers as deployed (threads; two processes of 16
threads for 32 articles in flight, since one process runs Python on one core at a time;
one process of 16 for the memory figure) and, for the load tests, gunicorn with
gunicorn.conf.py and 2 sync workers driven by wrk. Every process is stopped at the end,
also on error or Ctrl-C. Prints a table and writes bench/results/latest.json; figures of
phases not run this time are kept from the previous file and marked as carried over.

The machine is shared by everything here (the worker, FakeAI, Redis, gunicorn,
wrk and this process), and by whatever else runs on it: wall-clock figures move with the
load average, which latest.json records. CPU per task and per request (in "details") are
the steadier numbers to compare before and after a change.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: make `webapp` and `bench` importable

from webapp.services.progress import ARTICLES_PER_PAGE  # noqa: E402
from bench.procs import (VENV_BIN, FakeAIProcess, Procs, cpu_seconds, free_port,  # noqa: E402
                         rss_kib, start_redis, wait_for_port)

RESULTS = ROOT / "bench" / "results" / "latest.json"
# 32 articles in flight, as two worker processes of 16 threads: a worker spends about
# 13 ms of CPU per article, and one process runs Python on one core at a time (the GIL),
# so one process of 32 threads would measure the GIL, not Pressroom as deployed.
WORKER_PROCESSES, WORKER_THREADS = 2, 16
CONCURRENCY = WORKER_PROCESSES * WORKER_THREADS
# The per-batch cap on the bench workers: at least the articles in flight, so that it
# never holds back a phase that measures 32 at once.
BATCH_CAP = max(32, CONCURRENCY)
MAKESPAN_ARTICLES, MAKESPAN_LATENCY = 200, 0.5
PIPELINE_ARTICLES = 500
POLL_ARTICLES, POLL_RUNNING, POLL_SAMPLES = 1000, 32, 300
CANCEL_ARTICLES, CANCEL_LATENCY, CANCEL_CHUNKS = 32, 10.0, 200
# Issue 4: 20 % of requests answered 429 (Retry-After: 0); a shared requests-per-minute cap.
FAULT_ARTICLES, FAULT_LATENCY, FAULT_RATE = 200, 0.5, 0.2
RPM_LIMIT, RPM_ARTICLES, RPM_OBSERVE_S, RPM_WINDOW_S = 600, 800, 70.0, 60.0
# Issue 5: a 10,000-row submission, 50 viewers of a running batch, worker memory.
SUBMIT_ROWS = 10_000
VIEW_ARTICLES, VIEW_LATENCY, VIEWERS, VIEW_WRK_S = 1000, 8.0, 50, 10
MEMORY_ARTICLES, MEMORY_THREADS, MEMORY_FIRST = SUBMIT_ROWS, 16, 1000
# Issue 6: the dashboard over a big database (built in about 25 s; --no-find skips it).
FIND_BATCHES, FIND_ARTICLES, FIND_REPEAT = 10_000, 1_000_000, 7
HARD_LIMIT_S = 30 * 60  # a run that hangs is stopped (and cleaned up) after this


def _worker_env(**extra) -> tuple:
    return tuple(sorted(extra.items()))


# Which workers each phase runs against: (processes, threads per process, extra env).
# None: the phase needs no worker (whatever runs is left running).
DEFAULT_WORKERS = (WORKER_PROCESSES, WORKER_THREADS, ())
PHASE_WORKERS = {
    "poll": None, "load": None, "find": None,
    "rpm": (WORKER_PROCESSES, WORKER_THREADS, _worker_env(
        RATE_LIMITS=json.dumps({"*": {"requests": f"{RPM_LIMIT}/minute"}}))),
    "submit": (1, MEMORY_THREADS, ()),
    "memory": (1, MEMORY_THREADS, ()),
}

PHASES = ("makespan", "seed", "pipeline", "poll", "load", "cancel", "faults", "viewers",
          "rpm", "submit", "memory", "find")
GROUPS = {"issue2": ("makespan", "seed", "pipeline", "poll", "load", "cancel"),
          "provider": ("faults", "rpm"), "scale": ("submit", "viewers", "memory"),
          "find": ("find",)}

# figure -> (phase, goal text, test); test None: reported for scale, no goal.
GOALS = {
    "makespan_ratio": ("makespan", "<= 1.1", lambda v: v <= 1.1),
    "seed_makespan_s": ("seed", "(baseline, ~100 s)", None),
    "pipeline_vs_bare_ratio": ("pipeline", ">= 0.5", lambda v: v >= 0.5),
    "poll_p50_ms": ("poll", "<= 5", lambda v: v <= 5),
    "poll_redis_round_trips": ("poll", "1", lambda v: v <= 1),
    "poll_load_ratio": ("load", ">= 0.2", lambda v: v >= 0.2),
    "poll_load_p99_ms": ("load", "<= 100", lambda v: v <= 100),
    "cancel_latency_s": ("cancel", "<= 1", lambda v: v <= 1),
    "faults_429_failures": ("faults", "0", lambda v: v == 0),
    "faults_429_makespan_ratio": ("faults", "<= 1.3", lambda v: v <= 1.3),
    "rpm_observed_max": ("rpm", f"<= {RPM_LIMIT}", lambda v: v <= RPM_LIMIT),
    "submit_10k_s": ("submit", "<= 2", lambda v: v <= 2),
    "viewers50_p99_ms": ("viewers", "<= 100", lambda v: v <= 100),
    "viewers50_paced_p99_ms": ("viewers", "<= 100", lambda v: v <= 100),
    "worker_rss_growth_pct": ("memory", "<= 10", lambda v: v <= 10),
    "find_dashboard_p50_ms": ("find", "(no goal set)", None),
    "find_text_title_ms": ("find", "<= 200 (slow above)", lambda v: v <= 200),
}


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


class Bench:
    def __init__(self, args, tmp: Path, procs: Procs):
        self.args, self.tmp, self.procs = args, tmp, procs
        self.figures: dict = {}
        self.details: dict = {}
        self.errors: dict = {}
        self.workers: list[subprocess.Popen] = []
        self.worker_spec = None
        self.worker_starts = 0
        self.session_cookie = None

    # -- set-up -------------------------------------------------------------------------

    def setup(self) -> None:
        self.redis_url, _ = start_redis(self.procs)
        self.fake = FakeAIProcess(self.procs, latency=MAKESPAN_LATENCY)
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
            self._wait_results(self._send_noops(processes), timeout=60)
            # Warm: a first article pays for connections, compiled statements and the SDK
            # client in each thread; a long-running deployment has paid for them already.
            self._set_fake(latency=0.0, chunks=10, words=120)
            self._wait_batch_final(self._submit([f"Warm-up article {i}" for i in
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

    # -- helpers --------------------------------------------------------------------------

    @property
    def user(self):
        """The bench's user in the current session (sessions end when the test client's
        requests pop the bench's app context, which would detach a kept instance)."""
        from webapp.extensions import db
        from webapp.models import User
        return db.session.get(User, self.user_id)

    def _submit(self, titles: list[str], name: str):
        from webapp.services import batches
        sub = batches.submit(self.user, {"name": name, "titles": titles, "target_words": 600})
        if sub.batch is None or sub.dispatch_error:
            raise RuntimeError(f"submit failed: {sub.errors.fields or sub.dispatch_error}")
        return sub.batch.id

    def _batch_status(self, batch_id: int) -> str:
        from webapp.extensions import db
        from webapp.models import Batch
        status = db.session.scalar(db.select(Batch.status).where(Batch.id == batch_id))
        db.session.rollback()  # no read transaction left open between polls
        return status

    def _wait_batch_final(self, batch_id: int, timeout: float) -> str:
        from webapp.models import BatchStatus
        return wait_until(lambda: (s := self._batch_status(batch_id)) in BatchStatus.FINAL and s,
                          timeout, f"batch {batch_id} to finish", interval=0.02)

    def _article_counts(self, batch_id: int) -> dict:
        from webapp.extensions import db
        from webapp.models import Article
        rows = db.session.execute(db.select(Article.status, db.func.count())
                                  .where(Article.batch_id == batch_id)
                                  .group_by(Article.status)).all()
        db.session.rollback()
        return dict(rows)

    def _article_timings(self, batch_id: int, t_submit: datetime) -> dict:
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

    def _send_noops(self, n: int) -> list[str]:
        ids = [str(uuid.uuid4()) for _ in range(n)]
        # The same producer pattern and queue as batches.dispatch uses for articles.
        with self.celery.producer_or_acquire() as producer:
            for tid in ids:
                self.celery.send_task("bench.noop", task_id=tid, queue="generation",
                                      producer=producer)
        return ids

    def _wait_results(self, task_ids: list[str], timeout: float) -> None:
        """Until every task's result in the backend says SUCCESS (MGET, not one call each)."""
        pending = list(task_ids)

        def done():
            nonlocal pending
            raw = self.redis.mget(["celery-task-meta-" + t for t in pending])
            pending = [t for t, v in zip(pending, raw)
                       if not v or json.loads(v).get("status") != "SUCCESS"]
            return not pending
        wait_until(done, timeout, f"{len(pending)} task results", interval=0.005)

    def _set_fake(self, fail_rate: float = 0.0, **settings) -> None:
        self.fake.command(cmd="set", **settings)
        self.fake.command(cmd="reset")  # also clears any faults
        if fail_rate:
            self.fake.command(cmd="fail_rate", rate=fail_rate, retry_after=0)

    # -- (a) makespan against the ideal, and the seed baseline ---------------------------

    def makespan(self) -> None:
        self._set_fake(latency=MAKESPAN_LATENCY, chunks=10, words=120)
        titles = [f"Makespan article {i}" for i in range(MAKESPAN_ARTICLES)]
        ideal = math.ceil(MAKESPAN_ARTICLES / CONCURRENCY) * MAKESPAN_LATENCY
        submitted_at = _utcnow()
        cpu0 = self.workers_cpu()
        t0 = time.perf_counter()
        batch_id = self._submit(titles, "bench makespan")
        t_dispatched = time.perf_counter() - t0
        status = self._wait_batch_final(batch_id, timeout=60)
        elapsed = time.perf_counter() - t0
        cpu = self.workers_cpu() - cpu0
        stats = self.fake.command(cmd="stats")
        self.figures["makespan_ratio"] = round(elapsed / ideal, 3)
        self.details["makespan"] = {
            "articles": MAKESPAN_ARTICLES, "latency_s": MAKESPAN_LATENCY,
            "concurrency": CONCURRENCY, "worker_processes": WORKER_PROCESSES,
            "threads_per_process": WORKER_THREADS, "ideal_s": ideal, "measured_s": round(elapsed, 3),
            "submit_and_dispatch_s": round(t_dispatched, 3), "batch_status": status,
            "article_counts": self._article_counts(batch_id),
            "provider_requests": stats["requests"],
            "provider_max_concurrent": stats["max_concurrent"],
            # Requests in flight at the provider, on average over the makespan (32 would be
            # no idle slot at all); what is missing went to work between requests.
            "provider_mean_in_flight": round(sum(r["end"] - r["start"] for r in stats["records"]
                                                 if r["end"]) / elapsed, 1),
            "worker_cpu_ms_per_article": round(cpu * 1000 / MAKESPAN_ARTICLES, 2),
            **self._article_timings(batch_id, submitted_at),
        }
        log(f"makespan: {elapsed:.2f} s for {MAKESPAN_ARTICLES} articles (ideal {ideal} s), "
            f"batch {status}, max concurrent at provider {stats['max_concurrent']}")

    def seed_baseline(self) -> None:
        self._set_fake(latency=MAKESPAN_LATENCY, chunks=10, words=120)
        n = 40 if self.args.quick else MAKESPAN_ARTICLES
        titles = [f"Seed article {i}" for i in range(n)]
        t0 = time.perf_counter()
        result = self.celery.send_task("bench.seed_batch", args=[titles], queue="generation")
        out = result.get(timeout=n * MAKESPAN_LATENCY * 3 + 30, interval=0.05)
        elapsed = time.perf_counter() - t0
        scaled = elapsed * MAKESPAN_ARTICLES / n
        self.figures["seed_makespan_s"] = round(scaled, 2)
        self.details["seed"] = {"titles_run": n, "measured_s": round(elapsed, 3),
                                "extrapolated": n != MAKESPAN_ARTICLES, "result": out}
        note = f" (ran {n}, extrapolated to {MAKESPAN_ARTICLES})" if n != MAKESPAN_ARTICLES else ""
        log(f"seed way: {scaled:.1f} s for {MAKESPAN_ARTICLES} articles{note}")

    # -- (a') whole pipeline against bare Celery, instant provider -----------------------

    def pipeline_vs_bare(self) -> None:
        self._set_fake(latency=0.0, chunks=10, words=120)
        n = PIPELINE_ARTICLES
        cpu0 = self.workers_cpu()
        t0 = time.perf_counter()
        ids = self._send_noops(n)
        self._wait_results(ids, timeout=120)
        bare_s = time.perf_counter() - t0
        cpu1 = self.workers_cpu()

        titles = [f"Pipeline article {i}" for i in range(n)]
        submitted_at = _utcnow()
        t0 = time.perf_counter()
        batch_id = self._submit(titles, "bench pipeline")
        t_dispatched = time.perf_counter() - t0
        status = self._wait_batch_final(batch_id, timeout=180)
        pipe_s = time.perf_counter() - t0
        cpu2 = self.workers_cpu()

        bare_rate, pipe_rate = n / bare_s, n / pipe_s
        self.figures["pipeline_vs_bare_ratio"] = round(pipe_rate / bare_rate, 3)
        self.details["pipeline_vs_bare"] = {
            "tasks": n, "worker_processes": WORKER_PROCESSES,
            "threads_per_process": WORKER_THREADS, "bare_s": round(bare_s, 3), "bare_per_s": round(bare_rate, 1),
            "pipeline_s": round(pipe_s, 3), "pipeline_per_s": round(pipe_rate, 1),
            "pipeline_submit_and_dispatch_s": round(t_dispatched, 3), "batch_status": status,
            # A worker process runs Python on one core at a time: CPU per task is what
            # bounds the rate here, and the steadier number on a shared machine.
            "worker_cpu_ms_per_bare_task": round((cpu1 - cpu0) * 1000 / n, 2),
            "worker_cpu_ms_per_article": round((cpu2 - cpu1) * 1000 / n, 2),
            "article_counts": self._article_counts(batch_id),
            **self._article_timings(batch_id, submitted_at),
        }
        log(f"pipeline {pipe_rate:.0f} articles/s vs bare {bare_rate:.0f} tasks/s")

    # -- (b) one progress poll, in-process and under load --------------------------------

    def _make_poll_batch(self) -> int:
        """A 1,000-article batch mid-way: succeeded, 32 running with live progress, queued."""
        from sqlalchemy import insert

        from webapp.extensions import db
        from webapp.models import Article, ArticleStatus as A, Batch, BatchStatus as B
        now = _utcnow()
        past = now - timedelta(minutes=1)  # nothing changed since the previous poll
        batch = Batch(user_id=self.user.id, name="bench poll", provider="openai-compatible (bench)",
                      model="gpt-4o-mini", target_words=600, tone="neutral", language="English",
                      total=POLL_ARTICLES, status=B.RUNNING, created_at=past, started_at=past,
                      dispatched_at=past)
        db.session.add(batch)
        db.session.flush()
        done = POLL_ARTICLES // 2 - POLL_RUNNING
        rows = []
        for i in range(POLL_ARTICLES):
            status = A.SUCCEEDED if i < done else A.RUNNING if i < done + POLL_RUNNING else A.QUEUED
            row = {"batch_id": batch.id, "position": i + 1, "title": f"Poll article {i}",
                   "status": status, "task_id": str(uuid.uuid4()), "created_at": past,
                   "updated_at": past}
            if status == A.SUCCEEDED:
                row.update(words=600, body="text " * 600, started_at=past, finished_at=past)
            elif status == A.RUNNING:
                row.update(claim_token=str(uuid.uuid4()), started_at=past, attempts=1,
                           lease_expires_at=now + timedelta(hours=1))
            rows.append(row)
        db.session.execute(insert(Article), rows)
        db.session.commit()
        running = [r["task_id"] for r in rows if r["status"] == A.RUNNING]
        for n, task_id in enumerate(running):
            # Exactly what a worker's update_state("PROGRESS", meta=...) writes.
            self.celery.backend.store_result(task_id, {"words": 100 + n, "attempt": 1}, "PROGRESS")
        self.poll_task_ids = [r["task_id"] for r in rows]
        return batch.id

    @contextlib.contextmanager
    def _no_app_context(self):
        """Each test-client request must get its own app context and database session, as
        under gunicorn; with the bench's context pushed, the test client would reuse it
        (and its identity map, so the signed-in user would never be loaded)."""
        self.ctx.pop()
        try:
            yield
        finally:
            self.ctx.push()

    def _session_cookie(self) -> str:
        """A signed-in session cookie, valid for gunicorn too (same SECRET_KEY)."""
        if self.session_cookie is None:
            client = self.app.test_client()
            with self._no_app_context():
                self._sign_in(client)
            self.session_cookie = client.get_cookie("session").value
        return self.session_cookie

    def _sign_in(self, client) -> None:
        """Through the real sign-in form, CSRF token and all, like a browser."""
        page = client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
        if token is None:
            raise RuntimeError("no CSRF token on the sign-in page")
        response = client.post("/login", data={"email": "bench@localhost",
                                               "password": self.password,
                                               "csrf_token": token.group(1)})
        if response.status_code not in (302, 303):
            raise RuntimeError(f"sign-in answered {response.status_code}")

    def poll(self) -> None:
        import redis.connection

        batch_id = self._make_poll_batch()
        since = _utcnow().isoformat()
        # The URL the page's poll sends: the batch status it shows (so the action buttons
        # are re-rendered only when it changes) and the rows of its page of articles.
        self.poll_path = (f"/batches/{batch_id}/progress?since={since}&seen=running"
                          f"&first=1&last={ARTICLES_PER_PAGE}")
        client = self.app.test_client()
        self._sign_in(client)
        first = client.get(self.poll_path)
        body = first.get_data(as_text=True)
        if first.status_code != 200 or 'id="batch-progress"' not in body:
            raise RuntimeError(f"poll answered {first.status_code}: {body[:300]}")
        live_spans = body.count('hx-swap-oob="true">')
        if self.session_cookie is None:
            self.session_cookie = client.get_cookie("session").value

        counter = {"n": 0}
        original = redis.connection.AbstractConnection.send_packed_command

        def counting(conn, *a, **kw):
            counter["n"] += 1  # one packed send = one request/response exchange
            return original(conn, *a, **kw)

        times, trips = [], []
        redis.connection.AbstractConnection.send_packed_command = counting
        # Each request must get its own app context and database session (see
        # _no_app_context).
        self.ctx.pop()
        try:
            for _ in range(20):  # warm caches (templates, statements, connections)
                client.get(self.poll_path)
            cpu0 = time.process_time()
            for _ in range(POLL_SAMPLES):
                counter["n"] = 0
                t0 = time.perf_counter()
                response = client.get(self.poll_path)
                times.append((time.perf_counter() - t0) * 1000)
                trips.append(counter["n"])
                assert response.status_code == 200, response.status_code
            cpu_per_poll = (time.process_time() - cpu0) * 1000 / POLL_SAMPLES

            # For scale: the naive poll, one AsyncResult(id).state per task of the batch.
            from celery.result import AsyncResult
            counter["n"] = 0
            t0 = time.perf_counter()
            states = [AsyncResult(t, app=self.celery).state for t in self.poll_task_ids]
            naive_ms = (time.perf_counter() - t0) * 1000
            naive_trips = counter["n"]
        finally:
            redis.connection.AbstractConnection.send_packed_command = original
            self.ctx.push()

        times.sort()
        self.figures["poll_p50_ms"] = round(statistics.median(times), 2)
        # The typical poll; a rare extra exchange (redis-py's idle-connection health check
        # PING) shows in the max below.
        self.figures["poll_redis_round_trips"] = int(statistics.median(trips))
        self.details["poll"] = {
            "articles": POLL_ARTICLES, "running": POLL_RUNNING, "samples": POLL_SAMPLES,
            "p90_ms": round(times[int(len(times) * 0.9)], 2), "max_ms": round(times[-1], 2),
            "cpu_ms_per_poll": round(cpu_per_poll, 3),
            "redis_round_trips_mean": round(statistics.mean(trips), 3),
            "redis_round_trips_max": max(trips),
            "oob_swaps_in_response": live_spans, "response_bytes": len(body),
            "naive_1000_async_result_state_ms": round(naive_ms, 1),
            "naive_redis_round_trips": naive_trips,
            "naive_progress_states": states.count("PROGRESS"),
        }
        log(f"poll p50 {self.figures['poll_p50_ms']} ms, "
            f"{self.figures['poll_redis_round_trips']} Redis round trip(s); "
            f"naive {naive_ms:.0f} ms / {naive_trips} round trips")

    def _start_gunicorn(self) -> tuple[subprocess.Popen, str]:
        port = free_port()
        self.gunicorn_starts = getattr(self, "gunicorn_starts", 0) + 1
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

    def _warm_gunicorn(self, url: str, cookie: str) -> None:
        request = urllib.request.Request(url, headers={"Cookie": cookie})
        with urllib.request.urlopen(request, timeout=10) as response:
            page = response.read().decode()
            if response.status != 200 or 'id="batch-progress"' not in page:
                raise RuntimeError(f"gunicorn poll answered {response.status}: {page[:200]}")
        for _ in range(20):  # both workers import, connect and compile before timing
            urllib.request.urlopen(request, timeout=10).read()

    def poll_under_load(self) -> None:
        gunicorn, base = self._start_gunicorn()
        try:
            cookie = f"session={self._session_cookie()}"
            self._warm_gunicorn(base + self.poll_path, cookie)
            health = self._wrk(base + "/healthz", None, gunicorn.pid)
            poll = self._wrk(base + self.poll_path, cookie, gunicorn.pid)
        finally:
            self.procs.stop(gunicorn)
        self.figures["poll_load_ratio"] = round(poll["rps"] / health["rps"], 3)
        self.figures["poll_load_p99_ms"] = poll["p99_ms"]
        self.details["poll_load"] = {
            "wrk": "-t2 -c50 -d10s --latency", "healthz": health, "poll": poll,
            "gunicorn_conf": (ROOT / "gunicorn.conf.py").exists(),
            "gunicorn_extra_args": self.args.gunicorn_args,
            # 2 when no worker was restarted during the run (max_requests, crashes).
            "worker_boots": self.procs.tail(f"gunicorn{self.gunicorn_starts}",
                                            100000).count("Booting worker"),
            # Closed loop: 50 connections, each sends its next request as soon as the
            # previous one is answered, so latency ≈ 50 / throughput (Little's law).
            "littles_law_min_mean_ms": round(50 / poll["rps"] * 1000, 1)}
        log(f"under load: poll {poll['rps']:.0f} req/s (p99 {poll['p99_ms']} ms), "
            f"healthz {health['rps']:.0f} req/s (p99 {health['p99_ms']} ms)")

    def _wrk(self, url: str, cookie: str | None, server_pid: int, *, connections: int = 50,
             seconds: int = 10, script: Path | None = None) -> dict:
        args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
        if cookie:
            args += ["-H", f"Cookie: {cookie}"]
        if script is not None:
            args += ["-s", str(script)]
        cpu = cpu_seconds(server_pid, children=True)
        out = subprocess.run(args + [url], capture_output=True, text=True,
                             timeout=seconds + 60).stdout
        cpu = cpu_seconds(server_pid, children=True) - cpu
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
        p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not rps or not p99 or not p50:
            raise RuntimeError(f"could not read wrk output:\n{out}")
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
        scale50 = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p50.group(2)]
        errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        socket_errors = re.search(r"Socket errors:(.*)", out)
        requests = re.search(r"(\d+) requests in", out)
        n = int(requests.group(1)) if requests else 0
        return {"rps": float(rps.group(1)), "p99_ms": round(float(p99.group(1)) * scale, 2),
                "p50_ms": round(float(p50.group(1)) * scale50, 2), "requests": n,
                # Server CPU per request is steadier than req/s when the machine is shared.
                "server_cpu_ms_per_request": round(cpu * 1000 / n, 3) if n else None,
                "non_2xx_3xx": int(errors.group(1)) if errors else 0,
                "socket_errors": socket_errors.group(1).strip() if socket_errors else ""}

    # -- (c) cancel latency ---------------------------------------------------------------

    def cancel(self) -> None:
        from webapp.extensions import db
        from webapp.models import ArticleStatus as A, Batch
        from webapp.services import batches

        # 400 words in 200 chunks: a chunk every 50 ms, each with text in it.
        self._set_fake(latency=CANCEL_LATENCY, chunks=CANCEL_CHUNKS, words=400)
        titles = [f"Cancel article {i}" for i in range(CANCEL_ARTICLES)]
        batch_id = self._submit(titles, "bench cancel")
        wait_until(lambda: self._article_counts(batch_id).get(A.RUNNING) == CANCEL_ARTICLES,
                   20, "every article to be running")

        def all_streaming():
            records = self.fake.command(cmd="stats")["records"]
            return len(records) == CANCEL_ARTICLES and all(r["chunks_sent"] > 0 for r in records)
        wait_until(all_streaming, 20, "every stream to have started", interval=0.05)

        batch = db.session.get(Batch, batch_id)
        t0_mono = time.monotonic()
        t0 = time.perf_counter()
        batches.cancel_batch(self.user, batch)
        t_call = time.perf_counter() - t0
        counts = wait_until(
            lambda: (c := self._article_counts(batch_id)) and not any(
                c.get(s) for s in (A.QUEUED, A.RUNNING, A.CANCELLING)) and c,
            30, "every article to stop")
        db_s = time.perf_counter() - t0
        records = wait_until(lambda: (s := self.fake.command(cmd="stats"))["in_flight"] == 0
                             and s["records"], 15, "the provider streams to close")
        # A stream ends either by the client going away (noticed by FakeAI) or finishing.
        ended = [r["disconnected_at"] or r["end"] for r in records]
        stream_s = max(ended) - t0_mono
        status = self._wait_batch_final(batch_id, timeout=10)
        self.figures["cancel_latency_s"] = round(max(db_s, stream_s), 3)
        self.details["cancel"] = {
            "articles": CANCEL_ARTICLES, "provider_latency_s": CANCEL_LATENCY,
            "chunks": CANCEL_CHUNKS, "cancel_call_s": round(t_call, 3),
            "until_no_article_active_s": round(db_s, 3),
            "until_last_stream_closed_s": round(stream_s, 3),
            "streams_disconnected_by_client": sum(1 for r in records if r["disconnected"]),
            "article_counts": counts, "batch_status": status,
        }
        log(f"cancel: last stream closed after {stream_s:.3f} s, no article active after "
            f"{db_s:.3f} s, batch {status}")
        self._set_fake(latency=0.0, chunks=10, words=120)

    # -- issue 4: provider faults and the shared rate limit --------------------------------

    def _timed_batch(self, n: int, name: str, timeout: float) -> dict:
        """Submit n titles, wait for the batch to finish; wall and worker CPU time, counts."""
        titles = [f"{name.capitalize()} article {i}" for i in range(n)]
        cpu0 = self.workers_cpu()
        t0 = time.perf_counter()
        batch_id = self._submit(titles, f"bench {name}")
        status = self._wait_batch_final(batch_id, timeout=timeout)
        elapsed = time.perf_counter() - t0
        cpu = self.workers_cpu() - cpu0
        stats = self.fake.command(cmd="stats")
        statuses = [r["status"] for r in stats["records"]]
        from webapp.extensions import db
        from webapp.models import Article
        retried = db.session.scalar(db.select(db.func.count()).where(
            Article.batch_id == batch_id, Article.attempts > 1))
        db.session.rollback()
        return {"batch_id": batch_id, "measured_s": round(elapsed, 3), "batch_status": status,
                "article_counts": self._article_counts(batch_id),
                "articles_retried": retried,
                "provider_requests": len(statuses),
                "provider_429s": statuses.count(429),
                "provider_max_concurrent": stats["max_concurrent"],
                "worker_cpu_ms_per_article": round(cpu * 1000 / n, 2)}

    def faults(self) -> None:
        """200 articles at 0.5 s, 32 at once, without faults and then with 20 % 429s."""
        from webapp.models import ArticleStatus as A
        timeout = 120
        self._set_fake(latency=FAULT_LATENCY, chunks=10, words=120)
        clean = self._timed_batch(FAULT_ARTICLES, "faults clean", timeout)
        self._set_fake(latency=FAULT_LATENCY, chunks=10, words=120, fail_rate=FAULT_RATE)
        faulty = self._timed_batch(FAULT_ARTICLES, "faults 429", timeout)
        self._set_fake(latency=0.0, chunks=10, words=120)
        failures = faulty["article_counts"].get(A.FAILED, 0)
        ratio = faulty["measured_s"] / clean["measured_s"]
        self.figures["faults_429_failures"] = failures
        self.figures["faults_429_makespan_ratio"] = round(ratio, 3)
        max_attempts = self.app.config["GENERATION_MAX_ATTEMPTS"]
        self.details["faults_429"] = {
            "articles": FAULT_ARTICLES, "latency_s": FAULT_LATENCY, "concurrency": CONCURRENCY,
            "fail_rate": FAULT_RATE, "retry_after_s": 0, "fault_free": clean, "with_429s": faulty,
            "generation_max_attempts": max_attempts,
            # An article fails only when all its attempts draw a 429.
            "expected_failures": round(FAULT_ARTICLES * FAULT_RATE ** max_attempts, 2)}
        log(f"429s: {faulty['provider_429s']} of {faulty['provider_requests']} requests, "
            f"{failures} articles failed, {faulty['measured_s']:.2f} s vs "
            f"{clean['measured_s']:.2f} s fault-free (× {ratio:.2f})")

    def rpm(self) -> None:
        """A shared cap of 600 requests a minute, counted where the requests arrive."""
        self._set_fake(latency=0.0, chunks=10, words=120)
        # The workers' warm-up took permits too: start from an empty window.
        for key in self.redis.scan_iter("pressroom-provider*"):
            self.redis.delete(key)
        titles = [f"Rate article {i}" for i in range(RPM_ARTICLES)]
        t0 = time.monotonic()
        batch_id = self._submit(titles, "bench rpm")
        # At most 600 in the first minute, the rest in the next: about 65 s of work.
        status = self._wait_batch_final(batch_id, timeout=RPM_WINDOW_S * 3 + 60)
        finished = time.monotonic() - t0
        # Observe for at least RPM_OBSERVE_S, so that the 60 s windows slide over a real run.
        if finished < RPM_OBSERVE_S:
            time.sleep(RPM_OBSERVE_S - finished)
        observed = time.monotonic() - t0
        stats = self.fake.command(cmd="stats")
        starts = sorted(r["start"] for r in stats["records"])
        # How long after taking its permit (the limiter's timestamp, wall clock) a request
        # reached the provider: the limiter's list holds the last RPM_LIMIT permits, matched
        # here in order with the last arrivals. Approximate (order may differ), for scale.
        permits = []
        for key in self.redis.scan_iter("pressroom-provider*"):
            if self.redis.type(key) == b"list":
                permits = sorted(float(v) for v in self.redis.lrange(key, 0, -1))
        arrivals = [t + stats["wall_offset"] for t in starts[-len(permits):]] if permits else []
        lags = sorted(a - p for a, p in zip(arrivals, permits))
        # Every arrival and permit, for a closer look (kept with --keep).
        (self.tmp / "rpm-times.json").write_text(json.dumps(
            {"arrivals_wall": [t + stats["wall_offset"] for t in starts], "permits": permits}))
        # The largest count of requests that began within any RPM_WINDOW_S: every window
        # worth checking starts at a request, so slide one over the sorted start times.
        most, j, most_at = 0, 0, (0.0, 0.0)
        for i, t in enumerate(starts):
            while starts[j] <= t - RPM_WINDOW_S:
                j += 1
            if i - j + 1 > most:
                most, most_at = i - j + 1, (starts[j] - starts[0], t - starts[0])
        span = starts[-1] - starts[0] if starts else 0.0
        self.figures["rpm_observed_max"] = most
        self.details["rpm"] = {
            "limit": f"{RPM_LIMIT}/minute", "articles": RPM_ARTICLES,
            "article_counts": self._article_counts(batch_id), "batch_status": status,
            "requests": len(starts), "first_to_last_request_s": round(span, 2),
            "batch_finished_after_s": round(finished, 2), "observed_s": round(observed, 2),
            "window_s": RPM_WINDOW_S,
            "busiest_window_s": [round(most_at[0], 3), round(most_at[1], 3)],
            "permit_to_request_s": {
                "p50": round(lags[len(lags) // 2], 3), "p99": round(lags[int(len(lags) * .99)], 3),
                "max": round(lags[-1], 3)} if lags else None,
            "requests_first_60s": sum(1 for t in starts if t < starts[0] + RPM_WINDOW_S),
            "provider_requests_per_s_overall": round(len(starts) / span, 2) if span else None}
        log(f"rate limit: at most {most} requests in any {RPM_WINDOW_S:.0f} s "
            f"({len(starts)} requests over {span:.1f} s), batch {status}")

    # -- issue 5: a 10,000-row submission, 50 viewers, worker memory ------------------------

    def submit_10k(self) -> None:
        """POST /api/v1/batches with 10,000 rows through the test client, until the 201."""
        rows = [{"title": f"Scale article {i}: a story about item {i * 7919 % 10007}"}
                for i in range(SUBMIT_ROWS)]
        body = json.dumps({"name": "bench submit 10k", "rows": rows, "target_words": 600})
        headers = {"Authorization": f"Bearer {self.api_token}"}
        client = self.app.test_client()
        with self._no_app_context():
            # A warm server: the first request pays for imports and template compiles.
            warm = client.post("/api/v1/batches", headers=headers, json={
                "name": "bench submit warm-up", "rows": [{"title": "Warm-up article"}]})
            if warm.status_code != 201:
                raise RuntimeError(f"warm-up submit answered {warm.status_code}: "
                                   f"{warm.get_data(as_text=True)[:300]}")
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            response = client.post("/api/v1/batches", headers=headers, data=body,
                                   content_type="application/json")
            elapsed = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
        if response.status_code != 201:
            raise RuntimeError(f"submit answered {response.status_code}: "
                               f"{response.get_data(as_text=True)[:300]}")
        data = response.get_json()
        self.submit_batch_id = data["id"]
        self.figures["submit_10k_s"] = round(elapsed, 3)
        self.details["submit_10k"] = {
            "rows": SUBMIT_ROWS, "request_bytes": len(body),
            "response_bytes": len(response.get_data()), "seconds": round(elapsed, 3),
            "bench_process_cpu_s": round(cpu, 3), "articles_in_response": len(data["articles"]),
            "dispatched_by": "a worker (over DISPATCH_INLINE_MAX)"
            if SUBMIT_ROWS > self.app.config["DISPATCH_INLINE_MAX"] else "the request"}
        log(f"submit: {SUBMIT_ROWS} rows answered 201 in {elapsed:.2f} s")

    def viewers(self) -> None:
        """50 viewers polling a batch that is really running (32 articles in flight)."""
        from webapp.models import ArticleStatus as A, Batch
        from webapp.services import batches
        # Streams that last VIEW_LATENCY s with progress every REPORT_EVERY: the workers
        # write progress and finish rows while the viewers poll.
        self._set_fake(latency=VIEW_LATENCY, chunks=40, words=400)
        titles = [f"Viewed article {i}" for i in range(VIEW_ARTICLES)]
        batch_id = self._submit(titles, "bench viewers")
        wait_until(lambda: self._article_counts(batch_id).get(A.RUNNING) == CONCURRENCY
                   and self.fake.command(cmd="stats", records=False)["in_flight"] == CONCURRENCY,
                   60, f"{CONCURRENCY} articles in flight", interval=0.1)
        gunicorn = None
        try:
            gunicorn, base = self._start_gunicorn()
            cookie = f"session={self._session_cookie()}"
            path = f"/batches/{batch_id}/progress"
            page_args = f"&seen=running&first=1&last={ARTICLES_PER_PAGE}"
            self._warm_gunicorn(f"{base}{path}?since={_utcnow().isoformat()}{page_args}",
                                cookie)
            counts_before = self._article_counts(batch_id)
            # As fast as they are answered (wrk -c50, closed loop), then as viewers really
            # poll: each one second after its previous answer. `since` is a second ago,
            # as from the page.
            closed = self._wrk(base + path, cookie, gunicorn.pid, connections=VIEWERS,
                               seconds=VIEW_WRK_S, script=self._poll_script(path, page_args))
            paced = self._paced_viewers(
                base, lambda: (f"{path}?since={(_utcnow() - timedelta(seconds=1)).isoformat()}"
                               f"{page_args}"), cookie, gunicorn.pid)
            counts_after = self._article_counts(batch_id)
        finally:
            if gunicorn is not None:
                self.procs.stop(gunicorn)
            from webapp.extensions import db
            batches.cancel_batch(self.user, db.session.get(Batch, batch_id))
            self._set_fake(latency=0.0, chunks=10, words=120)
        self.figures["viewers50_p99_ms"] = closed["p99_ms"]
        self.figures["viewers50_paced_p99_ms"] = paced["p99_ms"]
        self.details["viewers50"] = {
            "articles": VIEW_ARTICLES, "in_flight": CONCURRENCY, "provider_latency_s": VIEW_LATENCY,
            "viewers": VIEWERS, "closed_loop": {"wrk": f"-t2 -c{VIEWERS} -d{VIEW_WRK_S}s", **closed},
            "one_poll_per_second": {"how": f"{VIEWERS} viewers for {VIEW_WRK_S * 2} s, each "
                                           "polling 1 s after its previous answer, out of step",
                                    **paced},
            "littles_law_min_mean_ms": round(VIEWERS / closed["rps"] * 1000, 1),
            "article_counts_before": counts_before, "article_counts_after": counts_after}
        log(f"50 viewers: closed loop {closed['rps']:.0f} req/s, p99 {closed['p99_ms']} ms; "
            f"one poll a second: p99 {paced['p99_ms']} ms ({paced['rps']:.0f} req/s)")

    def _poll_script(self, path: str, page_args: str) -> Path:
        """A wrk script: `since` a second ago on every request, as the page sends it."""
        script = self.tmp / "poll.lua"
        script.write_text(
            f'local base = "{path}?since="\n'
            "function request()\n"
            '  return wrk.format("GET", base .. os.date("!%Y-%m-%dT%H:%M:%S", os.time() - 1)'
            f' .. "{page_args}")\n'
            "end\n")
        return script

    def _paced_viewers(self, base: str, path_fn, cookie: str, server_pid: int) -> dict:
        """VIEWERS viewers, each polling one second after its previous answer (htmx's
        `load delay:1s`), on a new connection each time as a browser does with gunicorn's
        sync workers (they close the connection after every answer).

        Not wrk: with a delay between requests wrk opens the connection first and sends
        the request a second later, and a sync worker that accepts such a connection sits
        waiting for the request (what a buffering proxy in front prevents), so wrk would
        measure that wait, not Pressroom.
        """
        import asyncio
        from urllib.parse import urlsplit
        host, port = urlsplit(base).hostname, urlsplit(base).port
        latencies: list[float] = []
        failures: list[str] = []

        async def poll_once() -> None:
            t = time.perf_counter()
            reader, writer = await asyncio.open_connection(host, port)
            writer.write((f"GET {path_fn()} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                          f"Cookie: {cookie}\r\nHX-Request: true\r\n"
                          "Connection: close\r\n\r\n").encode())
            await writer.drain()
            status_line = await reader.readline()
            await reader.read()  # to the end: the server closes the connection
            latencies.append((time.perf_counter() - t) * 1000)
            writer.close()
            if status_line.split()[1:2] not in ([b"200"], [b"286"]):
                failures.append(status_line.decode(errors="replace").strip())

        async def viewer(stop_at: float, rng: random.Random) -> None:
            # Viewers opened the page at different times: out of step from the start.
            await asyncio.sleep(rng.uniform(0, 1.0))
            while time.perf_counter() < stop_at:
                try:
                    await asyncio.wait_for(poll_once(), timeout=10)
                except (OSError, asyncio.TimeoutError) as exc:
                    failures.append(type(exc).__name__)
                await asyncio.sleep(1.0)

        async def main() -> None:
            stop_at = time.perf_counter() + VIEW_WRK_S * 2
            rng = random.Random(5)
            await asyncio.gather(*(viewer(stop_at, random.Random(rng.random()))
                                   for _ in range(VIEWERS)))

        cpu = cpu_seconds(server_pid, children=True)
        started = time.perf_counter()
        asyncio.run(main())
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(server_pid, children=True) - cpu
        latencies.sort()
        n = len(latencies)
        return {"rps": round(n / elapsed, 1), "requests": n,
                "p50_ms": round(latencies[n // 2], 2), "p90_ms": round(latencies[int(n * .9)], 2),
                "p99_ms": round(latencies[int(n * .99)], 2), "max_ms": round(latencies[-1], 2),
                "server_cpu_ms_per_request": round(cpu * 1000 / n, 3) if n else None,
                "failures": len(failures), "failure_examples": failures[:3]}

    def memory(self) -> None:
        """One worker process (16 threads), instant provider, 10,000 articles: RSS after the
        first 1,000 and at the end."""
        from webapp.models import ArticleStatus as A
        self._set_fake(latency=0.0, chunks=10, words=120)
        worker = self.workers[0]
        batch_id = getattr(self, "submit_batch_id", None)
        if batch_id is None:  # run alone: submit the same 10,000 rows through the service
            from webapp.services import batches
            rows = [{"title": f"Memory article {i}"} for i in range(MEMORY_ARTICLES)]
            sub = batches.submit(self.user, {"name": "bench memory", "rows": rows,
                                             "target_words": 600})
            if sub.batch is None or sub.dispatch_error:
                raise RuntimeError(f"submit failed: {sub.errors.fields or sub.dispatch_error}")
            batch_id = sub.batch.id
        rss_start = rss_kib(worker.pid)
        cpu0 = cpu_seconds(worker.pid)
        t0 = time.perf_counter()
        samples = []  # (articles done, RSS KiB) each time another 1,000 are done
        next_mark = MEMORY_FIRST
        deadline = time.monotonic() + 900
        while True:
            counts = self._article_counts(batch_id)
            done = sum(counts.get(s, 0) for s in A.FINAL)
            if done >= next_mark:
                samples.append((done, rss_kib(worker.pid)))
                next_mark = (done // 1000 + 1) * 1000
            if done >= MEMORY_ARTICLES:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {done} of {MEMORY_ARTICLES} articles done")
            time.sleep(0.25)
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds(worker.pid) - cpu0
        self._wait_batch_final(batch_id, timeout=30)
        first = samples[0][1]
        end = rss_kib(worker.pid)
        growth = (end - first) * 100 / first
        self.figures["worker_rss_growth_pct"] = round(growth, 1)
        self.details["worker_memory"] = {
            "articles": MEMORY_ARTICLES, "processes": 1, "threads": MEMORY_THREADS,
            "article_counts": self._article_counts(batch_id),
            "rss_mb_at_start": round(rss_start / 1024, 1),
            "rss_mb_after_first_1000": round(first / 1024, 1),
            "rss_mb_at_end": round(end / 1024, 1),
            "rss_mb_by_articles_done": {n: round(kib / 1024, 1) for n, kib in samples},
            "seconds": round(elapsed, 1), "articles_per_s": round(MEMORY_ARTICLES / elapsed, 1),
            "worker_cpu_ms_per_article": round(cpu * 1000 / MEMORY_ARTICLES, 2)}
        log(f"worker memory: {first / 1024:.1f} MB after {MEMORY_FIRST} articles, "
            f"{end / 1024:.1f} MB after {MEMORY_ARTICLES} ({growth:+.1f} %), "
            f"{MEMORY_ARTICLES / elapsed:.0f} articles/s")

    # -- issue 6: the dashboard over 10,000 batches and 1,000,000 articles ------------------

    def find(self) -> None:
        from flask_migrate import upgrade

        from bench import finddb
        from webapp import create_app
        from webapp.extensions import db
        from webapp.models import Role
        from webapp.services import batches, progress, users
        from webapp.services.batches import BatchFilter

        n_batches = int(FIND_BATCHES * self.args.find_scale)
        n_articles = int(FIND_ARTICLES * self.args.find_scale)
        path = self.tmp / "find.sqlite3"
        app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}",
                          "REDIS_URL": self.redis_url})
        self.ctx.pop()
        ctx = app.app_context()
        ctx.push()
        details: dict = {"batches": n_batches, "articles": n_articles}
        try:
            upgrade()
            _, password, _ = users.create_user("finder@localhost", Role.ADMIN)
            t0 = time.perf_counter()
            with db.engine.begin() as conn:
                made = finddb.build(conn, batches=n_batches, articles=n_articles)
            details["build_s"] = round(time.perf_counter() - t0, 1)
            with db.engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE")  # as a maintained database would have
            details["database_mb"] = round(path.stat().st_size / 1e6, 1)
            log(f"find: {made['batches']} batches, {made['articles']} articles in "
                f"{details['build_s']} s ({details['database_mb']} MB)")

            def timed(fn, repeat=FIND_REPEAT):
                """Median and spread of repeated calls (the first one warms the cache)."""
                fn()
                db.session.rollback()
                times = []
                for _ in range(repeat):
                    t = time.perf_counter()
                    out = fn()
                    times.append((time.perf_counter() - t) * 1000)
                    db.session.rollback()
                times.sort()
                return {"p50_ms": round(statistics.median(times), 2),
                        "min_ms": round(times[0], 2), "max_ms": round(times[-1], 2)}, out

            queries = {
                "no_filter": BatchFilter(),
                "status_failed": BatchFilter(status="failed"),
                "author": BatchFilter(author=finddb.AUTHOR_WORD),
                "text_batch_name": BatchFilter(q=finddb.NAME_WORD),
                "text_title_common": BatchFilter(q=finddb.COMMON_TITLE_WORD),
                "text_title_rare": BatchFilter(q=finddb.RARE_TITLE_WORD),
                "text_no_match": BatchFilter(q="no-such-words-anywhere"),
                "date_range_30d": BatchFilter(since=made["since"], until=made["until"]),
            }
            per_page = app.config["BATCHES_PER_PAGE"]
            service = {}
            for name, flt in queries.items():
                # Text searches scan; fewer repeats keep the phase short.
                repeat = 3 if flt.q else FIND_REPEAT
                stats, (rows, total) = timed(lambda: batches.page_of_batches(1, per_page, flt),
                                             repeat)
                service[name] = {**stats, "matching_batches": total, "rows": len(rows)}
                log(f"find {name}: {stats['p50_ms']} ms ({total} batches)")
            details["page_of_batches"] = service

            batch_id = made["running_batch_id"]
            since = _utcnow() - timedelta(seconds=1)
            details["batch_service"] = {
                "batch_view_with_counts": timed(lambda: progress.batch_view(
                    batch_id, with_rows=False))[0],
                "poll_batch_view_rows": timed(lambda: progress.batch_view(
                    batch_id, since, with_rows=True))[0],
                "article_rows": timed(lambda: progress.article_rows(batch_id))[0]}
        finally:
            ctx.pop()
            self.ctx.push()

        # The same pages end to end (routing, session, templates) through the test client.
        client = app.test_client()
        page = client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
        client.post("/login", data={"email": "finder@localhost", "password": password,
                                    "csrf_token": token})
        http = {}
        for name, url in (("dashboard", "/"), ("dashboard_status", "/?status=failed"),
                          ("dashboard_text_title", f"/?q={finddb.RARE_TITLE_WORD}"),
                          ("batch_page", f"/batches/{batch_id}"),
                          ("batch_poll", f"/batches/{batch_id}/progress?since="
                                         f"{since.isoformat()}&seen=running")):
            def get(url=url):
                response = client.get(url)
                assert response.status_code in (200, 286), (url, response.status_code)
            http[name] = timed(get, 3 if "text" in name else FIND_REPEAT)[0]
        details["http"] = http
        self.celery.set_default()  # create_app made the second app's Celery the default

        if not self.args.no_fts:
            details["fts5_trigram_prototype"] = self._fts_prototype(path, made)
        self.details["find"] = details
        if self.args.find_scale != 1.0:
            details["scale"] = self.args.find_scale
            log("find: --find-scale given, so no figures are recorded (details only)")
            return
        self.figures["find_dashboard_p50_ms"] = service["no_filter"]["p50_ms"]
        self.figures["find_text_title_ms"] = service["text_title_rare"]["p50_ms"]

    def _fts_prototype(self, path: Path, made: dict) -> dict:
        """What an FTS5 trigram index on article titles would give (not part of the app):
        build it on a copy of the connection, and time the title part of the search."""
        import sqlite3

        from bench import finddb
        conn = sqlite3.connect(path)
        try:
            t0 = time.perf_counter()
            conn.execute("CREATE VIRTUAL TABLE article_title_fts USING fts5(title, "
                         "content='articles', content_rowid='id', tokenize='trigram')")
            conn.execute("INSERT INTO article_title_fts(article_title_fts) VALUES('rebuild')")
            conn.commit()
            build_s = time.perf_counter() - t0
            # The dashboard's search with the title half answered by the index: batches
            # whose name matches, or that hold an article whose title matches.
            sql = ("SELECT count(*) FROM batches WHERE lower(name) LIKE :like OR id IN "
                   "(SELECT a.batch_id FROM articles a JOIN article_title_fts f "
                   "ON f.rowid = a.id WHERE article_title_fts MATCH :match)")
            page_sql = sql.replace("count(*)", "id") + " ORDER BY created_at DESC, id DESC LIMIT 20"
            out = {"build_s": round(build_s, 1)}
            try:  # the index's size, where SQLite has the dbstat table
                out["index_mb"] = round(conn.execute(
                    "SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'article_title_fts%'"
                ).fetchone()[0] / 1e6, 1)
            except sqlite3.OperationalError:
                pass
            for name, word in (("rare", finddb.RARE_TITLE_WORD),
                               ("common", finddb.COMMON_TITLE_WORD)):
                params = {"like": f"%{word.lower()}%", "match": f'"{word}"'}
                times = []
                for _ in range(3):
                    t = time.perf_counter()
                    total = conn.execute(sql, params).fetchone()[0]
                    conn.execute(page_sql, params).fetchall()
                    times.append((time.perf_counter() - t) * 1000)
                out[f"text_title_{name}_ms"] = round(statistics.median(times), 2)
                out[f"text_title_{name}_matching_batches"] = total
            return out
        except sqlite3.OperationalError as exc:  # an SQLite built without FTS5
            return {"error": str(exc)}
        finally:
            conn.close()

    # -- the run --------------------------------------------------------------------------

    def _cpu(self) -> dict:
        out = {"bench": sum(os.times()[:2])}
        for name, proc in self.procs.started:
            # gunicorn's work is in forked workers; see the load figures.
            if not name.startswith(("gunicorn", "worker")):
                out[name] = cpu_seconds(proc.pid)
        out["workers"] = self.workers_cpu()
        return out

    def _cancel_leftovers(self) -> None:
        """Cancel batches a failed phase left running, so that they do not load the next."""
        from webapp.extensions import db
        from webapp.models import Batch, BatchStatus as B
        from webapp.services import batches
        for batch in db.session.scalars(db.select(Batch).where(Batch.status.not_in(B.FINAL))):
            if batch.name != "bench poll":  # poll's batch is only rows, nothing runs
                log(f"cancelling batch {batch.id} ({batch.name}) left by an earlier phase")
                batches.cancel_batch(self.user, batch)
        db.session.rollback()

    def run_phase(self, name: str, fn) -> None:
        spy = None
        if self.errors:
            self._cancel_leftovers()
        # Workers are (re)started before the phase's clocks start.
        self.ensure_workers(PHASE_WORKERS.get(name, DEFAULT_WORKERS))
        if self.args.profile_worker and not (VENV_BIN / "py-spy").exists():
            log("--profile-worker needs py-spy: .venv/bin/pip install py-spy (not a dependency)")
        elif self.args.profile_worker and self.workers and name not in ("poll", "load", "find"):
            # Investigation aid: sample the (first) worker's Python stacks during the phase.
            out = self.tmp / f"worker-{name}.txt"
            spy = subprocess.Popen([str(VENV_BIN / "py-spy"), "record", "--pid",
                                    str(self.workers[0].pid), "--rate", "200", "--gil",
                                    "--format", "raw", "--output", str(out), "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)  # py-spy needs a moment to attach
        # CPU used by each process during the phase: on a small machine the worker, the
        # fake provider and this process share the cores, which the figures must show.
        cpu_before = self._cpu()
        wall = time.monotonic()
        try:
            fn()
            wall = time.monotonic() - wall
            self.details.setdefault("cpu_s", {})[name] = {
                "wall": round(wall, 2),
                **{k: round(v - cpu_before.get(k, 0.0), 2) for k, v in self._cpu().items()}}
        except Exception as exc:  # one broken phase still lets the others report
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            log(f"phase {name} FAILED: {exc}")
            traceback.print_exc()
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                spy.wait(30)
                log(f"worker profile: {self.tmp / f'worker-{name}.txt'}")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def print_table(data: dict) -> None:
    rows = [("figure", "value", "goal", "result")]
    carried = data.get("carried_over", {})
    for key, (phase, goal, test) in GOALS.items():
        value = data.get(key)
        if value is None:
            verdict = "not run" if phase not in data.get("phases_run", ()) else "ERROR"
        elif test is None:
            verdict = "info"
        else:
            verdict = "pass" if test(value) else "FAIL"
        if key in carried:
            verdict += f" (from {carried[key]})"
        rows.append((key, "—" if value is None else f"{value:g}", goal, verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


# Which "details" sections each phase writes, so that a phase not run keeps its old ones.
DETAIL_SECTIONS = {"makespan": ("makespan",), "seed": ("seed",), "pipeline": ("pipeline_vs_bare",),
                   "poll": ("poll",), "load": ("poll_load",), "cancel": ("cancel",),
                   "faults": ("faults_429",), "rpm": ("rpm",), "submit": ("submit_10k",),
                   "viewers": ("viewers50",), "memory": ("worker_memory",), "find": ("find",)}


def write_results(bench: Bench, args, started: float, loadavg_at_start, ran: list) -> dict:
    """latest.json: this run's figures; those of phases not run are kept from the
    previous file, with the time they were measured in "carried_over"."""
    timestamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        previous = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        previous = {}
    data = {key: bench.figures.get(key) for key in GOALS}
    carried = {}
    details = dict(bench.details)
    for key, (phase, _, _) in GOALS.items():
        if phase not in ran and previous.get(key) is not None:
            data[key] = previous[key]
            carried[key] = (previous.get("carried_over", {}).get(key)
                            or previous.get("timestamp", "an earlier run"))
    old_details = previous.get("details", {})
    for phase, sections in DETAIL_SECTIONS.items():
        if phase not in ran:
            for section in sections:
                if section in old_details:
                    details[section] = old_details[section]
            if phase in old_details.get("cpu_s", {}):
                details.setdefault("cpu_s", {})[phase] = old_details["cpu_s"][phase]
    verdicts = {}
    for key, (phase, goal, test) in GOALS.items():
        value = data.get(key)
        verdicts[key] = {"goal": goal, "pass": None if value is None or test is None
                         else bool(test(value))}
    data.update({
        "goals": verdicts,
        "details": details,
        "errors": bench.errors,
        "phases_run": ran,
        "carried_over": carried,
        "timestamp": timestamp,
        "duration_s": round(time.monotonic() - started, 1),
        "quick": args.quick,
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    # Other work on the machine skews every figure; this shows how much ran.
                    "loadavg_at_start": loadavg_at_start, "loadavg_at_end": os.getloadavg()},
    })
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return data


def _stop_on_signal(signum, _frame):
    # Turn SIGTERM / the hard time limit into an exception so that `finally` cleans up.
    raise SystemExit(f"stopped by signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="seed baseline on 40 titles, extrapolated to 200")
    parser.add_argument("--only", default="",
                        help="comma-separated phases (" + ",".join(PHASES) + ") or groups ("
                             + ",".join(GROUPS) + ")")
    parser.add_argument("--no-find", action="store_true",
                        help="skip the dashboard on 1,000,000 articles (about 45 s)")
    parser.add_argument("--find-scale", type=float, default=1.0,
                        help="find: a fraction of the 10,000 batches and 1,000,000 articles "
                             "(to try the phase quickly; figures then are not comparable)")
    parser.add_argument("--no-fts", action="store_true",
                        help="find: skip the FTS5 trigram index prototype")
    parser.add_argument("--profile-worker", action="store_true",
                        help="sample the Celery worker with py-spy during the worker phases "
                             "(py-spy must be installed in .venv; implies --keep)")
    parser.add_argument("--gunicorn-args", default="",
                        help="extra gunicorn flags for the load test, e.g. '--max-requests 0'")
    parser.add_argument("--worker-args", default="",
                        help="extra celery worker flags (investigation aid), "
                             "e.g. '--prefetch-multiplier 2'")
    parser.add_argument("--worker-include", default="",
                        help="extra modules for the worker to import (investigation aids)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, db)")
    args = parser.parse_args()
    for tool in ("redis-server", "wrk"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (make bench installs it)", file=sys.stderr)
            return 2

    started = time.monotonic()
    loadavg_at_start = os.getloadavg()
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(sig, _stop_on_signal)
    signal.alarm(HARD_LIMIT_S)
    tmp = Path(tempfile.mkdtemp(prefix="pressroom-bench-"))
    procs = Procs(tmp)
    bench = Bench(args, tmp, procs)
    functions = {"makespan": bench.makespan, "seed": bench.seed_baseline,
                 "pipeline": bench.pipeline_vs_bare, "poll": bench.poll,
                 "load": bench.poll_under_load, "cancel": bench.cancel, "faults": bench.faults,
                 "viewers": bench.viewers, "rpm": bench.rpm, "submit": bench.submit_10k,
                 "memory": bench.memory, "find": bench.find}
    only = set()
    for word in (w for w in args.only.split(",") if w):
        if word not in GROUPS and word not in PHASES:
            parser.error(f"unknown phase {word!r}")
        only.update(GROUPS.get(word, (word,)))
    selected = [p for p in PHASES if (p in only if only else p != "find" or not args.no_find)]
    if "load" in selected and "poll" not in selected:
        selected.insert(selected.index("load"), "poll")  # load polls the batch poll made
    ran = []
    try:
        bench.setup()
        for name in selected:
            if name == "load" and "poll" in bench.errors:
                continue  # no poll URL to load
            log(f"phase {name}")
            ran.append(name)
            bench.run_phase(name, functions[name])
    except BaseException as exc:
        bench.errors["setup"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        signal.alarm(0)
        procs.stop_all()
        if args.keep or args.profile_worker or bench.errors:
            print(f"logs and database kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    data = write_results(bench, args, started, loadavg_at_start, ran)
    print()
    print_table(data)
    print(f"\nwritten to {RESULTS.relative_to(ROOT)} in {time.monotonic() - started:.0f} s"
          + (" (--quick: seed baseline extrapolated from 40 titles)" if args.quick else ""))
    if bench.errors:
        print("errors: " + json.dumps(bench.errors, indent=2))
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
