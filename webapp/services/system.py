"""The state of the system, for /readyz, /metrics, the system page and the CLI."""
from __future__ import annotations

import hmac
import ipaddress
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Optional

import redis
from alembic.script import ScriptDirectory
from flask import current_app
from sqlalchemy import func, select, text

from .. import metrics_export, workerstate
from ..generation import ratelimit
from ..extensions import db, get_redis
from ..models import Article, ArticleStatus as A, Batch, BatchStatus as B, utcnow

QUEUES = ("generation", "celery", "webhooks", "publishing")


@dataclass
class Check:
    ok: bool
    latency_ms: Optional[float] = None
    detail: str = ""


class NotReady(Exception):
    """A failed check whose message is safe to show (no URLs, no secrets)."""


def _timed(fn) -> Check:
    start = time.perf_counter()
    try:
        detail = fn() or ""
    except NotReady as exc:
        return Check(False, None, str(exc))
    except Exception as exc:  # any failure means "not ready"; say which kind, not secrets
        db.session.rollback()
        return Check(False, None, type(exc).__name__)
    return Check(True, round((time.perf_counter() - start) * 1000, 2), detail)


def check_database() -> Check:
    return _timed(lambda: db.session.execute(text("SELECT 1")).scalar() and None)


def check_redis() -> Check:
    return _timed(lambda: get_redis().ping() and None)


def _head_revision() -> str:
    heads = current_app.extensions.get("pressroom_migration_head")
    if heads is None:
        directory = current_app.extensions["migrate"].directory
        script = ScriptDirectory(directory)
        heads = ",".join(sorted(script.get_heads()))
        current_app.extensions["pressroom_migration_head"] = heads
    return heads


def check_migrations() -> Check:
    def compare():
        current = ",".join(sorted(db.session.execute(
            text("SELECT version_num FROM alembic_version")).scalars().all()))
        head = _head_revision()
        if current != head:
            # Revision names are not secrets: say what differs.
            raise NotReady(f"database at {current or 'none'}, code at {head}")
        return current
    return _timed(compare)


def readiness() -> dict[str, Check]:
    return {"database": check_database(), "redis": check_redis(),
            "migrations": check_migrations()}


def queue_lengths(client: redis.Redis) -> dict[str, int]:
    pipe = client.pipeline(transaction=False)
    for q in QUEUES:
        pipe.llen(q)
    return dict(zip(QUEUES, pipe.execute()))


def purge_queues(client: redis.Redis) -> dict[str, int]:
    lengths = queue_lengths(client)
    client.delete(*QUEUES)
    return lengths


@dataclass
class SystemView:
    database: Check
    redis: Check
    workers: list = field(default_factory=list)
    queues: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)
    waiting: int = 0
    recent_429s: int = 0
    by_status: dict = field(default_factory=dict)
    batches_open: int = 0
    error: str = ""


def system_view() -> SystemView:
    """Everything on the system page; each part fails on its own and says so."""
    view = SystemView(database=check_database(), redis=check_redis())
    if view.redis.ok:
        try:
            client = get_redis()
            view.workers = workerstate.read_workers(client)
            view.queues = queue_lengths(client)
            values = client.mget(ratelimit.pressure_keys(ratelimit.ALL))
            view.waiting, view.recent_429s = ratelimit.pressure_from(values)
        except redis.RedisError as exc:
            view.error = f"Redis: {type(exc).__name__}"
    if view.database.ok:
        since = utcnow() - timedelta(hours=1)
        view.failures = db.session.execute(
            select(Article.error, func.count()).where(Article.status == A.FAILED,
                                                      Article.finished_at >= since)
            .group_by(Article.error).order_by(func.count().desc()).limit(10)).all()
        view.by_status = dict(db.session.execute(
            select(Article.status, func.count()).group_by(Article.status)).all())
        view.batches_open = db.session.scalar(
            select(func.count()).select_from(Batch).where(Batch.status.not_in(B.FINAL)))
    return view


# --- /metrics ----------------------------------------------------------------------------

def metrics_allowed(remote_addr: str, auth_header: str) -> bool:
    token = current_app.config.get("METRICS_TOKEN")
    # In constant time: how long a wrong guess takes says nothing about the token.
    if token and hmac.compare_digest((auth_header or "").encode(), f"Bearer {token}".encode()):
        return True
    try:
        addr = ipaddress.ip_address(remote_addr or "")
    except ValueError:
        return False
    for net in (current_app.config.get("METRICS_ALLOW") or "").split(","):
        net = net.strip()
        if net:
            try:
                if addr in ipaddress.ip_network(net, strict=False):
                    return True
            except ValueError:
                continue
    return False


METRICS_CONTENT_TYPE = metrics_export.CONTENT_TYPE


def render_metrics() -> bytes:
    """Prometheus text exposition of the counters, histograms and gauges."""
    return metrics_export.render(QUEUES)
