"""Celery tasks. They take ids, never ORM objects, and are safe to run twice."""
from __future__ import annotations

import logging
import random
import time
import uuid

from celery import shared_task
from flask import current_app
from sqlalchemy import bindparam, select

from .. import metrics, workerstate
from . import admission, lifecycle, live, ratelimit, webhooks
from ..extensions import db, get_redis
from ..models import Article, ArticleStatus as A, Batch, BatchStatus as B
from .lengths import measure
from .pricing import TOKENS_PER_WORD, cost_of, price_for
from .prompts import ROW_COLUMNS, TemplateRefused, prompt_for
from .provider import ProviderError, get_provider, require_finish, review_flag
from .tokencount import count_chat_tokens

log = logging.getLogger(__name__)

# How often a streaming task reports progress and looks for a cancel flag: often enough
# for a live bar and a sub-second cancel, rarely enough to keep Redis traffic small.
REPORT_EVERY = 0.25
# Errors after which sending more of the batch only burns requests: pause it instead.
BREAKER_KINDS = ("auth", "quota")


class _Cancelled(Exception):
    pass


# What a task needs to write its article, in one statement built once (see lifecycle.py).
_ARTICLE_TO_WRITE = (
    select(Article.status, Article.batch_id, Article.attempts, *ROW_COLUMNS,
           Batch.status.label("batch_status"), Batch.provider, Batch.model, Batch.budget_usd)
    .join(Batch, Batch.id == Article.batch_id).where(Article.id == bindparam("article_id")))


# ignore_result: the task stores its own result, with the rest of what it leaves in Redis
# when it ends (see generate_article); Celery's backend would read the key first and write
# it in round trips of their own.
@shared_task(bind=True, name="webapp.tasks.generate_article", max_retries=None,
             ignore_result=True)
def generate_article(self, article_id: int) -> dict:
    """Write one article: claim it, stream it from the provider, store it once.

    What the task leaves in Redis when it ends goes in one round trip, `wrap_up`: its
    result (as Celery's backend stores it, for AsyncResult), its place in flight given
    back, its text so far dropped, its metrics."""
    redis = get_redis()
    wrap_up = redis.pipeline(transaction=False)
    try:
        result = _write(self, article_id, redis, wrap_up)
        live.queue_result(wrap_up, self, result)
        return result
    finally:
        wrap_up.execute()


def _write(task, article_id: int, redis, wrap_up) -> dict:
    # No read transaction is left open for the long work that follows.
    row = lifecycle.first_alone(_ARTICLE_TO_WRITE, {"article_id": article_id})
    if row is None:
        return {"status": "missing"}
    if row.status in A.FINAL:
        return {"status": row.status}

    if row.status == A.CANCELLING:
        return _cancel_unstarted(article_id, row.batch_id)
    if row.batch_status == B.PAUSED:
        # Left queued; resuming the batch sends it again.
        return {"status": "paused"}

    try:
        prompt = prompt_for(row)
    except TemplateRefused as refused:
        # The batch's template over its budget for this row (or one kept from before the
        # budget): the render stopped within a second, the article fails saying why, and
        # the worker goes on to the next task. Not claimed yet, so failed as queued.
        message = f"The prompt template cannot be used for this article. {refused}"
        lifecycle.fail_unstarted(article_id, message)
        _finalize(row.batch_id)
        log.warning("article %s failed: %s", article_id, message)
        return {"status": A.FAILED, "error": message}

    owns_slot = False
    try:
        verdict, owns_slot = _admit(redis, row, article_id, prompt)
        if verdict == "busy":
            # The batch has its share of workers busy: come back later, behind other batches.
            raise task.retry(countdown=random.uniform(0.5, 2.0), max_retries=None)
        if verdict == "cancelled":
            return _cancel_unstarted(article_id, row.batch_id)
        if verdict == "tripped":
            return {"status": "paused"}  # the breaker paused the batch; resume sends it again
        with workerstate.active():
            return _generate(task, article_id, row, redis, prompt, wrap_up,
                             probing=verdict == "probe")
    finally:
        if owns_slot:
            ratelimit.release_slot(wrap_up, row.batch_id, article_id)
            wrap_up.delete(live.text_key(article_id))


def _cancel_unstarted(article_id: int, batch_id: int) -> dict:
    lifecycle.mark_cancelled(article_id)
    _finalize(batch_id)
    return {"status": A.CANCELLED}


def _admit(redis, row, article_id: int, prompt) -> tuple[str, bool]:
    """Wait until the article may be sent: (admission's word, whether this delivery took a
    new place in flight that it must give back). Each look is one script call."""
    tokens = 0
    if admission.needs_tokens(row.model):
        tokens = (count_chat_tokens(row.model, prompt.messages())[0]
                  + int(row.target_words * TOKENS_PER_WORD))
    owns = waiting = False
    try:
        while True:
            verdict = admission.admit(redis, row.batch_id, article_id, row.model, tokens)
            # Only a new place is ours to give back: a 2 on the first look means another
            # delivery of this article is running and holds it (this one will find the
            # article claimed and stop); on later looks it is the place taken earlier.
            if verdict.place == 1:
                owns = True
            if verdict.word != "wait":
                return verdict.word, owns
            if not waiting:
                waiting = True
                ratelimit.change_waiting(redis, row.batch_id, +1)
            # Short sleeps, so a cancel or a pause is noticed while waiting.
            time.sleep(min(verdict.wait_s, REPORT_EVERY))
    except BaseException:
        if owns:
            ratelimit.release_slot(redis, row.batch_id, article_id)
        raise
    finally:
        if waiting:
            ratelimit.change_waiting(redis, row.batch_id, -1)


def _generate(task, article_id: int, row, redis, prompt, wrap_up, probing: bool) -> dict:
    cfg = current_app.config
    lease = cfg["ARTICLE_LEASE_SECONDS"]
    token = str(uuid.uuid4())
    # The cancel flags were read by the admission script a moment ago, and a cancel that
    # committed before the claim makes it fail; one after it is seen at the first progress
    # report (or the answer, when it is faster than that, is kept: it is paid for).
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
        started = time.monotonic()
        stream = get_provider(cfg, row.provider).stream(prompt, row.model)
        if probing:
            ratelimit.probe_passed(redis, row.batch_id)
            probing = False
        ratelimit.adapt_to_headers(redis, row.model, stream.headers)
        text = _consume(task, stream, redis, row.batch_id, article_id, token, lease, attempt,
                        row.language)
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

    length = measure(text, row.language)
    usage = stream.usage
    metrics.queue_observations(wrap_up, [("provider_request_seconds", time.monotonic() - started),
                                         ("provider_completion_tokens", usage.completion_tokens)],
                               model=row.model)
    stored = lifecycle.complete(
        article_id, token, body=text, words=length.count, length_unit=length.unit,
        prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
        finish_reason=stream.finish_reason,
        review_flag=review_flag(stream.refusal, text, stream.finish_reason, length,
                                row.target_words),
        cost_usd=cost_of(price_for(cfg, row.provider, row.model),
                         usage.prompt_tokens, usage.completion_tokens))
    if row.budget_usd is not None:  # set at submission only; most batches have none
        lifecycle.enforce_budget(row.batch_id)
    _finalize(row.batch_id)
    return {"status": A.SUCCEEDED if stored else "lost-claim", "words": length.count}


def _consume(task, stream, redis, batch_id, article_id, token, lease, attempt,
             language) -> str:
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
            # One round trip: the cancel flags, the text so far for the article page and
            # the progress (the length so far, in the article's unit) for the batch page.
            pipe = redis.pipeline(transaction=False)
            live.queue_cancel_check(pipe, batch_id, article_id)
            pipe.set(live.text_key(article_id), text, ex=live.TEXT_TTL)
            live.queue_progress(pipe, task, {"words": measure(text, language).count,
                                             "attempt": attempt})
            if any(pipe.execute()[0]):
                raise _Cancelled()
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
