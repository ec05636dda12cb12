"""Counters and histograms shared by every process, kept in Redis hashes.

Workers and web processes come and go (threads, several machines), so instead of
per-process registries every observation is an HINCRBY in Redis, and /metrics renders
the totals in Prometheus' text format. A failed write never fails the work it measures.
"""
from __future__ import annotations

import logging
from typing import Optional

import redis

from .extensions import get_redis

log = logging.getLogger(__name__)

PREFIX = "pressroom:metrics:"

HISTOGRAMS = {
    "provider_request_seconds": (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
    "provider_completion_tokens": (100, 250, 500, 1000, 2000, 4000, 8000),
    "batch_duration_seconds": (5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
}


def _label_str(labels: dict) -> str:
    return ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))


def count(name: str, amount: int = 1, client: Optional[redis.Redis] = None, **labels) -> None:
    try:
        (client or get_redis()).hincrby(PREFIX + "counters", f"{name}|{_label_str(labels)}",
                                             amount)
    except redis.RedisError as exc:
        log.debug("metric %s not recorded: %s", name, exc)


def observe(name: str, value: float, client: Optional[redis.Redis] = None, **labels) -> None:
    """Add one observation to a histogram (cumulative buckets are summed when rendered)."""
    observe_many([(name, value)], client=client, **labels)


def observe_many(observations, client: Optional[redis.Redis] = None, **labels) -> None:
    """Several (histogram, value) observations with the same labels, in one round trip."""
    label = _label_str(labels)
    try:
        pipe = (client or get_redis()).pipeline(transaction=False)
        for name, value in observations:
            bucket = next((str(b) for b in HISTOGRAMS[name] if value <= b), "+Inf")
            key = PREFIX + "hist:" + name
            pipe.hincrby(key, f"{label}|{bucket}", 1)
            pipe.hincrbyfloat(key, f"{label}|_sum", float(value))
            pipe.hincrby(key, f"{label}|_count", 1)
        pipe.execute()
    except redis.RedisError as exc:
        log.debug("metrics %s not recorded: %s", [n for n, _ in observations], exc)


def read_all(client: redis.Redis) -> tuple[dict, dict]:
    """Counters {(name, labels): value} and histograms {name: {labels: {field: value}}}."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(PREFIX + "counters")
    for name in HISTOGRAMS:
        pipe.hgetall(PREFIX + "hist:" + name)
    results = pipe.execute()
    counters = {}
    for field, value in results[0].items():
        name, _, labels = field.decode().partition("|")
        counters[(name, labels)] = int(value)
    hists = {}
    for name, raw in zip(HISTOGRAMS, results[1:]):
        per_label: dict[str, dict[str, float]] = {}
        for field, value in raw.items():
            labels, _, part = field.decode().rpartition("|")
            per_label.setdefault(labels, {})[part] = float(value)
        hists[name] = per_label
    return counters, hists
