"""Issue 5, scale: a 10,000-row submission through the API, 50 viewers polling a batch that
is really running, and worker memory over 10,000 articles. Issue 12, growth: the same
requests on batches of 1,000, 10,000 and 100,000 articles, to show which costs stay flat.

`submit` and `memory` run against one worker process of 16 threads (MEMORY_WORKERS), so
that RSS is one process's; `memory` writes the batch `submit` made when both run.
`growth` runs against one process of 4 threads (GROWTH_WORKERS); see its docstring.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import json
import re
import statistics
import time
from datetime import timedelta
from html import unescape
from pathlib import Path

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


# -- growth: what grows with a batch's size ------------------------------------------------

GROWTH_SIZES = (1_000, 10_000, 100_000)
# Few articles run (the figures are about the batch's size, not generation): one process
# of 4 threads, and streams long enough to outlast each size's measurements.
GROWTH_THREADS = 4
GROWTH_WORKERS = (1, GROWTH_THREADS, ())
GROWTH_LATENCY = 90.0
GROWTH_REPEAT, GROWTH_POLLS = 3, 10
# What the table shows, in order: (key, label).
GROWTH_ROWS = (("submit", "submit (through the API)"), ("dispatch", "dispatch (worker)"),
               ("page", "batch page"), ("first_poll", "first poll"),
               ("poll", "poll during the run"), ("export_csv", "export, all, CSV"),
               ("export_json", "export, all, JSON"), ("export_zip", "export, all, zip"),
               ("dashboard", "dashboard"), ("api_get", "API GET batch"))
_PAGE_POLL_URL = re.compile(r'id="batch-progress"[^>]*?hx-get="([^"]+)"', re.S)


def _status_kib(field: str, pid: int | str = "self") -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+)", text, re.M).group(1))


def _fresh_peak(pid: int | str = "self") -> int:
    """Reset the process's peak RSS (VmHWM) to its RSS now, which is returned (KiB).

    Writing 5 to /proc/<pid>/clear_refs resets the high-water mark (Linux 4.0 and later).
    For this process, garbage is collected and glibc gives its free pages back first, so
    that memory freed by the previous request cannot hide what the next one needs."""
    if pid == "self":
        gc.collect()
        _LIBC.malloc_trim(0)
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status_kib("VmRSS", pid)


_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


@contextlib.contextmanager
def _measured(into: dict, pid: int | str = "self"):
    """Wall time and peak RSS above the start (MB) of what runs inside; the worst of
    repeated runs is kept for memory, every time for the median."""
    base = _fresh_peak(pid)
    t0 = time.perf_counter()
    yield
    elapsed = time.perf_counter() - t0
    peak = (_status_kib("VmHWM", pid) - base) / 1024
    into.setdefault("times", []).append(elapsed)
    into["peak_mb"] = round(max(into.get("peak_mb", 0.0), peak), 1)


def _summary(measured: dict, **extra) -> dict:
    times = measured.pop("times")
    return {"ms": round(statistics.median(times) * 1000, 1), "runs": len(times),
            "peak_mb": measured["peak_mb"], **extra}


def _ok(response, status: int | tuple = 200):
    if response.status_code not in (status if isinstance(status, tuple) else (status,)):
        raise RuntimeError(f"{response.request.path} answered {response.status_code}: "
                           f"{response.get_data(as_text=True)[:300]}")
    return response


def _drain(response) -> int:
    """Read a streamed answer piece by piece, as a client would; keeps none of it."""
    size = 0
    for piece in response.response:
        size += len(piece)
    response.close()
    return size


def _submit_pieces(bench: Bench, client, n: int) -> tuple[int, dict]:
    """Submit n rows as a person's script would: one POST up to IMPORT_MAX_ROWS; past it,
    a held batch, its further rows in pieces, then a resume. Bodies are made before the
    clock starts."""
    headers = {"Authorization": f"Bearer {bench.api_token}"}
    most = bench.app.config["IMPORT_MAX_ROWS"]
    rows = [{"title": f"Growth {n} article {i}: a story about item {i * 7919 % 100_003}"}
            for i in range(n)]
    pieces = [rows[i:i + most] for i in range(0, n, most)]
    first = {"name": f"bench growth {n:,}", "rows": pieces[0], "target_words": 600}
    if len(pieces) > 1:
        first["paused"] = True
    bodies = [json.dumps(first)] + [json.dumps({"rows": p}) for p in pieces[1:]]
    del rows, pieces
    measured: dict = {}
    slowest, batch_id = 0.0, None
    with _measured(measured):
        for number, body in enumerate(bodies):
            t0 = time.perf_counter()
            path = "/api/v1/batches" if number == 0 else f"/api/v1/batches/{batch_id}/rows"
            data = _ok(client.post(path, headers=headers, data=body,
                                   content_type="application/json"), 201).get_json()
            batch_id = data["id"]
            slowest = max(slowest, time.perf_counter() - t0)
        if len(bodies) > 1:
            _ok(client.post(f"/api/v1/batches/{batch_id}/resume", headers=headers), 202)
    return batch_id, _summary(measured, requests=len(bodies) + (len(bodies) > 1),
                              slowest_request_ms=round(slowest * 1000, 1),
                              request_mb=round(sum(map(len, bodies)) / 1e6, 1))


def _dispatched_at(bench: Bench, batch_id: int):
    """When the batch's last message reached the broker (None until then)."""
    from webapp.extensions import db
    from webapp.models import Batch
    done = db.session.scalar(db.select(Batch.dispatched_at).where(Batch.id == batch_id))
    db.session.rollback()
    return done


def _growth_size(bench: Bench, client, n: int) -> dict:
    from webapp.extensions import db
    from webapp.models import ArticleStatus as A, Batch
    from webapp.services import control
    worker = bench.workers[0].pid
    # Polls are spaced as one viewer's are (a poll a tick): each then renders, where a
    # second poll in the same tick would be sent that tick's shared render.
    tick = bench.app.config["POLL_INTERVAL"]
    out: dict = {}
    worker_base = _fresh_peak(worker)
    with bench.no_app_context():
        batch_id, out["submit"] = _submit_pieces(bench, client, n)
    answered = utcnow()  # the worker is handed the dispatch by the last request
    log(f"growth {n:,}: submitted in {out['submit']['ms'] / 1000:.1f} s "
        f"({out['submit']['requests']} requests), peak +{out['submit']['peak_mb']} MB")
    try:
        with bench.no_app_context():
            # The page, then the poll it sends first (since = the page's time, all rows
            # just stored are "changed"), as a browser right after the submit.
            page, first_poll, statuses = {}, {}, []
            for _ in range(GROWTH_REPEAT):
                with _measured(page):
                    html = _ok(client.get(f"/batches/{batch_id}")).get_data(as_text=True)
                url = _PAGE_POLL_URL.search(html)
                if url is None:
                    raise RuntimeError("the batch page has no progress poll")
                with _measured(first_poll):
                    answer = _ok(client.get(unescape(url.group(1))), (200, 204))
                statuses.append(answer.status_code)
                time.sleep(tick)
            out["page"] = _summary(page, bytes=len(html))
            out["first_poll"] = _summary(first_poll, bytes=len(answer.get_data()),
                                         statuses=statuses)
        # A few articles of this batch streaming (one of the threads may still be sending
        # the batch's messages).
        wait_until(lambda: bench.article_counts(batch_id).get(A.RUNNING, 0)
                   >= GROWTH_THREADS - 1, 120, f"articles of the {n:,} batch running",
                   interval=0.1)
        with bench.no_app_context():
            poll, statuses = {}, []
            base_url = unescape(url.group(1)).split("?")[0]
            for _ in range(GROWTH_POLLS):
                since = (utcnow() - timedelta(seconds=tick)).isoformat()
                with _measured(poll):
                    answer = _ok(client.get(f"{base_url}?since={since}&seen=running&first=1"
                                            f"&last={ARTICLES_PER_PAGE}"), (200, 204))
                statuses.append(answer.status_code)
                time.sleep(tick)
            out["poll"] = _summary(poll, bytes=len(answer.get_data()), statuses=statuses)
            for fmt, repeat in (("csv", GROWTH_REPEAT), ("json", 1), ("zip", 1)):
                export = {}
                for _ in range(repeat):
                    with _measured(export):
                        size = _drain(_ok(client.get(f"/batches/{batch_id}/export.{fmt}?all=1",
                                                     buffered=False)))
                out[f"export_{fmt}"] = _summary(export, bytes=size)
            dashboard = {}
            for _ in range(GROWTH_REPEAT):
                with _measured(dashboard):
                    html = _ok(client.get("/")).get_data(as_text=True)
            if f"bench growth {n:,}" not in html:
                raise RuntimeError("the dashboard does not list the batch")
            out["dashboard"] = _summary(dashboard, bytes=len(html))
            api = {}
            with _measured(api):
                size = len(_ok(client.get(f"/api/v1/batches/{batch_id}", headers={
                    "Authorization": f"Bearer {bench.api_token}"})).get_data())
            out["api_get"] = _summary(api, bytes=size)
        # The worker sends the batch's messages while the rest is measured; its peak RSS
        # above its RSS at the submit (articles streaming meanwhile are in it too).
        # The request records the hand-over to the worker as dispatched_at too; the
        # worker writes it again once every message is out.
        dispatched = wait_until(lambda: (at := _dispatched_at(bench, batch_id)) is not None
                                and at > answered and at, 600,
                                f"the worker to send the {n:,} batch's messages",
                                interval=0.1)
        out["dispatch"] = {"ms": round((dispatched - answered).total_seconds() * 1000, 1),
                           "runs": 1,
                           "peak_mb": round((_status_kib("VmHWM", worker) - worker_base)
                                            / 1024, 1),
                           "what": "from the submit's last answer to the batch's dispatched_at"}
        out["article_counts"] = bench.article_counts(batch_id)
    finally:
        control.cancel_batch(bench.user, db.session.get(Batch, batch_id))
        # The cancelled batch's messages would hold the next size's behind them; the
        # articles are cancelled in the database, so dropping the messages loses nothing.
        with bench.celery.connection_for_write() as conn:
            conn.default_channel.queue_purge("generation")
        db.session.rollback()
    log(f"growth {n:,}: " + ", ".join(f"{k} {out[k]['ms']:.0f} ms/+{out[k]['peak_mb']} MB"
                                      for k, _ in GROWTH_ROWS))
    return out


def growth(bench: Bench) -> None:
    """Submit, page, polls, exports, dashboard and the API at 1,000, 10,000 and 100,000
    articles in one batch: time and peak memory of each, to show what stays flat.

    Every request goes through the Flask test client in this process, so "peak MB" is this
    process's peak RSS during the request above its RSS at the start (VmHWM, reset through
    /proc/self/clear_refs before each, after a garbage collection and malloc_trim), which
    counts the database driver's and zlib's memory too. Times are medians of the runs
    (3 for pages and exports, 10 for the running poll, 1 for the JSON and zip exports and
    the API); memory is the worst run. The submit is one POST up to 10,000 rows; 100,000
    are a held batch, nine POST .../rows of 10,000 and a resume, timed together. The
    dispatch is the worker's (one thread of four sends the messages); its peak is the
    worker's RSS high-water mark over its RSS at the submit. Few articles are generated:
    FakeAI streams each for 90 s, and each batch is cancelled (its messages purged) before
    the next size is submitted.
    """
    bench.set_fake(latency=GROWTH_LATENCY, chunks=90, words=400)
    client = bench.app.test_client()
    with bench.no_app_context():
        bench.sign_in(client)
        # Warm: the first requests pay for imports and template compiles.
        for path in ("/", "/batches/new"):
            _ok(client.get(path))
    results = {}
    try:
        for n in GROWTH_SIZES:
            results[n] = _growth_size(bench, client, n)
    finally:
        bench.set_fake(latency=0.0, chunks=10, words=120)
    bench.details["growth"] = {
        "how": growth.__doc__.split("\n\n", 1)[1].replace("\n    ", " ").strip(),
        "sizes": {str(n): r for n, r in results.items()}}
    big, small = results[GROWTH_SIZES[-1]], results[GROWTH_SIZES[0]]
    bench.figures["growth_submit_100k_s"] = round(big["submit"]["ms"] / 1000, 2)
    bench.figures["growth_poll_100k_ms"] = big["poll"]["ms"]
    bench.figures["growth_poll_100k_over_1k"] = round(big["poll"]["ms"] / small["poll"]["ms"], 1)
    bench.figures["growth_page_100k_ms"] = big["page"]["ms"]
    bench.figures["growth_export_100k_peak_mb"] = max(
        big[f"export_{f}"]["peak_mb"] for f in ("csv", "json", "zip"))
    bench.figures["growth_dashboard_100k_ms"] = big["dashboard"]["ms"]
    for line in growth_table(bench.details):
        log(line)


def growth_table(details: dict) -> list[str]:
    """The growth figures as a table: one row per request, one column per size."""
    sizes = details.get("growth", {}).get("sizes")
    if not sizes:
        return []
    head = ["growth"] + [f"{int(n):,} articles" for n in sizes]
    rows = [head] + [[label] + [f"{r[key]['ms'] / 1000:.2f} s, +{r[key]['peak_mb']:g} MB"
                                if r[key]["ms"] >= 1000 else
                                f"{r[key]['ms']:.1f} ms, +{r[key]['peak_mb']:g} MB"
                                for r in sizes.values()]
                     for key, label in GROWTH_ROWS]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
