"""Exports of a batch: CSV, JSON, or a zip of Markdown files, streamed row by row."""
from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from dataclasses import dataclass
from typing import Iterator

from sqlalchemy import select

from ..extensions import db
from ..models import Article, ArticleStatus as A, Batch, ReviewStatus as R, User
from . import audit
from .control import can_manage
from .errors import NotAllowed, NotFound

FORMATS = {"csv": "text/csv; charset=utf-8", "json": "application/json",
           "zip": "application/zip"}
COLUMNS = ("id", "position", "title", "status", "review_status", "keywords", "model", "words",
           "prompt_tokens", "completion_tokens", "cost_usd", "created_at", "finished_at", "body")
# A spreadsheet runs a cell that starts with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value) -> str:
    """A CSV cell that a spreadsheet shows as text, never runs as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def check_allowed(user: User, batch: Batch) -> None:
    if not can_manage(user, batch):
        raise NotAllowed("Only the batch's author or an admin can export it.")


def _articles(batch: Batch, include_all: bool) -> Iterator[Article]:
    stmt = select(Article).where(Article.batch_id == batch.id).order_by(Article.position)
    if not include_all:
        stmt = stmt.where(Article.status == A.SUCCEEDED, Article.review_status == R.APPROVED)
    # Stream from the database too: a large export never sits in memory whole.
    for article in db.session.scalars(stmt.execution_options(yield_per=200)):
        yield article


def _record(article: Article, batch: Batch) -> dict:
    return {"id": article.id, "position": article.position, "title": article.title,
            "status": article.status, "review_status": article.review_status,
            "keywords": article.keywords, "model": batch.model, "words": article.words,
            "prompt_tokens": article.prompt_tokens, "completion_tokens": article.completion_tokens,
            "cost_usd": round(article.cost_usd or 0.0, 6),
            "created_at": article.created_at.isoformat() + "Z",
            "finished_at": article.finished_at.isoformat() + "Z" if article.finished_at else None,
            "body": article.body}


@dataclass
class Download:
    body: Iterator[bytes]
    mimetype: str
    filename: str


def download(user: User, batch: Batch, fmt: str, include_all: bool) -> Download:
    """The batch as CSV, JSON or a zip of Markdown files: approved articles, or all."""
    if fmt not in FORMATS:
        raise NotFound(f"There is no export as “{fmt[:20]}”.")
    return Download(stream(user, batch, fmt, include_all), FORMATS[fmt],
                    f"batch-{batch.id}{'-all' if include_all else ''}.{fmt}")


def stream(user: User, batch: Batch, fmt: str, include_all: bool) -> Iterator[bytes]:
    check_allowed(user, batch)
    audit.record("batch_exported", user=user, target=f"batch:{batch.id}",
                 detail=f"{fmt}{' (all)' if include_all else ' (approved)'}")
    rows = _articles(batch, include_all)
    if fmt == "csv":
        return _csv(rows, batch)
    if fmt == "json":
        return _json(rows, batch)
    return _zip(rows, batch)


def _csv(rows, batch) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for article in rows:
        record = _record(article, batch)
        writer.writerow([safe_cell(record[c]) for c in COLUMNS])
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode("utf-8")


def _json(rows, batch) -> Iterator[bytes]:
    head = {"batch": {"id": batch.id, "name": batch.name, "model": batch.model,
                      "provider": batch.provider}}
    yield (json.dumps(head)[:-1] + ', "articles": [').encode()
    first = True
    for article in rows:
        yield (("" if first else ",") + json.dumps(_record(article, batch))).encode()
        first = False
    yield b"]}"


def _slug(title: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return slug[:60] or "article"


def front_matter(article: Article, batch: Batch) -> str:
    """YAML front matter; strings are written as JSON strings, which YAML reads as quoted."""
    fields = {"title": article.title, "keywords": article.keywords or "",
              "status": article.review_status or article.status, "model": batch.model,
              "prompt_tokens": article.prompt_tokens,
              "completion_tokens": article.completion_tokens,
              "cost_usd": round(article.cost_usd or 0.0, 6),
              "created": article.created_at.isoformat() + "Z",
              "finished": article.finished_at.isoformat() + "Z" if article.finished_at else None}
    lines = ["---"] + [f"{k}: {json.dumps(v)}" for k, v in fields.items()] + ["---", ""]
    return "\n".join(lines)


class _Sink(io.RawIOBase):
    """A write-only stream that hands what zipfile writes to the response in pieces."""

    def __init__(self):
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data, self.chunks = b"".join(self.chunks), []
        return data


def _zip(rows, batch) -> Iterator[bytes]:
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for article in rows:
            name = f"{article.position:05d}-{_slug(article.title)}.md"
            archive.writestr(name, front_matter(article, batch) + (article.body or ""))
            yield sink.take()
    yield sink.take()
