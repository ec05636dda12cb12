"""What the charts read (webapp/services/activity.py), on an in-memory database: a batch's
articles finished per bucket (grouped in SQL, in agreement with charts.Buckets), the
system's windows, which articles count for latency, and one statement each."""
from __future__ import annotations

import itertools
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest
from sqlalchemy import event

from webapp.extensions import db
from webapp.generation import lifecycle
from webapp.models import Article, ArticleStatus as A, Batch, BatchMode, BatchStatus as B, User
from webapp.services import activity, charts

NOW = datetime(2025, 3, 1, 12, 0, 0)
_emails = itertools.count(1)


@pytest.fixture(autouse=True)
def _database(db_app):
    yield


def _batch(status=B.RUNNING, model="model-a", mode=BatchMode.STANDARD, started=None,
           finished=None, total=10) -> Batch:
    user = User(email=f"charts{next(_emails)}@example.test", password_hash="x")
    db.session.add(user)
    db.session.flush()
    batch = Batch(user_id=user.id, name="Charts", provider="offline", model=model,
                  target_words=100, tone="neutral", language="English", status=status,
                  total=total, mode=mode, created_at=started or NOW, started_at=started,
                  finished_at=finished)
    db.session.add(batch)
    db.session.commit()
    return batch


_positions = itertools.count(1)


def _article(batch: Batch, status=A.SUCCEEDED, finished=None, took=None, attempts=1,
             cost=0.0) -> Article:
    started = finished - timedelta(seconds=took) if finished and took is not None else None
    article = Article(batch_id=batch.id, position=next(_positions), title="A title",
                      status=status, task_id=str(uuid.uuid4()), finished_at=finished,
                      started_at=started, attempts=attempts, cost_usd=cost)
    db.session.add(article)
    db.session.commit()
    return article


@contextmanager
def _statements():
    seen: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", before)


# -- a batch ---------------------------------------------------------------------------------

def test_batch_buckets_in_sql_agree_with_the_python_buckets():
    start = NOW - timedelta(minutes=10)
    batch = _batch(started=start)
    buckets = charts.Buckets.spanning(start, NOW, activity.BATCH_BUCKETS)
    edges = buckets.edges()
    # On edges, just before them, inside buckets: where SQL and Python could disagree.
    moments = [edges[0], edges[1], edges[1] - timedelta(microseconds=1), edges[7],
               edges[20] + timedelta(seconds=3), edges[-2], NOW - timedelta(microseconds=1)]
    for n, moment in enumerate(moments):
        _article(batch, finished=moment, cost=0.001 * (n + 1))
    db.session.refresh(batch)  # as a page has it: loaded already

    with _statements() as seen:
        result = activity.batch_activity(batch, now=NOW)

    assert len(seen) == 1, seen
    expected = charts.counts(buckets, moments)
    assert result.done == len(moments)
    assert [s.finished for s in result.steps] == [n for n in expected if n]
    assert [s.at_s for s in result.steps] == pytest.approx(
        [buckets.width.total_seconds() * (k + 1) for k, n in enumerate(expected) if n])
    assert result.spent == pytest.approx(sum(0.001 * (n + 1) for n in range(len(moments))))


def test_a_batch_counts_every_finished_article_and_nothing_else():
    start = NOW - timedelta(minutes=2)
    batch = _batch(status=B.FAILED, started=start, finished=NOW, total=6)
    _article(batch, A.SUCCEEDED, finished=start + timedelta(seconds=5), cost=0.01)
    _article(batch, A.FAILED, finished=start + timedelta(seconds=50), cost=0.002)
    _article(batch, A.CANCELLED, finished=start + timedelta(seconds=60))
    # Finished a moment after the batch did (a late write): counted, in the last bucket.
    _article(batch, A.SUCCEEDED, finished=NOW + timedelta(seconds=1), cost=0.01)
    _article(batch, A.QUEUED)
    _article(batch, A.RUNNING)

    result = activity.batch_activity(batch, now=NOW + timedelta(hours=1))

    assert (result.done, result.total) == (4, 6)
    assert result.spent == pytest.approx(0.022)
    assert result.span_s == pytest.approx(120, abs=0.01)  # the batch's lifetime, not now
    assert result.steps[-1].at_s == pytest.approx(120, abs=0.01)


def test_a_batch_with_nothing_finished_is_empty():
    batch = _batch(started=None)
    _article(batch, A.QUEUED)
    result = activity.batch_activity(batch, now=NOW + timedelta(seconds=30))
    assert result.empty and result.finished is None


# -- the system ------------------------------------------------------------------------------

def test_system_windows_count_and_time_the_right_articles():
    standard = _batch(model="model-a")
    economy = _batch(model="model-b", mode=BatchMode.ECONOMY)
    ago = lambda **kw: NOW - timedelta(**kw)  # noqa: E731
    _article(standard, finished=ago(minutes=1), took=2.0)
    _article(standard, finished=ago(minutes=2), took=4.0)
    _article(standard, finished=ago(minutes=3), took=30.0, attempts=2)   # retried: untimed
    _article(standard, A.FAILED, finished=ago(minutes=4), took=1.0)      # failed: untimed
    _article(economy, finished=ago(minutes=6), took=3600.0)              # economy: untimed
    _article(economy, A.FAILED, finished=ago(minutes=7))
    _article(economy, A.FAILED, finished=ago(hours=5))                   # the day only
    _article(standard, A.CANCELLED, finished=ago(minutes=1))             # not throughput
    _article(standard, finished=ago(hours=25), took=1.0)                 # older than a day

    with _statements() as seen:
        hour, day = activity.system_activity(now=NOW)

    assert len(seen) == 1, seen
    assert (hour.name, day.name) == ("hour", "day")
    assert (hour.finished, hour.failed, hour.timed) == (6, 2, 2)
    assert (hour.p50_all, hour.p95_all) == (3.0, pytest.approx(3.9))
    assert (day.finished, day.failed, day.timed) == (7, 3, 2)
    assert [(r.name, r.value, r.of) for r in hour.models.rows] == [
        ("model-a", 1, 4), ("model-b", 1, 2)]
    assert [(r.name, r.value, r.of) for r in day.models.rows] == [
        ("model-b", 2, 3), ("model-a", 1, 4)]
    assert hour.buckets.end == day.buckets.end == NOW
    assert sum(r.written + r.failed for r in hour.rows) == 6


def test_a_regenerated_article_is_timed_from_its_own_start():
    """A re-queue clears started_at (the claim sets it again), so the latency of a
    regenerated article is its own writing time, not the time since its first start."""
    batch = _batch()
    article = _article(batch, finished=NOW - timedelta(days=3), took=5.0)
    assert lifecycle.requeue(article.id, "Regenerated.") is not None
    db.session.expire_all()
    assert db.session.get(Article, article.id).started_at is None

    assert lifecycle.claim(article.id, batch.id, "token", 30)
    db.session.expire_all()
    restarted = db.session.get(Article, article.id).started_at
    assert restarted is not None and restarted > NOW - timedelta(days=3)
