"""Periodic and background jobs: dispatching big batches, and the reconciler that brings
the database and Redis back in line after crashes.

Scheduled with Celery beat's default scheduler (a local schedule file): it needs no
extra dependency, and the reconciler is safe to run twice, so beat only has to be one
process per deployment (a lock in Redis keeps two overlapping runs apart anyway).
"""
from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from flask import current_app
from sqlalchemy import exists, select

from .. import installation, metrics
from . import (dispatch, economy, lifecycle, publishing, publishing_states, ratelimit,
               webhooks)
from ..extensions import db, get_redis
from ..models import (Article, ArticleStatus as A, Batch, BatchStatus as B, ProviderBatch,
                      Publication, PublicationStatus as P, utcnow)

log = logging.getLogger(__name__)

# A batch not yet sent this long after it was stored lost its dispatch (a crash between
# the commit and the publish); younger ones may still be being sent by the web request.
DISPATCH_GRACE = timedelta(seconds=30)


@shared_task(name="webapp.housekeeping.dispatch_batch")
def dispatch_batch(batch_id: int) -> dict:
    """Send a large batch's articles from a worker, so the web request returns at once."""
    error = dispatch.publish_batch(batch_id)
    return {"batch": batch_id, "error": error}


@shared_task(name="webapp.housekeeping.reconcile")
def reconcile() -> dict:
    """One pass of the reconciler; returns what it did."""
    redis = get_redis()
    lock = installation.prefix() + "reconcile:lock"  # one reconciler per database
    if not redis.set(lock, "1", nx=True, ex=120):
        return {"skipped": "another reconcile is running"}
    try:
        done = run_once()
    finally:
        redis.delete(lock)
    for action, count in done.items():
        if count:
            log.info("reconciler: %s × %d", action, count)
            metrics.count("reconciler_actions_total", count, action=action)
    return done


def run_once() -> dict:
    requeued, failed = requeue_lost_running()
    return {
        "requeued_lost_running": requeued,
        "failed_lost_running": failed,
        "cancelled_lost_cancelling": cancel_lost_cancelling(),
        "dispatched_undelivered": dispatch_undelivered(),
        "redispatched_lost_queue": redispatch_lost_queue(),
        "redispatched_stalled": redispatch_stalled(),
        "closed_batches": close_finished_batches(),
        "webhooks_scheduled": schedule_webhooks(),
        "economy_parts_followed": economy.follow_lost(),
        **dict(zip(("publications_requeued_lost", "publications_failed_lost"),
                   requeue_lost_publications())),
        "publications_redispatched_stalled": redispatch_stalled_publications(),
    }


# Articles claimed by a provider batch (economy mode) have no worker: their results come
# from the provider's files (economy.py), however long it takes.
AT_PROVIDER = exists().where(ProviderBatch.token == Article.claim_token)


def requeue_lost_running() -> tuple[int, int]:
    """Articles whose worker stopped renewing the lease: back to the queue, or failed
    after too many attempts. Returns (re-queued, failed): counted apart, and only when the
    transition won, so the metrics say what was done. A re-queued article gets a new task
    id: the dead worker's progress under the old one must not show as the new attempt's."""
    now = utcnow()
    max_attempts = current_app.config["GENERATION_MAX_ATTEMPTS"]
    lost = db.session.execute(
        select(Article.id, Article.batch_id, Article.attempts)
        .where(Article.status == A.RUNNING, Article.lease_expires_at < now, ~AT_PROVIDER)).all()
    db.session.rollback()
    requeued = []
    failed = 0
    for article_id, batch_id, attempts in lost:
        if attempts >= max_attempts:
            if lifecycle.fail_lost(
                    article_id, f"The worker writing this article stopped responding {attempts} "
                                "times; giving up.", lapsed_before=now):
                failed += 1
            lifecycle.finalize_batch(batch_id)
            continue
        task_id = lifecycle.requeue_lost(
            article_id, "Re-queued: the worker writing it stopped responding.", lapsed_before=now)
        if task_id:
            requeued.append((article_id, task_id))
    if requeued:
        dispatch.publish_articles(requeued)
    return len(requeued), failed


def cancel_lost_cancelling() -> int:
    """Articles being cancelled whose worker is gone: nobody is left to stop them."""
    now = utcnow()
    rows = db.session.execute(
        select(Article.id, Article.batch_id)
        .where(Article.status == A.CANCELLING, Article.lease_expires_at < now,
               ~AT_PROVIDER)).all()
    db.session.rollback()
    for article_id, batch_id in rows:
        lifecycle.mark_cancelled(article_id)
        lifecycle.finalize_batch(batch_id)
    return len(rows)


def _open_batches_with_queued(extra):
    has_queued = exists().where(Article.batch_id == Batch.id, Article.status == A.QUEUED)
    return db.session.scalars(
        select(Batch.id).where(Batch.status.in_((B.QUEUED, B.RUNNING)), has_queued, *extra)).all()


def dispatch_undelivered() -> int:
    """Batches stored but never sent (the broker was down, or the web process died)."""
    cutoff = utcnow() - DISPATCH_GRACE
    return _publish_each(_open_batches_with_queued([Batch.dispatched_at.is_(None),
                                                    Batch.created_at < cutoff]))


def _publish_each(batch_ids) -> int:
    """Send each batch's queued articles; how many batches went out."""
    db.session.rollback()
    return sum(dispatch.publish_batch(batch_id) is None for batch_id in batch_ids)


def redispatch_lost_queue() -> int:
    """Batches whose messages vanished with Redis's data: their marker is gone too."""
    ids = _open_batches_with_queued([Batch.dispatched_at.is_not(None)])
    db.session.rollback()
    if not ids:
        return 0
    markers = get_redis().mget([dispatch.marker_key(i) for i in ids])
    return _publish_each([i for i, marker in zip(ids, markers) if marker is None])


def redispatch_stalled() -> int:
    """Batches with queued articles that nobody is working on: nothing of theirs is
    running, nothing changed for STALL_AFTER, and the queue is empty. Their messages were
    lost while Redis stayed up (a worker frozen, then killed, after taking one; a publish
    that failed after a re-queue); sending them again is safe."""
    redis = get_redis()
    if redis.llen("generation"):
        return 0  # something is still waiting to be taken: not stalled, just busy
    cutoff = utcnow() - timedelta(seconds=current_app.config["STALL_AFTER"])
    busy = exists().where(Article.batch_id == Batch.id,
                          (Article.status.in_(A.ACTIVE)) | (Article.updated_at >= cutoff))
    return _publish_each(_open_batches_with_queued([~busy, Batch.dispatched_at.is_not(None),
                                                    Batch.dispatched_at < cutoff]))


def close_finished_batches() -> int:
    """Batches whose articles are all final but which were never closed."""
    unfinished = exists().where(Article.batch_id == Batch.id,
                                Article.status.in_((A.QUEUED,) + A.ACTIVE))
    ids = db.session.scalars(select(Batch.id).where(Batch.status.not_in(B.FINAL),
                                                    ~unfinished)).all()
    db.session.rollback()
    closed = 0
    for batch_id in ids:
        if lifecycle.finalize_batch(batch_id):
            closed += 1
            ratelimit.forget_batch(get_redis(), batch_id)
    return closed


def schedule_webhooks() -> int:
    """Finished batches whose webhook has not been delivered yet: try (again) when due.

    Only batches due by the backoff and with no attempt under way (its lock is free) are
    sent, each as one `deliver` on the `webhooks` queue; the lock in `deliver` still keeps
    two attempts apart if a message was sent twice."""
    ids = webhooks.due_batches()
    db.session.rollback()
    for batch_id in ids:
        webhooks.deliver.apply_async((batch_id,))
    return len(ids)


LOST_PUBLICATION = "Sent again: the worker publishing it stopped responding."


def requeue_lost_publications() -> tuple[int, int]:
    """Publications whose worker stopped renewing the lease (it died between a request and
    its record): back to the queue and sent again (the next attempt finds a post the dead
    worker made, by its marker), or failed after PUBLISH_MAX_ATTEMPTS."""
    now = utcnow()
    max_attempts = current_app.config["PUBLISH_MAX_ATTEMPTS"]
    lost = db.session.execute(select(Publication.id, Publication.attempts)
                              .where(Publication.status == P.PUBLISHING,
                                     Publication.lease_expires_at < now)).all()
    db.session.rollback()
    again, failed = [], 0
    for publication_id, attempts in lost:
        if attempts >= max_attempts:
            failed += publishing_states.fail_lost(
                publication_id, f"The worker publishing this article stopped responding "
                                f"{attempts} times; giving up.", lapsed_before=now)
        elif publishing_states.release_lost(publication_id, LOST_PUBLICATION,
                                            lapsed_before=now):
            again.append(publication_id)
    if again:
        publishing.send(again)
    return len(again), failed


def redispatch_stalled_publications() -> int:
    """Queued publications nobody is working on (their message was lost: the broker was
    down when they were asked for, or Redis lost its data): sent again once the queue is
    empty and they have waited longer than any retry's delay could be."""
    if get_redis().llen("publishing"):
        return 0
    config = current_app.config
    cutoff = utcnow() - timedelta(seconds=config["STALL_AFTER"] + config["PUBLISH_RETRY_MAX"])
    ids = db.session.scalars(select(Publication.id).where(Publication.status == P.QUEUED,
                                                          Publication.updated_at < cutoff)).all()
    db.session.rollback()
    if ids:
        publishing.send(ids)
    return len(ids)
