"""Pressroom benchmarks (issue 2): throughput, poll cost, poll under load, cancel latency.

    .venv/bin/python bench/run.py            # everything, about 3 minutes
    .venv/bin/python bench/run.py --quick    # seed baseline on 40 titles, extrapolated
    .venv/bin/python bench/run.py --only makespan,pipeline --profile-worker   # investigate

Everything runs on loopback and is started here: a data-less redis-server on a free port,
an SQLite database in a temporary directory (migrated with Flask-Migrate), FakeAI in its
own process (bench/fakectl.py), one Celery worker (threads, --concurrency 32) and, for the
load test, gunicorn with 2 sync workers driven by wrk. Every process is stopped at the end,
also on error or Ctrl-C. Prints a table and writes bench/results/latest.json.

The machine is shared by everything here (the worker, FakeAI, Redis, gunicorn,
wrk and this process), and by whatever else runs on it: wall-clock figures move with the
load average, which latest.json records. CPU per task and per request (in "details") are
the steadier numbers to compare before and after a change.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
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

from bench.procs import (VENV_BIN, FakeAIProcess, Procs, cpu_seconds, free_port,  # noqa: E402
                         start_redis, wait_for_port)

RESULTS = ROOT / "bench" / "results" / "latest.json"
CONCURRENCY = 32
MAKESPAN_ARTICLES, MAKESPAN_LATENCY = 200, 0.5
PIPELINE_ARTICLES = 500
POLL_ARTICLES, POLL_RUNNING, POLL_SAMPLES = 1000, 32, 300
CANCEL_ARTICLES, CANCEL_LATENCY, CANCEL_CHUNKS = 32, 10.0, 200
HARD_LIMIT_S = 15 * 60  # a run that hangs is stopped (and cleaned up) after this

# figure -> (goal text, test); None: reported for scale, no goal.
GOALS = {
    "makespan_ratio": ("<= 1.1", lambda v: v <= 1.1),
    "seed_makespan_s": ("(baseline, ~100 s)", None),
    "pipeline_vs_bare_ratio": (">= 0.5", lambda v: v >= 0.5),
    "poll_p50_ms": ("<= 5", lambda v: v <= 5),
    "poll_redis_round_trips": ("1", lambda v: v <= 1),
    "poll_load_ratio": (">= 0.2", lambda v: v >= 0.2),
    "poll_load_p99_ms": ("<= 100", lambda v: v <= 100),
    "cancel_latency_s": ("<= 1", lambda v: v <= 1),
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
        self.user, self.password, _ = users.create_user("bench@localhost", Role.ADMIN)
        self.celery = self.app.extensions["celery"]
        from webapp.live import get_redis
        self.redis = get_redis()

        self.worker = self.procs.spawn("worker", [
            str(VENV_BIN / "celery"), "-A", "wsgi:celery_app", "worker", "--pool", "threads",
            "--concurrency", str(CONCURRENCY), "--queues", "generation,celery",
            "--include", ",".join(["bench.seedtasks"]
                                  + [m for m in self.args.worker_include.split(",") if m]),
            "--loglevel", "INFO", "-n", f"bench-{os.getpid()}@%h",
        ], env=self.env)
        # Ready means it runs a task end to end, not just that the process exists.
        started = time.monotonic()
        tid = self._send_noops(1)[0]
        try:
            self._wait_results([tid], timeout=60)
        except TimeoutError:
            raise RuntimeError("the Celery worker did not start:\n" + self.procs.tail("worker"))
        log(f"worker ready in {time.monotonic() - started:.1f} s; redis {self.redis_url}, "
            f"fake {self.fake.base_url}, db {db_path}")

    # -- helpers --------------------------------------------------------------------------

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

    def _set_fake(self, **settings) -> None:
        self.fake.command(cmd="set", **settings)
        self.fake.command(cmd="reset")

    # -- (a) makespan against the ideal, and the seed baseline ---------------------------

    def makespan(self) -> None:
        self._set_fake(latency=MAKESPAN_LATENCY, chunks=10, words=120)
        titles = [f"Makespan article {i}" for i in range(MAKESPAN_ARTICLES)]
        ideal = math.ceil(MAKESPAN_ARTICLES / CONCURRENCY) * MAKESPAN_LATENCY
        submitted_at = _utcnow()
        cpu0 = cpu_seconds(self.worker.pid)
        t0 = time.perf_counter()
        batch_id = self._submit(titles, "bench makespan")
        t_dispatched = time.perf_counter() - t0
        status = self._wait_batch_final(batch_id, timeout=60)
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds(self.worker.pid) - cpu0
        stats = self.fake.command(cmd="stats")
        self.figures["makespan_ratio"] = round(elapsed / ideal, 3)
        self.details["makespan"] = {
            "articles": MAKESPAN_ARTICLES, "latency_s": MAKESPAN_LATENCY,
            "concurrency": CONCURRENCY, "ideal_s": ideal, "measured_s": round(elapsed, 3),
            "submit_and_dispatch_s": round(t_dispatched, 3), "batch_status": status,
            "article_counts": self._article_counts(batch_id),
            "provider_requests": stats["requests"],
            "provider_max_concurrent": stats["max_concurrent"],
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
        cpu0 = cpu_seconds(self.worker.pid)
        t0 = time.perf_counter()
        ids = self._send_noops(n)
        self._wait_results(ids, timeout=120)
        bare_s = time.perf_counter() - t0
        cpu1 = cpu_seconds(self.worker.pid)

        titles = [f"Pipeline article {i}" for i in range(n)]
        submitted_at = _utcnow()
        t0 = time.perf_counter()
        batch_id = self._submit(titles, "bench pipeline")
        t_dispatched = time.perf_counter() - t0
        status = self._wait_batch_final(batch_id, timeout=180)
        pipe_s = time.perf_counter() - t0
        cpu2 = cpu_seconds(self.worker.pid)

        bare_rate, pipe_rate = n / bare_s, n / pipe_s
        self.figures["pipeline_vs_bare_ratio"] = round(pipe_rate / bare_rate, 3)
        self.details["pipeline_vs_bare"] = {
            "tasks": n, "bare_s": round(bare_s, 3), "bare_per_s": round(bare_rate, 1),
            "pipeline_s": round(pipe_s, 3), "pipeline_per_s": round(pipe_rate, 1),
            "pipeline_submit_and_dispatch_s": round(t_dispatched, 3), "batch_status": status,
            # One worker process runs Python on one core at a time: its CPU per task is
            # what bounds the rate here.
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
        self.poll_path = f"/batches/{batch_id}/progress?since={since}"
        client = self.app.test_client()
        self._sign_in(client)
        first = client.get(self.poll_path)
        body = first.get_data(as_text=True)
        if first.status_code != 200 or 'id="batch-progress"' not in body:
            raise RuntimeError(f"poll answered {first.status_code}: {body[:300]}")
        live_spans = body.count('hx-swap-oob="true">')
        self.session_cookie = client.get_cookie("session").value

        counter = {"n": 0}
        original = redis.connection.AbstractConnection.send_packed_command

        def counting(conn, *a, **kw):
            counter["n"] += 1  # one packed send = one request/response exchange
            return original(conn, *a, **kw)

        times, trips = [], []
        redis.connection.AbstractConnection.send_packed_command = counting
        # Each request must get its own app context and database session, as under
        # gunicorn; with the bench's context pushed, the test client would reuse it (and
        # its identity map, so the signed-in user would never be loaded).
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

    def poll_under_load(self) -> None:
        port = free_port()
        # gunicorn reads ./gunicorn.conf.py when it exists, as every deployment does; the
        # flags here override only the worker count, the worker class and the address.
        gunicorn = self.procs.spawn("gunicorn", [
            str(VENV_BIN / "gunicorn"), "-w", "2", "-k", "sync", "-b", f"127.0.0.1:{port}",
            *self.args.gunicorn_args.split(), "wsgi:app"], env=self.env)
        try:
            wait_for_port(port, 30, gunicorn)
            base = f"http://127.0.0.1:{port}"
            cookie = f"session={self.session_cookie}"
            request = urllib.request.Request(base + self.poll_path, headers={"Cookie": cookie})
            with urllib.request.urlopen(request, timeout=10) as response:
                page = response.read().decode()
                if response.status != 200 or 'id="batch-progress"' not in page:
                    raise RuntimeError(f"gunicorn poll answered {response.status}: {page[:200]}")
            for _ in range(20):  # both workers import, connect and compile before timing
                urllib.request.urlopen(request, timeout=10).read()
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
            "worker_boots": self.procs.tail("gunicorn", 100000).count("Booting worker")}
        log(f"under load: poll {poll['rps']:.0f} req/s (p99 {poll['p99_ms']} ms), "
            f"healthz {health['rps']:.0f} req/s (p99 {health['p99_ms']} ms)")

    def _wrk(self, url: str, cookie: str | None, server_pid: int) -> dict:
        args = ["wrk", "-t2", "-c50", "-d10s", "--latency"]
        if cookie:
            args += ["-H", f"Cookie: {cookie}"]
        cpu = cpu_seconds(server_pid, children=True)
        out = subprocess.run(args + [url], capture_output=True, text=True, timeout=60).stdout
        cpu = cpu_seconds(server_pid, children=True) - cpu
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
        p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not rps or not p99:
            raise RuntimeError(f"could not read wrk output:\n{out}")
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
        errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        socket_errors = re.search(r"Socket errors:(.*)", out)
        requests = re.search(r"(\d+) requests in", out)
        n = int(requests.group(1)) if requests else 0
        return {"rps": float(rps.group(1)), "p99_ms": round(float(p99.group(1)) * scale, 2),
                "requests": n,
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

    # -- the run --------------------------------------------------------------------------

    def _cpu(self) -> dict:
        out = {"bench": sum(os.times()[:2])}
        for name, proc in self.procs.started:
            if name != "gunicorn":  # its work is in forked workers; see the load figures
                out[name] = cpu_seconds(proc.pid)
        return out

    def run_phase(self, name: str, fn) -> None:
        spy = None
        if self.args.profile_worker and not (VENV_BIN / "py-spy").exists():
            log("--profile-worker needs py-spy: .venv/bin/pip install py-spy (not a dependency)")
        elif self.args.profile_worker and name in ("makespan", "pipeline", "cancel"):
            # Investigation aid: sample the worker's Python stacks while the phase runs.
            out = self.tmp / f"worker-{name}.txt"
            spy = subprocess.Popen([str(VENV_BIN / "py-spy"), "record", "--pid",
                                    str(self.worker.pid), "--rate", "200", "--gil",
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


def print_table(figures: dict) -> None:
    rows = [("figure", "value", "goal", "result")]
    for key, (goal, test) in GOALS.items():
        value = figures.get(key)
        if value is None:
            verdict = "ERROR"
        elif test is None:
            verdict = "info"
        else:
            verdict = "pass" if test(value) else "FAIL"
        rows.append((key, "—" if value is None else f"{value:g}", goal, verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def write_results(bench: Bench, args, started: float, loadavg_at_start) -> None:
    verdicts = {}
    for key, (goal, test) in GOALS.items():
        value = bench.figures.get(key)
        verdicts[key] = {"goal": goal, "pass": None if value is None or test is None
                         else bool(test(value))}
    data = {key: bench.figures.get(key) for key in GOALS}
    data.update({
        "goals": verdicts,
        "details": bench.details,
        "errors": bench.errors,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 1),
        "quick": args.quick,
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    # Other work on the machine skews every figure; this shows how much ran.
                    "loadavg_at_start": loadavg_at_start, "loadavg_at_end": os.getloadavg()},
    })
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2, default=str) + "\n")


def _stop_on_signal(signum, _frame):
    # Turn SIGTERM / the hard time limit into an exception so that `finally` cleans up.
    raise SystemExit(f"stopped by signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="seed baseline on 40 titles, extrapolated to 200")
    parser.add_argument("--only", default="",
                        help="comma-separated phases: makespan,seed,pipeline,poll,load,cancel")
    parser.add_argument("--profile-worker", action="store_true",
                        help="sample the Celery worker with py-spy during the worker phases "
                             "(py-spy must be installed in .venv; implies --keep)")
    parser.add_argument("--gunicorn-args", default="",
                        help="extra gunicorn flags for the load test, e.g. '--max-requests 0'")
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
    phases = [("makespan", bench.makespan), ("seed", bench.seed_baseline),
              ("pipeline", bench.pipeline_vs_bare), ("poll", bench.poll),
              ("load", bench.poll_under_load), ("cancel", bench.cancel)]
    only = {p for p in args.only.split(",") if p}
    try:
        bench.setup()
        for name, fn in phases:
            if only and name not in only:
                continue
            if name == "load" and "poll" in bench.errors:
                continue  # no session cookie or poll URL to load
            log(f"phase {name}")
            bench.run_phase(name, fn)
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
    write_results(bench, args, started, loadavg_at_start)
    print()
    print_table(bench.figures)
    print(f"\nwritten to {RESULTS.relative_to(ROOT)} in {time.monotonic() - started:.0f} s"
          + (" (--quick: seed baseline extrapolated from 40 titles)" if args.quick else ""))
    if bench.errors:
        print("errors: " + json.dumps(bench.errors, indent=2))
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
