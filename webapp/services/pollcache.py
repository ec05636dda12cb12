"""A batch page's progress partial, rendered once a tick and shared by all who watch it.

Every viewer of a batch page polls its progress about once a second. Rendered per viewer,
fifty viewers cost fifty times the SQL, the Redis read and the template; the answers differ
only by a few milliseconds of staleness. So the first poll of a tick renders the partial
and keeps it in Redis for a few seconds, and the other polls of that tick are sent the same
HTML: one Redis round trip, no SQL; none at all once this process has read that render
(_Recent).

Ticks cut time into POLL_INTERVAL slices. A render made in tick T holds the rows changed
since the start of tick T-2 (less the poll's OVERLAP), so it serves every viewer whose
`since` falls in T-2 or later: whoever polled in either of the two ticks before (one whose
answer arrived just after a tick began polls again a tick later than the others). A viewer
whose `since` is older (a tab that was hidden) gets a render of its own window, which
others with the same window share.

A render never takes a viewer back in time: it is read after its tick began, so after the
`since` of any viewer of an earlier tick; a viewer whose `since` is that of this render, or
later, is told that nothing is new (polls.batch_poll).

Only what is the same for everyone is kept: access checks and a user's buttons are worked
out per request from the facts stored with the render (the batch's owner and status).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Optional

import redis
from flask import current_app
from flask_babel import get_locale

from ..extensions import get_redis
from ..installation import prefix

# How many ticks back a render reaches (see the docstring): 2 keeps viewers whose polls
# land a tick late sharing the same render.
REACH = 2
# Renders are read in their own tick and, while the next one is being made, in the next.
KEEP_TICKS = 3
KEEP_AT_LEAST_S = 2.0

_EPOCH = datetime(1970, 1, 1)

# One round trip: this tick's render; or, when there is none, a claim on making it (so that
# one poll renders while the others wait a tick); or, when another poll holds the claim,
# the previous tick's render to answer with meanwhile.
_LOOKUP = """
local shared = redis.call('GET', KEYS[1])
if shared then return {'hit', shared} end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return {'claimed'} end
return {'busy', redis.call('GET', KEYS[3])}
"""
# Sent by its SHA1 (EVALSHA): Redis then neither receives nor hashes the script on every
# poll. Redis keeps a script it has run until it restarts; then one EVAL loads it again.
_LOOKUP_SHA = hashlib.sha1(_LOOKUP.encode()).hexdigest()


def clock() -> float:
    """Seconds since the epoch (the tests hold it still to decide when a tick ends)."""
    return time.time()


def _interval() -> float:
    return max(float(current_app.config["POLL_INTERVAL"]), 0.05)


@dataclass(frozen=True)
class Window:
    """Which shared render a poll may be answered with: the tick it is asked in, and the
    first tick whose changes the render must hold (changes since `start`)."""
    tick: int
    since_tick: int
    interval: float

    @property
    def start(self) -> datetime:
        return _EPOCH + timedelta(seconds=self.since_tick * self.interval)

    @property
    def previous(self) -> "Window":
        """The same viewer's window one tick earlier."""
        return Window(self.tick - 1, min(self.since_tick, self.tick - 1 - REACH),
                      self.interval)


def window(since: datetime) -> Window:
    """The window of a poll whose viewer has seen everything up to `since` (naive UTC)."""
    interval = _interval()
    tick = math.floor(clock() / interval)
    seen = math.floor((since - _EPOCH).total_seconds() / interval)
    return Window(tick, min(seen, tick - REACH), interval)


@dataclass(frozen=True)
class Shared:
    """One render of the partial, the same for every viewer: `summary` is the polled
    element itself, `updates` the out-of-band rows and word counts. `facts` are what the
    per-request checks need of the batch (JSON values), `read_at` when it was read."""
    read_at: datetime
    facts: dict
    summary: str
    updates: str


def _key(batch_id: int, first: int, last: int, w: Window) -> str:
    # Renders are shared by viewers who read the same language.
    return f"{prefix()}poll:{batch_id}:{first}-{last}:{w.tick}:{w.since_tick}:{get_locale()}"


class _Recent:
    """The renders this process has read or made in the current tick, by key.

    A render is made once for its tick (its key names the tick) and not changed after, so
    the other polls of that tick in this process are answered from here, without a Redis
    round trip: with two web processes, a tick's fifty polls of one batch cost two
    look-ups. Only the current tick's are kept, and at most LIMIT of them.
    """
    LIMIT = 512

    def __init__(self) -> None:
        self.tick: Optional[int] = None
        self.renders: dict[str, Shared] = {}

    def get(self, key: str, tick: int) -> Optional[Shared]:
        return self.renders.get(key) if tick == self.tick else None

    def keep(self, key: str, tick: int, shared: Shared) -> None:
        if self.tick is not None and tick < self.tick:
            return  # made late, for a tick that has passed
        if tick != self.tick or len(self.renders) >= self.LIMIT:
            # A new tick (or too many windows at once): the old ones are of no more use.
            # Swapped, not cleared, so a thread reading the old dict is not disturbed.
            self.tick, self.renders = tick, {}
        self.renders[key] = shared


def _recent() -> _Recent:
    recent = current_app.extensions.get("pressroom_recent_renders")
    if recent is None:
        recent = current_app.extensions["pressroom_recent_renders"] = _Recent()
    return recent


def forget_recent() -> None:
    """Drop this process's copies of this tick's renders (the next poll asks Redis)."""
    current_app.extensions.pop("pressroom_recent_renders", None)


def lookup(batch_id: int, first: int, last: int,
           w: Window) -> tuple[Optional[Shared], bool, Optional[Shared]]:
    """(this tick's render, whether this poll is to make it, the previous tick's render).

    Raises redis.RedisError when Redis cannot be reached."""
    key = _key(batch_id, first, last, w)
    recent = _recent()
    kept = recent.get(key, w.tick)
    if kept is not None:
        return kept, False, None
    claim_ms = int(max(2 * w.interval, 1.0) * 1000)
    args = (3, key, key + ":claim", _key(batch_id, first, last, w.previous), claim_ms)
    client = get_redis()
    try:
        reply = client.evalsha(_LOOKUP_SHA, *args)
    except redis.exceptions.NoScriptError:  # a Redis that has not run it yet (or restarted)
        reply = client.eval(_LOOKUP, *args)
    outcome = reply[0]
    if outcome == b"hit":
        shared = _decode(reply[1])
        if shared is not None:
            recent.keep(key, w.tick, shared)
        return shared, False, None
    if outcome == b"claimed":
        return None, True, None
    return None, False, _decode(reply[1]) if len(reply) > 1 else None


def store(batch_id: int, first: int, last: int, w: Window, shared: Shared) -> None:
    """Keep a render for the others of its tick (and the next); a failure only costs them
    a render of their own."""
    key = _key(batch_id, first, last, w)
    _recent().keep(key, w.tick, shared)
    keep_ms = int(max(KEEP_TICKS * w.interval, KEEP_AT_LEAST_S) * 1000)
    try:
        get_redis().set(key, _encode(shared), px=keep_ms)
    except redis.RedisError:
        current_app.logger.warning("could not keep the progress render of batch %s", batch_id)


# Stored as one JSON line (when, the facts, where the summary ends) and then the HTML,
# so the HTML is kept as it is rather than escaped into JSON.
def _encode(shared: Shared) -> bytes:
    head = json.dumps({"read_at": shared.read_at.isoformat(), "facts": shared.facts,
                       "summary": len(shared.summary)}, separators=(",", ":"))
    return f"{head}\n{shared.summary}{shared.updates}".encode()


def _decode(raw) -> Optional[Shared]:
    if not raw:
        return None
    try:
        head, _, html = raw.decode().partition("\n")
        meta = json.loads(head)
        read_at = datetime.fromisoformat(meta["read_at"])
        cut = int(meta["summary"])
        facts = dict(meta["facts"])
    except (ValueError, KeyError, TypeError):
        return None  # not one of ours (or from another version): rendered again
    return Shared(read_at, facts, html[:cut], html[cut:])


def render_once(name: str, seconds: float, render: Callable[[], str]) -> str:
    """What `render` makes, made once per `seconds` slice and language however many poll it.

    For widgets that are the same for every viewer (a batch's charts): the first poll of a
    slice renders and keeps it, the others read it. Redis down: each poll renders its own.
    """
    key = f"{prefix()}render:{name}:{int(clock() // seconds)}:{get_locale()}"
    client = get_redis()
    try:
        kept = client.get(key)
    except redis.RedisError:
        return render()
    if kept is not None:
        return kept.decode()
    html = render()
    try:
        client.set(key, html.encode(), px=int(seconds * 2000))
    except redis.RedisError:
        current_app.logger.warning("could not keep the render %s", name)
    return html
