"""Shared provider limits, enforced across every worker on every machine through Redis.

- Requests and tokens per minute, per model (RATE_LIMITS, parsed with the `limits`
  library; counted by admission.py's script: an exact moving window for requests, a
  sliding-window counter for tokens).
- A shared hold-off: when the provider says "wait" (429 Retry-After, or its
  x-ratelimit-remaining-* headers reach zero) every worker waits, not just the one told.
- A per-batch cap on articles in flight, so one huge batch cannot starve the others.
- Pressure counters (articles waiting, recent 429s) that the batch page reads in the same
  Redis round trip as the progress.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Optional

import redis
from flask import current_app
from limits import RateLimitItem, RateLimitItemPerSecond, parse

from ..installation import prefix


_BUCKET = 60  # seconds per bucket of the recent-429 counter
RECENT_BUCKETS = 5


@dataclass
class ModelLimits:
    requests: Optional[RateLimitItem] = None
    tokens: Optional[RateLimitItem] = None


def parse_limits(raw: str) -> dict[str, ModelLimits]:
    """RATE_LIMITS is JSON: {"gpt-4o-mini": {"requests": "500/minute", "tokens": "200000/minute"}}.

    The key "*" applies to models not named.
    """
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"RATE_LIMITS is not valid JSON: {exc}") from exc
    out = {}
    for model, spec in data.items():
        if not isinstance(spec, dict):
            raise ValueError(f"RATE_LIMITS[{model!r}] must be an object with requests/tokens.")
        out[model] = ModelLimits(
            requests=with_headroom(parse(spec["requests"])) if spec.get("requests") else None,
            tokens=parse(spec["tokens"]) if spec.get("tokens") else None)
    return out


# A request reaches the provider a little after its permit was taken (the article's claim
# is written, a cancel flag read, the SDK builds the request): tens of milliseconds, more
# when the database is busy, and not the same for every request. Counted where they arrive,
# requests of a burst then bunch up closer than their permits did, and a minute at the
# provider can hold a few more than the limit (606-623 of "600/minute" in bench/run.py's
# rpm phase). So the limiter counts over a window a little longer than the provider's.
# Windows under a minute are left alone: the limits library counts whole seconds, and a
# second more would halve a per-second limit.
HEADROOM_S = 2


def with_headroom(item: RateLimitItem) -> RateLimitItem:
    window = item.get_expiry()
    if window < 60:
        return item
    return RateLimitItemPerSecond(item.amount, window + HEADROOM_S)


def limits_for(model: str) -> ModelLimits:
    """The configured limits of a model (RATE_LIMITS, parsed once per app)."""
    limits = current_app.extensions.get("pressroom_rate_limits")
    if limits is None:
        limits = parse_limits(current_app.config.get("RATE_LIMITS", ""))
        current_app.extensions["pressroom_rate_limits"] = limits
    return limits.get(model) or limits.get("*") or ModelLimits()


# --- shared hold-off -------------------------------------------------------------------

def holdoff_key(model: str) -> str:
    return f"pressroom:holdoff:{model}"


def hold_off(client: redis.Redis, model: str, seconds: float) -> None:
    """Ask every worker to send nothing for this model for a while (never shortens one)."""
    ms = int(seconds * 1000)
    if ms <= 0:
        return
    current = client.pttl(holdoff_key(model))
    if current is None or current < ms:
        client.set(holdoff_key(model), "1", px=ms)


_DURATION = re.compile(r"(?P<value>\d+(?:\.\d+)?)(?P<unit>ms|h|m|s)")


def parse_reset(text: str) -> Optional[float]:
    """OpenAI's reset headers look like '1s', '6m0s', '20ms'."""
    if not text:
        return None
    total, matched = 0.0, False
    for m in _DURATION.finditer(text):
        matched = True
        value = float(m.group("value"))
        total += value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group("unit")]
    if matched:
        return total
    try:
        return float(text)
    except ValueError:
        return None


def adapt_to_headers(client: redis.Redis, model: str, headers) -> Optional[float]:
    """When the provider reports no requests or tokens left, hold everyone off until reset."""
    wait = None
    for kind in ("requests", "tokens"):
        remaining = headers.get(f"x-ratelimit-remaining-{kind}")
        if remaining is None:
            continue
        try:
            if int(float(remaining)) > 0:
                continue
        except ValueError:
            continue
        reset = parse_reset(headers.get(f"x-ratelimit-reset-{kind}", ""))
        if reset:
            wait = max(wait or 0.0, reset)
    if wait:
        hold_off(client, model, wait)
    return wait


# --- first-request probe (half-open circuit breaker) ---------------------------------------
# Until one request of a batch has been accepted by the provider, only one is in flight: a
# bad key or an empty account then costs one request, not one per worker thread.

PROBE_OK, PROBE_TRIPPED = b"ok", b"tripped"


def probe_key(batch_id: int) -> str:
    return f"{prefix()}probe:{batch_id}"


def probe_passed(client: redis.Redis, batch_id: int) -> None:
    client.set(probe_key(batch_id), PROBE_OK, ex=24 * 3600)


def probe_failed(client: redis.Redis, batch_id: int, tripped: bool) -> None:
    """A breaker error keeps everyone out; any other error lets the next article probe."""
    if tripped:
        client.set(probe_key(batch_id), PROBE_TRIPPED, ex=24 * 3600)
    else:
        client.delete(probe_key(batch_id))


def probe_reset(client: redis.Redis, batch_id: int) -> None:
    client.delete(probe_key(batch_id))


# --- per-batch cap on articles in flight -------------------------------------------------

_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
  return 2
end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
  redis.call('EXPIRE', KEYS[1], 86400)
  return 1
end
return 0
"""


def slots_key(batch_id: int) -> str:
    return f"{prefix()}slots:{batch_id}"


def acquire_slot(client, batch_id: int, article_id: int, cap: int, lease: float):
    """A place among the batch's articles in flight; each place expires unless renewed, so
    a dead worker's places come back by themselves. `client` may be a pipeline (the
    answer then comes with the pipeline's): 1 a new place, 2 the article held one already
    (another delivery of it is running: that one owns the place), 0 none free."""
    if cap <= 0:
        return True
    return acquire_place(client, slots_key(batch_id), article_id, cap, lease)


def acquire_place(client, key: str, member, cap: int, lease: float):
    """A place in the leased set `key` (at most `cap` members whose lease has not run out):
    the semaphore behind a batch's places in flight and a destination's requests
    (publishing.py). Answers as acquire_slot does: 1 new, 2 held already (lease renewed),
    0 none free."""
    now = time.time()
    return client.eval(_ACQUIRE, 1, key, now, cap, member, now + lease)


def release_slot(client: redis.Redis, batch_id: int, article_id: int) -> None:
    client.zrem(slots_key(batch_id), article_id)


# --- pressure, for the batch page ---------------------------------------------------------

def waiting_key(batch_id: int) -> str:
    return f"{prefix()}waiting:{batch_id}"


def r429_key(batch_id: int, bucket: int) -> str:
    return f"{prefix()}429:{batch_id}:{bucket}"


ALL = "all"  # the batch id under which system-wide pressure is counted


def note_429(client: redis.Redis, batch_id: int) -> None:
    bucket = int(time.time() // _BUCKET)
    pipe = client.pipeline(transaction=False)
    for key in (r429_key(batch_id, bucket), r429_key(ALL, bucket)):
        pipe.incr(key)
        pipe.expire(key, _BUCKET * (RECENT_BUCKETS + 1))
    pipe.execute()


def change_waiting(client: redis.Redis, batch_id: int, delta: int) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.incrby(waiting_key(batch_id), delta)
    pipe.incrby(waiting_key(ALL), delta)
    pipe.execute()


def forget_batch(client: redis.Redis, batch_id: int) -> None:
    """Drop a finished batch's pressure, slot and probe keys (they also expire alone)."""
    client.delete(slots_key(batch_id), waiting_key(batch_id), probe_key(batch_id))


def pressure_keys(batch_id: int) -> list[str]:
    """Keys whose values give the pressure; read with the progress MGET."""
    now_bucket = int(time.time() // _BUCKET)
    return [waiting_key(batch_id)] + [r429_key(batch_id, now_bucket - i)
                                      for i in range(RECENT_BUCKETS)]


def pressure_from(values: list) -> tuple[int, int]:
    waiting = int(values[0] or 0) if values else 0
    recent = sum(int(v or 0) for v in values[1:])
    return max(0, waiting), recent
