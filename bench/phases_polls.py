"""Issue 2, the progress poll: one poll of a 1,000-article batch in-process (time and Redis
round trips), then the same URL under `wrk -c50` through gunicorn against /healthz.

Neither phase needs a worker: the batch is only rows and stored progress. `load` polls the
URL `poll` made (the runner puts `poll` before it).
"""
from __future__ import annotations

import statistics
import time
import uuid
from datetime import timedelta

from bench.loadgen import warm_gunicorn, wrk
from bench.procs import ROOT
from bench.stack import Bench, log, utcnow
from webapp.services.progress import ARTICLES_PER_PAGE

POLL_ARTICLES, POLL_RUNNING, POLL_SAMPLES = 1000, 32, 300


def _make_poll_batch(bench: Bench) -> int:
    """A 1,000-article batch mid-way: succeeded, 32 running with live progress, queued."""
    from sqlalchemy import insert

    from webapp.extensions import db
    from webapp.models import Article, ArticleStatus as A, Batch, BatchStatus as B
    now = utcnow()
    past = now - timedelta(minutes=1)  # nothing changed since the previous poll
    batch = Batch(user_id=bench.user.id, name="bench poll", provider="openai-compatible (bench)",
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
        bench.celery.backend.store_result(task_id, {"words": 100 + n, "attempt": 1}, "PROGRESS")
    bench.poll_task_ids = [r["task_id"] for r in rows]
    return batch.id


def poll(bench: Bench) -> None:
    import redis.connection

    batch_id = _make_poll_batch(bench)
    since = utcnow().isoformat()
    # The URL the page's poll sends: the batch status it shows (so the action buttons
    # are re-rendered only when it changes) and the rows of its page of articles.
    bench.poll_path = (f"/batches/{batch_id}/progress?since={since}&seen=running"
                       f"&first=1&last={ARTICLES_PER_PAGE}")
    client = bench.app.test_client()
    bench.sign_in(client)
    first = client.get(bench.poll_path)
    body = first.get_data(as_text=True)
    if first.status_code != 200 or 'id="batch-progress"' not in body:
        raise RuntimeError(f"poll answered {first.status_code}: {body[:300]}")
    live_spans = body.count('hx-swap-oob="true">')
    if bench.session_cookie is None:
        bench.session_cookie = client.get_cookie("session").value

    counter = {"n": 0}
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(conn, *a, **kw):
        counter["n"] += 1  # one packed send = one request/response exchange
        return original(conn, *a, **kw)

    times, trips = [], []
    redis.connection.AbstractConnection.send_packed_command = counting
    # Each request must get its own app context and database session (see
    # Bench.no_app_context).
    bench.ctx.pop()
    try:
        for _ in range(20):  # warm caches (templates, statements, connections)
            client.get(bench.poll_path)
        cpu0 = time.process_time()
        for _ in range(POLL_SAMPLES):
            counter["n"] = 0
            t0 = time.perf_counter()
            response = client.get(bench.poll_path)
            times.append((time.perf_counter() - t0) * 1000)
            trips.append(counter["n"])
            assert response.status_code == 200, response.status_code
        cpu_per_poll = (time.process_time() - cpu0) * 1000 / POLL_SAMPLES

        # For scale: the naive poll, one AsyncResult(id).state per task of the batch.
        from celery.result import AsyncResult
        counter["n"] = 0
        t0 = time.perf_counter()
        states = [AsyncResult(t, app=bench.celery).state for t in bench.poll_task_ids]
        naive_ms = (time.perf_counter() - t0) * 1000
        naive_trips = counter["n"]
    finally:
        redis.connection.AbstractConnection.send_packed_command = original
        bench.ctx.push()

    times.sort()
    bench.figures["poll_p50_ms"] = round(statistics.median(times), 2)
    # The typical poll; a rare extra exchange (redis-py's idle-connection health check
    # PING) shows in the max below.
    bench.figures["poll_redis_round_trips"] = int(statistics.median(trips))
    bench.details["poll"] = {
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
    log(f"poll p50 {bench.figures['poll_p50_ms']} ms, "
        f"{bench.figures['poll_redis_round_trips']} Redis round trip(s); "
        f"naive {naive_ms:.0f} ms / {naive_trips} round trips")


def poll_under_load(bench: Bench) -> None:
    gunicorn, base = bench.start_gunicorn()
    try:
        cookie = f"session={bench.signed_in_cookie()}"
        warm_gunicorn(base + bench.poll_path, cookie)
        health = wrk(base + "/healthz", None, gunicorn.pid)
        polls = wrk(base + bench.poll_path, cookie, gunicorn.pid)
    finally:
        bench.procs.stop(gunicorn)
    bench.figures["poll_load_ratio"] = round(polls["rps"] / health["rps"], 3)
    bench.figures["poll_load_p99_ms"] = polls["p99_ms"]
    bench.details["poll_load"] = {
        "wrk": "-t2 -c50 -d10s --latency", "healthz": health, "poll": polls,
        "gunicorn_conf": (ROOT / "gunicorn.conf.py").exists(),
        "gunicorn_extra_args": bench.args.gunicorn_args,
        # 2 when no worker was restarted during the run (max_requests, crashes).
        "worker_boots": bench.procs.tail(f"gunicorn{bench.gunicorn_starts}",
                                         100000).count("Booting worker"),
        # Closed loop: 50 connections, each sends its next request as soon as the
        # previous one is answered, so latency ≈ 50 / throughput (Little's law).
        "littles_law_min_mean_ms": round(50 / polls["rps"] * 1000, 1)}
    log(f"under load: poll {polls['rps']:.0f} req/s (p99 {polls['p99_ms']} ms), "
        f"healthz {health['rps']:.0f} req/s (p99 {health['p99_ms']} ms)")
