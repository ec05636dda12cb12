"""Issue 12: what the Celery worker itself spends, in CPU, per article and per streamed chunk.

- `worker_cost`: one worker process of 16 threads (as `make run` starts it), an instant
  provider. Batches whose answers come in 40, 400 and 1,000 chunks give the cost of one
  more chunk (the slope between 40 and 400) and of everything else an article costs (the
  intercept); the 1,000-chunk batch checks the line. Empty tasks in the same worker give
  what Celery alone costs a task.
- `streams64`: one process of 64 threads, 64 articles streaming at once at 60 chunks a
  second each (about a token a chunk, as a real model streams): does the worker keep up,
  and how much of a core does that take?

CPU is the worker process's user + system time from /proc (all its threads), read from
outside, from the submit until the batch is final and the worker has nothing left to do
(every message acknowledged, its CPU clock standing still): what it spends after the
batch looks final (acknowledgements, results, events) belongs to the batch too. What the
worker spends idling (heartbeats, broker polls; measured first) is taken out.
"""
from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import time
from datetime import datetime, timezone

from bench.procs import ROOT, cpu_seconds
from bench.stack import Bench, log, utcnow, wait_until, worker_env

COST_THREADS = 16  # the Procfile's default CELERY_CONCURRENCY
COST_WORKERS = (1, COST_THREADS, ())
# (chunks per answer, articles). The same text in every answer, 1,000 words, so that only
# the number of chunks changes between batches (and even the 1,000-chunk answers carry a
# word in each chunk; target_words 600 lets the answer run to 1,400 tokens).
COST_RUNS = ((40, 200), (400, 200), (1000, 100))
COST_WORDS = 1000
COST_ROUNDS = 2
BARE_TASKS = 1000
SDK_REQUESTS = 300
IDLE_SAMPLE_S = 2.0

STREAMS, STREAM_RATE, STREAM_CHUNKS = 64, 60, 600  # 64 × 60 = 3,840 chunks/s in all
STREAM_S = STREAM_CHUNKS / STREAM_RATE  # FakeAI spreads the chunks evenly over its latency
STREAM_WORKERS = (1, STREAMS, worker_env(BATCH_MAX_CONCURRENCY=str(STREAMS)))

_TICK = 1 / os.sysconf("SC_CLK_TCK")  # the resolution of /proc's CPU times


def code_measured() -> dict:
    """Which worker code the figures are of: the hot path is being rewritten while these
    phases exist, so each result names the commit and a digest of webapp/generation as it
    was on disk (and which of its files differed from the commit)."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "webapp" / "generation").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""
    changed = git("status", "--porcelain", "--", "webapp/generation")
    return {"commit": git("rev-parse", "--short", "HEAD").strip() or None,
            "generation_sha256": digest.hexdigest()[:16],
            "generation_files_changed": [line[3:] for line in changed.splitlines() if line]}


def _wait_idle(bench: Bench, pid: int, timeout: float = 60) -> float:
    """Until the worker has nothing left to do; returns its CPU seconds then.

    Tasks are acknowledged after they return (acks_late), so an empty queue and no
    unacknowledged message mean every task has ended; then the CPU clock must stand still
    for a moment (the last result and event writes), within one tick of /proc.
    """
    wait_until(lambda: not any(bench.redis.llen(q) for q in ("generation", "celery"))
               and not bench.redis.hlen("unacked"), timeout,
               "the worker's queue to drain", interval=0.02)
    last = cpu_seconds(pid)

    def still():
        nonlocal last
        now = cpu_seconds(pid)
        quiet, last = now - last <= _TICK * 1.5, now
        return quiet
    wait_until(still, timeout, "the worker to be idle", interval=0.2)
    return last


def _idle_rate(bench: Bench, pid: int) -> float:
    """CPU seconds a second the worker spends doing nothing (heartbeats, broker polls),
    to take out of the figures."""
    _wait_idle(bench, pid)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(IDLE_SAMPLE_S)  # a sample of doing nothing, not a wait for a condition
    return (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)


def _measure(bench: Bench, pid: int, idle_rate: float, work) -> dict:
    """Worker CPU of work() and all it left the worker to do, less what idling costs."""
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    result = work()
    wall_done = time.monotonic() - t0
    cpu1 = _wait_idle(bench, pid)
    wall = time.monotonic() - t0
    return {"result": result, "wall_s": wall_done,
            "cpu_s": max(0.0, cpu1 - cpu0 - idle_rate * wall)}


def _check_streams(bench: Bench, batch_id: int, n: int, chunks: int) -> dict:
    """The batch is what the figures say it was: n articles, one request each, every
    answer in `chunks` chunks."""
    from webapp.models import ArticleStatus as A
    counts = bench.article_counts(batch_id)
    records = bench.fake.command(cmd="stats")["records"]
    sent = {r["chunks_sent"] for r in records}
    if counts.get(A.SUCCEEDED) != n or len(records) != n or sent != {chunks}:
        raise RuntimeError(f"batch {batch_id}: articles {counts}, {len(records)} provider "
                           f"requests for {n}, chunks sent {sorted(sent)} (not {chunks})")
    return counts


def _cost_batch(bench: Bench, pid: int, idle_rate: float, chunks: int, n: int) -> dict:
    """One batch of n articles whose answers come in `chunks` chunks, instantly."""
    bench.set_fake(latency=0.0, chunks=chunks, words=COST_WORDS)

    def run():
        batch_id = bench.submit([f"Worker cost article {i}" for i in range(n)],
                                f"bench worker cost {chunks}")
        return batch_id, bench.wait_batch_final(batch_id, timeout=120)
    m = _measure(bench, pid, idle_rate, run)
    batch_id, status = m["result"]
    counts = _check_streams(bench, batch_id, n, chunks)
    per_article = m["cpu_s"] * 1000 / n
    log(f"worker cost: {n} articles of {chunks} chunks, {per_article:.2f} ms of worker CPU "
        f"each ({m['wall_s']:.1f} s)")
    return {"articles": n, "chunks_per_answer": chunks, "batch_status": status,
            "article_counts": counts, "wall_s": round(m["wall_s"], 3),
            "worker_cpu_s": round(m["cpu_s"], 3),
            "worker_cpu_ms_per_article": round(per_article, 3)}


def _sdk_request_ms(bench: Bench) -> float:
    """CPU of one provider request as the worker makes it (the SDK's request, the answer's
    body read to its end), alone: one thread of this process, SDK_REQUESTS in turn, an
    instant two-chunk answer. With the empty task, the part of an article's cost that
    Pressroom does not choose: DESIGN.md sends each article as a Celery task of its own,
    and issue 12 has the SDK make the request."""
    from webapp.generation.provider import OpenAIProvider, Prompt
    bench.set_fake(latency=0.0, chunks=2, words=20)
    provider = OpenAIProvider(bench.app.config)
    prompt = Prompt(title="SDK request", words=20, user_text="Title: SDK request")

    def request():
        stream = provider.stream(prompt, bench.app.config["OPENAI_MODEL"])
        try:
            return "".join(stream)
        finally:
            stream.close()
    for _ in range(20):  # the connection and the SDK's first-use work, outside the figure
        request()
    cpu0 = time.process_time()
    for _ in range(SDK_REQUESTS):
        request()
    return (time.process_time() - cpu0) * 1000 / SDK_REQUESTS


def worker_cost(bench: Bench) -> None:
    code = code_measured()  # as near as the phase can get to what the worker imported
    pid = bench.workers[0].pid
    idle_rate = _idle_rate(bench, pid)

    bare = _measure(bench, pid, idle_rate,
                    lambda: bench.wait_results(bench.send_noops(BARE_TASKS), timeout=120))
    bare_ms = bare["cpu_s"] * 1000 / BARE_TASKS
    sdk_ms = _sdk_request_ms(bench)

    # The pair the line is drawn through is measured twice, in turn, and the lower of
    # each kept: other work on the machine only ever adds CPU time (caches, frequency).
    lo, hi, far = (c for c, _ in COST_RUNS)
    articles = dict(COST_RUNS)
    samples: dict[int, list[dict]] = {c: [] for c in articles}
    for chunks in (lo, hi) * COST_ROUNDS + (far,):
        samples[chunks].append(_cost_batch(bench, pid, idle_rate, chunks, articles[chunks]))
    bench.set_fake(latency=0.0, chunks=10, words=120)
    runs = {c: min(s, key=lambda r: r["worker_cpu_ms_per_article"]) for c, s in samples.items()}
    per_lo, per_hi = (runs[c]["worker_cpu_ms_per_article"] for c in (lo, hi))
    slope = (per_hi - per_lo) / (hi - lo)
    intercept = per_lo - slope * lo
    predicted = intercept + slope * far
    measured = runs[far]["worker_cpu_ms_per_article"]
    bench.figures["worker_cpu_per_chunk_ms"] = round(slope, 4)
    bench.figures["worker_cpu_per_article_ms"] = round(intercept, 2)
    bench.figures["worker_cpu_1000_chunks_ms"] = round(measured, 2)
    bench.figures["bare_task_cpu_ms"] = round(bare_ms, 2)
    bench.figures["sdk_request_cpu_ms"] = round(sdk_ms, 2)
    bench.details["worker_cost"] = {
        "code": code, "worker_processes": 1, "threads": COST_THREADS,
        "provider_latency_s": 0.0, "words_per_answer": COST_WORDS,
        "how": f"per-article worker CPU at {lo} and {hi} chunks (the lower of "
               f"{COST_ROUNDS} rounds each): slope = per chunk, intercept = the rest of an "
               "article; CPU from /proc, submit to worker idle, less the idle rate",
        "worker_idle_cpu_pct": round(idle_rate * 100, 2),
        "bare_tasks": BARE_TASKS, "bare_wall_s": round(bare["wall_s"], 3),
        "bare_task_cpu_ms": round(bare_ms, 3),
        "runs": {str(c): r for c, r in runs.items()},
        "ms_per_article_each_round": {str(c): [r["worker_cpu_ms_per_article"] for r in s]
                                      for c, s in samples.items()},
        "per_chunk_ms": round(slope, 5), "per_article_ms": round(intercept, 3),
        "per_article_beyond_bare_task_ms": round(intercept - bare_ms, 3),
        "sdk_requests": SDK_REQUESTS, "sdk_request_cpu_ms": round(sdk_ms, 3),
        # What every article costs before Pressroom writes a row: its Celery task and its
        # request through the SDK, each measured alone in this run.
        "floor_bare_task_plus_sdk_ms": round(bare_ms + sdk_ms, 3),
        "per_article_beyond_floor_ms": round(intercept - bare_ms - sdk_ms, 3),
        f"predicted_{far}_chunks_ms": round(predicted, 3),
        f"measured_{far}_chunks_ms": round(measured, 3),
        "measured_vs_predicted": round(measured / predicted, 3) if predicted > 0 else None,
    }
    log(f"worker cost: {slope:.4f} ms/chunk, {intercept:.2f} ms/article besides chunks, "
        f"{far} chunks {measured:.2f} ms/article (line predicts {predicted:.2f}); "
        f"bare task {bare_ms:.2f} ms, SDK request alone {sdk_ms:.2f} ms")


def _as_utc(monotonic: float | None, offset: float) -> datetime | None:
    if monotonic is None:
        return None
    return datetime.fromtimestamp(monotonic + offset, timezone.utc).replace(tzinfo=None)


def streams64(bench: Bench) -> None:
    from webapp.extensions import db
    from webapp.models import Article
    code = code_measured()
    pid = bench.workers[0].pid
    bench.set_fake(latency=STREAM_S, chunks=STREAM_CHUNKS, words=STREAM_CHUNKS)
    _wait_idle(bench, pid)
    titles = [f"Streaming article {i}" for i in range(STREAMS)]
    submitted_at = utcnow()
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    batch_id = bench.submit(titles, "bench streams64")
    status = bench.wait_batch_final(batch_id, timeout=STREAM_S * 4 + 30)
    elapsed = time.monotonic() - t0
    cpu = cpu_seconds(pid) - cpu0
    cpu_to_idle = _wait_idle(bench, pid) - cpu0
    stats = bench.fake.command(cmd="stats")
    counts = _check_streams(bench, batch_id, STREAMS, STREAM_CHUNKS)
    bench.set_fake(latency=0.0, chunks=10, words=120)

    # How far each article's end trails its stream's last chunk at the provider: a worker
    # that cannot keep up leaves chunks waiting in the socket buffers, and that grows.
    ends = {r["title"]: _as_utc(r["end"], stats["wall_offset"]) for r in stats["records"]}
    rows = db.session.execute(db.select(Article.title, Article.finished_at)
                              .where(Article.batch_id == batch_id)).all()
    db.session.rollback()
    lags = sorted((f - ends[t]).total_seconds() for t, f in rows if f and ends.get(t))
    starts = [r["start"] for r in stats["records"]]
    chunks = STREAMS * STREAM_CHUNKS
    ratio = elapsed / STREAM_S
    cpu_pct = cpu * 100 / elapsed
    bench.figures["streams64_keepup_ratio"] = round(ratio, 3)
    bench.figures["streams64_worker_cpu_pct"] = round(cpu_pct, 1)
    bench.details["streams64"] = {
        "code": code, "worker_processes": 1, "threads": STREAMS, "articles": STREAMS,
        "chunks_per_answer": STREAM_CHUNKS, "chunks_per_s_each": STREAM_RATE,
        "paced_ideal_s": STREAM_S, "makespan_s": round(elapsed, 3), "batch_status": status,
        "article_counts": counts,
        "provider_max_concurrent": stats["max_concurrent"],
        "provider_starts_spread_s": round(max(starts) - min(starts), 3),
        "chunks_per_s_paced": STREAMS * STREAM_RATE,
        "chunks_per_s_achieved": round(chunks / elapsed, 1),
        "worker_cpu_s": round(cpu, 3), "worker_cpu_s_until_idle": round(cpu_to_idle, 3),
        "worker_cpu_pct_of_one_core": round(cpu_pct, 1),
        # Everything the worker spent on the batch over the chunks it read: an upper bound
        # on the cost of a paced chunk (each comes in its own read, unlike an instant stream).
        "worker_cpu_ms_per_chunk_all_in": round(cpu_to_idle * 1000 / chunks, 4),
        "article_end_after_stream_end_p50_s": round(statistics.median(lags), 3) if lags else None,
        "article_end_after_stream_end_max_s": round(lags[-1], 3) if lags else None,
        **bench.article_timings(batch_id, submitted_at),
    }
    if stats["max_concurrent"] < STREAMS:
        log(f"streams64: only {stats['max_concurrent']} streams at once, not {STREAMS}")
    log(f"streams64: {STREAMS} × {STREAM_CHUNKS} chunks at {STREAM_RATE}/s in {elapsed:.2f} s "
        f"(paced ideal {STREAM_S:g} s, max concurrent {stats['max_concurrent']}), worker "
        f"{cpu_pct:.0f} % of a core, {chunks / elapsed:.0f} chunks/s")
