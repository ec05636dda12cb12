"""Finding batches: the dashboard's filters and pages, and a batch's webhook deliveries."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Optional

from sqlalchemy import Integer, func, or_, select, text
from sqlalchemy.orm import joinedload

from ..generation import webhooks
from ..extensions import db
from ..models import Article, ArticleStatus as A, Batch, BatchStatus as B, User

log = logging.getLogger(__name__)


@dataclass
class BatchFilter:
    """The dashboard's filters; they live in the URL so a view can be bookmarked."""
    status: str = ""
    author: str = ""
    since: Optional[date] = None
    until: Optional[date] = None
    q: str = ""

    @classmethod
    def from_args(cls, args) -> "BatchFilter":
        def day(name):
            try:
                return date.fromisoformat(args.get(name, ""))
            except ValueError:
                return None
        status = args.get("status", "")
        return cls(status=status if status in B.FINAL + (B.QUEUED, B.RUNNING, B.PAUSED,
                                                         B.CANCELLING) else "",
                   author=args.get("author", "").strip()[:255], since=day("since"),
                   until=day("until"), q=args.get("q", "").strip()[:200])

    def args(self) -> dict:
        out = {"status": self.status, "author": self.author, "q": self.q,
               "since": self.since.isoformat() if self.since else "",
               "until": self.until.isoformat() if self.until else ""}
        return {k: v for k, v in out.items() if v}

    def conditions(self) -> list:
        conds = []
        if self.status:
            conds.append(Batch.status == self.status)
        if self.author:
            conds.append(Batch.user_id.in_(select(User.id).where(
                func.lower(User.email).contains(self.author.lower(), autoescape=True))))
        if self.since:
            conds.append(Batch.created_at >= datetime.combine(self.since, time.min))
        if self.until and self.until < date.max:  # the day after date.max does not exist
            conds.append(Batch.created_at
                         < datetime.combine(self.until, time.min) + timedelta(days=1))
        if self.q:
            needle = self.q.lower()
            conds.append(or_(func.lower(Batch.name).contains(needle, autoescape=True),
                             Batch.id.in_(_batches_with_title(needle))))
        return conds


def _batches_with_title(needle: str):
    """Ids of batches with an article whose title contains `needle` (lower case).

    Both databases answer from an index (revision 0007): SQLite's trigram FTS5 table
    serves LIKE for three characters or more; PostgreSQL's pg_trgm index on lower(title).
    """
    if db.engine.dialect.name == "sqlite" and len(needle) >= 3 and not any(
            c in needle for c in "%_\\"):
        # No ESCAPE clause here: with one, FTS5 would not use its index.
        matching = (text("SELECT rowid FROM article_titles_fts WHERE title LIKE :pattern")
                    .bindparams(pattern=f"%{needle}%").columns(rowid=Integer))
        return select(Article.batch_id).where(Article.id.in_(matching.subquery().select()))
    return select(Article.batch_id).where(
        func.lower(Article.title).contains(needle, autoescape=True))


def page_of_batches(page: int, per_page: int, flt: Optional[BatchFilter] = None):
    """Newest first, with done counts per batch in the same query."""
    conds = (flt or BatchFilter()).conditions()
    done = (select(func.count()).where(Article.batch_id == Batch.id,
                                       Article.status.in_(A.FINAL))
            .correlate(Batch).scalar_subquery())
    total = db.session.scalar(select(func.count()).select_from(Batch).where(*conds))
    # The author comes in the same statement: the polled table shows each batch's.
    rows = db.session.execute(
        select(Batch, done).options(joinedload(Batch.user)).where(*conds)
        .order_by(Batch.created_at.desc(), Batch.id.desc())
        .limit(per_page).offset((page - 1) * per_page)).all()
    return rows, total


def webhook_deliveries(batch_id: int):
    return webhooks.deliveries(batch_id)
