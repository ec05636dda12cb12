"""May this article go to the provider now? One Redis script call answers it.

Before an article is sent, five things are checked, and all of them live in Redis:
its cancel flags, a place among its batch's articles in flight (ratelimit's per-batch
cap), the batch's first-request probe (a half-open circuit breaker), the shared hold-off
the provider asked for, and the provider's request and token limits per model. They are
one Lua script so that a worker pays one round trip per article, and so that they are
decided together: a request is counted against the limits only when it is really going.

The limits are counted here rather than by the `limits` library, whose two strategies
would each be round trips of their own: requests over an exact moving window (a sorted
set of the requests sent), tokens over a sliding-window counter (this window's total plus
the previous window's, weighted by how much of it still overlaps).
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Optional

from flask import current_app

from . import live, ratelimit

# KEYS: 1 batch cancel flag, 2 article cancel flag, 3 the batch's places in flight,
#       4 the batch's probe, 5 the model's hold-off, 6 requests sent (sorted set),
#       7 tokens this window, 8 tokens the window before
# ARGV: 1 now (s), 2 places per batch (0: no cap), 3 article id, 4 lease (s),
#       5 how long a probe may take (ms), 6 requests allowed (0: no limit), 7 its window (s),
#       8 tokens allowed (0: no limit), 9 its window (s), 10 this request's tokens,
#       11 a unique id for this request
# Returns {verdict, milliseconds to wait, place}: place 1 is new (the caller gives it back),
# 2 was held already by this article (another delivery's, on the first call).
_SCRIPT = """
local now = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return {'cancelled', 0, 0} end
local place = 1
if tonumber(ARGV[2]) > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZSCORE', KEYS[3], ARGV[3]) then
    place = 2
  elseif redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[2]) then
    return {'busy', 0, 0}
  end
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), ARGV[3])
  redis.call('EXPIRE', KEYS[3], 86400)
end
local probe = redis.call('GET', KEYS[4])
if probe == 'tripped' then return {'tripped', 0, place} end
if probe and probe ~= 'ok' then return {'wait', 50, place} end
local hold = redis.call('PTTL', KEYS[5])
if hold > 0 then return {'wait', hold, place} end
local requests = tonumber(ARGV[6])
if requests > 0 then
  local window = tonumber(ARGV[7])
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now - window)
  if redis.call('ZCARD', KEYS[6]) >= requests then
    local oldest = redis.call('ZRANGE', KEYS[6], 0, 0, 'WITHSCORES')
    return {'wait', math.max(50, math.ceil((tonumber(oldest[2]) + window - now) * 1000)), place}
  end
end
local tokens = tonumber(ARGV[8])
local cost = 0
if tokens > 0 then
  local window = tonumber(ARGV[9])
  cost = math.min(tonumber(ARGV[10]), tokens)
  local into = (now % window) / window
  local used = tonumber(redis.call('GET', KEYS[7]) or '0')
             + tonumber(redis.call('GET', KEYS[8]) or '0') * (1 - into)
  if used + cost > tokens then
    return {'wait', math.min(5000, math.max(50, math.ceil((1 - into) * window * 1000))), place}
  end
end
if requests > 0 then
  redis.call('ZADD', KEYS[6], now, ARGV[11])
  redis.call('EXPIRE', KEYS[6], math.ceil(tonumber(ARGV[7])) + 1)
end
if tokens > 0 then
  redis.call('INCRBY', KEYS[7], cost)
  redis.call('EXPIRE', KEYS[7], math.ceil(tonumber(ARGV[9])) * 2)
end
if not probe then
  redis.call('SET', KEYS[4], 'probing', 'PX', ARGV[5])
  return {'probe', 0, place}
end
return {'go', 0, place}
"""

PROVIDER_PREFIX = "pressroom-provider:"  # provider-wide: the same key, whichever database


@dataclass(frozen=True)
class Verdict:
    """"go", "probe" (go: this is the batch's first request), "wait", "busy" (the batch
    has its share of places in flight), "tripped" (the breaker paused the batch) or
    "cancelled"; how long to wait; and the place: 1 new, 2 held already, 0 none."""
    word: str
    wait_s: float
    place: int


def _script(client):
    # A registered script is sent as its SHA (EVALSHA), loaded again if Redis forgot it.
    script = current_app.extensions.get("pressroom_admission")
    if script is None:
        script = current_app.extensions["pressroom_admission"] = client.register_script(_SCRIPT)
    return script


def needs_tokens(model: str) -> bool:
    """Whether a token limit applies to the model (counting a prompt's tokens costs CPU)."""
    return ratelimit.limits_for(model).tokens is not None


def admit(client, batch_id: int, article_id: int, model: str, tokens: int,
          now: Optional[float] = None) -> Verdict:
    """Check and take everything an article needs before it is sent (see the module)."""
    cfg = current_app.config
    now = time.time() if now is None else now
    limits = ratelimit.limits_for(model)
    req_n = req_w = tok_n = tok_w = 0
    if limits.requests is not None:
        req_n, req_w = limits.requests.amount, limits.requests.get_expiry()
    if limits.tokens is not None:
        tok_n, tok_w = limits.tokens.amount, limits.tokens.get_expiry()
    bucket = int(now // tok_w) if tok_w else 0
    keys = [live.batch_cancel_key(batch_id), live.article_cancel_key(article_id),
            ratelimit.slots_key(batch_id), ratelimit.probe_key(batch_id),
            ratelimit.holdoff_key(model), f"{PROVIDER_PREFIX}requests:{model}",
            f"{PROVIDER_PREFIX}tokens:{model}:{bucket}",
            f"{PROVIDER_PREFIX}tokens:{model}:{bucket - 1}"]
    probe_ms = int((cfg["OPENAI_TIMEOUT"] + 5) * 1000)
    args = [repr(now), cfg["BATCH_MAX_CONCURRENCY"], article_id, cfg["ARTICLE_LEASE_SECONDS"],
            probe_ms, req_n, req_w, tok_n, tok_w, tokens, uuid.uuid4().hex]
    word, wait_ms, place = _script(client)(keys=keys, args=args, client=client)
    return Verdict(word.decode() if isinstance(word, bytes) else word, wait_ms / 1000.0,
                   int(place))
