"""This database's identity, and the Redis key prefix that goes with it.

Redis keeps cancel flags, probes, slots, dispatch markers and locks keyed by batch and
article ids, but ids belong to a database: a reset or restored database, or a second
installation sharing the Redis, reuses them. Every such key therefore starts with
`pressroom:<installation key>:`, the key being made with the schema (migration 0009) and
kept in the database.

A restored backup keeps the key it had, while Redis may hold state for batches made after
the backup. Each dispatch records the newest batch (its id and creation time) in Redis; a
process that finds that batch missing from the database, or there with another creation
time (a new batch reusing its id), knows the database went back in time and gives it a new
key (once, whichever process gets there first), so the restored ids start clean. Processes
that were running before a restore keep the old key until they restart.
"""
from __future__ import annotations

import logging
import secrets

import redis
from flask import current_app
from sqlalchemy import select, update

from .extensions import db, get_redis
from .models import Batch, Installation

log = logging.getLogger(__name__)

ROOT = "pressroom:"
_ROW = 1
# Keeps "id|created_at" of the newest batch dispatched under this installation's prefix.
_RAISE_MARK = """
local seen = redis.call('GET', KEYS[1])
if not seen or tonumber(ARGV[1]) > tonumber(string.match(seen, '^[0-9]+')) then
  redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2])
end
return 1
"""


def prefix() -> str:
    """`pressroom:<key>:` for this app's database; read once per process."""
    cached = current_app.extensions.get("pressroom_scope")
    if cached is None:
        cached = f"{ROOT}{_load_key()}:"
        current_app.extensions["pressroom_scope"] = cached
    return cached


def high_water_key() -> str:
    return prefix() + "last-batch"


def note_batch(pipe, batch_id: int, created_at) -> None:
    """Add "this batch exists" to a pipeline (the restore check compares against it)."""
    pipe.eval(_RAISE_MARK, 1, high_water_key(), batch_id, _stamp(created_at))


def _stamp(created_at) -> str:
    return created_at.isoformat(timespec="microseconds") if created_at else ""


def _load_key() -> str:
    key = db.session.scalar(select(Installation.key).where(Installation.id == _ROW))
    if key is None:  # a schema made without the migrations (create_all)
        key = _replace(None)
    mark = _mark(key)
    if mark is not None:
        batch_id, stamp = mark
        created = db.session.scalar(select(Batch.created_at).where(Batch.id == batch_id))
        db.session.rollback()
        if created is None or _stamp(created) != stamp:
            log.warning("Redis knows batch %s, which this database does not have (restored "
                        "or reset): the old Redis state is left behind under a new key",
                        batch_id)
            key = _replace(key)
    return key


def _mark(key: str):
    try:
        raw = get_redis().get(f"{ROOT}{key}:last-batch")
    except redis.RedisError:
        return None  # checked again by the next process that starts with Redis up
    if not raw:
        return None
    batch_id, _, stamp = raw.decode().partition("|")
    return int(batch_id), stamp


def _replace(old) -> str:
    """A new key, unless another process replaced the old one first (then theirs)."""
    new = secrets.token_hex(6)
    if old is None:
        db.session.add(Installation(id=_ROW, key=new))
    else:
        db.session.execute(update(Installation)
                           .where(Installation.id == _ROW, Installation.key == old)
                           .values(key=new))
    try:
        db.session.commit()
    except Exception:  # another process inserted the row first
        db.session.rollback()
    return db.session.scalar(select(Installation.key).where(Installation.id == _ROW))
