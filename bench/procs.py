"""Starting and stopping the benchmark's own processes (Redis, FakeAI, Celery, gunicorn).

Every process is started in its own session, so that it and any children it forks
(gunicorn workers, Celery's pool) form one process group that can be signalled at once.
Only the groups started here are ever killed.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[0]} exited with {proc.returncode} before "
                               f"listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


class Procs:
    """The processes this run started; stop_all() ends each group, TERM then KILL."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.started: list[tuple[str, subprocess.Popen]] = []

    def spawn(self, name: str, args: list[str], env: dict | None = None, **kw) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "ab")
        kw.setdefault("stdout", log)
        kw.setdefault("stderr", subprocess.STDOUT)
        proc = subprocess.Popen(args, cwd=ROOT, env=env, start_new_session=True,
                                preexec_fn=_die_with_parent, **kw)
        self.started.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen, grace: float = 5.0) -> None:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # The leader may be gone while children of its group still live (a Celery pool
        # thread, a gunicorn worker): KILL whatever is left of the group.
        _signal_group(proc, signal.SIGKILL)
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            pass
        self.started = [(n, p) for n, p in self.started if p is not proc]

    def stop_all(self) -> None:
        for _, proc in reversed(list(self.started)):
            try:
                self.stop(proc)
            except Exception as exc:  # keep going: every other process must still stop
                print(f"[bench] could not stop pid {proc.pid}: {exc}", file=sys.stderr)

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.logdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the benchmark itself is killed (even with
    SIGKILL, when no `finally` runs), so no server outlives it. Linux only; else a no-op."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stat(pid: int) -> list[str] | None:
    try:
        # Fields after the command name, which may itself contain spaces or parentheses.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU time of a process (all its threads) so far, from /proc.

    With children: also its live children (gunicorn's workers) and the children it has
    already reaped (workers that were restarted).
    """
    tick = os.sysconf("SC_CLK_TCK")
    fields = _stat(pid)
    if fields is None:
        return 0.0
    # utime, stime, cutime, cstime are fields 14-17 of stat(5): indexes 11-14 here.
    total = int(fields[11]) + int(fields[12])
    if children:
        total += int(fields[13]) + int(fields[14])
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                child = _stat(int(entry.name))
                if child is not None and child[1] == str(pid):  # index 1: the parent's pid
                    total += int(child[11]) + int(child[12])
    return total / tick


def rss_kib(pid: int) -> int | None:
    """Resident set size of a process now (VmRSS in /proc/<pid>/status), in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session: pgid == the leader's pid
    except ProcessLookupError:
        pass


def start_redis(procs: Procs) -> tuple[str, subprocess.Popen]:
    port = free_port()
    proc = procs.spawn("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no", "--daemonize", "no",
                                 "--dir", str(procs.logdir), "--loglevel", "warning"])
    wait_for_port(port, 10, proc)
    return f"redis://127.0.0.1:{port}/0", proc


class FakeAIProcess:
    """tests.fakeai in its own process, driven through bench/fakectl.py over a pipe."""

    def __init__(self, procs: Procs, latency: float):
        self.proc = procs.spawn(
            "fakeai", [sys.executable, "-m", "bench.fakectl", "--latency", str(latency)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.base_url = self.proc.stdout.readline().strip()
        if not self.base_url.startswith("http"):
            raise RuntimeError(f"FakeAI did not start: {self.base_url!r}\n{procs.tail('fakeai')}")

    def command(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        if "error" in reply:
            raise RuntimeError(f"fakectl: {reply['error']}")
        return reply
