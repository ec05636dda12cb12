"""Celery tasks. They take ids, never ORM objects, and are safe to run twice."""
from __future__ import annotations

import logging
import random
import time
import uuid

from celery import shared_task
from flask import current_app
from sqlalchemy import func, select

from .. import metrics, workerstate
from . import lifecycle, live, ratelimit, webhooks
from ..extensions import db, get_redis
from ..models import Article, ArticleStatus as A, Batch, BatchStatus as B
from .pricing import TOKENS_PER_WORD, cost_of, price_for
from .prompts import TemplateRefused, build_prompt
from .provider import ProviderError, get_provider, require_finish
from .tokencount import count_chat_tokens

log = logging.getLogger(__name__)

# How often a streaming task reports progress and looks for a cancel flag: often enough
# for a live bar and a sub-second cancel, rarely enough to keep Redis traffic small.
REPORT_EVERY = 0.25
# Errors after which sending more of the batch only burns requests: pause it instead.
BREAKER_KINDS = ("auth", "quota")
# While another article of the batch probes the provider, look again this often.
PROBE_POLL = 0.05


class _Cancelled(Exception):
    pass


@shared_task(bind=True, name="webapp.tasks.generate_article", max_retries=None)
def generate_article(self, article_id: int) -> dict:
    """Write one article: claim it, stream it from the provider, store it once."""
    row = db.session.execute(
        select(Article.status, Article.batch_id, Article.title, Article.attempts,
               Article.keywords, Article.notes, Article.extra_instructions,
               func.coalesce(Article.tone, Batch.tone).label("tone"),
               func.coalesce(Article.language, Batch.language).label("language"),
               func.coalesce(Article.target_words, Batch.target_words).label("target_words"),
               Batch.status.label("batch_status"), Batch.provider, Batch.model,
               Batch.instructions, Batch.template_text, Batch.budget_usd)
        .join(Batch, Batch.id == Article.batch_id).where(Article.id == article_id)
    ).one_or_none()
    db.session.rollback()  # end the read transaction before any long work
    if row is None:
        return {"status": "missing"}
    if row.status in A.FINAL:
        return {"status": row.status}

    if row.status == A.CANCELLING:
        return _cancel_unstarted(article_id, row.batch_id)
    if row.batch_status == B.PAUSED:
        # Left queued; resuming the batch sends it again.
        return {"status": "paused"}

    cfg = current_app.config
    redis = get_redis()
    # One round trip: the cancel flags, and a place among the batch's articles in flight.
    pipe = redis.pipeline(transaction=False)
    live.queue_cancel_check(pipe, row.batch_id, article_id)
    ratelimit.acquire_slot(pipe, row.batch_id, article_id, cfg["BATCH_MAX_CONCURRENCY"],
                           cfg["ARTICLE_LEASE_SECONDS"])
    replies = pipe.execute()
    slot = replies[1] if len(replies) > 1 else 1
    # Only a new place is ours to give back: with 2, another delivery of this article is
    # running and holds it (this one will find the article claimed and stop).
    owns_slot = slot == 1
    if any(replies[0]):
        if owns_slot:
            ratelimit.release_slot(redis, row.batch_id, article_id)
        return _cancel_unstarted(article_id, row.batch_id)
    if not slot:
        # The batch has its share of workers busy: come back later, behind other batches.
        raise self.retry(countdown=random.uniform(0.5, 2.0), max_retries=None)
    try:
        with workerstate.active():
            return _generate(self, article_id, row, redis)
    finally:
        if owns_slot:
            # The slot and the text so far go in one round trip.
            pipe = redis.pipeline(transaction=False)
            ratelimit.release_slot(pipe, row.batch_id, article_id)
            pipe.delete(live.text_key(article_id))
            pipe.execute()


def _cancel_unstarted(article_id: int, batch_id: int) -> dict:
    lifecycle.mark_cancelled(article_id)
    _finalize(batch_id)
    return {"status": A.CANCELLED}


def _generate(task, article_id: int, row, redis) -> dict:
    cfg = current_app.config
    lease = cfg["ARTICLE_LEASE_SECONDS"]
    try:
        prompt = build_prompt(row.template_text, title=row.title, words=row.target_words,
                              tone=row.tone, language=row.language,
                              keywords=row.keywords or "", notes=row.notes or "",
                              instructions=row.instructions or "",
                              extra_instructions=row.extra_instructions or "")
    except TemplateRefused as refused:
        # The batch's template over its budget for this row (or one kept from before the
        # budget): the render stopped within a second, the article fails saying why, and
        # the worker goes on to the next task. Not claimed yet, so failed as queued.
        message = f"The prompt template cannot be used for this article. {refused}"
        lifecycle.fail_unstarted(article_id, message)
        _finalize(row.batch_id)
        log.warning("article %s failed: %s", article_id, message)
        return {"status": A.FAILED, "error": message}
    expected_tokens = (count_chat_tokens(row.model, prompt.messages())[0]
                       + int(row.target_words * TOKENS_PER_WORD))
    gate = _wait_for_provider(redis, row, article_id, expected_tokens)
    if gate == "cancelled":
        return _cancel_unstarted(article_id, row.batch_id)
    if gate == "tripped":
        return {"status": "paused"}  # the breaker paused the batch; resume sends it again
    probing = gate == "probe"

    token = str(uuid.uuid4())
    if not lifecycle.claim(article_id, row.batch_id, token, lease):
        # Another delivery owns it (a duplicate message), or it was cancelled or paused.
        if probing:
            ratelimit.probe_failed(redis, row.batch_id, tripped=False)
        return {"status": "skipped"}
    if row.batch_status == B.QUEUED:
        # Only the batch's first articles can find it queued; the others would each pay
        # for a write transaction that changes nothing (SQLite runs one writer at a time).
        lifecycle.mark_batch_running(row.batch_id)
    attempt = row.attempts + 1
    try:
        # The last look before money is spent: a cancel that landed after the claim.
        if live.cancel_requested(redis, row.batch_id, article_id):
            raise _Cancelled()
        started = time.monotonic()
        stream = get_provider(cfg, row.provider).stream(prompt, row.model)
        if probing:
            ratelimit.probe_passed(redis, row.batch_id)
            probing = False
        ratelimit.adapt_to_headers(redis, row.model, stream.headers)
        text = _consume(task, stream, redis, row.batch_id, article_id, token, lease, attempt)
    except _Cancelled:
        if probing:
            ratelimit.probe_failed(redis, row.batch_id, tripped=False)
        lifecycle.mark_cancelled(article_id, token)
        _finalize(row.batch_id)
        return {"status": A.CANCELLED}
    except ProviderError as err:
        if probing:
            ratelimit.probe_failed(redis, row.batch_id, tripped=err.kind in BREAKER_KINDS)
        return _handle_error(task, err, article_id, row, token, attempt, redis)

    words = len(text.split())
    usage = stream.usage
    metrics.observe_many([("provider_request_seconds", time.monotonic() - started),
                          ("provider_completion_tokens", usage.completion_tokens)],
                         client=redis, model=row.model)
    stored = lifecycle.complete(
        article_id, token, body=text, words=words,
        prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
        finish_reason=stream.finish_reason, review_flag=_review_flag(stream, text),
        cost_usd=cost_of(price_for(cfg, row.provider, row.model),
                         usage.prompt_tokens, usage.completion_tokens))
    if row.budget_usd is not None:  # set at submission only; most batches have none
        lifecycle.enforce_budget(row.batch_id)
    _finalize(row.batch_id)
    return {"status": A.SUCCEEDED if stored else "lost-claim", "words": words}


def _review_flag(stream, text: str) -> str | None:
    """An answer that must not pass as a plain success, and why."""
    if stream.refusal:
        return "refused"
    if not text.strip():
        return "empty"
    if stream.finish_reason in ("length", "content_filter"):
        return stream.finish_reason
    return None


def _wait_for_provider(redis, row, article_id: int, tokens: int) -> str:
    """Wait for the batch's first-request probe and the shared rate limits.

    Returns "go", "probe" (this article is the batch's first request), "tripped" (the
    circuit breaker paused the batch) or "cancelled".
    """
    limiter = ratelimit.get_limiter()
    hold = current_app.config["OPENAI_TIMEOUT"] + 5
    waiting = False
    try:
        while True:
            gate, holdoff = ratelimit.probe_state(redis, row.batch_id, hold, row.model)
            if gate == "tripped":
                return gate
            wait = PROBE_POLL if gate == "wait" else holdoff
            if not wait:
                wait = limiter.try_acquire(row.model, tokens)
                if not wait:
                    return gate
            if gate == "probe":
                ratelimit.probe_failed(redis, row.batch_id, tripped=False)  # let others try
            if not waiting:
                waiting = True
                ratelimit.change_waiting(redis, row.batch_id, +1)
            # Short sleeps, so a cancel or a pause is noticed while waiting.
            time.sleep(min(wait, REPORT_EVERY))
            if live.cancel_requested(redis, row.batch_id, article_id):
                return "cancelled"
    finally:
        if waiting:
            ratelimit.change_waiting(redis, row.batch_id, -1)


def _consume(task, stream, redis, batch_id, article_id, token, lease, attempt) -> str:
    """Read the stream, reporting progress and watching for a cancel; the whole answer
    must arrive within the provider timeout, however slowly it trickles."""
    parts: list[str] = []
    deadline = time.monotonic() + current_app.config["OPENAI_TIMEOUT"]
    # The first report comes REPORT_EVERY after the stream starts, not at its first chunk:
    # an answer that arrives faster than that is stored without any progress writes (the
    # cancel flag was read just before the request).
    last_report = last_renew = time.monotonic()
    try:
        for delta in stream:
            parts.append(delta)
            now = time.monotonic()
            if now > deadline:
                raise ProviderError("The provider did not finish the answer in time.",
                                    retryable=True, kind="timeout")
            if now - last_report < REPORT_EVERY:
                continue
            last_report = now
            text = "".join(parts)
            # One round trip: the cancel flags, and the text so far for the article page.
            pipe = redis.pipeline(transaction=False)
            live.queue_cancel_check(pipe, batch_id, article_id)
            pipe.set(live.text_key(article_id), text, ex=live.TEXT_TTL)
            if any(pipe.execute()[0]):
                raise _Cancelled()
            task.update_state(state="PROGRESS",
                              meta={"words": len(text.split()), "attempt": attempt})
            if now - last_renew > lease / 3:
                last_renew = now
                if not lifecycle.renew(article_id, token, lease):
                    raise _Cancelled()  # the claim was lost, or the article is cancelling
                ratelimit.acquire_slot(redis, batch_id, article_id,
                                       current_app.config["BATCH_MAX_CONCURRENCY"], lease)
    finally:
        stream.close()
    require_finish(stream)
    return "".join(parts)


def _handle_error(task, err: ProviderError, article_id, row, token, attempt, redis) -> dict:
    """Retry what may pass, fail what will not, and pause the batch on key or quota errors."""
    cfg = current_app.config
    # A rate limit says nothing about the article: it gets a bigger budget of attempts than
    # errors that may be the request's own fault.
    max_attempts = cfg["RATE_LIMIT_MAX_ATTEMPTS" if err.kind == "rate_limit"
                       else "GENERATION_MAX_ATTEMPTS"]
    if err.kind == "rate_limit":
        ratelimit.note_429(redis, row.batch_id)
        if err.retry_after:
            ratelimit.hold_off(redis, row.model, err.retry_after)
    metrics.count("provider_errors_total", kind=err.kind)
    if err.retryable and attempt < max_attempts:
        metrics.count("generation_retries_total", kind=err.kind)
        delay = backoff_delay(attempt, err.retry_after, cfg["GENERATION_RETRY_BASE"])
        label = "Rate limited" if err.kind == "rate_limit" else err.label
        note = f"{label} — retry {attempt + 1} of {max_attempts} in {delay:.0f} s"
        if lifecycle.release_for_retry(article_id, token, note):
            raise task.retry(countdown=delay, max_retries=None)
        return {"status": "lost-claim"}
    message = err.message
    if err.retryable:
        message = f"{err.message} Gave up after {attempt} attempts."
    breaker = err.kind in BREAKER_KINDS
    lifecycle.fail(article_id, token, message, note=lifecycle.BREAKER_NOTE if breaker else None)
    if breaker:
        lifecycle.pause_batch(row.batch_id, f"Paused by the circuit breaker: {err.message} "
                              "Fix the provider settings, then an admin resumes the batch.",
                              by="provider")
    _finalize(row.batch_id)
    log.warning("article %s failed: %s", article_id, message)
    return {"status": A.FAILED, "error": message}


def _finalize(batch_id: int) -> None:
    """Close the batch if this was its last article, and tell its webhook at once."""
    if lifecycle.finalize_batch(batch_id):
        if db.session.scalar(select(Batch.webhook_url).where(Batch.id == batch_id)):
            webhooks.deliver.apply_async((batch_id,))


def backoff_delay(attempt: int, retry_after: float | None, base: float) -> float:
    """The provider's Retry-After when it gave one (plus a little jitter so that workers
    do not return in step); otherwise exponential backoff with jitter."""
    if retry_after is not None:
        return round(retry_after + random.uniform(0, min(1.0, 0.1 + retry_after * 0.1)), 2)
    delay = min(300.0, base * (2 ** (attempt - 1)))
    return round(delay * (0.5 + random.random() / 2), 2)
