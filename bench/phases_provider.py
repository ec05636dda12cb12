"""Issue 4, the provider misbehaving: a batch with 20 % of requests answered 429 against the
same batch without faults, and a shared cap of requests a minute counted where the requests
arrive (at FakeAI), not where the workers think they sent them.

`rpm` runs against workers started with RATE_LIMITS set (RPM_WORKERS).
"""
from __future__ import annotations

import json
import time

from bench.stack import CONCURRENCY, WORKER_PROCESSES, WORKER_THREADS, Bench, log, worker_env

# 20 % of requests answered 429 (Retry-After: 0); a shared requests-per-minute cap.
FAULT_ARTICLES, FAULT_LATENCY, FAULT_RATE = 200, 0.5, 0.2
RPM_LIMIT, RPM_ARTICLES, RPM_OBSERVE_S, RPM_WINDOW_S = 600, 800, 70.0, 60.0
RPM_WORKERS = (WORKER_PROCESSES, WORKER_THREADS, worker_env(
    RATE_LIMITS=json.dumps({"*": {"requests": f"{RPM_LIMIT}/minute"}})))


def _timed_batch(bench: Bench, n: int, name: str, timeout: float) -> dict:
    """Submit n titles, wait for the batch to finish; wall and worker CPU time, counts."""
    titles = [f"{name.capitalize()} article {i}" for i in range(n)]
    cpu0 = bench.workers_cpu()
    t0 = time.perf_counter()
    batch_id = bench.submit(titles, f"bench {name}")
    status = bench.wait_batch_final(batch_id, timeout=timeout)
    elapsed = time.perf_counter() - t0
    cpu = bench.workers_cpu() - cpu0
    stats = bench.fake.command(cmd="stats")
    statuses = [r["status"] for r in stats["records"]]
    from webapp.extensions import db
    from webapp.models import Article
    retried = db.session.scalar(db.select(db.func.count()).where(
        Article.batch_id == batch_id, Article.attempts > 1))
    db.session.rollback()
    return {"batch_id": batch_id, "measured_s": round(elapsed, 3), "batch_status": status,
            "article_counts": bench.article_counts(batch_id),
            "articles_retried": retried,
            "provider_requests": len(statuses),
            "provider_429s": statuses.count(429),
            "provider_max_concurrent": stats["max_concurrent"],
            "worker_cpu_ms_per_article": round(cpu * 1000 / n, 2)}


def faults(bench: Bench) -> None:
    """200 articles at 0.5 s, 32 at once, without faults and then with 20 % 429s."""
    from webapp.models import ArticleStatus as A
    timeout = 120
    bench.set_fake(latency=FAULT_LATENCY, chunks=10, words=120)
    clean = _timed_batch(bench, FAULT_ARTICLES, "faults clean", timeout)
    bench.set_fake(latency=FAULT_LATENCY, chunks=10, words=120, fail_rate=FAULT_RATE)
    faulty = _timed_batch(bench, FAULT_ARTICLES, "faults 429", timeout)
    bench.set_fake(latency=0.0, chunks=10, words=120)
    failures = faulty["article_counts"].get(A.FAILED, 0)
    ratio = faulty["measured_s"] / clean["measured_s"]
    bench.figures["faults_429_failures"] = failures
    bench.figures["faults_429_makespan_ratio"] = round(ratio, 3)
    max_attempts = bench.app.config["GENERATION_MAX_ATTEMPTS"]
    bench.details["faults_429"] = {
        "articles": FAULT_ARTICLES, "latency_s": FAULT_LATENCY, "concurrency": CONCURRENCY,
        "fail_rate": FAULT_RATE, "retry_after_s": 0, "fault_free": clean, "with_429s": faulty,
        "generation_max_attempts": max_attempts,
        # An article fails only when all its attempts draw a 429.
        "expected_failures": round(FAULT_ARTICLES * FAULT_RATE ** max_attempts, 2)}
    log(f"429s: {faulty['provider_429s']} of {faulty['provider_requests']} requests, "
        f"{failures} articles failed, {faulty['measured_s']:.2f} s vs "
        f"{clean['measured_s']:.2f} s fault-free (× {ratio:.2f})")


def rpm(bench: Bench) -> None:
    """A shared cap of 600 requests a minute, counted where the requests arrive."""
    bench.set_fake(latency=0.0, chunks=10, words=120)
    # The workers' warm-up took permits too: start from an empty window.
    for key in bench.redis.scan_iter("pressroom-provider*"):
        bench.redis.delete(key)
    titles = [f"Rate article {i}" for i in range(RPM_ARTICLES)]
    t0 = time.monotonic()
    batch_id = bench.submit(titles, "bench rpm")
    # At most 600 in the first minute, the rest in the next: about 65 s of work.
    status = bench.wait_batch_final(batch_id, timeout=RPM_WINDOW_S * 3 + 60)
    finished = time.monotonic() - t0
    # Observe for at least RPM_OBSERVE_S, so that the 60 s windows slide over a real run.
    if finished < RPM_OBSERVE_S:
        time.sleep(RPM_OBSERVE_S - finished)
    observed = time.monotonic() - t0
    stats = bench.fake.command(cmd="stats")
    starts = sorted(r["start"] for r in stats["records"])
    # How long after taking its permit (the limiter's timestamp, wall clock) a request
    # reached the provider: the limiter's list holds the last RPM_LIMIT permits, matched
    # here in order with the last arrivals. Approximate (order may differ), for scale.
    permits = []
    for key in bench.redis.scan_iter("pressroom-provider*"):
        if bench.redis.type(key) == b"list":
            permits = sorted(float(v) for v in bench.redis.lrange(key, 0, -1))
    arrivals = [t + stats["wall_offset"] for t in starts[-len(permits):]] if permits else []
    lags = sorted(a - p for a, p in zip(arrivals, permits))
    # Every arrival and permit, for a closer look (kept with --keep).
    (bench.tmp / "rpm-times.json").write_text(json.dumps(
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
    bench.figures["rpm_observed_max"] = most
    bench.details["rpm"] = {
        "limit": f"{RPM_LIMIT}/minute", "articles": RPM_ARTICLES,
        "article_counts": bench.article_counts(batch_id), "batch_status": status,
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
