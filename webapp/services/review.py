"""Editorial review after generation: approve or reject, edit, regenerate, restore versions."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Optional

from flask import current_app
from flask_babel import gettext as _, lazy_gettext as _l, ngettext
from sqlalchemy import select

from ..generation import (dispatch as publish, economy, economy_requests, lengths, lifecycle,
                          live)
from ..extensions import db, get_redis
from ..labels import english, stored
from ..models import (Article, ArticleStatus as A, ArticleVersion, Batch, BatchMode,
                      BatchStatus as B, ReviewStatus as R, Role, User, utcnow)
from . import audit
from .control import can_manage
from .submission import create_copy, economy_availability
from .errors import Conflict, Invalid, NotAllowed, NotFound
from .outcomes import Outcome

MAX_BODY = 200_000
# The note an article shows while it is written again (stored in English).
REGENERATING = _l("Regenerating")


def can_review(user: User) -> bool:
    """Editors review any article; viewers only read."""
    return user.role in (Role.ADMIN, Role.EDITOR)


def _require(user: User) -> None:
    if not can_review(user):
        raise NotAllowed(_("Viewers cannot change articles."))


def _require_owner(user: User, batch: Batch) -> None:
    """Writing again spends the batch's money: its author's or an admin's call."""
    if not can_manage(user, batch):
        raise NotAllowed(_("Only the batch's author or an admin can have its articles written "
                           "again."))


def reading_minutes(article: Article) -> int:
    return lengths.reading_minutes(article.words, article.length_unit)


def _language(article: Article) -> str:
    """The language the article is written in: its row's, else its batch's."""
    return article.language or article.batch.language


def versions(article_id: int) -> list[ArticleVersion]:
    return db.session.scalars(select(ArticleVersion).where(ArticleVersion.article_id == article_id)
                              .order_by(ArticleVersion.number.desc())).all()


def version_of(article: Article, version_id: int) -> ArticleVersion:
    """One earlier version of `article` (a version of another article is not found)."""
    version = db.session.get(ArticleVersion, version_id)
    if version is None or version.article_id != article.id:
        raise NotFound(_("No such version."))
    return version


def decide(user: User, article: Article, decision: str, reason: str = "", *,
           record: bool = True) -> None:
    """Approve or reject a written article; a rejection needs a reason. `record=False`:
    no audit entry of its own (a bulk action writes one for all its articles)."""
    _require(user)
    if article.status != A.SUCCEEDED:
        raise Conflict(_("Only a written article can be reviewed."))
    reason = (reason or "").strip()
    if decision not in (R.APPROVED, R.REJECTED):
        raise Invalid({"decision": _("Choose approve or reject.")})
    if decision == R.REJECTED and not reason:
        raise Invalid({"reason": _("Say why the article is rejected.")})
    if len(reason) > 2000:
        raise Invalid({"reason": _("The reason may be at most 2,000 characters.")})
    article.review_status = decision
    article.review_reason = reason or None
    article.reviewed_by = user.id
    article.reviewed_at = article.updated_at = utcnow()
    if record:
        audit.record("article_reviewed", user=user, target=f"article:{article.id}",
                     detail=f"{decision}{': ' + reason[:200] if reason else ''}", commit=False)
    db.session.commit()


def edit(user: User, article: Article, body: str) -> int:
    """Save an edited body as a new version; the previous one is kept."""
    _require(user)
    if article.status != A.SUCCEEDED:
        raise Conflict(_("Only a written article can be edited."))
    body = (body or "").replace("\r\n", "\n")
    if not body.strip():
        raise Invalid({"body": _("The article cannot be empty.")})
    if len(body) > MAX_BODY:
        most = format(MAX_BODY, ",")
        raise Invalid({"body": _("The article may be at most %(most)s characters.", most=most)})
    if body == article.body:
        return 0
    number = ArticleVersion.keep(article.id, body, "edited", user.id)
    length = lengths.measure(body, _language(article))
    article.body, article.updated_at = body, utcnow()
    article.words, article.length_unit = length.count, length.unit
    audit.record("article_edited", user=user, target=f"article:{article.id}",
                 detail=f"version {number}", commit=False)
    db.session.commit()
    return number


def restore(user: User, article: Article, version_id: int) -> int:
    """Make an earlier version the current body again (as a new version)."""
    _require(user)
    version = db.session.get(ArticleVersion, version_id)
    if version is None or version.article_id != article.id:
        raise NotFound(_("No such version."))
    if article.status not in (A.SUCCEEDED,) + A.FINAL:
        raise Conflict(_("Wait until the article has finished before restoring a version."))
    if not lifecycle.restore(article.id, version.body, language=_language(article),
                             commit=False):
        db.session.rollback()
        raise Conflict(_("Wait until the article has finished before restoring a version."))
    number = ArticleVersion.keep(article.id, version.body, f"restored v{version.number}", user.id)
    audit.record("version_restored", user=user, target=f"article:{article.id}",
                 detail=f"v{version.number} as v{number}", commit=False)
    db.session.commit()
    return number


def regenerate(user: User, article: Article, extra_instructions: str = "") -> Outcome:
    """Write one article again (earlier bodies stay as versions)."""
    _require_owner(user, article.batch)
    if not article.is_final:
        raise Conflict(_("The article is still being written."))
    extra = (extra_instructions or "").strip()
    if len(extra) > 2000:
        raise Invalid({"instructions": _("Extra instructions may be at most 2,000 characters.")})
    # With the batch reopened in the same transaction: a worker never finds the article
    # queued in a batch that is still closed.
    task_id = lifecycle.requeue(article.id, english(REGENERATING), extra_instructions=extra or None,
                                commit=False)
    if task_id is None:
        db.session.rollback()
        raise Conflict(_("The article is still being written."))
    reopened = lifecycle.reopen_batch(article.batch_id, commit=False)
    audit.record("article_regenerated", user=user, target=f"article:{article.id}",
                 detail=extra[:200], commit=False)
    db.session.commit()
    return Outcome.sent(_("The article is being written again; earlier versions are kept."),
                        _send([(article.id, task_id)], article.batch_id, reopened))


def regenerate_many(user: User, batch: Batch, which: str, mode: str = "") -> Outcome:
    """Write again every failed, or every rejected, article of a batch: by the workers
    now, or (`mode` economy, the default of an economy batch) through the provider's Batch
    API again."""
    return write_again(user, batch, which, mode).outcome


@dataclass(frozen=True)
class Rewrite:
    """What write_again did: the articles sent to be written again, and what to say."""
    ids: list[int]
    outcome: Outcome


def write_again(user: User, batch: Batch, which: str, mode: str = "", *,
                only: Optional[Collection[int]] = None, record: bool = True) -> Rewrite:
    """regenerate_many's work: `which` is failed, rejected or finished (any finished
    article); `only` narrows it to these articles (a bulk action's); `record=False`
    writes no audit entry of its own (the bulk action writes one for all)."""
    _require_owner(user, batch)
    mode = mode or batch.mode
    if batch.status == B.CANCELLING:
        raise Conflict(_("This batch is being cancelled; send its articles again once it has "
                         "stopped."))
    if mode not in BatchMode.ALL:
        raise Invalid({"mode": _("Send them again now (standard) or in economy mode.")})
    if mode == BatchMode.ECONOMY:
        available, why = economy_requests.availability(current_app.config, batch.provider)
        if not available:
            raise Conflict(stored(why))
    if which == "failed":
        state, cond = A.FAILED, Article.status == A.FAILED
    elif which == "rejected":
        state = A.SUCCEEDED
        cond = (Article.status == A.SUCCEEDED) & (Article.review_status == R.REJECTED)
    elif which == "finished":
        state, cond = A.FINAL, Article.status.in_(A.FINAL)
    else:
        raise Invalid({"which": _("Regenerate the failed or the rejected articles.")})
    stmt = select(Article.id).where(Article.batch_id == batch.id, cond)
    if only is not None:
        stmt = stmt.where(Article.id.in_(list(only)))
    ids = db.session.scalars(stmt).all()
    if not ids:
        return Rewrite([], Outcome(_none_to_write(which), "info"))
    states = state if isinstance(state, tuple) else (state,)
    pairs = lifecycle.requeue_many(ids, english(REGENERATING), from_states=states,
                                   extra_instructions=None, commit=False)
    reopened = bool(pairs) and lifecycle.reopen_batch(batch.id, commit=False)
    if record:
        audit.record("article_regenerated", user=user, target=f"batch:{batch.id}",
                     detail=f"{len(pairs)} {which} articles", commit=False)
    db.session.commit()
    count = len(pairs)
    moved = [article_id for article_id, _task in pairs]
    done = _writing_again(which, count) if count else _none_to_write(which)
    if count and mode == BatchMode.ECONOMY:
        sent = publish.send(batch.id, lambda: economy.send_batch.apply_async(
            (batch.id,), queue="generation"))
        return Rewrite(moved, Outcome.sent(
            _("%(done)s They go to the provider's Batch API.", done=done), sent, "success"))
    return Rewrite(moved, Outcome.sent(done, _send(pairs, batch.id, reopened),
                                       "success" if count else "info"))


def _none_to_write(which: str) -> str:
    if which == "finished":
        return _("There are no finished articles.")
    return (_("There are no failed articles.") if which == "failed"
            else _("There are no rejected articles."))


def _writing_again(which: str, count: int) -> str:
    if which == "failed":
        return ngettext("Writing %(num)d failed article again.",
                        "Writing %(num)d failed articles again.", count)
    if which == "finished":
        return ngettext("Writing %(num)d article again.", "Writing %(num)d articles again.",
                        count)
    return ngettext("Writing %(num)d rejected article again.",
                    "Writing %(num)d rejected articles again.", count)


def _send(pairs, batch_id: int, reopened: bool) -> Optional[str]:
    def publish_again():
        # A cancelled article (or one of a cancelled batch, now reopened) keeps its cancel
        # flags in Redis for a day: gone first, or the new attempt would stop at once.
        live.forget_cancel(get_redis(), batch_id if reopened else None, [a for a, _ in pairs])
        publish.publish_articles(pairs)
    return publish.send(batch_id, publish_again)


def duplicate(user: User, batch: Batch) -> Batch:
    """A new batch with the same titles, per-row settings, template text and settings."""
    if user.role == Role.VIEWER:
        raise NotAllowed(_("Viewers cannot submit batches."))
    if batch.is_economy:
        available, why = economy_availability()  # of the provider the copy will use
        if not available:
            raise Conflict(_("%(why)s Submit a copy in standard mode from the form instead.",
                             why=stored(why)))
    copy = create_copy(user, batch)
    audit.record("batch_duplicated", user=user, target=f"batch:{copy.id}",
                 detail=f"copy of batch {batch.id}")
    return copy
