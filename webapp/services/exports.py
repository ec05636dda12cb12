"""Exports of a batch: CSV, JSON, or a zip of Markdown files, streamed row by row with
flat memory whatever the size of the batch."""
from __future__ import annotations

import csv
import io
import json
import re
import struct
import tempfile
import unicodedata
import zlib
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Iterator
from urllib.parse import quote

from flask_babel import gettext as _
from sqlalchemy import select

from ..extensions import db
from ..models import Article, ArticleStatus as A, Batch, ReviewStatus as R, User
from . import audit
from .control import can_manage
from .errors import NotAllowed, NotFound
from .validation import id_chunks

FORMATS = {"csv": "text/csv; charset=utf-8", "json": "application/json",
           "zip": "application/zip"}
# `words` is the same number as `length` (kept for older readers of the export); `length`
# is counted in `length_unit`: "words", or "characters" for Chinese and Japanese.
COLUMNS = ("id", "position", "title", "status", "review_status", "keywords", "model", "words",
           "length", "length_unit", "prompt_tokens", "completion_tokens", "cost_usd",
           "created_at", "finished_at", "body")
# A spreadsheet runs a cell that starts with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value) -> str:
    """A CSV cell that a spreadsheet shows as text, never runs as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def check_allowed(user: User, batch: Batch) -> None:
    if not can_manage(user, batch):
        raise NotAllowed(_("Only the batch's author or an admin can export it."))


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
            "length": article.words, "length_unit": article.length_unit or "words",
            "prompt_tokens": article.prompt_tokens, "completion_tokens": article.completion_tokens,
            "cost_usd": round(article.cost_usd or 0.0, 6),
            "created_at": article.created_at.isoformat() + "Z",
            "finished_at": article.finished_at.isoformat() + "Z" if article.finished_at else None,
            "body": article.body}


@dataclass
class Download:
    body: Iterator[bytes]
    mimetype: str
    filename: str  # with the batch's name, in any script
    fallback: str  # ASCII only, for clients that do not read RFC 5987's filename*

    @property
    def content_disposition(self) -> str:
        return content_disposition(self.filename, self.fallback)


def download(user: User, batch: Batch, fmt: str, include_all: bool) -> Download:
    """The batch as CSV, JSON or a zip of Markdown files: approved articles, or all."""
    if fmt not in FORMATS:
        raise NotFound(_("There is no export as “%(format)s”.", format=fmt[:20]))
    end = f"{'-all' if include_all else ''}.{fmt}"
    name = safe_name(batch.name)
    return Download(stream(user, batch, fmt, include_all), FORMATS[fmt],
                    f"batch-{batch.id}-{name}{end}" if name else f"batch-{batch.id}{end}",
                    f"batch-{batch.id}{end}")


_NOT_PLAIN = re.compile(r"[^A-Za-z0-9._-]")


def content_disposition(filename: str, fallback: str) -> str:
    """An attachment header (RFC 6266): an ASCII `filename` for every client (`fallback`
    when the name is not ASCII) and, when that is not the name itself, the name in UTF-8 as
    RFC 5987's `filename*`. Only [A-Za-z0-9._-] goes between the quotes and `filename*` is
    percent-encoded, so no quote, backslash, CR or LF from a name can reach the header."""
    plain = _NOT_PLAIN.sub("_", filename if filename.isascii() else fallback)
    header = f'attachment; filename="{plain}"'
    if plain != filename:
        header += "; filename*=UTF-8''" + quote(filename, safe="")
    return header


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
    # A byte-order mark: without it Excel reads a CSV file in the system's code page, and
    # Chinese (or any non-ASCII) text comes out garbled.
    buffer.write("\ufeff")
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


NAME_MAX_BYTES = 100
# Names Windows keeps for devices, whatever the case or extension.
_RESERVED = frozenset(["con", "prn", "aux", "nul"] + [f"{port}{n}" for port in ("com", "lpt")
                                                      for n in range(1, 10)])


def safe_name(text: str, max_bytes: int = NAME_MAX_BYTES) -> str:
    """A file name (without extension) from a title, safe on every system: letters, marks and
    digits of any script, every run of anything else one hyphen (so no "/", "\\", "..",
    leading dot, control, bidi or <>:"|?* character), at most `max_bytes` of UTF-8, cut
    between characters. "" when nothing is left, or for a name Windows reserves (CON...)."""
    kept = "".join(c if unicodedata.category(c)[0] in "LMN" else "-"
                   for c in unicodedata.normalize("NFC", text))
    name = re.sub(r"-+", "-", kept).strip("-")
    name = name.encode("utf-8")[:max_bytes].decode("utf-8", "ignore").rstrip("-")
    return "" if name.lower() in _RESERVED else name


def zip_names(articles, total: int) -> Iterator[tuple[str, Article]]:
    """Each article with its file name in the zip: position, then its title ("00012-标题.md";
    "article-<id>" for a title with nothing safe in it). Names differ even ignoring case, as
    Windows and macOS compare them; two rows can clash only at the same position, so only
    that position's names are kept (memory stays flat)."""
    # Wide enough for every position, so that the names sort in the batch's order.
    width = max(5, len(str(total)))
    position, taken = None, set()
    for article in articles:
        if article.position != position:
            position, taken = article.position, set()
        stem = (f"{article.position:0{width}d}-"
                f"{safe_name(article.title.lower()) or f'article-{article.id}'}")
        name, copy = stem, 1
        while name.casefold() in taken:
            copy += 1
            name = f"{stem}-{copy}"
        taken.add(name.casefold())
        yield f"{name}.md", article


def front_matter(article: Article, batch: Batch) -> str:
    """YAML front matter; strings are written as JSON strings, which YAML reads as quoted."""
    fields = {"title": article.title, "keywords": article.keywords or "",
              "status": article.review_status or article.status, "model": batch.model,
              "length": article.words, "length_unit": article.length_unit or "words",
              "prompt_tokens": article.prompt_tokens,
              "completion_tokens": article.completion_tokens,
              "cost_usd": round(article.cost_usd or 0.0, 6),
              "created": article.created_at.isoformat() + "Z",
              "finished": article.finished_at.isoformat() + "Z" if article.finished_at else None}
    lines = ["---"] + [f"{k}: {json.dumps(v)}" for k, v in fields.items()] + ["---", ""]
    return "\n".join(lines)


# ZIP records (PKWARE APPNOTE 4.3): little-endian, sizes in bytes. An entry is always far
# under 4 GiB, so only the entry count, the central directory and the offsets can need
# the ZIP64 forms (a batch of 100,000 articles has more than 65,535 entries).
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_END64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR64 = struct.Struct("<IIQI")
_MAX16, _MAX32 = 0xFFFF, 0xFFFFFFFF
_VERSION, _VERSION64 = 20, 45  # deflate needs 2.0; ZIP64 needs 4.5
_CHUNK = 64 * 1024


def _dos_time(moment) -> tuple[int, int]:
    """(time, date) as ZIP stores them: two-second steps, years from 1980."""
    year = min(max(moment.year, 1980), 2107)
    return ((moment.hour << 11) | (moment.minute << 5) | (moment.second // 2),
            ((year - 1980) << 9) | (moment.month << 5) | moment.day)


def _zip_stream(entries: Iterator[tuple[str, bytes, object]]) -> Iterator[bytes]:
    """A ZIP archive of (name, data, datetime) entries, written as they come, in pieces
    of about 64 KiB.

    zipfile.ZipFile keeps an object per entry until it writes the central directory, about
    a kilobyte each, so its memory grew with the batch (100 MB for 100,000 articles); here
    each entry's central record is written to a temporary file (in memory while small) as
    soon as the entry is out, and that file is sent at the end: memory stays flat.
    """
    out = bytearray()
    offset = count = 0
    with tempfile.SpooledTemporaryFile(max_size=1024 * 1024) as central:
        for name, data, moment in entries:
            raw_name = name.encode("utf-8")
            flags = 0 if raw_name.isascii() else 0x800  # bit 11: the name is UTF-8
            crc = zlib.crc32(data)
            packer = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
            packed = packer.compress(data) + packer.flush()
            dos_time, dos_date = _dos_time(moment)
            out += _LOCAL.pack(0x04034B50, _VERSION, flags, zlib.DEFLATED, dos_time, dos_date,
                               crc, len(packed), len(data), len(raw_name), 0)
            out += raw_name
            out += packed
            # Past 4 GiB the entry's offset goes in a ZIP64 extra field.
            extra = b"" if offset < _MAX32 else struct.pack("<HHQ", 1, 8, offset)
            central.write(_CENTRAL.pack(
                0x02014B50, _VERSION64 if extra else _VERSION,
                _VERSION64 if extra else _VERSION, flags, zlib.DEFLATED, dos_time, dos_date,
                crc, len(packed), len(data), len(raw_name), len(extra), 0, 0, 0, 0,
                min(offset, _MAX32)) + raw_name + extra)
            offset += _LOCAL.size + len(raw_name) + len(packed)
            count += 1
            if len(out) >= _CHUNK:
                yield bytes(out)
                out.clear()
        central_size, central_at = central.tell(), offset
        central.seek(0)
        while piece := central.read(_CHUNK):
            out += piece
            if len(out) >= _CHUNK:
                yield bytes(out)
                out.clear()
    if count >= _MAX16 or central_at >= _MAX32 or central_size >= _MAX32:
        end64_at = central_at + central_size
        out += _END64.pack(0x06064B50, _END64.size - 12, _VERSION64, _VERSION64, 0, 0,
                           count, count, central_size, central_at)
        out += _LOCATOR64.pack(0x07064B50, 0, end64_at, 1)
    out += _END.pack(0x06054B50, 0, 0, min(count, _MAX16), min(count, _MAX16),
                     min(central_size, _MAX32), min(central_at, _MAX32), 0)
    yield bytes(out)


def _zip(rows, batch) -> Iterator[bytes]:
    return _zip_stream(
        (name, (front_matter(article, batch) + (article.body or "")).encode("utf-8"),
         article.finished_at or article.created_at)
        for name, article in zip_names(rows, batch.total))


# -- a selection of articles from several batches (a bulk export) ---------------------------

SELECTION_FORMATS = ("csv", "zip")
SELECTION_COLUMNS = ("batch_id", "batch") + COLUMNS


def selection(user: User, article_ids: list[int], fmt: str, stamp: str) -> Download:
    """Chosen articles of any batches as CSV or a zip of Markdown files (one folder per
    batch); only those of batches `user` may export. The caller (services/bulk.py) checked
    the selection and records the one audit entry; `stamp` goes in the file's name."""
    if fmt not in SELECTION_FORMATS:
        raise NotFound(_("There is no export as “%(format)s”.", format=fmt[:20]))
    name = f"articles-{stamp}.{fmt}"
    # Read now: the body streams after the request's commits, when `user` is expired.
    who = SimpleNamespace(id=user.id, role=user.role)
    return Download(_selection_stream(who, article_ids, fmt), FORMATS[fmt], name, name)


def _selected(user, article_ids: list[int]) -> Iterator[tuple[Batch, Iterator[Article]]]:
    """Each batch with its chosen articles (in the batch's order, read a few hundred at a
    time so memory stays flat); a batch the user may not export is left out."""
    by_batch: dict[int, list[int]] = {}
    ids = sorted(set(article_ids))
    for chunk in id_chunks(ids):
        for article_id, batch_id in db.session.execute(
                select(Article.id, Article.batch_id).where(Article.id.in_(chunk))).all():
            by_batch.setdefault(batch_id, []).append(article_id)
    for batch_id in sorted(by_batch):
        batch = db.session.get(Batch, batch_id)
        if batch is None or not can_manage(user, batch):
            continue
        yield batch, _articles_in(sorted(by_batch[batch_id]))


def _articles_in(chosen: list[int]) -> Iterator[Article]:
    for chunk in id_chunks(chosen):
        yield from db.session.scalars(
            select(Article).where(Article.id.in_(chunk))
            .order_by(Article.position, Article.id)).all()


def _selection_stream(user, article_ids: list[int], fmt: str) -> Iterator[bytes]:
    if fmt == "csv":
        return _selection_csv(_selected(user, article_ids))
    return _zip_stream(
        (f"{batch.id}-{safe_name(batch.name) or 'batch'}/{name}",
         (front_matter(article, batch) + (article.body or "")).encode("utf-8"),
         article.finished_at or article.created_at)
        for batch, articles in _selected(user, article_ids)
        for name, article in zip_names(articles, batch.total))


def _selection_csv(groups) -> Iterator[bytes]:
    buffer = io.StringIO()
    buffer.write("\ufeff")  # for Excel, as in _csv
    writer = csv.writer(buffer)
    writer.writerow(SELECTION_COLUMNS)
    for batch, articles in groups:
        for article in articles:
            record = {"batch_id": batch.id, "batch": batch.name, **_record(article, batch)}
            writer.writerow([safe_cell(record[c]) for c in SELECTION_COLUMNS])
            if buffer.tell() > 64 * 1024:
                yield buffer.getvalue().encode("utf-8")
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue().encode("utf-8")
