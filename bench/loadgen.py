"""HTTP load against gunicorn: wrk in a closed loop, and viewers that poll as the page does.

Both report latency percentiles and the server's CPU per request (gunicorn's master and
its forked workers, from /proc), the steadier figure when the machine is shared.
"""
from __future__ import annotations

import asyncio
import random
import re
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from bench.procs import cpu_seconds

# The browser the bench signs in with (Bench.sign_in) and polls from, as one person's page
# does. Flask-Login's session protection compares each request's address and User-Agent
# with those of the sign-in; a request from another "browser" has its session marked not
# fresh, so re-signed and sent back in a Set-Cookie. A browser keeps that cookie and pays
# it once; wrk and these viewers never keep cookies, so with another User-Agent (wrk sends
# none) every poll would pay it, which no real page's polls do.
USER_AGENT = "pressroom-bench/1.0"


def warm_gunicorn(url: str, cookie: str) -> None:
    request = urllib.request.Request(url, headers={"Cookie": cookie,
                                                   "User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=10) as response:
        page = response.read().decode()
        if response.status != 200 or 'id="batch-progress"' not in page:
            raise RuntimeError(f"gunicorn poll answered {response.status}: {page[:200]}")
    for _ in range(20):  # both workers import, connect and compile before timing
        urllib.request.urlopen(request, timeout=10).read()


def wrk(url: str, cookie: str | None, server_pid: int, *, connections: int = 50,
        seconds: int = 10, script: Path | None = None) -> dict:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency",
            "-H", f"User-Agent: {USER_AGENT}"]
    if cookie:
        args += ["-H", f"Cookie: {cookie}"]
    if script is not None:
        args += ["-s", str(script)]
    cpu = cpu_seconds(server_pid, children=True)
    out = subprocess.run(args + [url], capture_output=True, text=True,
                         timeout=seconds + 60).stdout
    cpu = cpu_seconds(server_pid, children=True) - cpu
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if not rps or not p99 or not p50:
        raise RuntimeError(f"could not read wrk output:\n{out}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    scale50 = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p50.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors:(.*)", out)
    requests = re.search(r"(\d+) requests in", out)
    n = int(requests.group(1)) if requests else 0
    return {"rps": float(rps.group(1)), "p99_ms": round(float(p99.group(1)) * scale, 2),
            "p50_ms": round(float(p50.group(1)) * scale50, 2), "requests": n,
            # Server CPU per request is steadier than req/s when the machine is shared.
            "server_cpu_ms_per_request": round(cpu * 1000 / n, 3) if n else None,
            "non_2xx_3xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1).strip() if socket_errors else ""}


def poll_script(tmp: Path, path: str, page_args: str) -> Path:
    """A wrk script: `since` a second ago on every request, as the page sends it."""
    script = tmp / "poll.lua"
    script.write_text(
        f'local base = "{path}?since="\n'
        "function request()\n"
        '  return wrk.format("GET", base .. os.date("!%Y-%m-%dT%H:%M:%S", os.time() - 1)'
        f' .. "{page_args}")\n'
        "end\n")
    return script


def paced_viewers(base: str, path_fn, cookie: str, server_pid: int, *, viewers: int,
                  seconds: float) -> dict:
    """`viewers` viewers for `seconds`, each polling one second after its previous answer
    (htmx's `load delay:1s`), on a new connection each time as a browser does with
    gunicorn's sync workers (they close the connection after every answer).

    Not wrk: with a delay between requests wrk opens the connection first and sends
    the request a second later, and a sync worker that accepts such a connection sits
    waiting for the request (what a buffering proxy in front prevents), so wrk would
    measure that wait, not Pressroom.
    """
    host, port = urlsplit(base).hostname, urlsplit(base).port
    latencies: list[float] = []
    failures: list[str] = []

    async def poll_once(_state) -> None:  # no state: each URL is made up
        status, head, _ = await htmx_get(host, port, path_fn(), cookie, latencies)
        # 204: "nothing new" to a viewer who has this tick already (no body; htmx swaps
        # nothing and polls again), as much an answer as a 200.
        if status not in (200, 204, 286):
            failures.append(head.split(b"\r\n", 1)[0].decode(errors="replace"))

    return drive_viewers(poll_once, None, viewers=viewers, seconds=seconds, seed=5,
                         server_pid=server_pid, latencies=latencies, failures=failures)


async def htmx_get(host: str, port: int, path: str, cookie: str,
                   latencies: list) -> tuple[int, bytes, bytes]:
    """One poll as htmx sends it, on a connection of its own (gunicorn's sync workers close
    it after the answer): (status, head, body); its milliseconds go to `latencies`."""
    t = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                  f"Cookie: {cookie}\r\nUser-Agent: {USER_AGENT}\r\nHX-Request: true\r\n"
                  "Connection: close\r\n\r\n").encode())
    await writer.drain()
    answer = await reader.read()  # to the end: the server closes the connection
    latencies.append((time.perf_counter() - t) * 1000)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


def drive_viewers(poll_once, first, *, viewers: int, seconds: float, seed: int,
                  server_pid: int, latencies: list, failures: list) -> dict:
    """Run `viewers` viewers for `seconds`: each starts at its own moment of the first
    second (out of step, as pages opened at different times), then calls `state = await
    poll_once(state)` (from `first`) one second after each answer. `poll_once` appends to
    `latencies` and `failures`; the figures of the run are returned, with the server's
    CPU per request."""

    async def viewer(stop_at: float, rng: random.Random) -> None:
        await asyncio.sleep(rng.uniform(0, 1.0))
        state = first
        while time.perf_counter() < stop_at:
            try:
                state = await asyncio.wait_for(poll_once(state), timeout=10)
            except (OSError, asyncio.TimeoutError) as exc:
                failures.append(type(exc).__name__)
            await asyncio.sleep(1.0)

    async def main() -> None:
        stop_at = time.perf_counter() + seconds
        rng = random.Random(seed)
        await asyncio.gather(*(viewer(stop_at, random.Random(rng.random()))
                               for _ in range(viewers)))

    cpu = cpu_seconds(server_pid, children=True)
    started = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(server_pid, children=True) - cpu
    latencies.sort()
    n = len(latencies)
    return {"rps": round(n / elapsed, 1), "requests": n,
            "p50_ms": round(latencies[n // 2], 2), "p90_ms": round(latencies[int(n * .9)], 2),
            "p99_ms": round(latencies[int(n * .99)], 2), "max_ms": round(latencies[-1], 2),
            "server_cpu_ms_per_request": round(cpu * 1000 / n, 3) if n else None,
            "failures": len(failures), "failure_examples": failures[:3]}
