"""The review queue: every written article that awaits a decision, across batches.

Flagged articles come first, then the oldest finished. Filters (batch, author, flag,
language, finished from/to) live in the URL. A decision goes through review.decide, and
the queue answers with the article that followed the decided one, so that an editor
reviews one article after another without leaving the page.

Awaiting review means written (succeeded) and neither approved nor rejected: review_status
`needs_review`, or NULL for articles written before reviews existed (migration 0004). The
index of migration 0014 (review_status, status, review_flag, finished_at) answers both
halves of that OR with a seek each, so the nav's count stays one cheap statement.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import cached_property
from typing import Optional

from flask_babel import gettext as _
from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import SQLAlchemyError

from ..extensions import db
from ..labels import FLAG
from ..models import (Article, ArticleStatus as A, Batch, ReviewStatus as R, User)
from . import review
from .validation import MAX_ID

log = logging.getLogger(__name__)

# Whatever the flag: "flagged" is any flag, "unflagged" none; else one flag's code.
ANY_FLAG, NO_FLAG = "flagged", "unflagged"
FLAG_CHOICES = (ANY_FLAG, NO_FLAG) + tuple(FLAG)
# The batches offered in the filter's list: the most recent ones.
BATCH_CHOICES = 100
MAX_TEXT = 255

AWAITING = and_(Article.status == A.SUCCEEDED,
                or_(Article.review_status == R.NEEDS_REVIEW, Article.review_status.is_(None)))
# Flagged first (False sorts before True in both databases), then the oldest finished.
ORDER = (Article.review_flag.is_(None), Article.finished_at, Article.id)


@dataclass
class QueueFilter:
    """The queue's filters, as the URL carries them."""
    batch: Optional[int] = None
    author: str = ""
    flag: str = ""
    language: str = ""
    since: Optional[date] = None
    until: Optional[date] = None

    @classmethod
    def from_args(cls, args) -> tuple["QueueFilter", dict[str, list[str]]]:
        """The filters the URL asks for, and what could not be understood (by field). A
        value that cannot be understood is left out of the filter, and said."""
        errors: dict[str, list[str]] = {}
        flt = cls(author=args.get("author", "").strip()[:MAX_TEXT],
                  language=args.get("language", "").strip()[:MAX_TEXT])
        batch = args.get("batch", "").strip()
        if batch:
            if batch.isdigit() and 0 < int(batch) <= MAX_ID:
                flt.batch = int(batch)
            else:
                errors["batch"] = [_("Batch: “%(value)s” is not a batch number.",
                                     value=batch[:40])]
        flag = args.get("flag", "").strip()
        if flag in FLAG_CHOICES:
            flt.flag = flag
        elif flag:
            errors["flag"] = [_("Flag: “%(value)s” is not one of the choices.", value=flag[:40])]
        flt.since, bad = _day(args, "since")
        if bad:
            errors["since"] = [_("Finished from: “%(value)s” is not a date such as 2026-12-31.",
                                 value=bad)]
        flt.until, bad = _day(args, "until")
        if bad:
            errors["until"] = [_("Finished to: “%(value)s” is not a date such as 2026-12-31.",
                                 value=bad)]
        if flt.since and flt.until and flt.since > flt.until:
            errors["until"] = [_("Finished to: the date is before “Finished from”.")]
            flt.until = None
        return flt, errors

    def args(self) -> dict:
        """The filters as URL arguments (only those set)."""
        out = {"batch": self.batch or "", "author": self.author, "flag": self.flag,
               "language": self.language,
               "since": self.since.isoformat() if self.since else "",
               "until": self.until.isoformat() if self.until else ""}
        return {k: v for k, v in out.items() if v}

    def conditions(self) -> list:
        conds = [AWAITING]
        if self.batch:
            conds.append(Article.batch_id == self.batch)
        if self.author:
            authors = select(User.id).where(
                func.lower(User.email).contains(self.author.lower(), autoescape=True))
            conds.append(Article.batch_id.in_(select(Batch.id).where(Batch.user_id.in_(authors))))
        if self.flag == ANY_FLAG:
            conds.append(Article.review_flag.is_not(None))
        elif self.flag == NO_FLAG:
            conds.append(Article.review_flag.is_(None))
        elif self.flag:
            conds.append(Article.review_flag == self.flag)
        if self.language:
            # The article's own language (an imported row's), else its batch's.
            language = self.language.lower()
            conds.append(or_(func.lower(Article.language) == language,
                             and_(Article.language.is_(None), Article.batch_id.in_(
                                 select(Batch.id).where(func.lower(Batch.language) == language)))))
        if self.since:
            conds.append(Article.finished_at >= datetime.combine(self.since, time.min))
        if self.until and self.until < date.max:  # the day after date.max does not exist
            conds.append(Article.finished_at
                         < datetime.combine(self.until, time.min) + timedelta(days=1))
        return conds


def _day(args, name: str) -> tuple[Optional[date], str]:
    """(the date, "") or (None, what was given instead of a date)."""
    raw = args.get(name, "").strip()
    try:
        return (date.fromisoformat(raw), "") if raw else (None, "")
    except ValueError:
        return None, raw[:40]


@dataclass(frozen=True)
class QueueRow:
    """One line of the list (no body: the pane reads that)."""
    id: int
    title: str
    batch_id: int
    batch_name: str
    flag: Optional[str]
    finished_at: Optional[datetime]
    words: int
    unit: str

    @property
    def key(self) -> tuple:
        return _key(self.flag, self.finished_at, self.id)


def _key(flag: Optional[str], finished_at: Optional[datetime], article_id: int) -> tuple:
    """An article's place in the queue's order (ORDER, in Python)."""
    return (flag is None, finished_at or datetime.min, article_id)


@dataclass
class Queue:
    """The list of one page of the queue, the article in the reading pane, and the counts."""
    flt: QueueFilter
    errors: dict[str, list[str]]
    rows: list[QueueRow]
    page: int
    per_page: int
    total: int       # awaiting review, under the filters
    flagged: int     # of those, flagged
    current: Optional[Article]
    can_review: bool
    # What was just decided, said once in the page's live region.
    done: Optional[str] = None
    reason_error: Optional[str] = None
    reason: str = ""
    batches: list[tuple[int, str]] = field(default_factory=list)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def selected_id(self) -> Optional[int]:
        return self.current.id if self.current is not None else None

    @property
    def filtered(self) -> bool:
        return bool(self.flt.args())

    @cached_property
    def awaiting_all(self) -> Optional[int]:
        """Awaiting review in all (the nav's count): the total when nothing is filtered."""
        return self.total if not self.filtered else awaiting_count()


def awaiting_count() -> Optional[int]:
    """How many articles await review, in one COUNT answered from an index; None if the
    database cannot say (a page, even an error page, still renders)."""
    try:
        return db.session.scalar(select(func.count()).select_from(Article).where(AWAITING))
    except SQLAlchemyError:
        log.warning("could not count the articles awaiting review", exc_info=True)
        db.session.rollback()
        return None


class NavCount:
    """The nav's "Review (N)": counted on first use only, so a render that never shows
    the nav (a partial) costs nothing."""

    @cached_property
    def count(self) -> Optional[int]:
        return awaiting_count()


def _counts(flt: QueueFilter) -> tuple[int, int]:
    total, flagged = db.session.execute(
        select(func.count(), func.count(Article.review_flag)).select_from(Article)
        .where(*flt.conditions())).one()
    return total, flagged


def _rows(flt: QueueFilter, page: int, per_page: int) -> list[QueueRow]:
    found = db.session.execute(
        select(Article.id, Article.title, Article.batch_id, Batch.name, Article.review_flag,
               Article.finished_at, Article.words, Article.length_unit)
        .join(Batch, Batch.id == Article.batch_id).where(*flt.conditions())
        .order_by(*ORDER).limit(per_page).offset((page - 1) * per_page)).all()
    return [QueueRow(*row[:7], row[7] or "words") for row in found]


def batch_choices(flt: QueueFilter) -> list[tuple[int, str]]:
    """(id, name) of the most recent batches for the filter's list, and the chosen one."""
    found = db.session.execute(select(Batch.id, Batch.name).order_by(Batch.created_at.desc(),
                                                                     Batch.id.desc())
                               .limit(BATCH_CHOICES)).all()
    choices = [(batch_id, name) for batch_id, name in found]
    if flt.batch and flt.batch not in {batch_id for batch_id, _ in choices}:
        chosen = db.session.get(Batch, flt.batch)
        if chosen is not None:
            choices.append((chosen.id, chosen.name))
    return choices


def load(user: User, flt: QueueFilter, errors: dict, page: int, per_page: int,
         selected: Optional[int] = None, after: Optional[tuple] = None) -> Queue:
    """One page of the queue (the last one, if `page` is past it) and the article to show:
    `selected` when it exists; else, with `after` (a decided article's place), the one
    that followed it (or, at the end, the one before); else the page's first."""
    total, flagged = _counts(flt)
    page = min(max(page, 1), max(1, -(-total // per_page)))
    rows = _rows(flt, page, per_page)
    # An id past the database's integers is no article (and must not reach the driver).
    current = db.session.get(Article, selected) if selected and 0 < selected <= MAX_ID else None
    if current is None and rows:
        chosen = rows[0]
        if after is not None:
            later = [row for row in rows if row.key > after]
            chosen = later[0] if later else rows[-1]
        current = db.session.get(Article, chosen.id)
    return Queue(flt=flt, errors=errors, rows=rows, page=page, per_page=per_page, total=total,
                 flagged=flagged, current=current, can_review=review.can_review(user))


def decide(user: User, article: Article, decision: str, reason: str, flt: QueueFilter,
           page: int, per_page: int) -> Queue:
    """Approve or reject `article` (review.decide: its rules and errors), then the queue
    as it is now, with the article that followed it selected."""
    place = _key(article.review_flag, article.finished_at, article.id)
    title = article.title
    review.decide(user, article, decision, reason)
    queue = load(user, flt, {}, page, per_page, after=place)
    queue.done = (_("Approved “%(title)s”.", title=title) if decision == R.APPROVED
                  else _("Rejected “%(title)s”.", title=title))
    return queue


def pane(user: User, article: Article, flt: QueueFilter, page: int) -> Queue:
    """What the reading pane needs to show `article` (no list, no counts): the filters and
    page go into its forms, so that a decision answers with the same list."""
    return Queue(flt=flt, errors={}, rows=[], page=page, per_page=1, total=0, flagged=0,
                 current=article, can_review=review.can_review(user))


def for_page(user: User, args, page: int, per_page: int,
             selected: Optional[int] = None) -> Queue:
    """The whole review page: filters from the URL (and what was not understood), the list,
    the pane, and the batches to filter by."""
    flt, errors = QueueFilter.from_args(args)
    queue = load(user, flt, errors, page, per_page, selected)
    queue.batches = batch_choices(flt)
    return queue


def for_list(user: User, args, page: int, per_page: int) -> Queue:
    """The list of another page (the keyboard went past the end of this one)."""
    flt, errors = QueueFilter.from_args(args)
    return load(user, flt, errors, page, per_page)
