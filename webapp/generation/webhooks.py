"""Telling another system that a batch finished: one signed POST, retried with backoff.

The body is JSON; the header X-Pressroom-Signature is "sha256=" and the hex HMAC-SHA256 of
the exact body bytes with WEBHOOK_SECRET, so the receiver can check who sent it.

The URL is typed in by a user, so a delivery must not become a way into our own network:
the host is resolved once and every address checked (netguard.py; WEBHOOK_ALLOWED_HOSTS
names internal receivers), the connection goes to the checked address, redirects are not
followed, and one deadline (WEBHOOK_TIMEOUT) bounds the whole attempt. Deliveries run on
their own small `webhooks` queue, so a slow receiver never holds a generation thread. What
the page shows is a status code or a generic reason; the details go to the worker log.
"""
from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import re
import ssl
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional
from urllib.parse import urlsplit

import redis
from celery import shared_task
from flask import current_app
from sqlalchemy import func, select, update

from .. import installation, netguard, pinned
from ..extensions import db, get_redis
from ..models import Article, ArticleStatus as A, Batch, BatchStatus as B, WebhookDelivery, utcnow

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Pressroom-Signature"
# The lock outlives the attempt's deadline by this much: the reads before the POST and the
# write of its result are inside it too, so a second delivery never overlaps the first.
LOCK_MARGIN = 30.0

# What a page may say about a failed attempt (besides "HTTP <status>").
TIMED_OUT = "timed out"
COULD_NOT_CONNECT = "could not connect"
TLS_FAILED = "TLS handshake failed"
BAD_RESPONSE = "invalid HTTP response"
_SHOWN = re.compile(r"HTTP \d{3}|redirect not followed \(HTTP \d{3}\)|refused: [A-Za-z ]+|"
                    + "|".join(map(re.escape, (TIMED_OUT, COULD_NOT_CONNECT, TLS_FAILED,
                                                BAD_RESPONSE))))


def secret() -> bytes:
    configured = current_app.config.get("WEBHOOK_SECRET")
    if configured:
        return configured.encode()
    # Without its own secret, derive a stable one from SECRET_KEY (never the key itself).
    return hmac.new(current_app.config["SECRET_KEY"].encode(), b"pressroom-webhooks",
                    hashlib.sha256).hexdigest().encode()


def sign(body: bytes, key: Optional[bytes] = None) -> str:
    return "sha256=" + hmac.new(key or secret(), body, hashlib.sha256).hexdigest()


def payload(batch: Batch) -> dict:
    counts = dict(db.session.execute(select(Article.status, func.count())
                                     .where(Article.batch_id == batch.id)
                                     .group_by(Article.status)).all())
    return {"event": "batch.finished", "batch": {
        "id": batch.id, "name": batch.name, "status": batch.status, "total": batch.total,
        "counts": {s: counts.get(s, 0) for s in A.ALL}, "model": batch.model,
        "provider": batch.provider, "prompt_tokens": batch.prompt_tokens,
        "completion_tokens": batch.completion_tokens, "cost_usd": round(batch.cost_usd, 6),
        "created_at": batch.created_at.isoformat() + "Z",
        "finished_at": batch.finished_at.isoformat() + "Z" if batch.finished_at else None,
        "stop_reason": batch.stop_reason}, "sent_at": utcnow().isoformat() + "Z"}


def next_attempt_due(attempts: int, last_at, now) -> bool:
    """Backoff between deliveries: 5 s, 10 s, 20 s, ... capped at ten minutes."""
    if attempts == 0 or last_at is None:
        return True
    wait = min(600, 5 * 2 ** (attempts - 1))
    return now - last_at >= timedelta(seconds=wait)


def lock_key(batch_id: int) -> str:
    return f"{installation.prefix()}webhook:{batch_id}"


@shared_task(name="webapp.webhooks.deliver")
def deliver(batch_id: int) -> dict:
    """Try once to deliver a finished batch's webhook; the reconciler schedules retries."""
    # redis-py's Lock: a random token, and a compare-and-delete script on release, so an
    # attempt that somehow outlived its lock never deletes the next attempt's.
    lock = get_redis().lock(lock_key(batch_id), blocking=False,
                                 timeout=current_app.config["WEBHOOK_TIMEOUT"] + LOCK_MARGIN)
    if not lock.acquire():
        return {"skipped": "a delivery is under way"}
    try:
        return _deliver(batch_id)
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            log.warning("webhook lock for batch %s had expired before its attempt ended",
                        batch_id)


def _deliver(batch_id: int) -> dict:
    batch = db.session.get(Batch, batch_id)
    if batch is None or not batch.webhook_url or batch.webhook_done_at is not None \
            or batch.status not in B.FINAL:
        return {"skipped": "nothing to deliver"}
    attempts, last_at = db.session.execute(
        select(func.count(WebhookDelivery.id), func.max(WebhookDelivery.created_at))
        .where(WebhookDelivery.batch_id == batch_id)).one()
    max_attempts = current_app.config["WEBHOOK_MAX_ATTEMPTS"]
    if attempts >= max_attempts or not next_attempt_due(attempts, last_at, utcnow()):
        return {"skipped": "not due"}
    body = json.dumps(payload(batch)).encode()
    url = batch.webhook_url
    db.session.rollback()  # no transaction held open (SQLite) while we wait on the receiver
    started = time.perf_counter()
    status, error, detail = post(url, body, {
        "Content-Type": "application/json", "User-Agent": "Pressroom-Webhook/1",
        SIGNATURE_HEADER: sign(body)})
    ok = status is not None and 200 <= status < 300
    db.session.add(WebhookDelivery(batch_id=batch_id, attempt=attempts + 1, status_code=status,
                                   ok=ok, error=error,
                                   duration_ms=round((time.perf_counter() - started) * 1000, 1)))
    if ok or attempts + 1 >= max_attempts:
        # Delivered, or given up: either way no further attempt.
        db.session.execute(update(Batch).where(Batch.id == batch_id,
                                               Batch.webhook_done_at.is_(None))
                           .values(webhook_done_at=utcnow()))
    db.session.commit()
    if not ok:
        log.warning("webhook for batch %s failed (attempt %d): %s", batch_id, attempts + 1,
                    detail)
    return {"ok": ok, "status": status, "attempt": attempts + 1}


def post(url: str, body: bytes, headers: dict) -> tuple[Optional[int], Optional[str], str]:
    """One POST within WEBHOOK_TIMEOUT: (status, reason for the page, detail for the log).

    The response's status line and headers are read, never its body: the status is all a
    webhook needs, and an endless body cannot hold the attempt."""
    config = current_app.config
    timeout = config["WEBHOOK_TIMEOUT"]
    deadline = time.monotonic() + timeout
    host = _host_for_log(url)
    try:
        target = netguard.check_url(url, config["WEBHOOK_ALLOWED_HOSTS"], timeout=timeout)
        connection = pinned.open_connection(target, deadline)
        try:
            connection.request("POST", target.path, body=body, headers=headers)
            status = connection.getresponse().status
        finally:
            connection.close()
    except netguard.Refused as exc:
        return None, f"refused: {exc.reason}", exc.detail
    except TimeoutError as exc:  # socket timeouts, the deadline, a slow lookup
        return None, TIMED_OUT, f"{host}: no answer within {timeout:g} s ({exc})"
    except ssl.SSLError as exc:
        return None, TLS_FAILED, f"{host}: {exc!r}"
    except http.client.HTTPException as exc:
        return None, BAD_RESPONSE, f"{host}: {exc!r}"
    except (OSError, ValueError) as exc:  # refused, unreachable, no such name, bad header
        return None, COULD_NOT_CONNECT, f"{host}: {exc!r}"
    if 300 <= status < 400:
        # Following it would send the payload wherever the receiver points, inside included.
        return status, f"redirect not followed (HTTP {status})", f"{host}: HTTP {status}"
    if not 200 <= status < 300:
        return status, f"HTTP {status}", f"{host}: HTTP {status}"
    return status, None, f"{host}: HTTP {status}"


def _host_for_log(url: str) -> str:
    # Never the whole URL: its path or query may hold the receiver's secret.
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


def due_batches() -> list[int]:
    """Finished batches whose webhook is due an attempt now and not being sent already."""
    rows = db.session.execute(
        select(Batch.id, func.count(WebhookDelivery.id), func.max(WebhookDelivery.created_at))
        .outerjoin(WebhookDelivery, WebhookDelivery.batch_id == Batch.id)
        .where(Batch.status.in_(B.FINAL), Batch.webhook_url.is_not(None),
               Batch.webhook_done_at.is_(None))
        .group_by(Batch.id)).all()
    now = utcnow()
    ids = [batch_id for batch_id, attempts, last_at in rows
           if next_attempt_due(attempts, last_at, now)]
    if not ids:
        return []
    # One round trip: a batch whose lock is held has an attempt under way.
    held = get_redis().mget([lock_key(batch_id) for batch_id in ids])
    return [batch_id for batch_id, token in zip(ids, held) if token is None]


@dataclass(frozen=True)
class Attempt:
    """One delivery as a page shows it."""
    attempt: int
    created_at: datetime
    ok: bool
    status_code: Optional[int]
    error: Optional[str]
    duration_ms: Optional[float]


def deliveries(batch_id: int) -> list[Attempt]:
    rows = db.session.scalars(select(WebhookDelivery).where(WebhookDelivery.batch_id == batch_id)
                              .order_by(WebhookDelivery.id)).all()
    # Rows written before the generic reasons may hold socket or resolver text: not shown.
    return [Attempt(d.attempt, d.created_at, d.ok, d.status_code,
                    d.error if not d.error or _SHOWN.fullmatch(d.error) else COULD_NOT_CONNECT,
                    d.duration_ms) for d in rows]
