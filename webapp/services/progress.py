"""What a progress poll shows: durable state from the database, live state from Redis.

Reading a batch's progress costs two SQL statements (the batch with its counts, then the
rows that changed) and at most one Redis round trip (an MGET of the running articles'
result keys), whatever the size of the batch. A batch page's poll reads it once a tick,
whoever watches: the render is shared through Redis (pollcache), and the other polls of
the tick cost one Redis round trip and no SQL.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Optional, Union

import redis
from flask_babel import gettext as _, lazy_gettext as _l
from sqlalchemy import bindparam, func, select, union
from sqlalchemy.orm import joinedload

from ..generation import lengths, live, ratelimit, webhooks
from ..extensions import db, get_redis
from ..models import (Article, ArticleStatus as A, Batch, BatchStatus as B, ProviderBatch,
                      ProviderBatchStatus as P, Role, User, BatchFlags, BatchMode, utcnow)
from .listing import BatchFilter, page_of_batches
from .control import can_manage
from .errors import NotFound

# Rows changed this long before the previous poll are sent again, so that a write that
# committed a little after its timestamp (or on a machine whose clock runs behind) is
# never missed.
OVERLAP = timedelta(seconds=2)
# A batch page lists this many articles; a 10,000-article batch is split into pages.
ARTICLES_PER_PAGE = 500


@dataclass
class Counts:
    by_status: dict[str, int]
    total: int
    spend: float = 0.0
    flagged: int = 0

    @property
    def done(self) -> int:
        return sum(self.by_status.get(s, 0) for s in A.FINAL)

    def get(self, status: str) -> int:
        return self.by_status.get(status, 0)


@dataclass
class BatchView:
    batch: Batch
    counts: Counts
    percent: int
    elapsed_s: Optional[float]
    eta_s: Optional[float]
    rendered_at: str
    changed_rows: list = field(default_factory=list)
    live_words: dict[int, int] = field(default_factory=dict)
    live_error: bool = False
    changed_ids: set[int] = field(default_factory=set)
    waiting: int = 0
    recent_429s: int = 0
    parts: list["PartView"] = field(default_factory=list)  # an economy batch's

    @property
    def is_final(self) -> bool:
        return self.batch.status in B.FINAL

    @property
    def paused_reason(self) -> Optional[str]:
        return self.batch.paused_reason if self.batch.status == B.PAUSED else None

    @property
    def target_unit(self) -> str:
        """What the batch's target length, and its articles' lengths unless an answer
        says otherwise, are counted in: "words" or "characters" (lengths.py)."""
        return lengths.unit_for_language(self.batch.language)


# What the batch page says of each state of a provider batch.
PART_STATES = {P.PREPARING: _l("being sent"), P.VALIDATING: _l("validating at the provider"),
               P.IN_PROGRESS: _l("being written at the provider"),
               P.FINALIZING: _l("finalizing at the provider"), P.COMPLETED: _l("completed"),
               P.EXPIRED: _l("expired (the 24-hour window ran out)"),
               P.CANCELLING: _l("being cancelled at the provider"),
               P.CANCELLED: _l("cancelled"), P.FAILED: _l("failed at the provider")}


@dataclass(frozen=True)
class PartView:
    """One provider batch of an economy batch, as its page shows it."""
    row: ProviderBatch
    percent: int
    expires_in_s: Optional[float]

    @property
    def imported(self) -> bool:
        return self.row.imported_at is not None

    @property
    def label(self) -> str:
        return str(PART_STATES.get(self.row.status, self.row.status))


def provider_batches(batch_id: int) -> list[ProviderBatch]:
    return db.session.scalars(select(ProviderBatch).where(ProviderBatch.batch_id == batch_id)
                              .order_by(ProviderBatch.id)).all()


def _parts(view: "BatchView", now: datetime) -> None:
    """An economy batch's provider batches; until their results are imported, their
    request counts drive the bar."""
    answered = 0
    for pb in provider_batches(view.batch.id):
        settled = pb.completed + pb.failed
        imported = pb.imported_at is not None
        if not imported:
            answered += settled
        left = (pb.expires_at - now).total_seconds() if pb.expires_at and not pb.is_ended \
            else None
        view.parts.append(PartView(pb, percent(pb.requests if imported else settled,
                                               pb.requests, imported), left))
    if not view.is_final and view.counts.total:
        view.percent = percent(min(view.counts.done + answered, view.counts.total),
                               view.counts.total, False)


@dataclass(frozen=True)
class BatchActions:
    """The buttons a batch offers one person; the services check each action again."""
    cancelling: bool = False
    can_pause: bool = False
    can_resume: bool = False
    can_cancel: bool = False
    dispatch_error: Optional[str] = None  # the batch waits for the queue: say why
    can_retry_dispatch: bool = False
    # Why there is no Pause button on an open batch that has none (economy mode).
    no_pause: Optional[str] = None


@dataclass(frozen=True)
class BatchFacts(BatchFlags):
    """What the buttons and the checks of a poll need of a batch, kept with a shared
    render so that a poll answered from it reads no database."""
    id: int
    name: str
    user_id: int
    status: str
    paused_by: Optional[str]
    dispatch_error: Optional[str]
    mode: str = BatchMode.STANDARD

    @classmethod
    def of(cls, batch: Batch) -> "BatchFacts":
        return cls(batch.id, batch.name, batch.user_id, batch.status, batch.paused_by,
                   batch.dispatch_error, batch.mode)


def actions(user: User, batch: Union[Batch, BatchFacts]) -> BatchActions:
    manager = can_manage(user, batch)
    open_ = not batch.is_final and batch.status != B.CANCELLING
    paused = batch.status == B.PAUSED
    # Only an admin resumes what the provider circuit breaker paused (a key or quota fix).
    resumable = paused and (batch.paused_by != "provider" or user.role == Role.ADMIN)
    waiting = batch.dispatch_error if not batch.is_final else None
    economy = batch.is_economy
    return BatchActions(cancelling=batch.status == B.CANCELLING,
                        can_pause=manager and open_ and not paused and not economy,
                        no_pause=NO_PAUSE if manager and open_ and economy else None,
                        can_resume=manager and open_ and resumable,
                        can_cancel=manager and open_, dispatch_error=waiting,
                        can_retry_dispatch=manager and waiting is not None)


NO_PAUSE = _l("Economy batches cannot be paused: the provider's Batch API has no pause. "
              "Cancel keeps every article already written.")


def percent(done: int, total: int, final: bool) -> int:
    """Failed and cancelled articles count as done; 100 only once the batch is final."""
    if not total:
        return 100 if final else 0
    pct = done * 100 // total
    return pct if final else min(pct, 99)


@dataclass(frozen=True)
class BatchRow:
    """One batch of the dashboard's table."""
    batch: Batch
    done: int
    percent: int


@dataclass
class Dashboard:
    """One page of the dashboard's batches, with the filters from the URL."""
    rows: list[BatchRow]
    total: int
    page: int
    per_page: int
    flt: BatchFilter

    @property
    def live(self) -> bool:
        """Whether the table keeps polling: some batch on it is unfinished."""
        return any(not row.batch.is_final for row in self.rows)


def dashboard(args, page: int, per_page: int) -> Dashboard:
    flt = BatchFilter.from_args(args)
    rows, total = page_of_batches(page, per_page, flt)
    return Dashboard([BatchRow(b, done, percent(done, b.total, b.is_final)) for b, done in rows],
                     total, page, per_page, flt)


def _count_columns():
    counts = [select(func.count()).where(Article.batch_id == Batch.id, Article.status == s)
              .correlate(Batch).scalar_subquery().label(s) for s in A.ALL]
    spend = (select(func.coalesce(func.sum(Article.cost_usd), 0.0))
             .where(Article.batch_id == Batch.id).correlate(Batch).scalar_subquery())
    flagged = (select(func.count()).where(Article.batch_id == Batch.id,
                                          Article.review_flag.is_not(None))
               .correlate(Batch).scalar_subquery())
    return counts + [spend.label("spend"), flagged.label("flagged")]


# Built once: constructing these expressions costs more Python time than running them,
# and a batch page polls every second. Values are passed as bound parameters.
# The author comes in the same statement, so no page or partial lazy-loads it.
_BATCH_WITH_COUNTS = (select(Batch, *_count_columns()).options(joinedload(Batch.user))
                      .where(Batch.id == bindparam("batch_id")))


def load_batch_with_counts(batch_id: int) -> Optional[tuple[Batch, Counts]]:
    """The batch, its article counts by status, its spend so far, in one statement."""
    row = db.session.execute(_BATCH_WITH_COUNTS, {"batch_id": batch_id}).first()
    if row is None:
        return None
    batch = row[0]
    by_status = {s: row[i + 1] for i, s in enumerate(A.ALL)}
    return batch, Counts(by_status, batch.total, spend=float(row.spend or 0.0),
                         flagged=row.flagged or 0)


def percent_done(batch: Batch, counts: Counts) -> int:
    return percent(counts.done, counts.total, batch.status in B.FINAL)


def timings(batch: Batch, counts: Counts, now: datetime) -> tuple[Optional[float], Optional[float]]:
    start = batch.started_at or batch.created_at
    end = batch.finished_at or now
    elapsed = max(0.0, (end - start).total_seconds())
    eta = None
    if batch.status not in B.FINAL and counts.done and batch.started_at:
        eta = elapsed / counts.done * (counts.total - counts.done)
    return elapsed, eta


def batch_view(batch_id: int, since: Optional[datetime] = None, *, with_rows: bool,
               first: int = 1, last: int = ARTICLES_PER_PAGE,
               with_live: bool = True) -> Optional[BatchView]:
    """The batch as its page shows it; with `with_rows`, the rows in flight and those
    changed since `since` (less OVERLAP), with their live words unless `with_live` is
    False (Redis is known to be down: the page says live progress is unavailable)."""
    loaded = load_batch_with_counts(batch_id)
    if loaded is None:
        return None
    batch, counts = loaded
    now = utcnow()
    elapsed, eta = timings(batch, counts, now)
    view = BatchView(batch, counts, percent_done(batch, counts), elapsed, eta,
                     rendered_at=now.isoformat())
    if batch.is_economy:
        _parts(view, now)
    if not with_rows:
        return view
    params = {"batch_id": batch_id, "first": first, "last": last}
    changed_since = since - OVERLAP if since is not None else None
    if changed_since is None:
        stmt = _ACTIVE_ROWS
    else:
        stmt = _ACTIVE_OR_CHANGED_ROWS
        params["since"] = changed_since
    # At most the rows in flight plus those changed since the last poll: sorting them here
    # keeps each half of the UNION a plain index range.
    rows = sorted(db.session.execute(stmt, params).all(), key=lambda r: r.position)
    # Rows whose status changed are rendered whole; rows still running only get their
    # word count updated, so their cancel button is never swapped away under the pointer.
    view.changed_rows = [r for r in rows if changed_since is None or r.updated_at >= changed_since]
    view.changed_ids = {r.id for r in view.changed_rows}
    running = [r for r in rows if r.status in A.ACTIVE]
    if batch.status in B.FINAL or batch.is_economy:
        # Finished batches render from the database alone; an economy batch's articles
        # are written at the provider, with nothing live in Redis.
        return view
    if not with_live:
        view.live_error = True
        return view
    # One MGET: the running articles' Celery progress and the rate-limit pressure.
    extra = ratelimit.pressure_keys(batch_id)
    try:
        metas, values = live.read_progress(get_redis(), [r.task_id for r in running], extra)
    except redis.RedisError:
        view.live_error = True
        return view
    view.waiting, view.recent_429s = ratelimit.pressure_from(values)
    for r in running:
        words = live.progress_words(metas.get(r.task_id))
        if words is not None:
            view.live_words[r.id] = words
    return view


_ROW_COLUMNS = (Article.id, Article.position, Article.title, Article.status, Article.words,
                Article.length_unit, Article.note, Article.error, Article.task_id,
                Article.updated_at, Article.review_flag,
                # Whether a Cancel button makes sense (for those who manage the batch).
                Article.status.in_((A.QUEUED, A.RUNNING)).label("cancellable"))

# Rows in flight, and (with `since`) rows changed since the previous poll. A UNION rather
# than `status IN (...) OR updated_at >= ...`: SQLite answers each half from its own index
# (batch_id, status) and (batch_id, updated_at), where the OR made it read every row of
# the batch — a thousand row reads per poll for a thousand-article batch.
# Only the rows shown on the page (a range of positions) are sent to it.
_ON_PAGE = Article.position.between(bindparam("first"), bindparam("last"))
_ACTIVE_ROWS = select(*_ROW_COLUMNS).where(Article.batch_id == bindparam("batch_id"),
                                           Article.status.in_(A.ACTIVE), _ON_PAGE)
_ACTIVE_OR_CHANGED_ROWS = union(
    _ACTIVE_ROWS,
    select(*_ROW_COLUMNS).where(Article.batch_id == bindparam("batch_id"),
                                Article.updated_at >= bindparam("since"), _ON_PAGE))

def batch_page(user: User, batch_id: int, page: int) -> dict:
    """What a batch's page shows: its bar and counts, one page of its articles, its
    webhook deliveries, and what `user` may do to it."""
    view = batch_view(batch_id, with_rows=False)
    if view is None:
        raise NotFound(_("No batch %(id)s.", id=batch_id))
    batch = view.batch
    page, pages, first, last = page_range(batch.total, page)
    return {"view": view, "batch": batch, "rows": article_rows(batch_id, first, last),
            "page": page, "pages": pages, "first": first, "last": last,
            "last_shown": min(last, batch.total), "deliveries": webhooks.deliveries(batch_id),
            "can_manage": can_manage(user, batch), "actions": actions(user, batch)}


def batch_buttons(user: User, batch_id: int) -> dict:
    """The batch's buttons as they are now, after an action changed it."""
    db.session.expire_all()
    batch = db.session.get(Batch, batch_id)
    return {"batch": batch, "actions": actions(user, batch)}


def page_range(total: int, page: int) -> tuple[int, int, int, int]:
    """(page, pages, first position, last position) of a batch page of articles."""
    pages = max(1, -(-total // ARTICLES_PER_PAGE))
    page = min(max(page, 1), pages)
    first = (page - 1) * ARTICLES_PER_PAGE + 1
    return page, pages, first, first + ARTICLES_PER_PAGE - 1


# Beside each row outside the poll (the batch page, the API, the CLI): its review, and the
# reviewer's email. Not in the poll's UNION, which stays a plain index range per half.
_REVIEW_COLUMNS = (Article.review_status, Article.review_reason, Article.reviewed_at,
                   User.email.label("reviewer_email"))


def _rows(*where):
    return db.session.execute(select(*_ROW_COLUMNS, *_REVIEW_COLUMNS).select_from(Article)
                              .outerjoin(User, User.id == Article.reviewed_by).where(*where)
                              .order_by(Article.position)).all()


def article_rows(batch_id: int, first: int = 1, last: int = ARTICLES_PER_PAGE):
    """The rows of one page of a batch, for the full page (not polled)."""
    return _rows(Article.batch_id == batch_id, Article.position.between(first, last))


def all_article_rows(batch_id: int):
    """Every row of a batch (the API and the CLI)."""
    return _rows(Article.batch_id == batch_id)


def article_row(article_id: int):
    return _rows(Article.id == article_id)[0]
