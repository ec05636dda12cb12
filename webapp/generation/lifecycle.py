"""Guarded state transitions of articles and batches.

Every write is an `UPDATE ... WHERE status = ...` (and, for a running article, the claim
token of the delivery that owns it), committed at once so that SQLite write locks are
held for milliseconds. A transition that loses a race simply reports False.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Optional

from sqlalchemy import and_, func, or_, select, update

from .. import metrics
from ..extensions import db
from ..models import (Article, ArticleStatus as A, ArticleVersion, Batch, BatchStatus as B,
                     ReviewStatus as R, utcnow)


def _apply(stmt) -> bool:
    result = db.session.execute(stmt, execution_options={"synchronize_session": False})
    db.session.commit()
    return result.rowcount == 1


def claim(article_id: int, batch_id: int, token: str, lease_seconds: int) -> bool:
    """Take a queued article, or a running one whose owner stopped renewing its lease.

    Never in a paused batch: once a pause has committed, nothing new starts.
    """
    now = utcnow()
    not_paused = select(Batch.id).where(Batch.id == batch_id, Batch.status != B.PAUSED)
    ok = _apply(
        update(Article)
        .where(Article.id == article_id, Article.batch_id.in_(not_paused),
               or_(Article.status == A.QUEUED,
                   and_(Article.status == A.RUNNING, Article.lease_expires_at < now)))
        .values(status=A.RUNNING, claim_token=token, attempts=Article.attempts + 1,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                started_at=func.coalesce(Article.started_at, now), note=None, error=None,
                updated_at=now)
    )
    return ok


def mark_batch_running(batch_id: int) -> None:
    now = utcnow()
    _apply(update(Batch).where(Batch.id == batch_id, Batch.status == B.QUEUED)
           .values(status=B.RUNNING, started_at=now))


def renew(article_id: int, token: str, lease_seconds: int) -> bool:
    """Extend the claim; False when it was lost or the article is being cancelled."""
    now = utcnow()
    return _apply(update(Article)
                  .where(Article.id == article_id, Article.claim_token == token,
                         Article.status == A.RUNNING)
                  .values(lease_expires_at=now + timedelta(seconds=lease_seconds)))


def complete(article_id: int, token: str, *, body: str, words: int, prompt_tokens: int,
             completion_tokens: int, finish_reason: Optional[str], cost_usd: float,
             review_flag: Optional[str]) -> bool:
    """Store the body; only the delivery holding the claim can, so there is one body."""
    now = utcnow()
    result = db.session.execute(
        update(Article)
        .where(Article.id == article_id, Article.claim_token == token,
               Article.status.in_(A.ACTIVE))
        .values(status=A.SUCCEEDED, body=body, words=words,
                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                finish_reason=finish_reason, cost_usd=cost_usd, review_flag=review_flag,
                review_status=R.NEEDS_REVIEW, review_reason=None, reviewed_by=None,
                reviewed_at=None, finished_at=now, updated_at=now, lease_expires_at=None,
                note=None),
        execution_options={"synchronize_session": False})
    if result.rowcount == 1:
        # In the same transaction: a stored body always has its version.
        add_version(article_id, body, "generated", None)
    db.session.commit()
    return result.rowcount == 1


def add_version(article_id: int, body: str, source: str, user_id: Optional[int]) -> int:
    """Keep a body as the article's next version (the caller commits)."""
    number = (db.session.scalar(select(func.max(ArticleVersion.number))
                                .where(ArticleVersion.article_id == article_id)) or 0) + 1
    db.session.add(ArticleVersion(article_id=article_id, number=number, body=body,
                                  source=source, created_by=user_id))
    db.session.flush()
    return number


# Marks an article that failed on a key or quota error (the circuit breaker's): the cause
# is the provider account's, so resuming the batch once it is fixed tries the article again.
BREAKER_NOTE = "Stopped by the circuit breaker."


def fail(article_id: int, token: Optional[str], error: str, note: Optional[str] = None) -> bool:
    now = utcnow()
    guard = (Article.claim_token == token) if token else Article.status == A.QUEUED
    return _apply(update(Article)
                  .where(Article.id == article_id, guard,
                         Article.status.in_((A.QUEUED,) + A.ACTIVE))
                  .values(status=A.FAILED, error=error[:2000], finished_at=now,
                          updated_at=now, lease_expires_at=None, note=note))


def release_for_retry(article_id: int, token: str, note: str) -> bool:
    """Give a running article back to the queue while a retry waits."""
    now = utcnow()
    return _apply(update(Article)
                  .where(Article.id == article_id, Article.claim_token == token,
                         Article.status == A.RUNNING)
                  .values(status=A.QUEUED, claim_token=None, lease_expires_at=None,
                          note=note[:300], words=0, updated_at=now))


def mark_cancelled(article_id: int, token: Optional[str] = None) -> bool:
    """Cancel an article that has not finished; with a token, only as its owner."""
    now = utcnow()
    if token:
        guard = and_(Article.claim_token == token, Article.status.in_(A.ACTIVE))
    else:
        guard = Article.status.in_((A.QUEUED, A.CANCELLING))
    return _apply(update(Article).where(Article.id == article_id, guard)
                  .values(status=A.CANCELLED, finished_at=now, updated_at=now,
                          lease_expires_at=None, note=None))


def finalize_batch(batch_id: int) -> Optional[str]:
    """Close the batch once no article is left unfinished; returns the final status."""
    # Cheap first: one index probe tells whether anything is still open, so finishing each
    # article of a 10,000-article batch does not count the whole batch again.
    if db.session.scalar(select(Article.id).where(
            Article.batch_id == batch_id,
            Article.status.in_((A.QUEUED, A.RUNNING, A.CANCELLING))).limit(1)) is not None:
        db.session.rollback()
        return None
    counts = dict(db.session.execute(
        select(Article.status, func.count()).where(Article.batch_id == batch_id)
        .group_by(Article.status)).all())
    if any(counts.get(s) for s in (A.QUEUED, A.RUNNING, A.CANCELLING)):
        return None
    batch = db.session.get(Batch, batch_id)
    if batch is None or batch.status in B.FINAL:
        return None
    if batch.cancel_requested_at is not None and counts.get(A.CANCELLED):
        status = B.CANCELLED
    elif counts.get(A.FAILED):
        status = B.FAILED
    elif counts.get(A.CANCELLED) and not counts.get(A.SUCCEEDED):
        status = B.CANCELLED
    else:
        status = B.SUCCEEDED
    sums = db.session.execute(
        select(func.coalesce(func.sum(Article.prompt_tokens), 0),
               func.coalesce(func.sum(Article.completion_tokens), 0),
               func.coalesce(func.sum(Article.cost_usd), 0.0))
        .where(Article.batch_id == batch_id)).one()
    now = utcnow()
    ok = _apply(update(Batch).where(Batch.id == batch_id, Batch.status.not_in(B.FINAL))
                .values(status=status, finished_at=now, prompt_tokens=sums[0],
                        completion_tokens=sums[1], cost_usd=sums[2],
                        started_at=func.coalesce(Batch.started_at, now)))
    if ok:
        metrics.count("batches_finished_total", status=status)
        metrics.observe("batch_duration_seconds",
                        (now - (batch.started_at or batch.created_at)).total_seconds())
    return status if ok else None


def pause_batch(batch_id: int, reason: str, by: str) -> bool:
    """Stop sending: queued articles wait until the batch is resumed."""
    return _apply(update(Batch)
                  .where(Batch.id == batch_id, Batch.status.in_((B.QUEUED, B.RUNNING)))
                  .values(status=B.PAUSED, paused_reason=reason[:2000], paused_by=by))


def enforce_budget(batch_id: int) -> bool:
    """When the spend reaches the batch's budget, cancel what has not started.

    Articles already running finish (their tokens are spent already); the batch says why it
    stopped. Returns True when this call stopped the batch.
    """
    budget, spend = db.session.execute(
        select(Batch.budget_usd,
               select(func.coalesce(func.sum(Article.cost_usd), 0.0))
               .where(Article.batch_id == batch_id).scalar_subquery())
        .where(Batch.id == batch_id)).one()
    if budget is None or spend < budget:
        db.session.rollback()
        return False
    now = utcnow()
    stopped = db.session.execute(
        update(Batch).where(Batch.id == batch_id, Batch.stop_reason.is_(None),
                            Batch.status.not_in(B.FINAL))
        .values(stop_reason=f"Budget reached: ${spend:.4f} spent of ${budget:.4f}.",
                cancel_requested_at=func.coalesce(Batch.cancel_requested_at, now)),
        execution_options={"synchronize_session": False}).rowcount == 1
    if stopped:
        db.session.execute(update(Article)
                           .where(Article.batch_id == batch_id, Article.status == A.QUEUED)
                           .values(status=A.CANCELLED, note="budget reached", finished_at=now,
                                   updated_at=now),
                           execution_options={"synchronize_session": False})
    db.session.commit()
    return stopped
