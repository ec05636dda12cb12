"""Activity over time, read from the database for the charts (charts.py draws it): a
batch's articles finished and its spend; the system's throughput, provider latency and
failures per model over the last hour and day.

Each costs one statement: a batch's is grouped by bucket in SQL (a 10,000-article batch
sends back at most BATCH_BUCKETS rows); the system's reads the last day's finished
articles, only the columns the charts need, and buckets them in Python.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Optional

from sqlalchemy import bindparam, case, func, select
from sqlalchemy.exc import SQLAlchemyError

from ..extensions import db
from ..models import Article, ArticleStatus as A, Batch, BatchMode, utcnow
from . import charts

# Points on a batch's lines: enough for a smooth curve, few enough to read as a table.
BATCH_BUCKETS = 40

HOUR = ("hour", timedelta(minutes=5), 12, 3)   # name, bucket width, buckets, a tick every
DAY = ("day", timedelta(hours=1), 24, 6)


def _finished_by_bucket():
    """Articles finished per bucket of a batch's lifetime, with their cost: the bucket of
    each is found by comparing with the edges e1..e(n-1), which works alike in SQLite and
    PostgreSQL; those before the first edge fall in bucket 0 and those after the last in
    the last one (an article finished a moment after the batch did still counts)."""
    bucket = case(*[(Article.finished_at < bindparam(f"e{k}", type_=Article.finished_at.type),
                     k - 1) for k in range(1, BATCH_BUCKETS)],
                  else_=BATCH_BUCKETS - 1).label("bucket")
    finished = (select(bucket, Article.cost_usd)
                .where(Article.batch_id == bindparam("batch_id"), Article.status.in_(A.FINAL),
                       Article.finished_at.is_not(None))
                .subquery())
    return (select(finished.c.bucket, func.count(),
                   func.coalesce(func.sum(finished.c.cost_usd), 0.0))
            .group_by(finished.c.bucket))


# Built once, like the progress poll's statements: values come as bound parameters.
_FINISHED_BY_BUCKET = _finished_by_bucket()


def batch_activity(batch: Batch, now: Optional[datetime] = None) -> charts.BatchCharts:
    """A batch's finished articles and spend over its lifetime (start to its end, or now)."""
    start = batch.started_at or batch.created_at
    end = batch.finished_at if batch.is_final and batch.finished_at else (now or utcnow())
    buckets = charts.Buckets.spanning(start, max(end, start), BATCH_BUCKETS)
    edges = buckets.edges()
    params = {"batch_id": batch.id, **{f"e{k}": edges[k] for k in range(1, BATCH_BUCKETS)}}
    rows = db.session.execute(_FINISHED_BY_BUCKET, params).all()
    return charts.batch_charts(buckets, {r[0]: (r[1], r[2]) for r in rows}, batch.total)


def system_activity(now: Optional[datetime] = None) -> Optional[list[charts.WindowCharts]]:
    """The last hour and the last day: articles written or failed, how long a provider
    took to write one, and failures per model. None when the database cannot be read:
    the system page still shows what it can (its panel says the database is down)."""
    now = now or utcnow()
    windows = [(name, charts.Buckets.ending(now, width, n), every)
               for name, width, n, every in (HOUR, DAY)]
    try:
        rows = finished_rows(min(b.start for _, b, _ in windows), now)
    except SQLAlchemyError:
        db.session.rollback()
        return None
    finished = [charts.Finished(r.finished_at, r.status == A.FAILED, r.model, _latency(r))
                for r in rows]
    return [charts.window_charts(name, buckets, finished, every)
            for name, buckets, every in windows]


def finished_rows(since: datetime, until: datetime):
    """The articles written or failed in [since, until), with only what the charts need."""
    return db.session.execute(
        select(Article.finished_at, Article.started_at, Article.status, Article.attempts,
               Batch.model, Batch.mode)
        .join(Batch, Batch.id == Article.batch_id)
        .where(Article.finished_at >= since, Article.finished_at < until,
               Article.status.in_((A.SUCCEEDED, A.FAILED)))).all()


def _latency(row) -> Optional[float]:
    """A provider's latency, where an article's times tell it: written by one request of a
    standard batch (a retried one's time holds its backoff; an economy one's, the
    provider's queue), from its claim to its stored answer."""
    if (row.status != A.SUCCEEDED or row.attempts != 1 or row.mode != BatchMode.STANDARD
            or row.started_at is None):
        return None
    return max(0.0, (row.finished_at - row.started_at).total_seconds())
