"""Counters and histograms shared by every process, kept in Redis hashes.

Workers and web processes come and go (threads, several machines), so instead of
per-process registries every observation is an HINCRBY in Redis, and /metrics reads the
totals back (webapp/metrics_export.py renders them with prometheus-client). A failed write
never fails the work it measures.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

import redis

from .extensions import get_redis

log = logging.getLogger(__name__)

PREFIX = "pressroom:metrics:"

# Counter names end in `_total`: prometheus-client adds that suffix to every counter, so a
# name without it would be exported under a different name than the one written here.
HISTOGRAMS = {
    "provider_request_seconds": (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
    "provider_completion_tokens": (100, 250, 500, 1000, 2000, 4000, 8000),
    "batch_duration_seconds": (5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
}

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def bucket_bounds(name: str) -> list[str]:
    """The `le` values of a histogram, as stored in its hash fields and exported."""
    return [str(b) for b in HISTOGRAMS[name]] + ["+Inf"]


def _label_str(labels: dict) -> str:
    return ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))


def _parse_labels(text: str) -> Labels:
    return tuple(_LABEL.findall(text))


def count(name: str, amount: int = 1, client: Optional[redis.Redis] = None, **labels) -> None:
    try:
        (client or get_redis()).hincrby(PREFIX + "counters", f"{name}|{_label_str(labels)}",
                                        amount)
    except redis.RedisError as exc:
        log.debug("metric %s not recorded: %s", name, exc)


def observe(name: str, value: float, client: Optional[redis.Redis] = None, **labels) -> None:
    """Add one observation to a histogram (cumulative buckets are summed when read)."""
    observe_many([(name, value)], client=client, **labels)


def observe_many(observations, client: Optional[redis.Redis] = None, **labels) -> None:
    """Several (histogram, value) observations with the same labels, in one round trip."""
    try:
        pipe = (client or get_redis()).pipeline(transaction=False)
        queue_observations(pipe, observations, **labels)
        pipe.execute()
    except redis.RedisError as exc:
        log.debug("metrics %s not recorded: %s", [n for n, _ in observations], exc)


def queue_observations(pipe, observations, **labels) -> None:
    """Add observations to a pipeline the caller executes (with its other writes).

    Each observation adds 1 to the one bucket it falls in and its value to `_sum`; the count
    is the sum of the buckets, so it is not stored.
    """
    label = _label_str(labels)
    for name, value in observations:
        bucket = next((str(b) for b in HISTOGRAMS[name] if value <= b), "+Inf")
        key = PREFIX + "hist:" + name
        pipe.hincrby(key, f"{label}|{bucket}", 1)
        pipe.hincrbyfloat(key, f"{label}|_sum", float(value))


@dataclass
class Snapshot:
    """Everything /metrics reads from Redis, taken in one round trip."""
    queues: dict[str, int] = field(default_factory=dict)
    counters: dict[str, dict[Labels, int]] = field(default_factory=dict)
    # {name: {labels: {bucket or "_sum": value}}}, buckets not yet cumulative
    histograms: dict[str, dict[Labels, dict[str, float]]] = field(default_factory=dict)


def read_all(client: redis.Redis, queues: Sequence[str] = ()) -> Snapshot:
    """The counters, the histograms and the length of each of `queues`."""
    pipe = client.pipeline(transaction=False)
    for q in queues:
        pipe.llen(q)
    pipe.hgetall(PREFIX + "counters")
    for name in HISTOGRAMS:
        pipe.hgetall(PREFIX + "hist:" + name)
    results = pipe.execute()
    snap = Snapshot(queues=dict(zip(queues, results[:len(queues)])))
    raw_counters, *raw_hists = results[len(queues):]
    for key, value in raw_counters.items():
        name, _, labels = key.decode().partition("|")
        snap.counters.setdefault(name, {})[_parse_labels(labels)] = int(value)
    for name, raw in zip(HISTOGRAMS, raw_hists):
        per_label = snap.histograms.setdefault(name, {})
        for key, value in raw.items():
            labels, _, part = key.decode().rpartition("|")
            per_label.setdefault(_parse_labels(labels), {})[part] = float(value)
    return snap
