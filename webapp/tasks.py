"""Celery tasks. They take ids, never ORM objects, and are safe to run twice."""
from __future__ import annotations

import logging
import random
import time
import uuid

from celery import shared_task
from flask import current_app
from sqlalchemy import select

from . import lifecycle, live
from .extensions import db
from .models import Article, ArticleStatus as A, Batch
from .provider import Prompt, ProviderError, get_provider

log = logging.getLogger(__name__)

# How often a streaming task reports progress and looks for a cancel flag: often enough
# for a live bar and a sub-second cancel, rarely enough to keep Redis traffic small.
REPORT_EVERY = 0.25


class _Cancelled(Exception):
    pass


@shared_task(bind=True, name="webapp.tasks.generate_article", max_retries=None)
def generate_article(self, article_id: int) -> dict:
    """Write one article: claim it, stream it from the provider, store it once."""
    row = db.session.execute(
        select(Article.status, Article.batch_id, Article.title, Article.attempts,
               Batch.provider, Batch.model, Batch.target_words, Batch.tone, Batch.language,
               Batch.instructions)
        .join(Batch, Batch.id == Article.batch_id).where(Article.id == article_id)
    ).one_or_none()
    db.session.rollback()  # end the read transaction before any long work
    if row is None:
        return {"status": "missing"}
    if row.status in A.FINAL:
        return {"status": row.status}

    redis = live.get_redis()
    if row.status == A.CANCELLING or live.cancel_requested(redis, row.batch_id, article_id):
        lifecycle.mark_cancelled(article_id)
        lifecycle.finalize_batch(row.batch_id)
        return {"status": A.CANCELLED}

    cfg = current_app.config
    token = str(uuid.uuid4())
    lease = cfg["ARTICLE_LEASE_SECONDS"]
    if not lifecycle.claim(article_id, token, lease):
        # Another delivery owns it (a duplicate message) or it was cancelled meanwhile.
        return {"status": "skipped"}
    lifecycle.mark_batch_running(row.batch_id)
    attempt = row.attempts + 1

    prompt = Prompt(title=row.title, words=row.target_words, tone=row.tone,
                    language=row.language, instructions=row.instructions or "")
    try:
        # The last look before money is spent: a cancel that landed after the claim.
        if live.cancel_requested(redis, row.batch_id, article_id):
            raise _Cancelled()
        provider = get_provider(cfg, row.provider)
        stream = provider.stream(prompt, row.model)
        text = _consume(self, stream, redis, row.batch_id, article_id, token, lease, attempt)
    except _Cancelled:
        lifecycle.mark_cancelled(article_id, token)
        redis.delete(live.text_key(article_id))
        lifecycle.finalize_batch(row.batch_id)
        return {"status": A.CANCELLED}
    except ProviderError as err:
        return _handle_error(self, err, article_id, row.batch_id, token, attempt)

    words = len(text.split())
    stored = lifecycle.complete(
        article_id, token, body=text, words=words,
        prompt_tokens=stream.usage.prompt_tokens,
        completion_tokens=stream.usage.completion_tokens,
        finish_reason=stream.finish_reason)
    redis.delete(live.text_key(article_id))
    lifecycle.finalize_batch(row.batch_id)
    return {"status": A.SUCCEEDED if stored else "lost-claim", "words": words}


def _consume(task, stream, redis, batch_id, article_id, token, lease, attempt) -> str:
    parts: list[str] = []
    last_report = 0.0
    last_renew = time.monotonic()
    try:
        for delta in stream:
            parts.append(delta)
            now = time.monotonic()
            if now - last_report < REPORT_EVERY:
                continue
            last_report = now
            if live.cancel_requested(redis, batch_id, article_id):
                raise _Cancelled()
            text = "".join(parts)
            redis.set(live.text_key(article_id), text, ex=live.TEXT_TTL)
            task.update_state(state="PROGRESS",
                              meta={"words": len(text.split()), "attempt": attempt})
            if now - last_renew > lease / 3:
                last_renew = now
                if not lifecycle.renew(article_id, token, lease):
                    raise _Cancelled()  # the claim was lost: stop writing
    finally:
        stream.close()
    return "".join(parts)


def _handle_error(task, err: ProviderError, article_id, batch_id, token, attempt) -> dict:
    cfg = current_app.config
    max_attempts = cfg["GENERATION_MAX_ATTEMPTS"]
    if err.retryable and attempt < max_attempts:
        delay = backoff_delay(attempt, err.retry_after, cfg.get("GENERATION_RETRY_BASE", 2.0))
        note = f"{err.message} Retry {attempt + 1} of {max_attempts} in {delay:.0f} s."
        if lifecycle.release_for_retry(article_id, token, note):
            raise task.retry(countdown=delay, max_retries=None)
        return {"status": "lost-claim"}
    message = err.message
    if err.retryable:
        message = f"{err.message} Gave up after {attempt} attempts."
    lifecycle.fail(article_id, token, message)
    lifecycle.finalize_batch(batch_id)
    log.warning("article %s failed: %s", article_id, message)
    return {"status": A.FAILED, "error": message}


def backoff_delay(attempt: int, retry_after: float | None, base: float) -> float:
    """Exponential backoff with jitter, never shorter than the provider asked for."""
    delay = min(60.0, base * (2 ** (attempt - 1)))
    delay = delay * (0.5 + random.random() / 2)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return round(delay, 2)
