"""SQLite held locked by another process: writes wait for it (busy timeout), nothing fails."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.faults.conftest import article_rows, assert_exactly_once, elapsed, record_figure
from tests.helpers import submit_form, wait_batch_final, wait_until

pytestmark = pytest.mark.slow

HOLD_SECONDS = 10

# Another process takes SQLite's write lock and keeps it for HOLD_SECONDS (the fault itself,
# so a fixed hold), then commits. It says when it holds the lock and when it let go.
LOCKER = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
con.execute("BEGIN EXCLUSIVE")
print("locked", time.monotonic(), flush=True)
time.sleep(float(sys.argv[2]))
con.execute("COMMIT")
print("released", time.monotonic(), flush=True)
"""


def test_writes_wait_for_a_locked_sqlite_and_succeed(env):
    if not env.sqlite:
        pytest.skip("an SQLite file lock; PostgreSQL has no such whole-database lock")
    path = env.database_url.removeprefix("sqlite:///")
    titles = [f"Locked database {i}" for i in range(1, 7)]
    env.fake.latency, env.fake.chunks = 1.0, 10
    worker = env.workers.start(concurrency=3)
    client = env.client()
    first = env.submit(client, "Before the lock", titles)
    wait_until(lambda: sum(a.status == "running" for a in article_rows(env, first)) >= 2, 30,
               "articles to be running")

    locker = subprocess.Popen([sys.executable, "-c", LOCKER, path, str(HOLD_SECONDS)],
                              stdout=subprocess.PIPE, text=True)
    try:
        word, locked_at = locker.stdout.readline().split()
        assert word == "locked"
        # CLOCK_MONOTONIC is one clock for every process on the machine.
        locked_at = float(locked_at)
        # Reads are not blocked (WAL): the batch page and its poll answer at once.
        poll, poll_s = elapsed(client.get, f"/batches/{first}/progress",
                               headers={"HX-Request": "true"})
        assert poll.status_code == 200 and poll_s < 2, poll_s
        record_figure("progress poll while SQLite is locked", f"{poll_s:.3f} s")
        # A write waits for the lock, then succeeds: a 303, not a 500.
        later = [f"Submitted during the lock {i}" for i in range(1, 3)]
        submit_started = time.monotonic()
        response, submit_s = elapsed(submit_form, client, "During the lock", later)
        submit_ended = submit_started + submit_s
        assert response.status_code == 303, response.get_data(as_text=True)[:500]
        assert submit_s < 30  # the busy timeout
        assert locker.wait(timeout=30) == 0
        word, released_at = locker.stdout.readline().split()
        assert word == "released"
        released_at = float(released_at)
    finally:
        if locker.poll() is None:
            locker.kill()
            locker.wait()
    record_figure(f"submit while SQLite is locked for {HOLD_SECONDS} s",
                  f"{submit_s:.3f} s (started {submit_started - locked_at:.2f} s into the "
                  f"lock, answered {submit_ended - released_at:.3f} s after its release)")
    # The submit really waited: it could only finish once the lock was let go.
    assert submit_ended >= released_at
    second = int(response.headers["Location"].rsplit("/", 1)[1])

    assert wait_batch_final(env.app, first)["status"] == "succeeded"
    assert wait_batch_final(env.app, second)["status"] == "succeeded"
    env.wait_queue_drained()
    assert assert_exactly_once(env, [first, second]) == {t: 1 for t in titles + later}
    log = worker.log_text()
    assert "database is locked" not in log and "Traceback" not in log, log[-3000:]
