"""The one writer of status: every change of an article's or a batch's state is here.

Each transition is an `UPDATE ... WHERE status IN (its start states)` (for a running article,
also the owner's claim token) that says whether it happened: a bool, a row count for whole
batches, the new task id (or None) for a re-queue; one that loses a race changes nothing.
Each commits at once (SQLite write locks held for milliseconds) unless commit=False makes it
part of the caller's transaction. Rows are created queued by services/submission.py; after
that nothing else writes `status` (tests/unit/test_lifecycle.py checks the source tree).

Articles
--------
from                          to          transition              by
----------------------------  ----------  ----------------------  -------------------------------
queued                        running     claim                   tasks (the delivery that takes it)
running, lease lapsed         running     claim                   tasks (a new delivery takes over)
running (owner)               running     renew (lease only)      tasks, while streaming
running, cancelling (owner)   succeeded   complete                tasks
running, cancelling (owner)   failed      fail                    tasks (provider error)
queued                        failed      fail_unstarted          tasks (the template refused it)
running, lease lapsed         failed      fail_lost               reconciler (too many attempts)
running (owner)               queued      release_for_retry       tasks (retryable; same task id)
running, lease lapsed         queued      requeue_lost            reconciler (attempts count on)
succeeded, failed, cancelled  queued      requeue, requeue_many   review.regenerate(_many),
                                                                  control.resume_batch (articles the
                                                                  breaker failed), control.requeue
                                                                  --failed (new task id, attempts 0)
succeeded, failed, cancelled  succeeded   restore                 review.restore
queued, cancelling            cancelled   mark_cancelled          tasks (before the claim),
                                                                  control.cancel_article, reconciler
running, cancelling (owner)   cancelled   mark_cancelled(token)   tasks (cancel seen while writing)
queued (of a batch)           cancelled   cancel_queued           control.cancel_batch, budget
running (of a batch)          cancelling  request_cancel_running  control.cancel_batch (a lapsed
                              cancelled                           lease has no worker: cancelled)
running                       cancelling  request_cancel_article  control.cancel_article

Batches
-------
from                          to          transition              by
----------------------------  ----------  ----------------------  -------------------------------
queued                        running     mark_batch_running      tasks (the first claim)
queued, running               paused      pause_batch             control.pause_batch, breaker
paused                        running     resume_batch            control.resume_batch
not final                     cancelling  request_cancel_batch    control.cancel_batch
not final, no article open    succeeded,  finalize_batch          tasks, reconciler, batches
                              failed, cancelled
succeeded, failed, cancelled  running     reopen_batch            review.regenerate(_many),
                                                                  control.requeue --failed
not final                     (same)      enforce_budget,         tasks (cancels what is queued)
                                          stop_batch              economy (estimate over budget)

Economy (the provider's Batch API; see economy.py)
-------
queued (of a batch)           running     claim_for_provider      economy (one provider batch)
running, cancelling (token)   succeeded,  complete, fail,         economy (a result line)
                              failed,     mark_cancelled(token)
                              cancelled
running, cancelling (token)   failed,     end_unanswered          economy (no result came)
                              cancelled
provider batch, not imported  provider's  provider_batch_seen     economy (sent, followed)
provider batch, ended         imported    provider_batch_imported economy
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Iterable, Optional

from sqlalchemy import and_, bindparam, func, or_, select, update

from .. import metrics
from ..extensions import db
from ..models import (Article, ArticleStatus as A, Batch, BatchStatus as B, ProviderBatch,
                      ProviderBatchStatus as P, ReviewStatus as R, utcnow)
from .lengths import WORDS, measure

# "Leave this column as it is" (None would clear it).
KEEP = object()

# A failure on a key or quota error (the account's fault): resuming the batch retries it.
BREAKER_NOTE = "Stopped by the circuit breaker."


def _run(stmt, commit: bool, params: Optional[dict] = None) -> int:
    """Execute a guarded UPDATE (a prebuilt one with its `params`); how many rows changed."""
    result = db.session.execute(stmt, params, execution_options={"synchronize_session": False})
    if commit:
        db.session.commit()
    return result.rowcount


def _apply(stmt, commit: bool = True, params: Optional[dict] = None) -> bool:
    return _run(stmt, commit, params) == 1  # one row, so it happened


# The statements every article runs (its read, claim, completion and the batch's "anything
# left?" probe) each run in a transaction of their own on a pooled connection, outside the
# ORM session: the session's transaction and bookkeeping cost the worker more CPU than the
# statement itself (about 0.4 ms against 0.1). When the session has a transaction open,
# they join it instead: a second connection could wait on that transaction's SQLite lock.

def _write_alone(stmt, params: dict) -> bool:
    """Execute a prebuilt guarded UPDATE and commit it; True when it changed one row."""
    if db.session().in_transaction():
        return _apply(stmt, params=params)
    with db.engine.begin() as conn:
        return conn.execute(stmt, params).rowcount == 1


def first_alone(stmt, params: dict):
    """The first row of a prebuilt SELECT (or None), read as above."""
    if db.session().in_transaction():
        return db.session.execute(stmt, params).first()
    with db.engine.connect() as conn:
        return conn.execute(stmt, params).first()


# -- articles ------------------------------------------------------------------------------

# The two transitions every article goes through are built once, with bound parameters,
# on the tables themselves (no ORM): building and compiling a statement costs more CPU
# than running it, and a worker runs them for every article.
_articles, _batches = Article.__table__, Batch.__table__
_p = bindparam

_CLAIM = (
    update(_articles)
    .where(_articles.c.id == _p("p_article"),
           _articles.c.batch_id.in_(select(_batches.c.id).where(
               _batches.c.id == _p("p_batch"), _batches.c.status != B.PAUSED)),
           or_(_articles.c.status == A.QUEUED,
               and_(_articles.c.status == A.RUNNING, _articles.c.lease_expires_at < _p("p_now"))))
    .values(status=A.RUNNING, claim_token=_p("p_token"), attempts=_articles.c.attempts + 1,
            lease_expires_at=_p("p_until"),
            started_at=func.coalesce(_articles.c.started_at, _p("p_now")), note=None,
            error=None, updated_at=_p("p_now")))


def claim(article_id: int, batch_id: int, token: str, lease_seconds: int) -> bool:
    """Take a queued article, or a running one whose owner stopped renewing its lease;
    never in a paused batch (once a pause has committed, nothing new starts)."""
    now = utcnow()
    return _write_alone(_CLAIM, {"p_article": article_id, "p_batch": batch_id, "p_now": now,
                                 "p_token": token,
                                 "p_until": now + timedelta(seconds=lease_seconds)})


def renew(article_id: int, token: str, lease_seconds: int) -> bool:
    """Extend the claim; False when it was lost or the article is being cancelled."""
    now = utcnow()
    return _apply(update(Article)
                  .where(Article.id == article_id, Article.claim_token == token,
                         Article.status == A.RUNNING)
                  .values(lease_expires_at=now + timedelta(seconds=lease_seconds)))


_COMPLETE = (
    update(_articles)
    .where(_articles.c.id == _p("p_article"), _articles.c.claim_token == _p("p_token"),
           _articles.c.status.in_(A.ACTIVE))
    .values(status=A.SUCCEEDED, body=_p("p_body"), words=_p("p_words"),
            length_unit=_p("p_unit"),
            prompt_tokens=_p("p_prompt"), completion_tokens=_p("p_completion"),
            finish_reason=_p("p_finish"), cost_usd=_p("p_cost"), review_flag=_p("p_flag"),
            review_status=R.NEEDS_REVIEW, review_reason=None, reviewed_by=None,
            reviewed_at=None, finished_at=_p("p_now"), updated_at=_p("p_now"),
            lease_expires_at=None, note=None))


def complete(article_id: int, token: str, *, body: str, words: int, prompt_tokens: int,
             completion_tokens: int, finish_reason: Optional[str], cost_usd: float,
             review_flag: Optional[str], length_unit: str = WORDS) -> bool:
    """Store the body; only the delivery holding the claim can, so there is one body.
    `words` is its length in `length_unit` (see lengths.py).

    One statement: the database keeps the body as the article's next version in the same
    UPDATE (the generated_version trigger, webapp/triggers.py)."""
    return _write_alone(_COMPLETE, {
        "p_article": article_id, "p_token": token, "p_body": body, "p_words": words,
        "p_unit": length_unit,
        "p_prompt": prompt_tokens, "p_completion": completion_tokens, "p_finish": finish_reason,
        "p_cost": cost_usd, "p_flag": review_flag, "p_now": utcnow()})


def _ended(status: str, note: Optional[str] = None, **extra) -> dict:
    """What every end of an article writes besides its status (failed or cancelled)."""
    now = utcnow()
    return {"status": status, "finished_at": now, "updated_at": now, "lease_expires_at": None,
            "note": note, **extra}


def _failed(error: str, note: Optional[str] = None) -> dict:
    return _ended(A.FAILED, note, error=error[:2000])


def fail(article_id: int, token: str, error: str, note: Optional[str] = None) -> bool:
    """The owner gives up on its article (an error that retrying will not cure)."""
    if not token:
        raise ValueError("fail() is the owner's; an unclaimed article uses fail_unstarted()")
    return _apply(update(Article)
                  .where(Article.id == article_id, Article.claim_token == token,
                         Article.status.in_(A.ACTIVE))
                  .values(**_failed(error, note)))


def fail_unstarted(article_id: int, error: str) -> bool:
    """Fail an article nobody has claimed (nothing was sent for it)."""
    return _apply(update(Article).where(Article.id == article_id, Article.status == A.QUEUED)
                  .values(**_failed(error)))


def fail_lost(article_id: int, error: str, lapsed_before: Optional[datetime] = None) -> bool:
    """Fail a running article whose worker stopped renewing its lease (once too often)."""
    return _apply(update(Article)
                  .where(Article.id == article_id, Article.status == A.RUNNING,
                         Article.lease_expires_at < (lapsed_before or utcnow()))
                  .values(**_failed(error)))


def release_for_retry(article_id: int, token: str, note: str) -> bool:
    """Give a running article back to the queue while a retry waits. Not a requeue:
    Celery's retry sends the same task id again, so the id stays, and so do the attempts
    (they are what the retry budget counts)."""
    now = utcnow()
    return _apply(update(Article)
                  .where(Article.id == article_id, Article.claim_token == token,
                         Article.status == A.RUNNING)
                  .values(status=A.QUEUED, claim_token=None, lease_expires_at=None,
                          note=note[:300], words=0, updated_at=now))


def _requeued(note: str, extra_instructions) -> dict:
    """What every re-queue writes. A new task id: the old one's result (SUCCESS, or a dead
    worker's PROGRESS) must not leak into the progress of the new attempt. No owner, no
    lease, no error, and no verdict until the new body arrives; the body, its versions and
    its cost stay until then. The new attempt starts its own clock (the claim sets
    started_at again): from start to finish is then the time this body took to write, which
    the system page's latency chart reads."""
    values = {"status": A.QUEUED, "task_id": str(uuid.uuid4()), "claim_token": None,
              "lease_expires_at": None, "words": 0, "error": None, "finished_at": None,
              "started_at": None,
              "note": note[:300], "review_flag": None, "review_status": None,
              "review_reason": None, "finish_reason": None, "updated_at": utcnow()}
    if extra_instructions is not KEEP:
        values["extra_instructions"] = extra_instructions
    return values


def requeue_many(article_ids: Iterable[int], note: str, *,
                 from_states: tuple[str, ...] = A.FINAL, extra_instructions=KEEP,
                 commit: bool = True) -> list[tuple[int, str]]:
    """Send finished articles to be written again from scratch (their attempts start at 0):
    `from_states` narrows the finished states an article may be in (e.g. only failed);
    `extra_instructions` replaces the article's own instructions unless KEEP. Returns the
    (article id, new task id) pairs of those re-queued, ready to publish after the commit.
    """
    if not set(from_states) <= set(A.FINAL):
        raise ValueError(f"only finished articles are re-queued, not {from_states}")
    moved = []
    for article_id in article_ids:
        values = _requeued(note, extra_instructions)
        if _apply(update(Article)
                  .where(Article.id == article_id, Article.status.in_(from_states))
                  .values(attempts=0, **values), commit=False):
            moved.append((article_id, values["task_id"]))
    if commit:
        db.session.commit()
    return moved


def requeue(article_id: int, note: str, **options) -> Optional[str]:
    """One article of requeue_many; its new task id, or None when it was not finished."""
    moved = requeue_many([article_id], note, **options)
    return moved[0][1] if moved else None


def requeue_lost(article_id: int, note: str,
                 lapsed_before: Optional[datetime] = None) -> Optional[str]:
    """A running article whose worker stopped renewing its lease goes back to the queue;
    its attempts count on, so an article that kills its workers is given up in the end.
    Returns the new task id, or None when the article was not (or no longer) lost."""
    values = _requeued(note, KEEP)
    moved = _apply(update(Article)
                   .where(Article.id == article_id, Article.status == A.RUNNING,
                          Article.lease_expires_at < (lapsed_before or utcnow()))
                   .values(**values))
    return values["task_id"] if moved else None


def restore(article_id: int, body: str, *, language: Optional[str] = None,
            commit: bool = True) -> bool:
    """Make a finished article's current body an earlier one: written, to be reviewed again.
    `language` is the article's (its row's, else its batch's), for its length."""
    length = measure(body, language)
    return _apply(update(Article)
                  .where(Article.id == article_id, Article.status.in_(A.FINAL))
                  .values(status=A.SUCCEEDED, body=body, words=length.count,
                          length_unit=length.unit, error=None,
                          review_status=R.NEEDS_REVIEW, updated_at=utcnow()),
                  commit=commit)


def mark_cancelled(article_id: int, token: Optional[str] = None) -> bool:
    """Cancel an article that has not finished; with a token, only as its owner."""
    if token:
        guard = and_(Article.claim_token == token, Article.status.in_(A.ACTIVE))
    else:
        guard = Article.status.in_((A.QUEUED, A.CANCELLING))
    return _apply(update(Article).where(Article.id == article_id, guard)
                  .values(**_ended(A.CANCELLED)))


def cancel_queued(batch_id: int, note: Optional[str] = None, *, commit: bool = True) -> int:
    """Cancel every article of the batch that has not started; how many."""
    return _run(update(Article).where(Article.batch_id == batch_id, Article.status == A.QUEUED)
                .values(**_ended(A.CANCELLED, note)), commit)


def request_cancel_running(batch_id: int, *, commit: bool = True) -> int:
    """Ask the batch's running articles to stop; how many were asked. One whose lease has
    lapsed has no live worker to stop it, so it is cancelled at once."""
    now = utcnow()
    lapsed = _run(update(Article)
                  .where(Article.batch_id == batch_id, Article.status == A.RUNNING,
                         Article.lease_expires_at < now)
                  .values(**_ended(A.CANCELLED)), commit=False)
    live = _run(update(Article).where(Article.batch_id == batch_id, Article.status == A.RUNNING)
                .values(status=A.CANCELLING, updated_at=now), commit=False)
    if commit:
        db.session.commit()
    return lapsed + live


def request_cancel_article(article_id: int, *, commit: bool = True) -> bool:
    """Ask a running article to stop; its worker cancels it (or the reconciler, if gone)."""
    return _apply(update(Article).where(Article.id == article_id, Article.status == A.RUNNING)
                  .values(status=A.CANCELLING, updated_at=utcnow()), commit)


# -- batches -------------------------------------------------------------------------------

def mark_batch_running(batch_id: int) -> bool:
    return _apply(update(Batch).where(Batch.id == batch_id, Batch.status == B.QUEUED)
                  .values(status=B.RUNNING, started_at=utcnow()))


def pause_batch(batch_id: int, reason: str, by: str) -> bool:
    """Stop sending: queued articles wait until the batch is resumed."""
    return _apply(update(Batch)
                  .where(Batch.id == batch_id, Batch.status.in_((B.QUEUED, B.RUNNING)))
                  .values(status=B.PAUSED, paused_reason=reason[:2000], paused_by=by))


def resume_batch(batch_id: int, *, commit: bool = True) -> bool:
    """Let a paused batch go on; who paused it and why are forgotten."""
    return _apply(update(Batch).where(Batch.id == batch_id, Batch.status == B.PAUSED)
                  .values(status=B.RUNNING, paused_reason=None, paused_by=None,
                          started_at=func.coalesce(Batch.started_at, utcnow())), commit)


def request_cancel_batch(batch_id: int, *, commit: bool = True) -> bool:
    """Mark the batch as being cancelled; its articles are the caller's next transitions."""
    return _apply(update(Batch).where(Batch.id == batch_id, Batch.status.not_in(B.FINAL))
                  .values(status=B.CANCELLING, cancel_requested_at=utcnow()), commit)


def reopen_batch(batch_id: int, *, keep_stop: bool = False, commit: bool = True) -> bool:
    """A finished batch runs again because some of its articles were re-queued (one not
    finished stays as it is: its articles join it). Regenerating forgets why the batch
    stopped (a cancel, the budget), so the budget is enforced afresh; an operator's re-queue
    of failed articles keeps it (keep_stop), as it always has."""
    values = {"status": B.RUNNING, "finished_at": None}
    if not keep_stop:
        values.update(cancel_requested_at=None, stop_reason=None)
    return _apply(update(Batch).where(Batch.id == batch_id, Batch.status.in_(B.FINAL))
                  .values(**values), commit)


_ANY_OPEN = (select(_articles.c.id)
             .where(_articles.c.batch_id == _p("p_batch"),
                    _articles.c.status.in_((A.QUEUED, A.RUNNING, A.CANCELLING))).limit(1))


def finalize_batch(batch_id: int) -> Optional[str]:
    """Close the batch once no article is left unfinished; returns the final status."""
    # Cheap first: one index probe tells whether anything is still open, so finishing each
    # article of a 10,000-article batch does not count the whole batch again.
    if first_alone(_ANY_OPEN, {"p_batch": batch_id}) is not None:
        db.session.rollback()  # a caller's read transaction ends here, as it always has
        return None
    # Per status: how many, and the tokens and cost they add to the batch's totals.
    per_status = db.session.execute(
        select(Article.status, func.count(), func.coalesce(func.sum(Article.prompt_tokens), 0),
               func.coalesce(func.sum(Article.completion_tokens), 0),
               func.coalesce(func.sum(Article.cost_usd), 0.0))
        .where(Article.batch_id == batch_id).group_by(Article.status)).all()
    counts = {row[0]: row[1] for row in per_status}
    sums = [sum(row[i] for row in per_status) for i in (2, 3, 4)]
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


def enforce_budget(batch_id: int) -> bool:
    """When the spend reaches the batch's budget, cancel what has not started. Articles
    already running finish (their tokens are spent already); the batch says why it stopped.
    True when this call stopped the batch."""
    budget, spend = db.session.execute(
        select(Batch.budget_usd,
               select(func.coalesce(func.sum(Article.cost_usd), 0.0))
               .where(Article.batch_id == batch_id).scalar_subquery())
        .where(Batch.id == batch_id)).one()
    if budget is None or spend < budget:
        db.session.rollback()
        return False
    return stop_batch(batch_id, f"Budget reached: ${spend:.4f} spent of ${budget:.4f}.",
                      "budget reached")


def stop_batch(batch_id: int, reason: str, note: str) -> bool:
    """The batch stops early, saying why (not a person's cancel): what has not started is
    cancelled with `note`; what runs finishes. True when this call stopped it."""
    stopped = _apply(
        update(Batch).where(Batch.id == batch_id, Batch.stop_reason.is_(None),
                            Batch.status.not_in(B.FINAL))
        .values(stop_reason=reason,
                cancel_requested_at=func.coalesce(Batch.cancel_requested_at, utcnow())),
        commit=False)
    if stopped:
        cancel_queued(batch_id, note, commit=False)
    db.session.commit()
    return stopped


# -- economy: articles at the provider's Batch API ----------------------------------------

def claim_for_provider(batch_id: int, token: str, first: int, last: int,
                       until: datetime) -> int:
    """The batch's queued articles at positions first..last go into one provider batch:
    running under its token, with a lease past the provider's 24 h (the reconciler leaves
    them alone). Part of the caller's transaction; how many."""
    now = utcnow()
    return _run(update(Article)
                .where(Article.batch_id == batch_id, Article.status == A.QUEUED,
                       Article.position.between(first, last))
                .values(status=A.RUNNING, claim_token=token, attempts=Article.attempts + 1,
                        lease_expires_at=until, note=None, error=None, updated_at=now,
                        started_at=func.coalesce(Article.started_at, now)), commit=False)


def end_unanswered(batch_id: int, token: str, error: Optional[str]) -> int:
    """A provider batch's articles that got no result: failed with `error`, or cancelled
    when there is none (the batch was cancelled). How many."""
    values = _failed(error) if error else _ended(A.CANCELLED)
    return _run(update(Article).where(Article.batch_id == batch_id,
                                      Article.claim_token == token,
                                      Article.status.in_(A.ACTIVE)).values(**values), True)


def provider_batch_seen(provider_batch_row: int, status: str, **fields) -> bool:
    """What the provider says of its batch (state, counts, files), until it is imported.
    An ended state is never taken back (a late answer to a cancel says "cancelling" after
    the follow has seen "cancelled")."""
    guard = [] if status in P.ENDED else [ProviderBatch.status.not_in(P.ENDED)]
    return _apply(update(ProviderBatch)
                  .where(ProviderBatch.id == provider_batch_row,
                         ProviderBatch.imported_at.is_(None), *guard)
                  .values(status=status, checked_at=utcnow(), **fields))


def provider_batch_imported(provider_batch_row: int) -> bool:
    """Its results are in; only the first import of an ended provider batch says so."""
    return _apply(update(ProviderBatch)
                  .where(ProviderBatch.id == provider_batch_row,
                         ProviderBatch.imported_at.is_(None),
                         ProviderBatch.status.in_(P.ENDED))
                  .values(imported_at=utcnow()))
