"""Issue 2, generation itself: makespan against the ideal, the seed project's baseline, the
whole pipeline against bare Celery, and how fast a cancel stops 32 streaming articles.

Each phase is a function of the run's `Bench` (bench/stack.py) that records its figures and
details there; all run against the default workers (2 processes × 16 threads).
"""
from __future__ import annotations

import math
import time

from bench.stack import (CONCURRENCY, WORKER_PROCESSES, WORKER_THREADS, Bench, log, utcnow,
                         wait_until)

MAKESPAN_ARTICLES, MAKESPAN_LATENCY = 200, 0.5
PIPELINE_ARTICLES = 500
CANCEL_ARTICLES, CANCEL_LATENCY, CANCEL_CHUNKS = 32, 10.0, 200


def makespan(bench: Bench) -> None:
    bench.set_fake(latency=MAKESPAN_LATENCY, chunks=10, words=120)
    titles = [f"Makespan article {i}" for i in range(MAKESPAN_ARTICLES)]
    ideal = math.ceil(MAKESPAN_ARTICLES / CONCURRENCY) * MAKESPAN_LATENCY
    submitted_at = utcnow()
    cpu0 = bench.workers_cpu()
    t0 = time.perf_counter()
    batch_id = bench.submit(titles, "bench makespan")
    t_dispatched = time.perf_counter() - t0
    status = bench.wait_batch_final(batch_id, timeout=60)
    elapsed = time.perf_counter() - t0
    cpu = bench.workers_cpu() - cpu0
    stats = bench.fake.command(cmd="stats")
    bench.figures["makespan_ratio"] = round(elapsed / ideal, 3)
    bench.details["makespan"] = {
        "articles": MAKESPAN_ARTICLES, "latency_s": MAKESPAN_LATENCY,
        "concurrency": CONCURRENCY, "worker_processes": WORKER_PROCESSES,
        "threads_per_process": WORKER_THREADS, "ideal_s": ideal, "measured_s": round(elapsed, 3),
        "submit_and_dispatch_s": round(t_dispatched, 3), "batch_status": status,
        "article_counts": bench.article_counts(batch_id),
        "provider_requests": stats["requests"],
        "provider_max_concurrent": stats["max_concurrent"],
        # Requests in flight at the provider, on average over the makespan (32 would be
        # no idle slot at all); what is missing went to work between requests.
        "provider_mean_in_flight": round(sum(r["end"] - r["start"] for r in stats["records"]
                                             if r["end"]) / elapsed, 1),
        "worker_cpu_ms_per_article": round(cpu * 1000 / MAKESPAN_ARTICLES, 2),
        **bench.article_timings(batch_id, submitted_at),
    }
    log(f"makespan: {elapsed:.2f} s for {MAKESPAN_ARTICLES} articles (ideal {ideal} s), "
        f"batch {status}, max concurrent at provider {stats['max_concurrent']}")


def seed_baseline(bench: Bench) -> None:
    bench.set_fake(latency=MAKESPAN_LATENCY, chunks=10, words=120)
    n = 40 if bench.args.quick else MAKESPAN_ARTICLES
    titles = [f"Seed article {i}" for i in range(n)]
    t0 = time.perf_counter()
    result = bench.celery.send_task("bench.seed_batch", args=[titles], queue="generation")
    out = result.get(timeout=n * MAKESPAN_LATENCY * 3 + 30, interval=0.05)
    elapsed = time.perf_counter() - t0
    scaled = elapsed * MAKESPAN_ARTICLES / n
    bench.figures["seed_makespan_s"] = round(scaled, 2)
    bench.details["seed"] = {"titles_run": n, "measured_s": round(elapsed, 3),
                             "extrapolated": n != MAKESPAN_ARTICLES, "result": out}
    note = f" (ran {n}, extrapolated to {MAKESPAN_ARTICLES})" if n != MAKESPAN_ARTICLES else ""
    log(f"seed way: {scaled:.1f} s for {MAKESPAN_ARTICLES} articles{note}")


def pipeline_vs_bare(bench: Bench) -> None:
    """The whole pipeline against bare Celery, instant provider."""
    bench.set_fake(latency=0.0, chunks=10, words=120)
    n = PIPELINE_ARTICLES
    cpu0 = bench.workers_cpu()
    t0 = time.perf_counter()
    ids = bench.send_noops(n)
    bench.wait_results(ids, timeout=120)
    bare_s = time.perf_counter() - t0
    cpu1 = bench.workers_cpu()

    titles = [f"Pipeline article {i}" for i in range(n)]
    submitted_at = utcnow()
    t0 = time.perf_counter()
    batch_id = bench.submit(titles, "bench pipeline")
    t_dispatched = time.perf_counter() - t0
    status = bench.wait_batch_final(batch_id, timeout=180)
    pipe_s = time.perf_counter() - t0
    cpu2 = bench.workers_cpu()

    bare_rate, pipe_rate = n / bare_s, n / pipe_s
    bench.figures["pipeline_vs_bare_ratio"] = round(pipe_rate / bare_rate, 3)
    bench.details["pipeline_vs_bare"] = {
        "tasks": n, "worker_processes": WORKER_PROCESSES,
        "threads_per_process": WORKER_THREADS, "bare_s": round(bare_s, 3),
        "bare_per_s": round(bare_rate, 1),
        "pipeline_s": round(pipe_s, 3), "pipeline_per_s": round(pipe_rate, 1),
        "pipeline_submit_and_dispatch_s": round(t_dispatched, 3), "batch_status": status,
        # A worker process runs Python on one core at a time: CPU per task is what
        # bounds the rate here, and the steadier number on a shared machine.
        "worker_cpu_ms_per_bare_task": round((cpu1 - cpu0) * 1000 / n, 2),
        "worker_cpu_ms_per_article": round((cpu2 - cpu1) * 1000 / n, 2),
        "article_counts": bench.article_counts(batch_id),
        **bench.article_timings(batch_id, submitted_at),
    }
    log(f"pipeline {pipe_rate:.0f} articles/s vs bare {bare_rate:.0f} tasks/s")


def cancel(bench: Bench) -> None:
    from webapp.extensions import db
    from webapp.models import ArticleStatus as A, Batch
    from webapp.services import control

    # 400 words in 200 chunks: a chunk every 50 ms, each with text in it.
    bench.set_fake(latency=CANCEL_LATENCY, chunks=CANCEL_CHUNKS, words=400)
    titles = [f"Cancel article {i}" for i in range(CANCEL_ARTICLES)]
    batch_id = bench.submit(titles, "bench cancel")
    wait_until(lambda: bench.article_counts(batch_id).get(A.RUNNING) == CANCEL_ARTICLES,
               20, "every article to be running")

    def all_streaming():
        records = bench.fake.command(cmd="stats")["records"]
        return len(records) == CANCEL_ARTICLES and all(r["chunks_sent"] > 0 for r in records)
    wait_until(all_streaming, 20, "every stream to have started", interval=0.05)

    batch = db.session.get(Batch, batch_id)
    t0_mono = time.monotonic()
    t0 = time.perf_counter()
    control.cancel_batch(bench.user, batch)
    t_call = time.perf_counter() - t0
    counts = wait_until(
        lambda: (c := bench.article_counts(batch_id)) and not any(
            c.get(s) for s in (A.QUEUED, A.RUNNING, A.CANCELLING)) and c,
        30, "every article to stop")
    db_s = time.perf_counter() - t0
    records = wait_until(lambda: (s := bench.fake.command(cmd="stats"))["in_flight"] == 0
                         and s["records"], 15, "the provider streams to close")
    # A stream ends either by the client going away (noticed by FakeAI) or finishing.
    ended = [r["disconnected_at"] or r["end"] for r in records]
    stream_s = max(ended) - t0_mono
    status = bench.wait_batch_final(batch_id, timeout=10)
    bench.figures["cancel_latency_s"] = round(max(db_s, stream_s), 3)
    bench.details["cancel"] = {
        "articles": CANCEL_ARTICLES, "provider_latency_s": CANCEL_LATENCY,
        "chunks": CANCEL_CHUNKS, "cancel_call_s": round(t_call, 3),
        "until_no_article_active_s": round(db_s, 3),
        "until_last_stream_closed_s": round(stream_s, 3),
        "streams_disconnected_by_client": sum(1 for r in records if r["disconnected"]),
        "article_counts": counts, "batch_status": status,
    }
    log(f"cancel: last stream closed after {stream_s:.3f} s, no article active after "
        f"{db_s:.3f} s, batch {status}")
    bench.set_fake(latency=0.0, chunks=10, words=120)
