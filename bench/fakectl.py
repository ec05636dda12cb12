"""tests.fakeai as a separate process whose settings the benchmark changes between phases.

`python -m tests.fakeai` fixes latency and chunk count at start-up; the benchmark needs
several (0.5 s, instant, a slow 10 s stream) against one Celery worker whose
OPENAI_BASE_URL cannot change, so this wrapper keeps one server and reads one JSON command
a line on stdin, answering one JSON line on stdout:

    {"cmd": "set", "latency": 0.5, "chunks": 10, "words": 120}   change settings
    {"cmd": "reset"}                                            clear the request log and faults
    {"cmd": "fail_rate", "rate": 0.2, "retry_after": 0}         429 for a random share of requests
    {"cmd": "stats"}                                            counts and per-request times
    {"cmd": "stats", "records": false}                          counts only
    {"cmd": "batch_api", "seconds_per_request": 0, "hold": true}  the Batch API's pace
    {"cmd": "batch_stats"}                                      its batches and files

`batch_api` sets any of validate_seconds, seconds_per_request, finalize_seconds and
cancel_seconds (tests/fakeai_batches.py), then holds, releases or advances every batch's
clock if asked ("hold": true/false, "advance": seconds), and answers the settings as they
were before, so that a phase can put them back ({"cmd": "reset"} does not: it forgets the
batches and files but keeps the pace).

Times in the answers are time.monotonic() of this process; on Linux that is
CLOCK_MONOTONIC, the same clock in every process, so the benchmark can compare them.
The first stdout line is the base URL, as with `python -m tests.fakeai`.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time

from tests.fakeai import FakeAI, Fault


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--words", type=int, default=120)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    fake = FakeAI(latency=args.latency, chunks=args.chunks, words=args.words).start()
    print(fake.base_url, flush=True)
    try:
        for line in sys.stdin:  # EOF (the benchmark went away) ends the server too
            if not line.strip():
                continue
            try:
                print(json.dumps(handle(fake, json.loads(line))), flush=True)
            except Exception as exc:
                print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
    finally:
        fake.stop()


def handle(fake: FakeAI, cmd: dict) -> dict:
    if cmd["cmd"] == "set":
        for name in ("latency", "chunks", "words"):
            if name in cmd:
                setattr(fake, name, cmd[name])
        return {"ok": True}
    if cmd["cmd"] == "reset":
        fake.reset()
        return {"ok": True}
    if cmd["cmd"] == "fail_rate":
        # Seeded, so that runs repeat the same sequence of draws (FakeAI's own seed by default).
        fake.fail_rate(cmd["rate"], Fault.rate_limit(retry_after=cmd.get("retry_after", 0)),
                       seed=cmd.get("seed"))
        return {"ok": True}
    if cmd["cmd"] == "stats":
        records = fake.requests
        return {
            "requests": len(records),
            "in_flight": fake.in_flight,
            "max_concurrent": fake.max_concurrent,
            # Add to a record's monotonic time to get wall-clock time (time.time()).
            "wall_offset": time.time() - time.monotonic(),
            "records": [{"start": r.start, "end": r.end, "status": r.status,
                         "fault": r.fault, "disconnected": r.client_disconnected,
                         "disconnected_at": r.disconnected_at, "chunks_sent": r.chunks_sent,
                         "title": r.title}
                        for r in records] if cmd.get("records", True) else [],
        }
    if cmd["cmd"] == "batch_api":
        return batch_api(fake, cmd)
    if cmd["cmd"] == "batch_stats":
        return {"batches": [{"id": b.id, "status": b.status, "total": b.total,
                             "completed": b.completed, "failed": b.failed,
                             "output_file_id": b.output_file_id,
                             "error_file_id": b.error_file_id}
                            for b in fake.batches.created],
                "files": [{"id": f.id, "purpose": f.purpose, "bytes": len(f.data),
                           "deleted": f.deleted} for f in fake.batches.files]}
    raise ValueError(f"unknown command {cmd['cmd']!r}")


BATCH_API_SETTINGS = ("validate_seconds", "seconds_per_request", "finalize_seconds",
                      "cancel_seconds")


def batch_api(fake: FakeAI, cmd: dict) -> dict:
    batches = fake.batches
    before = {name: getattr(batches, name) for name in BATCH_API_SETTINGS}
    for name in BATCH_API_SETTINGS:
        if name in cmd:
            setattr(batches, name, float(cmd[name]))
    if cmd.get("hold") is True:
        batches.hold()
    elif cmd.get("hold") is False:
        batches.release()
    if cmd.get("advance"):
        batches.advance(float(cmd["advance"]))
    return {"ok": True, "before": before}


if __name__ == "__main__":
    main()
