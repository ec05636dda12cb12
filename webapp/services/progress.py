"""What a progress poll shows: durable state from the database, live state from Redis.

A poll of a batch costs two SQL statements (the batch with its counts, then the rows that
changed) and at most one Redis round trip (an MGET of the running articles' result keys),
whatever the size of the batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Optional

import redis
from sqlalchemy import bindparam, func, select, union

from ..generation import live, ratelimit
from ..extensions import db, get_redis
from ..models import Article, ArticleStatus as A, Batch, BatchStatus as B, utcnow

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

    @property
    def is_final(self) -> bool:
        return self.batch.status in B.FINAL


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
_BATCH_WITH_COUNTS = select(Batch, *_count_columns()).where(Batch.id == bindparam("batch_id"))


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
    """Failed and cancelled articles count as finished; 100 only once the batch is final."""
    if not counts.total:
        return 100 if batch.status in B.FINAL else 0
    pct = counts.done * 100 // counts.total
    if batch.status not in B.FINAL:
        pct = min(pct, 99)
    return pct


def timings(batch: Batch, counts: Counts, now: datetime) -> tuple[Optional[float], Optional[float]]:
    start = batch.started_at or batch.created_at
    end = batch.finished_at or now
    elapsed = max(0.0, (end - start).total_seconds())
    eta = None
    if batch.status not in B.FINAL and counts.done and batch.started_at:
        eta = elapsed / counts.done * (counts.total - counts.done)
    return elapsed, eta


def batch_view(batch_id: int, since: Optional[datetime] = None, *, with_rows: bool,
               first: int = 1, last: int = ARTICLES_PER_PAGE) -> Optional[BatchView]:
    loaded = load_batch_with_counts(batch_id)
    if loaded is None:
        return None
    batch, counts = loaded
    now = utcnow()
    elapsed, eta = timings(batch, counts, now)
    view = BatchView(batch, counts, percent_done(batch, counts), elapsed, eta,
                     rendered_at=now.isoformat())
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
    if batch.status in B.FINAL:
        return view  # finished batches render from the database alone
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
                Article.note, Article.error, Article.task_id, Article.updated_at,
                Article.review_flag)

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

def page_range(total: int, page: int) -> tuple[int, int, int, int]:
    """(page, pages, first position, last position) of a batch page of articles."""
    pages = max(1, -(-total // ARTICLES_PER_PAGE))
    page = min(max(page, 1), pages)
    first = (page - 1) * ARTICLES_PER_PAGE + 1
    return page, pages, first, first + ARTICLES_PER_PAGE - 1


def _rows(*where):
    return db.session.execute(select(*_ROW_COLUMNS).where(*where)
                              .order_by(Article.position)).all()


def article_rows(batch_id: int, first: int = 1, last: int = ARTICLES_PER_PAGE):
    """The rows of one page of a batch, for the full page (not polled)."""
    return _rows(Article.batch_id == batch_id, Article.position.between(first, last))


def all_article_rows(batch_id: int):
    """Every row of a batch (the API and the CLI)."""
    return _rows(Article.batch_id == batch_id)


def article_row(article_id: int):
    return _rows(Article.id == article_id)[0]


@dataclass
class ArticleLive:
    article: Article
    text_so_far: str
    words_so_far: Optional[int]
    live_error: bool = False


def article_live(article: Article) -> ArticleLive:
    """An article and, while it is being written, the text so far (one Redis round trip)."""
    if article.status not in A.ACTIVE:
        return ArticleLive(article, "", None)
    try:
        meta, text = live.read_article_live(get_redis(), article.task_id, article.id)
    except redis.RedisError:
        return ArticleLive(article, "", None, live_error=True)
    words = live.progress_words(meta)
    return ArticleLive(article, text, words if words is not None else len(text.split()))
