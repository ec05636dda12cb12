"""A confirmed bulk action carried out (bulk.py resolves the selection and signs it): stored,
run item by item or exported, and shown afterwards.

1. `start`: the confirmed list is stored (bulk_actions and its items), then run at once
   when it is small (BULK_SYNC_LIMIT items) or by a Celery task on the `celery` queue, with
   its progress in the bulk_actions row (`report`).
2. `run`: item by item through the services of the single actions (review.decide,
   review.write_again, control.cancel_batch) with their permission checks; what the person
   may not do, or what changed meanwhile, is skipped and counted. One audit entry at the
   end, with the filter and the counts; each article's page lists the bulk actions done to
   it (`history`).

An export is a download: confirmed the same way, then streamed (`export`, through
exports.selection) with its one audit entry; nothing else is stored for it.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional

from celery import shared_task
from flask_babel import force_locale, gettext as _, lazy_gettext as _l, ngettext
from sqlalchemy import and_, insert, or_, select
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..labels import english
from ..models import (Article, Batch, BulkAction, BulkActionItem, BulkActionState as S,
                      ReviewStatus as R, Role, User, utcnow)
from . import audit, exports, publishing, review
from .bulk import (APPROVE, CANCEL, DONE, EXPORT, FINISHED_BATCHES, GONE, NOT_AWAITING,
                   NOT_FINISHED, NOT_SENT, NOT_YOURS_ARTICLES, NOT_YOURS_BATCHES, PUBLISH,
                   REFUSED_ARTICLES, REFUSED_BATCHES, REGENERATE, REJECT, RETRY, Plan,
                   is_awaiting, skip_lines)
from .control import can_manage, cancel_batch
from .errors import Invalid, NotAllowed, NotFound, ServiceError
from .validation import ID_CHUNK, id_chunks

log = logging.getLogger(__name__)

AUDIT_ACTIONS = {APPROVE: "bulk_approved", REJECT: "bulk_rejected",
                 REGENERATE: "bulk_regenerated", RETRY: "bulk_retried",
                 CANCEL: "bulk_cancelled", EXPORT: "bulk_exported", PUBLISH: "bulk_published"}
# Items acted on (and progress saved) per step of a run; regenerate, retry and publish go
# a batch (at most ID_CHUNK of its articles) at a time, as their services take a batch.
CHUNK = 25

QUEUE_DOWN = _l("The queue could not be reached, so nothing was done. Try again in a "
                "moment.")


def done_line(action: str, count: int) -> str:
    """What was done, once it has run."""
    if action == APPROVE:
        return ngettext("%(num)s article approved.", "%(num)s articles approved.", count)
    if action == REJECT:
        return ngettext("%(num)s article rejected.", "%(num)s articles rejected.", count)
    if action == REGENERATE:
        return ngettext("%(num)s article is being written again.",
                        "%(num)s articles are being written again.", count)
    if action == RETRY:
        return ngettext("%(num)s failed article is being written again.",
                        "%(num)s failed articles are being written again.", count)
    if action == PUBLISH:
        return ngettext("%(num)s article is being published.",
                        "%(num)s articles are being published.", count)
    return ngettext("%(num)s batch is being cancelled.", "%(num)s batches are being cancelled.",
                    count)


# -- running ----------------------------------------------------------------------------

def start(user: User, confirmed_plan: Plan) -> BulkAction:
    """Store the confirmed items and run them: now when they are few, else on a worker.
    The same confirmation sent twice shows the first run."""
    the_plan = confirmed_plan
    if the_plan.action == EXPORT:
        raise Invalid({"action": _("An export is a download; confirm it from its form.")})
    key = hashlib.sha256(the_plan.token.encode()).hexdigest()
    existing = db.session.scalar(select(BulkAction).where(BulkAction.confirm_hash == key))
    if existing is not None:
        return existing
    bulk = BulkAction(user_id=user.id, actor=user.email, scope=the_plan.scope,
                      action=the_plan.action, filter_text=the_plan.filter_text,
                      reason=the_plan.reason or None, confirm_hash=key,
                      options=json.dumps(the_plan.options) if the_plan.options else None)
    db.session.add(bulk)
    try:
        db.session.flush()
    except IntegrityError:  # the same confirmation, sent twice at once
        db.session.rollback()
        return db.session.scalar(select(BulkAction).where(BulkAction.confirm_hash == key))
    if the_plan.action == CANCEL:
        rows = [{"bulk_action_id": bulk.id, "article_id": None, "batch_id": b}
                for chunk in id_chunks(the_plan.items)
                for b in db.session.scalars(select(Batch.id).where(Batch.id.in_(chunk)))]
    else:
        rows = [{"bulk_action_id": bulk.id, "article_id": a, "batch_id": b}
                for chunk in id_chunks(the_plan.items)
                for a, b in db.session.execute(select(Article.id, Article.batch_id)
                                               .where(Article.id.in_(chunk)))]
    if rows:
        db.session.execute(insert(BulkActionItem), rows)
    skipped = dict(the_plan.skipped)
    if len(rows) < the_plan.count:
        skipped[GONE] = skipped.get(GONE, 0) + the_plan.count - len(rows)
    bulk.total, bulk.skipped_detail = len(rows), json.dumps(skipped)
    db.session.commit()
    if not the_plan.background:
        run(bulk.id)
        return bulk
    try:
        run_bulk_action.apply_async((bulk.id,))
    except Exception as exc:  # kombu and redis raise several types for a broker down
        log.warning("bulk action %s could not be queued: %s", bulk.id, exc)
        bulk.state, bulk.error, bulk.finished_at = S.FAILED, english(QUEUE_DOWN), utcnow()
        db.session.commit()
    return bulk


# Here rather than in generation/: the task runs the single actions' services (review,
# control), which generation/ may not import. Routed to the `celery` queue (celeryconfig).
@shared_task(name="webapp.bulk.run", ignore_result=True)
def run_bulk_action(bulk_id: int) -> None:
    """A large bulk action, on a worker (tasks take ids). Safe to deliver twice: only items
    without an outcome are acted on."""
    run(bulk_id)


def run(bulk_id: int) -> None:
    """Act on the bulk action's items that have not run yet, a step at a time, saving
    its progress after each; then write its one audit entry."""
    bulk = db.session.get(BulkAction, bulk_id)
    if bulk is None or bulk.is_over:
        return
    user = db.session.get(User, bulk.user_id)
    pending = (select(BulkActionItem)
               .where(BulkActionItem.bulk_action_id == bulk_id,
                      BulkActionItem.outcome.is_(None)).order_by(BulkActionItem.id))
    while True:
        if bulk.action in (REGENERATE, RETRY, PUBLISH):
            first = db.session.scalar(pending.limit(1))
            items = db.session.scalars(pending.where(
                BulkActionItem.batch_id == first.batch_id).limit(ID_CHUNK)).all() if first else []
        else:
            items = db.session.scalars(pending.limit(CHUNK)).all()
        if not items:
            break
        try:
            outcomes = _act(bulk, user, items)
        except Exception:  # a bug or an outage: what was left is skipped, never run again
            log.exception("bulk action %s: a step failed", bulk_id)
            db.session.rollback()
            for item in items:  # those done before it keep their outcome (committed)
                if item.outcome is None:
                    item.outcome = REFUSED_BATCHES if bulk.action == CANCEL else REFUSED_ARTICLES
            outcomes = Counter(item.outcome for item in items)
        done = outcomes.pop(DONE, 0)
        detail = json.loads(bulk.skipped_detail or "{}")
        for why, count in outcomes.items():
            detail[why] = detail.get(why, 0) + count
        bulk.done += done
        bulk.skipped += sum(outcomes.values())
        bulk.skipped_detail = json.dumps(detail)
        db.session.commit()
    bulk.state, bulk.finished_at = S.FINISHED, utcnow()
    with force_locale("en"):
        first = done_line(bulk.action, bulk.done)
    audit.record(AUDIT_ACTIONS[bulk.action], user=user, target=f"bulk:{bulk.id}",
                 detail=_audit_detail(first, json.loads(bulk.skipped_detail),
                                      bulk.filter_text, bulk.reason), commit=False)
    db.session.commit()


def _act(bulk: BulkAction, user: Optional[User], items: list[BulkActionItem]) -> Counter:
    """Act on some items through the single actions' services; each item gets its
    outcome. Returns how many of each outcome."""
    action, reason = bulk.action, bulk.reason or ""
    outcomes: Counter = Counter()
    if user is None or user.is_disabled:  # the account went away meanwhile: nothing more
        for item in items:
            item.outcome = REFUSED_BATCHES if action == CANCEL else REFUSED_ARTICLES
            outcomes[item.outcome] += 1
        return outcomes
    if action in (REGENERATE, RETRY):
        _write_again(action, user, items, outcomes)
    elif action == CANCEL:
        _cancel(user, items, outcomes)
    elif action == PUBLISH:
        _publish(user, json.loads(bulk.options or "{}"), items, outcomes)
    else:
        _decide(action, reason, user, items, outcomes)
    return outcomes


def _decide(action: str, reason: str, user: User, items, outcomes: Counter) -> None:
    decision = R.APPROVED if action == APPROVE else R.REJECTED
    for item in items:
        article = db.session.get(Article, item.article_id)
        if article is None or not is_awaiting(article.status, article.review_status):
            item.outcome = GONE if article is None else NOT_AWAITING
        else:
            # Stored in decide's own commit, with the verdict.
            item.outcome = DONE
            try:
                review.decide(user, article, decision, reason, record=False)
            except ServiceError as exc:
                db.session.rollback()
                item.outcome = NOT_YOURS_ARTICLES if isinstance(exc, NotAllowed) \
                    else REFUSED_ARTICLES
        outcomes[item.outcome] += 1


def _write_again(action: str, user: User, items, outcomes: Counter) -> None:
    """Items of one batch: written again through review.write_again (the batch's author's
    or an admin's; economy batches go to the provider's Batch API again)."""
    batch = db.session.get(Batch, items[0].batch_id)
    ids = [item.article_id for item in items]
    try:
        if batch is None:
            raise NotAllowed()
        moved = set(review.write_again(user, batch, "failed" if action == RETRY else "finished",
                                       only=ids, record=False).ids)
    except ServiceError as exc:
        db.session.rollback()
        why = NOT_YOURS_ARTICLES if isinstance(exc, NotAllowed) else REFUSED_ARTICLES
        moved, missed = set(), why
    else:
        missed = NOT_FINISHED if action == REGENERATE else REFUSED_ARTICLES
    for item in items:
        item.outcome = DONE if item.article_id in moved else missed
        outcomes[item.outcome] += 1


def _publish(user: User, options: dict, items, outcomes: Counter) -> None:
    """Items of one batch: queued for the destination through publishing.publish, which
    checks everything again (the author's or an admin's batch, approval, the destination
    still there and not stopped) and sends after its commit. Delivered twice, an item
    already queued is found in flight, and one already sent is updated, never posted
    again: exactly once is the publisher's."""
    batch = db.session.get(Batch, items[0].batch_id)
    ids = [item.article_id for item in items]
    try:
        if batch is None:
            raise NotAllowed()
        done = publishing.publish(user, batch, options, article_ids=ids, record=False,
                                  strict=False).articles
    except ServiceError as exc:
        db.session.rollback()
        done, missed = {}, NOT_YOURS_ARTICLES if isinstance(exc, NotAllowed) else NOT_SENT
    else:
        missed = GONE  # not in the batch any more
    for item in items:
        outcome = done.get(item.article_id, missed)
        item.outcome = DONE if outcome == publishing.QUEUED else outcome
        outcomes[item.outcome] += 1


def _cancel(user: User, items, outcomes: Counter) -> None:
    for item in items:
        batch = db.session.get(Batch, item.batch_id)
        if batch is None:
            item.outcome = GONE
        elif not can_manage(user, batch):
            item.outcome = NOT_YOURS_BATCHES
        elif batch.is_final:
            item.outcome = FINISHED_BATCHES
        else:
            item.outcome = DONE  # stored in cancel_batch's own commit
            try:
                cancel_batch(user, batch, record=False)
            except ServiceError:
                db.session.rollback()
                item.outcome = REFUSED_BATCHES
        outcomes[item.outcome] += 1
        db.session.commit()


def _audit_detail(first: str, skipped: dict[str, int], filter_text: str,
                  reason: Optional[str]) -> str:
    """The audit entry's detail, in English like every audit record: what was done (the
    count), what was skipped and why (the counts), the filter."""
    parts = [first]
    with force_locale("en"):
        lines = skip_lines(skipped, future=False)
    skipped_total = sum(skipped.values())
    parts.append(f"skipped {skipped_total}" + (f": {' '.join(lines)}" if lines else "."))
    parts.append(f"filter: {filter_text}.")
    if reason:
        parts.append(f"reason: {reason[:500]}")
    return " ".join(parts)


# -- export -----------------------------------------------------------------------------

def export(user: User, confirmed_plan: Plan) -> exports.Download:
    """The confirmed selection as a download, with its one audit entry."""
    if confirmed_plan.action != EXPORT:
        raise Invalid({"action": _("Choose what to do with the selected rows.")})
    download = exports.selection(user, confirmed_plan.items, confirmed_plan.fmt,
                                 utcnow().strftime("%Y%m%d-%H%M%S"))
    first = f"{confirmed_plan.count} articles exported as {confirmed_plan.fmt}."
    audit.record(AUDIT_ACTIONS[EXPORT], user=user, target=confirmed_plan.scope,
                 detail=_audit_detail(first, confirmed_plan.skipped,
                                      confirmed_plan.filter_text, None))
    return download


# -- reading ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Report:
    """A bulk action as its page and its polled progress show it."""
    bulk: BulkAction
    page_args: dict = field(default_factory=dict)

    @property
    def percent(self) -> int:
        if self.bulk.is_over or not self.bulk.total:
            return 100
        return min(99, (self.bulk.done + self.bulk.skipped) * 100 // self.bulk.total)

    @property
    def processed(self) -> int:
        return self.bulk.done + self.bulk.skipped

    @property
    def summary(self) -> str:
        if self.bulk.state == S.FAILED:
            return _("The queue could not be reached, so nothing was done. Try again in a "
                     "moment.")
        return done_line(self.bulk.action, self.bulk.done)

    @property
    def skip_lines(self) -> list[str]:
        return skip_lines(json.loads(self.bulk.skipped_detail or "{}"), future=False)


def report(user: User, bulk_id: int) -> Report:
    """A bulk action for its author or an admin (nobody else learns it exists)."""
    bulk = db.session.get(BulkAction, bulk_id)
    if bulk is None or (bulk.user_id != user.id and user.role != Role.ADMIN):
        raise NotFound(_("There is no such bulk action."))
    return Report(bulk)


@dataclass(frozen=True)
class HistoryEntry:
    action: str
    actor: str
    at: datetime
    filter_text: str
    reason: Optional[str]


def history(article: Article, limit: int = 20) -> list[HistoryEntry]:
    """The bulk actions done to an article, or to its batch (cancel), newest first."""
    rows = db.session.execute(
        select(BulkAction.action, BulkAction.actor, BulkAction.created_at,
               BulkAction.filter_text, BulkAction.reason)
        .join(BulkActionItem, BulkActionItem.bulk_action_id == BulkAction.id)
        .where(BulkActionItem.outcome == DONE,
               or_(BulkActionItem.article_id == article.id,
                   and_(BulkActionItem.article_id.is_(None),
                        BulkActionItem.batch_id == article.batch_id)))
        .order_by(BulkAction.created_at.desc(), BulkAction.id.desc()).limit(limit)).all()
    return [HistoryEntry(*row) for row in rows]
