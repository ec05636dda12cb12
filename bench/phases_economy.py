"""Economy mode: importing the results of a provider batch (the Batch API's output file)
of 1,000 and of 10,000 articles, timed, with this process's peak memory during each.

economy.import_part reads the output file line by line as it arrives (batchapi.py
OpenAIBatches.lines streams the file's content) and stores each article in its own
transaction, so its time should grow with the articles while its memory stays flat.
Everything runs in this process, and no Celery worker runs during the phase (any left by
an earlier phase is stopped; the next phase that needs workers starts them again): the
batch is submitted (mode economy, through submission.submit), its provider batch stored
and sent (economy.store_parts, economy.send_part, called here), FakeAI's Batch API runs
it at once (bench/fakectl.py "batch_api": no time per stage or request), and only then is
it imported, with economy.import_part, as follow_part would once the provider says the
batch has completed. The messages the submission and send_part publish (send_batch, a
follow_part for later) are left unconsumed and purged at the end.
"""
from __future__ import annotations

import json
import time

from bench.phases_scale import _fresh_peak, _status_kib  # VmHWM reset, as in growth
from bench.stack import Bench, log, wait_until

ECONOMY_SIZES = (1_000, 10_000)
# Imported first, not reported as a figure: the first import pays for code paths, compiled
# statements and the SDK client used for the first time, which would show in 1,000's peak.
ECONOMY_WARM_UP = 100
# Articles as long as a batch's target (600 words, about 4 KB each): a 10,000-article
# output file of tens of MB, which streamed must not show in the process's peak memory.
ECONOMY_WORDS = 600
INSTANT = {"validate_seconds": 0.0, "seconds_per_request": 0.0, "finalize_seconds": 0.0,
           "cancel_seconds": 0.0}


def _provider_batch(bench: Bench, remote_id: str) -> dict:
    stats = bench.fake.command(cmd="batch_stats")  # which also moves the fake's clocks on
    batch = next(b for b in stats["batches"] if b["id"] == remote_id)
    batch["files"] = {f["id"]: f for f in stats["files"]}
    return batch


def _whole_file_peak(bench: Bench, pb) -> float:
    """For comparison: peak MB of reading the same output file whole and parsing its
    lines into a list, as an import that does not stream would (nothing is stored)."""
    from webapp.generation.batchapi import OpenAIBatches
    client = OpenAIBatches(bench.app.config).client
    base = _fresh_peak()
    data = client.files.content(pb.output_file_id).content
    lines = [json.loads(line) for line in data.splitlines() if line.strip()]
    peak = (_status_kib("VmHWM") - base) / 1024
    del data, lines
    return round(peak, 1)


def _economy_size(bench: Bench, n: int) -> dict:
    from webapp.extensions import db
    from webapp.generation import economy as econ
    from webapp.models import ArticleStatus as A, ProviderBatch
    from webapp.services import submission
    rows = [{"title": f"Economy {n} article {i}: a story about item {i * 7919 % 10007}"}
            for i in range(n)]
    t0 = time.perf_counter()
    sub = submission.submit(bench.user, {"name": f"bench economy {n:,}", "rows": rows,
                                         "target_words": 600, "mode": "economy"})
    if sub.batch is None or sub.dispatch_error:
        raise RuntimeError(f"submit failed: {sub.errors.fields or sub.dispatch_error}")
    batch_id = sub.batch.id
    submit_s = time.perf_counter() - t0
    del rows, sub
    # What the worker's send_batch does (the message it would run from stays queued).
    t0 = time.perf_counter()
    parts = econ.store_parts(batch_id)
    if len(parts) != 1:
        raise RuntimeError(f"{n:,} articles made {len(parts)} provider batches, not 1")
    pb_id = parts[0]
    econ.send_part(pb_id)  # upload, create; its follow_part message stays queued
    send_s = time.perf_counter() - t0
    pb = db.session.get(ProviderBatch, pb_id)
    remote_id, input_file_id = pb.provider_batch_id, pb.input_file_id
    db.session.rollback()
    if not remote_id:
        raise RuntimeError(f"the provider batch was not created: {pb.error}")
    t0 = time.perf_counter()
    remote = wait_until(lambda: (b := _provider_batch(bench, remote_id))["status"]
                        in ("completed", "failed", "expired") and b, 300,
                        f"the fake's batch of {n:,} to complete", interval=0.05)
    run_s = time.perf_counter() - t0
    if remote["status"] != "completed" or remote["completed"] != n:
        raise RuntimeError(f"the fake's batch ended {remote['status']} with "
                           f"{remote['completed']} of {n} completed")
    # What follow_part records when the provider says the batch has ended.
    pb = db.session.get(ProviderBatch, pb_id)
    econ._seen(pb_id, econ._api(pb).retrieve(remote_id), changed=True)
    pb = db.session.get(ProviderBatch, pb_id)
    output_bytes = remote["files"][remote["output_file_id"]]["bytes"]
    whole_peak = _whole_file_peak(bench, pb)
    db.session.rollback()

    rss_before = _fresh_peak()  # after a garbage collection and malloc_trim
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    result = econ.import_part(pb_id)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    peak = (_status_kib("VmHWM") - rss_before) / 1024
    counts = bench.article_counts(batch_id)
    if result.get("written") != n or counts.get(A.SUCCEEDED) != n:
        raise RuntimeError(f"import of {n:,}: {result}, articles {counts}")
    status = bench.batch_status(batch_id)
    out = {"seconds": round(elapsed, 2), "peak_mb": round(peak, 1),
           "articles_per_s": round(n / elapsed), "ms_per_article": round(elapsed * 1000 / n, 2),
           "bench_cpu_s": round(cpu, 2), "output_file_mb": round(output_bytes / 1e6, 1),
           "input_file_mb": round(remote["files"][input_file_id]["bytes"] / 1e6, 1),
           "rss_mb_before": round(rss_before / 1024, 1),
           "whole_file_peak_mb": whole_peak, "import_result": result,
           "article_counts": counts, "batch_status": status,
           "setup_s": {"submit": round(submit_s, 2), "store_and_send": round(send_s, 2),
                       "fake_runs_batch": round(run_s, 2)}}
    log(f"economy {n:,}: import {elapsed:.2f} s ({n / elapsed:.0f} articles/s), "
        f"peak +{peak:.1f} MB, output file {output_bytes / 1e6:.1f} MB "
        f"(read whole: +{whole_peak} MB)")
    return out


def economy(bench: Bench) -> None:
    """Import the output file of an economy batch of 1,000 and of 10,000 articles in this
    process: time, and peak RSS above the RSS at the start (VmHWM reset through
    /proc/self/clear_refs after a garbage collection and malloc_trim, as growth does).

    Each size is a batch of its own: submitted (mode economy), stored and sent as one
    provider batch, run at once by FakeAI (600-word articles), then imported by
    economy.import_part, which streams the output file and stores each article. No worker
    runs meanwhile. A batch of 100 is imported first, to warm up. For comparison, the peak
    of merely reading the same file whole and parsing its lines (what an import that does
    not stream would need at least) is measured before each import.
    """
    bench.stop_workers()  # a worker would send and import the batches itself
    bench.set_fake(latency=0.0, chunks=10, words=ECONOMY_WORDS)
    before = bench.fake.command(cmd="batch_api", hold=False, **INSTANT)["before"]
    results = {}
    try:
        warm_up = _economy_size(bench, ECONOMY_WARM_UP)
        for n in ECONOMY_SIZES:
            results[n] = _economy_size(bench, n)
    finally:
        bench.fake.command(cmd="batch_api", **before)
        bench.set_fake(latency=0.0, chunks=10, words=120)
        # send_batch and follow_part messages no worker ran; their batches are done.
        with bench.celery.connection_for_write() as conn:
            conn.default_channel.queue_purge("generation")
        from webapp.extensions import db
        db.session.rollback()
    small, big = results[ECONOMY_SIZES[0]], results[ECONOMY_SIZES[-1]]
    bench.figures["economy_import_10k_s"] = big["seconds"]
    bench.figures["economy_import_10k_peak_mb"] = big["peak_mb"]
    bench.figures["economy_import_1k_s"] = small["seconds"]
    bench.figures["economy_import_1k_peak_mb"] = small["peak_mb"]
    bench.details["economy_import"] = {
        "how": economy.__doc__.split("\n\n", 1)[1].replace("\n    ", " ").strip(),
        "words_per_article": ECONOMY_WORDS, "fake_batch_api": INSTANT,
        "time_10k_over_1k": round(big["seconds"] / small["seconds"], 1),
        "warm_up": {k: warm_up[k] for k in ("seconds", "peak_mb", "output_file_mb")},
        "sizes": {str(n): r for n, r in results.items()}}
    log(f"economy import: {big['seconds'] / small['seconds']:.1f}× the time for 10× the "
        f"articles; peak +{small['peak_mb']} MB at 1,000, +{big['peak_mb']} MB at 10,000")
