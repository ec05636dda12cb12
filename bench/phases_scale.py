"""Issue 5, scale: a 10,000-row submission through the API, 50 viewers polling a batch that
is really running, and worker memory over 10,000 articles.

`submit` and `memory` run against one worker process of 16 threads (MEMORY_WORKERS), so
that RSS is one process's; `memory` writes the batch `submit` made when both run.
"""
from __future__ import annotations

import json
import time
from datetime import timedelta

from bench.loadgen import paced_viewers, poll_script, warm_gunicorn, wrk
from bench.procs import cpu_seconds, rss_kib
from bench.stack import CONCURRENCY, Bench, log, utcnow, wait_until
from webapp.services.progress import ARTICLES_PER_PAGE

SUBMIT_ROWS = 10_000
VIEW_ARTICLES, VIEW_LATENCY, VIEWERS, VIEW_WRK_S = 1000, 8.0, 50, 10
MEMORY_ARTICLES, MEMORY_THREADS, MEMORY_FIRST = SUBMIT_ROWS, 16, 1000
MEMORY_WORKERS = (1, MEMORY_THREADS, ())


def submit_10k(bench: Bench) -> None:
    """POST /api/v1/batches with 10,000 rows through the test client, until the 201."""
    rows = [{"title": f"Scale article {i}: a story about item {i * 7919 % 10007}"}
            for i in range(SUBMIT_ROWS)]
    body = json.dumps({"name": "bench submit 10k", "rows": rows, "target_words": 600})
    headers = {"Authorization": f"Bearer {bench.api_token}"}
    client = bench.app.test_client()
    with bench.no_app_context():
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
    bench.submit_batch_id = data["id"]
    bench.figures["submit_10k_s"] = round(elapsed, 3)
    bench.details["submit_10k"] = {
        "rows": SUBMIT_ROWS, "request_bytes": len(body),
        "response_bytes": len(response.get_data()), "seconds": round(elapsed, 3),
        "bench_process_cpu_s": round(cpu, 3), "articles_in_response": len(data["articles"]),
        "dispatched_by": "a worker (over DISPATCH_INLINE_MAX)"
        if SUBMIT_ROWS > bench.app.config["DISPATCH_INLINE_MAX"] else "the request"}
    log(f"submit: {SUBMIT_ROWS} rows answered 201 in {elapsed:.2f} s")


def viewers(bench: Bench) -> None:
    """50 viewers polling a batch that is really running (32 articles in flight)."""
    from webapp.models import ArticleStatus as A, Batch
    from webapp.services import control
    # Streams that last VIEW_LATENCY s with progress every REPORT_EVERY: the workers
    # write progress and finish rows while the viewers poll.
    bench.set_fake(latency=VIEW_LATENCY, chunks=40, words=400)
    titles = [f"Viewed article {i}" for i in range(VIEW_ARTICLES)]
    batch_id = bench.submit(titles, "bench viewers")
    wait_until(lambda: bench.article_counts(batch_id).get(A.RUNNING) == CONCURRENCY
               and bench.fake.command(cmd="stats", records=False)["in_flight"] == CONCURRENCY,
               60, f"{CONCURRENCY} articles in flight", interval=0.1)
    gunicorn = None
    try:
        gunicorn, base = bench.start_gunicorn()
        cookie = f"session={bench.signed_in_cookie()}"
        path = f"/batches/{batch_id}/progress"
        page_args = f"&seen=running&first=1&last={ARTICLES_PER_PAGE}"
        warm_gunicorn(f"{base}{path}?since={utcnow().isoformat()}{page_args}", cookie)
        counts_before = bench.article_counts(batch_id)
        # As fast as they are answered (wrk -c50, closed loop), then as viewers really
        # poll: each one second after its previous answer. `since` is a second ago,
        # as from the page.
        closed = wrk(base + path, cookie, gunicorn.pid, connections=VIEWERS,
                     seconds=VIEW_WRK_S, script=poll_script(bench.tmp, path, page_args))
        paced = paced_viewers(
            base, lambda: (f"{path}?since={(utcnow() - timedelta(seconds=1)).isoformat()}"
                           f"{page_args}"), cookie, gunicorn.pid,
            viewers=VIEWERS, seconds=VIEW_WRK_S * 2)
        counts_after = bench.article_counts(batch_id)
    finally:
        if gunicorn is not None:
            bench.procs.stop(gunicorn)
        from webapp.extensions import db
        control.cancel_batch(bench.user, db.session.get(Batch, batch_id))
        bench.set_fake(latency=0.0, chunks=10, words=120)
    bench.figures["viewers50_p99_ms"] = closed["p99_ms"]
    bench.figures["viewers50_paced_p99_ms"] = paced["p99_ms"]
    bench.details["viewers50"] = {
        "articles": VIEW_ARTICLES, "in_flight": CONCURRENCY, "provider_latency_s": VIEW_LATENCY,
        "viewers": VIEWERS, "closed_loop": {"wrk": f"-t2 -c{VIEWERS} -d{VIEW_WRK_S}s", **closed},
        "one_poll_per_second": {"how": f"{VIEWERS} viewers for {VIEW_WRK_S * 2} s, each "
                                       "polling 1 s after its previous answer, out of step",
                                **paced},
        "littles_law_min_mean_ms": round(VIEWERS / closed["rps"] * 1000, 1),
        "article_counts_before": counts_before, "article_counts_after": counts_after}
    log(f"50 viewers: closed loop {closed['rps']:.0f} req/s, p99 {closed['p99_ms']} ms; "
        f"one poll a second: p99 {paced['p99_ms']} ms ({paced['rps']:.0f} req/s)")


def memory(bench: Bench) -> None:
    """One worker process (16 threads), instant provider, 10,000 articles: RSS after the
    first 1,000 and at the end."""
    from webapp.models import ArticleStatus as A
    bench.set_fake(latency=0.0, chunks=10, words=120)
    worker = bench.workers[0]
    batch_id = bench.submit_batch_id
    if batch_id is None:  # run alone: submit the same 10,000 rows through the service
        from webapp.services import submission
        rows = [{"title": f"Memory article {i}"} for i in range(MEMORY_ARTICLES)]
        sub = submission.submit(bench.user, {"name": "bench memory", "rows": rows,
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
        counts = bench.article_counts(batch_id)
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
    bench.wait_batch_final(batch_id, timeout=30)
    first = samples[0][1]
    end = rss_kib(worker.pid)
    growth = (end - first) * 100 / first
    bench.figures["worker_rss_growth_pct"] = round(growth, 1)
    bench.details["worker_memory"] = {
        "articles": MEMORY_ARTICLES, "processes": 1, "threads": MEMORY_THREADS,
        "article_counts": bench.article_counts(batch_id),
        "rss_mb_at_start": round(rss_start / 1024, 1),
        "rss_mb_after_first_1000": round(first / 1024, 1),
        "rss_mb_at_end": round(end / 1024, 1),
        "rss_mb_by_articles_done": {n: round(kib / 1024, 1) for n, kib in samples},
        "seconds": round(elapsed, 1), "articles_per_s": round(MEMORY_ARTICLES / elapsed, 1),
        "worker_cpu_ms_per_article": round(cpu * 1000 / MEMORY_ARTICLES, 2)}
    log(f"worker memory: {first / 1024:.1f} MB after {MEMORY_FIRST} articles, "
        f"{end / 1024:.1f} MB after {MEMORY_ARTICLES} ({growth:+.1f} %), "
        f"{MEMORY_ARTICLES / elapsed:.0f} articles/s")
