"""Controlling batches once submitted: pause, resume, cancel, dispatch again, requeue.
Each checks who may act, then calls a named transition in generation/lifecycle."""
from __future__ import annotations

import logging
from typing import Optional

import redis
from flask import current_app
from flask_babel import gettext as _, lazy_gettext as _l
from sqlalchemy import func, select

from ..generation import economy, lifecycle, live, ratelimit
from ..extensions import db, get_redis
from ..labels import english, stored
from ..models import Article, ArticleStatus as A, Batch, BatchStatus as B, Role, User
from ..generation import dispatch as publish
from ..generation.reconciler import dispatch_batch
from . import audit
from .errors import Conflict, NotAllowed
from .outcomes import Outcome

log = logging.getLogger(__name__)

# Notes and reasons kept with the batch or article, in English (pages translate them).
RESUMED_NOTE = _l("Sent again when the batch was resumed.")
REQUEUED_NOTE = _l("Re-queued by an operator.")


def dispatch(batch_id: int) -> Optional[str]:
    """Send the batch's queued articles, after the commit; returns an error or None.

    Small batches are published here; a large one is handed to a worker in one message,
    so the request returns at once whatever the size.
    """
    total = db.session.scalar(select(Batch.total).where(Batch.id == batch_id)) or 0
    if total <= current_app.config["DISPATCH_INLINE_MAX"]:
        return publish.publish_batch(batch_id)
    return publish.send(batch_id, lambda: dispatch_batch.apply_async((batch_id,)))


def can_manage(user: User, batch: Batch) -> bool:
    return user.role == Role.ADMIN or (user.role == Role.EDITOR and batch.user_id == user.id)


def redispatch(user: User, batch: Batch) -> Outcome:
    """Send a batch's queued articles again (after the queue was unreachable)."""
    if not can_manage(user, batch):
        raise NotAllowed(_("Only the batch's author or an admin can dispatch it."))
    if batch.is_final:
        raise Conflict(_("This batch has already finished."))
    audit.record("batch_dispatched", user=user, target=f"batch:{batch.id}")
    return Outcome.sent(_("The batch was sent to the queue."), dispatch(batch.id), "info")


def pause_batch(user: User, batch: Batch) -> None:
    """Stop sending the batch's articles; running ones finish, queued ones wait."""
    if not can_manage(user, batch):
        raise NotAllowed(_("Only the batch's author or an admin can pause it."))
    if batch.is_final:
        raise Conflict(_("This batch has already finished."))
    if batch.status == B.CANCELLING:
        raise Conflict(_("This batch is being cancelled."))
    if batch.is_economy:
        raise Conflict(_("An economy batch cannot be paused: the provider's Batch API has no "
                         "pause. Cancel it instead (results that arrived are kept)."))
    reason = english(_l("Paused by %(who)s.", who=user.email))
    if lifecycle.pause_batch(batch.id, reason, by="user"):
        audit.record("batch_paused", user=user, target=f"batch:{batch.id}")


def resume_batch(user: User, batch: Batch) -> Outcome:
    """Continue a paused batch where it stopped."""
    if not can_manage(user, batch):
        raise NotAllowed(_("Only the batch's author or an admin can resume it."))
    if batch.status != B.PAUSED:
        raise Conflict(_("This batch is not paused."))
    if batch.paused_by == "provider" and user.role != Role.ADMIN:
        raise NotAllowed(_("The provider circuit breaker paused this batch; an admin resumes "
                           "it once the key or quota problem is fixed."))
    by_breaker = batch.paused_by == "provider"
    resumed = lifecycle.resume_batch(batch.id, commit=False)
    if resumed and by_breaker:
        # The articles the breaker failed failed for the key or quota an admin has now
        # fixed: they are sent again with the rest, under new task ids (the old ids'
        # results say SUCCESS, which must not leak into the progress).
        tripped = db.session.scalars(select(Article.id).where(
            Article.batch_id == batch.id, Article.status == A.FAILED,
            Article.note == lifecycle.BREAKER_NOTE)).all()
        lifecycle.requeue_many(tripped, english(RESUMED_NOTE),
                               from_states=(A.FAILED,), commit=False)
    db.session.commit()
    if not resumed:
        return Outcome(_("The batch is resumed."), "info")
    audit.record("batch_resumed", user=user, target=f"batch:{batch.id}")
    try:
        ratelimit.probe_reset(get_redis(), batch.id)  # probe the provider afresh
    except redis.RedisError as exc:
        log.warning("could not reset the provider probe: %s", exc)
    # Queued articles whose messages were consumed while paused need new ones; sending an
    # article twice is harmless.
    error = dispatch(batch.id)
    lifecycle.finalize_batch(batch.id)
    return Outcome.sent(_("The batch is resumed."), error, "info")


def requeue(user: User, batch: Batch, include_failed: bool = False) -> int:
    """Send the batch's queued articles again; optionally give failed ones another try."""
    if not can_manage(user, batch):
        raise NotAllowed(_("Only the batch's author or an admin can requeue it."))
    if include_failed:
        failed = db.session.scalars(select(Article.id).where(
            Article.batch_id == batch.id, Article.status == A.FAILED)).all()
        if lifecycle.requeue_many(failed, english(REQUEUED_NOTE), from_states=(A.FAILED,),
                                  commit=False):
            lifecycle.reopen_batch(batch.id, keep_stop=True, commit=False)
        db.session.commit()
    count = db.session.scalar(select(func.count()).where(Article.batch_id == batch.id,
                                                         Article.status == A.QUEUED))
    audit.record("batch_dispatched", user=user, target=f"batch:{batch.id}",
                 detail=f"requeued {count} articles")
    error = publish.publish_batch(batch.id)
    if error:
        raise Conflict(stored(error))
    return count


def cancel_batch(user: User, batch: Batch, *, record: bool = True) -> None:
    """Stop a batch: queued articles never start, running ones stop within a second.
    `record=False`: no audit entry of its own (a bulk action writes one for all)."""
    if not can_manage(user, batch):
        raise NotAllowed(_("Only the batch's author or an admin can cancel it."))
    if batch.is_final:
        return
    # The flag goes first: a task that claims an article after this looks at it before
    # sending anything to the provider.
    _flag(lambda client: live.flag_batch_cancelled(client, batch.id))
    lifecycle.request_cancel_batch(batch.id, commit=False)
    queued_ids = db.session.scalars(
        select(Article.task_id).where(Article.batch_id == batch.id, Article.status == A.QUEUED)
    ).all()
    lifecycle.cancel_queued(batch.id, commit=False)
    lifecycle.request_cancel_running(batch.id, commit=False)
    if record:
        audit.record("batch_cancelled", user=user, target=f"batch:{batch.id}",
                     detail=f"{len(queued_ids)} queued articles cancelled", commit=False)
    db.session.commit()
    _revoke(queued_ids)
    if batch.is_economy:
        # The provider takes minutes to cancel: the batch shows "cancelling" until it has,
        # and the results that arrived meanwhile are kept (economy.import_part). If the
        # queue cannot take this now, each part's next follow asks the provider itself.
        try:
            economy.cancel_parts.apply_async((batch.id,), queue="generation")
        except Exception as exc:  # kombu and redis raise several types for a broker down
            log.warning("cancel of batch %s's provider batches postponed: %s", batch.id, exc)
    lifecycle.finalize_batch(batch.id)


def cancel_article(user: User, article: Article) -> None:
    batch = article.batch
    if not can_manage(user, batch):
        raise NotAllowed(_("Only the batch's author or an admin can cancel its articles."))
    if article.is_final:
        return
    _flag(lambda client: live.flag_articles_cancelled(client, [article.id]))
    audit.record("article_cancelled", user=user, target=f"article:{article.id}",
                 detail=article.title[:200])
    if article.status == A.QUEUED:
        lifecycle.mark_cancelled(article.id)
        _revoke([article.task_id])
    else:
        lifecycle.request_cancel_article(article.id)
        if batch.is_economy:
            # No worker holds it: it is cancelled now, and its result, if one comes, is
            # kept as a version (economy.import_part).
            lifecycle.mark_cancelled(article.id)
    lifecycle.finalize_batch(batch.id)


def _flag(write) -> None:
    """Set a cancel flag; with Redis down the database status still stops the work
    (a task sees it when it starts or renews its lease), only more slowly."""
    try:
        write(get_redis())
    except redis.RedisError as exc:
        log.warning("could not set a cancel flag in Redis: %s", exc)


def _revoke(task_ids: list[str]) -> None:
    """A courtesy to workers: the task checks the database and the flag anyway."""
    if not task_ids:
        return
    try:
        current_app.extensions["celery"].control.revoke(task_ids)
    except Exception as exc:
        log.info("revoke failed (harmless, tasks check the cancel flag): %s", exc)
