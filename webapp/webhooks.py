"""Telling another system that a batch finished: one signed POST, retried with backoff.

The body is JSON; the header X-Pressroom-Signature is "sha256=" and the hex HMAC-SHA256 of
the exact body bytes with WEBHOOK_SECRET, so the receiver can check who sent it.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from datetime import timedelta
from typing import Optional

from celery import shared_task
from flask import current_app
from sqlalchemy import func, select, update

from . import live
from .extensions import db
from .models import Article, ArticleStatus as A, Batch, BatchStatus as B, WebhookDelivery, utcnow

log = logging.getLogger(__name__)

TIMEOUT = 10
SIGNATURE_HEADER = "X-Pressroom-Signature"


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


@shared_task(name="webapp.webhooks.deliver")
def deliver(batch_id: int) -> dict:
    """Try once to deliver a finished batch's webhook; the reconciler schedules retries."""
    redis = live.get_redis()
    lock = f"pressroom:webhook:{batch_id}"
    if not redis.set(lock, "1", nx=True, ex=TIMEOUT * 3):
        return {"skipped": "a delivery is under way"}
    try:
        return _deliver(batch_id)
    finally:
        redis.delete(lock)


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
    request = urllib.request.Request(batch.webhook_url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "Pressroom-Webhook/1",
        SIGNATURE_HEADER: sign(body)})
    started = time.perf_counter()
    status, error = None, None
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status, error = exc.code, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
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
        log.warning("webhook for batch %s failed (attempt %d): %s", batch_id, attempts + 1, error)
    return {"ok": ok, "status": status, "attempt": attempts + 1}


def due_batches() -> list[int]:
    return db.session.scalars(select(Batch.id).where(
        Batch.status.in_(B.FINAL), Batch.webhook_url.is_not(None),
        Batch.webhook_done_at.is_(None))).all()


def deliveries(batch_id: int) -> list[WebhookDelivery]:
    return db.session.scalars(select(WebhookDelivery).where(WebhookDelivery.batch_id == batch_id)
                              .order_by(WebhookDelivery.id)).all()
