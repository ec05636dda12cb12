"""What each worker process is doing, published to Redis for the system page.

A heartbeat thread in every worker writes a small hash (host, pool, concurrency, articles
in progress, time) every few seconds with a short expiry. The system page reads these
instead of broadcasting to workers, so a frozen or dead worker can never make it hang:
its heartbeat simply stops and shows its age.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time

import redis

log = logging.getLogger(__name__)

KEY_PREFIX = "pressroom:worker:"
# Seconds between heartbeats; a worker that missed three is shown as not responding.
# Web and worker processes must agree on it (both read WORKER_HEARTBEAT_EVERY).
EVERY = float(os.environ.get("WORKER_HEARTBEAT_EVERY") or 5.0)
TTL = 120

_lock = threading.Lock()
_active = 0


@contextlib.contextmanager
def active():
    """Count an article in progress in this process."""
    global _active
    with _lock:
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1


def start_heartbeat(redis_url: str, hostname: str, pool: str, concurrency: int) -> threading.Thread:
    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    key = KEY_PREFIX + hostname

    def beat():
        while True:
            try:
                client.hset(key, mapping={
                    "hostname": hostname, "host": socket.gethostname(), "pid": os.getpid(),
                    "pool": pool, "concurrency": concurrency, "active": _active,
                    "last_seen": time.time()})
                client.expire(key, TTL)
            except redis.RedisError as exc:
                log.debug("heartbeat not written: %s", exc)
            time.sleep(EVERY)

    thread = threading.Thread(target=beat, name="pressroom-heartbeat", daemon=True)
    thread.start()
    return thread


def read_workers(client: redis.Redis) -> list[dict]:
    keys = list(client.scan_iter(match=KEY_PREFIX + "*", count=100))
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    now = time.time()
    workers = []
    for raw in pipe.execute():
        if not raw:
            continue
        w = {k.decode(): v.decode() for k, v in raw.items()}
        w["age_s"] = max(0.0, now - float(w.get("last_seen", 0)))
        w["active"] = int(w.get("active", 0))
        w["concurrency"] = int(w.get("concurrency", 0))
        w["stale"] = w["age_s"] > 3 * EVERY
        workers.append(w)
    return sorted(workers, key=lambda w: w["hostname"])
