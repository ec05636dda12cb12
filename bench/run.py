"""Pressroom benchmarks: throughput, polls, cancel, provider faults, scale, the dashboard.

Issue 2: throughput, poll cost and load, cancel latency; issue 4: provider faults and rate
limits; issue 5: scale (a 10,000-row submission, 50 viewers, worker memory); issue 6: the
dashboard over 10,000 batches and 1,000,000 articles; issue 12: the worker's own CPU per
article and per streamed chunk, and 64 streams at once in one worker process; issue 12
too, growth: submit, page, polls, exports, dashboard and API on one batch of 1,000, 10,000
and 100,000 articles (`--only growth`, about 3 minutes); economy mode: importing the
provider's output file of a 1,000- and a 10,000-article economy batch, time and peak
memory (`--only economy`).

    .venv/bin/python bench/run.py             # everything, about 9-10 minutes
    .venv/bin/python bench/run.py --no-find   # without the 1,000,000-article dashboard (-45 s)
    .venv/bin/python bench/run.py --only provider   # a group: issue2, provider, scale, worker,
                                                    # economy, find
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

Layout: this file parses the arguments, holds the phase registry and the goals, runs the
selected phases and writes the results; bench/stack.py is what every phase shares (the
processes, the app, the workers and small helpers); bench/loadgen.py drives HTTP load; one
phases_*.py module per group of phases (throughput, polls, provider, scale, worker, find).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: make `webapp` and `bench` importable

from bench import (phases_economy as economy, phases_find as find,  # noqa: E402
                   phases_polls as polls, phases_provider as provider, phases_scale as scale,
                   phases_throughput as throughput, phases_worker as worker)
from bench.procs import VENV_BIN, Procs  # noqa: E402
from bench.stack import DEFAULT_WORKERS, Bench, log  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "latest.json"
HARD_LIMIT_S = 30 * 60  # a run that hangs is stopped (and cleaned up) after this

# Every phase in the order they run: its function, and the workers it runs against,
# (processes, threads per process, extra env), or None when it needs no worker (whatever
# runs is left running).
PHASES = {
    "makespan": (throughput.makespan, DEFAULT_WORKERS),
    "seed": (throughput.seed_baseline, DEFAULT_WORKERS),
    "pipeline": (throughput.pipeline_vs_bare, DEFAULT_WORKERS),
    "poll": (polls.poll, None),
    "load": (polls.poll_under_load, None),
    "cancel": (throughput.cancel, DEFAULT_WORKERS),
    "faults": (provider.faults, DEFAULT_WORKERS),
    "viewers": (scale.viewers, DEFAULT_WORKERS),
    "rpm": (provider.rpm, provider.RPM_WORKERS),
    "submit": (scale.submit_10k, scale.MEMORY_WORKERS),
    "memory": (scale.memory, scale.MEMORY_WORKERS),
    "worker_cost": (worker.worker_cost, worker.COST_WORKERS),
    "streams64": (worker.streams64, worker.STREAM_WORKERS),
    "growth": (scale.growth, scale.GROWTH_WORKERS),
    # None, but the phase stops any workers left running: it sends and imports itself.
    "economy": (economy.economy, None),
    "find": (find.find, None),
}
GROUPS = {"issue2": ("makespan", "seed", "pipeline", "poll", "load", "cancel"),
          "provider": ("faults", "rpm"), "scale": ("submit", "viewers", "memory"),
          "worker": ("worker_cost", "streams64"),
          "economy": ("economy",), "find": ("find",)}

# Which "details" sections each phase writes, so that a phase not run keeps its old ones.
DETAIL_SECTIONS = {"makespan": ("makespan",), "seed": ("seed",), "pipeline": ("pipeline_vs_bare",),
                   "poll": ("poll",), "load": ("poll_load",), "cancel": ("cancel",),
                   "faults": ("faults_429",), "rpm": ("rpm",), "submit": ("submit_10k",),
                   "viewers": ("viewers50",), "memory": ("worker_memory",), "find": ("find",),
                   "growth": ("growth",), "worker_cost": ("worker_cost",),
                   "streams64": ("streams64",), "economy": ("economy_import",)}

# figure -> (phase, goal text, test); test None: reported for scale, no goal.
GOALS = {
    # The goals of issue 12 ("close to the limit") where it set one.
    "makespan_ratio": ("makespan", "<= 1.05", lambda v: v <= 1.05),
    "seed_makespan_s": ("seed", "(baseline, ~100 s)", None),
    "pipeline_vs_bare_ratio": ("pipeline", ">= 0.5", lambda v: v >= 0.5),
    "poll_p50_ms": ("poll", "<= 5", lambda v: v <= 5),
    "poll_redis_round_trips": ("poll", "<= 1", lambda v: v <= 1),
    "poll_load_ratio": ("load", ">= 0.5", lambda v: v >= 0.5),
    "poll_load_p99_ms": ("load", "<= 100", lambda v: v <= 100),
    "cancel_latency_s": ("cancel", "<= 1", lambda v: v <= 1),
    "faults_429_failures": ("faults", "0", lambda v: v == 0),
    "faults_429_makespan_ratio": ("faults", "<= 1.3", lambda v: v <= 1.3),
    "rpm_observed_max": ("rpm", f"<= {provider.RPM_LIMIT}",
                         lambda v: v <= provider.RPM_LIMIT),
    "submit_10k_s": ("submit", "<= 2", lambda v: v <= 2),
    "viewers50_p99_ms": ("viewers", "<= 100", lambda v: v <= 100),
    "viewers50_paced_p99_ms": ("viewers", "<= 50", lambda v: v <= 50),
    "worker_rss_growth_pct": ("memory", "<= 10", lambda v: v <= 10),
    "worker_cpu_per_chunk_ms": ("worker_cost", "<= 0.05", lambda v: v <= 0.05),
    "worker_cpu_per_article_ms": ("worker_cost", "<= 4", lambda v: v <= 4),
    "worker_cpu_1000_chunks_ms": ("worker_cost", "(info: per article, 1,000 chunks)", None),
    "bare_task_cpu_ms": ("worker_cost", "(info: an empty Celery task)", None),
    "sdk_request_cpu_ms": ("worker_cost", "(info: one SDK request, alone)", None),
    "streams64_keepup_ratio": ("streams64", "(info: 1 = kept up)", None),
    "streams64_worker_cpu_pct": ("streams64", "(info: % of one core)", None),
    "growth_submit_100k_s": ("growth", "(info: 10 requests + resume)", None),
    "growth_page_100k_ms": ("growth", "<= 200", lambda v: v <= 200),
    "growth_poll_100k_ms": ("growth", "<= 100", lambda v: v <= 100),
    "growth_poll_100k_over_1k": ("growth", "(info: 1 = flat)", None),
    "growth_export_100k_peak_mb": ("growth", "<= 20 (flat)", lambda v: v <= 20),
    "growth_dashboard_100k_ms": ("growth", "<= 200", lambda v: v <= 200),
    "economy_import_10k_s": ("economy", "(info: 10,000 articles)", None),
    "economy_import_10k_peak_mb": ("economy", "<= 50 (flat)", lambda v: v <= 50),
    "economy_import_1k_s": ("economy", "(info: 1,000 articles)", None),
    "economy_import_1k_peak_mb": ("economy", "(info: 1,000 articles)", None),
    "find_dashboard_p50_ms": ("find", "(no goal set)", None),
    "find_text_title_ms": ("find", "<= 200 (slow above)", lambda v: v <= 200),
}


def run_phase(bench: Bench, name: str) -> None:
    fn, workers = PHASES[name]
    spy = None
    if bench.errors:
        bench.cancel_leftovers()
    # Workers are (re)started before the phase's clocks start.
    bench.ensure_workers(workers)
    if bench.args.profile_worker and not (VENV_BIN / "py-spy").exists():
        log("--profile-worker needs py-spy: .venv/bin/pip install py-spy (not a dependency)")
    elif bench.args.profile_worker and bench.workers and name not in ("poll", "load", "find"):
        # Investigation aid: sample the (first) worker's Python stacks during the phase.
        out = bench.tmp / f"worker-{name}.txt"
        spy = subprocess.Popen([str(VENV_BIN / "py-spy"), "record", "--pid",
                                str(bench.workers[0].pid), "--rate", "200", "--gil",
                                "--format", "raw", "--output", str(out), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)  # py-spy needs a moment to attach
    # CPU used by each process during the phase: on a small machine the worker, the
    # fake provider and this process share the cores, which the figures must show.
    cpu_before = bench.cpu()
    wall = time.monotonic()
    try:
        fn(bench)
        wall = time.monotonic() - wall
        bench.details.setdefault("cpu_s", {})[name] = {
            "wall": round(wall, 2),
            **{k: round(v - cpu_before.get(k, 0.0), 2) for k, v in bench.cpu().items()}}
    except Exception as exc:  # one broken phase still lets the others report
        bench.errors[name] = f"{type(exc).__name__}: {exc}"
        log(f"phase {name} FAILED: {exc}")
        traceback.print_exc()
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            spy.wait(30)
            log(f"worker profile: {bench.tmp / f'worker-{name}.txt'}")


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
        bench.setup(fake_latency=throughput.MAKESPAN_LATENCY)
        for name in selected:
            if name == "load" and "poll" in bench.errors:
                continue  # no poll URL to load
            log(f"phase {name}")
            ran.append(name)
            run_phase(bench, name)
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
    growth = scale.growth_table(data["details"])  # growth's own table: a column per size
    if growth:
        print("\n" + "\n".join(growth))
    print(f"\nwritten to {RESULTS.relative_to(ROOT)} in {time.monotonic() - started:.0f} s"
          + (" (--quick: seed baseline extrapolated from 40 titles)" if args.quick else ""))
    if bench.errors:
        print("errors: " + json.dumps(bench.errors, indent=2))
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
