"""Sending articles to the queue. Only after the commit, and safe to repeat: a task claims
its article before doing anything, so an article sent twice is written once."""
from __future__ import annotations

import logging
from itertools import islice
from typing import Iterable, Iterator, Optional

from flask import current_app
from sqlalchemy import select, update

from .. import installation
from ..extensions import db, get_redis
from ..models import Article, ArticleStatus as A, Batch, BatchMode, utcnow
from . import economy
from .tasks import generate_article

log = logging.getLogger(__name__)

# Kept in the broker's Redis: if Redis loses its data (a restart without persistence),
# the marker goes with the queue, and the reconciler knows to send the batch again.
MARKER_TTL = 7 * 24 * 3600

UNREACHABLE = ("The task queue (Redis) is unreachable, so generation has not started. "
               "The batch is saved; it is sent automatically when the queue is back, or use "
               "“Retry dispatch”.")


def marker_key(batch_id: int) -> str:
    return f"{installation.prefix()}dispatched:{batch_id}"


# Messages go to the broker many to a round trip (kombu's publish batch: a pipeline of
# LPUSHes) rather than one each: first 8, so that workers start at once, then twice as many
# each time, up to PUBLISH_BATCH. Any error inside a batch discards what it has not yet
# written and raises: the articles are still queued, and are sent again as after any failed
# dispatch (the batch is marked undispatched; re-queued lost articles are sent again once
# the queue is found stalled). A task claims its article first, so one sent twice is
# written once.
FIRST_PUBLISH, PUBLISH_BATCH = 8, 500


def _growing(rows: Iterable[tuple[int, str]]) -> Iterator[list[tuple[int, str]]]:
    rows = iter(rows)
    size = FIRST_PUBLISH
    while piece := list(islice(rows, size)):
        yield piece
        size = min(size * 2, PUBLISH_BATCH)


def publish_articles(rows: Iterable[tuple[int, str]]) -> int:
    """Publish (article id, task id) pairs over one producer connection."""
    # generate_article ignores its result (tasks.py), so a publish subscribes to no result
    # channel that a failed dispatch could leave behind (tests/faults/test_redis_faults.py).
    sent = 0
    with current_app.extensions["celery"].producer_or_acquire() as producer:
        for piece in _growing(rows):
            with producer.batch(max_size=len(piece)):  # written when the block ends
                for article_id, task_id in piece:
                    generate_article.apply_async((article_id,), task_id=task_id,
                                                 queue="generation", producer=producer)
            sent += len(piece)
    return sent


def publish_batch(batch_id: int) -> Optional[str]:
    """Send every queued article of a batch; returns an error for the user, or None.

    An economy batch's articles go to the provider's Batch API instead: one task stores
    and sends them (economy.send_batch), whatever their number."""
    if db.session.scalar(select(Batch.mode).where(Batch.id == batch_id)) == BatchMode.ECONOMY:
        return send(batch_id, lambda: economy.send_batch.apply_async((batch_id,),
                                                                     queue="generation"))
    return send(batch_id, lambda: publish_articles(_queued(batch_id)))


# Rows read per statement while a batch is sent: a 100,000-article batch is sent without
# holding all its ids in memory, and without a read transaction open while publishing.
SEND_CHUNK = 2000


def _queued(batch_id: int) -> Iterator[tuple[int, str]]:
    """(article id, task id) of the batch's queued articles in order, a chunk at a time."""
    after = 0
    while True:
        rows = db.session.execute(
            select(Article.id, Article.task_id, Article.position)
            .where(Article.batch_id == batch_id, Article.status == A.QUEUED,
                   Article.position > after)
            .order_by(Article.position).limit(SEND_CHUNK)).all()
        db.session.rollback()
        for row in rows:
            yield row.id, row.task_id
        if len(rows) < SEND_CHUNK:
            return
        after = rows[-1].position


def send(batch_id: int, publish) -> Optional[str]:
    """Run `publish`, then record the batch as dispatched (or why it is not)."""
    created_at = db.session.scalar(select(Batch.created_at).where(Batch.id == batch_id))
    try:
        publish()
        pipe = get_redis().pipeline(transaction=False)
        pipe.set(marker_key(batch_id), "1", ex=MARKER_TTL)
        installation.note_batch(pipe, batch_id, created_at)
        pipe.execute()
    except Exception as exc:  # kombu and redis raise several types for an unreachable broker
        log.warning("dispatch of batch %s failed: %s", batch_id, exc)
        _set(batch_id, dispatch_error=UNREACHABLE, dispatched_at=None)
        return UNREACHABLE
    _set(batch_id, dispatch_error=None, dispatched_at=utcnow())
    return None


def _set(batch_id: int, **values) -> None:
    db.session.execute(update(Batch).where(Batch.id == batch_id).values(**values))
    db.session.commit()
