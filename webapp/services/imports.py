"""Titles from a spreadsheet: CSV or JSON files, checked row by row before anything is stored.

The file's encoding is chosen or detected by services.encodings; a CSV file's delimiter (comma,
tab or semicolon) is read from its header line."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Optional

from flask_babel import gettext as _

from . import encodings
from .errors import Invalid
from .validation import MAX_WORDS, MIN_WORDS, TONES, Row, clean_title, title_key

COLUMNS = ("title", "keywords", "tone", "words", "language", "notes")
LIMITS = {"keywords": 500, "language": 50, "notes": 2000}


@dataclass
class Preflight:
    rows: list[Row] = field(default_factory=list)
    file_error: Optional[str] = None
    row_errors: list[tuple[int, str]] = field(default_factory=list)
    missing_columns: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    text: str = ""  # the decoded file, carried to the confirm step
    delimiter: str = ""  # a CSV file's; "" for JSON or a single column
    # How the file was read ("Read as Big5 (tab-separated)."), and whether that is a guess
    # the person should check; empty when the text came back from the pre-flight page.
    read_as: str = ""
    unsure: bool = False

    @property
    def ok(self) -> bool:
        return self.file_error is None and not self.row_errors and bool(self.rows)


def parse_file(filename: str, data: bytes, *, max_bytes: int, max_rows: int,
               max_title_length: int, encoding: str = "") -> Preflight:
    """Decode and check an uploaded file; every problem is reported, nothing is stored.

    `encoding` is a key of encodings.ENCODINGS, or "" to detect it."""
    if len(data) > max_bytes:
        # The caller reads at most one byte past the limit, so the file's real size is unknown.
        return Preflight(file_error=_("The file is larger than the limit of %(size)s.",
                                      size=_size(max_bytes)))
    if not data.strip():
        return Preflight(file_error=_("The file is empty."))
    try:
        decoded = encodings.decode(data, encoding)
    except Invalid as exc:
        return Preflight(file_error=exc.message)
    # A UTF-8 reading has lost its byte-order mark; the others may still start with one.
    text = decoded.text.removeprefix("\ufeff")
    if "\x00" in text:
        return Preflight(file_error=_("This is a binary file, not CSV or JSON text."))
    if not text.strip():
        return Preflight(file_error=_("The file is empty."))
    pre = parse_text(filename, text, max_rows=max_rows, max_title_length=max_title_length)
    pre.unsure = decoded.unsure
    pre.read_as = _read_as(encodings.ENCODINGS[decoded.encoding], pre.delimiter, pre.unsure)
    return pre


def _read_as(encoding: str, delimiter: str, unsure: bool) -> str:
    layout = {",": _("comma-separated"), "\t": _("tab-separated"),
              ";": _("semicolon-separated")}.get(delimiter)
    what = _("%(encoding)s (%(layout)s)", encoding=encoding, layout=layout) if layout \
        else encoding
    if unsure:
        return _("Read as %(what)s — not sure: if the titles look wrong, choose the file's "
                 "encoding below and upload it again.", what=what)
    return _("Read as %(what)s.", what=what)


def _size(n: int) -> str:
    if n >= 1024 * 1024:
        return _("%(size)s MB", size=format(round(n / 1048576, 1), "g"))
    if n >= 1024:
        return _("%(size)s KB", size=format(round(n / 1024, 1), "g"))
    return _("%(size)s bytes", size=format(n, ","))


def parse_text(filename: str, text: str, *, max_rows: int, max_title_length: int) -> Preflight:
    stripped = text.lstrip()
    is_json = filename.lower().endswith(".json") or stripped[:1] in ("[", "{")
    delimiter = "" if is_json else _delimiter(text)
    try:
        records, columns, first_number = _from_json(text) if is_json \
            else _from_csv(text, delimiter)
    except Invalid as exc:  # the whole file cannot be read: the pre-flight says why
        return Preflight(file_error=exc.message, delimiter=delimiter)
    pre = Preflight(text=text, delimiter=delimiter)
    if "title" not in columns:
        pre.file_error = _("The file has no “title” column. Columns Pressroom reads: "
                           "%(columns)s.", columns=", ".join(COLUMNS))
        return pre
    pre.missing_columns = [c for c in COLUMNS if c not in columns]
    pre.ignored_columns = [c for c in columns if c not in COLUMNS]
    if len(records) > max_rows:
        pre.file_error = _("The file has %(rows)s rows; a batch takes at most %(max)s.",
                           rows=format(len(records), ","), max=format(max_rows, ","))
        return pre
    pre.rows, pre.row_errors = check_records(records, first_number, max_title_length)
    if not pre.rows and not pre.row_errors:
        pre.file_error = _("The file has a header but no rows.")
    return pre


def _delimiter(text: str) -> str:
    """The header line's commonest of comma, tab and semicolon (comma on a tie), or "" when
    it has none: one column. Only the header counts: titles may hold commas."""
    header = text.split("\n", 1)[0]
    counts = {d: header.count(d) for d in (",", "\t", ";")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ""


def _unreadable(message: str) -> Invalid:
    return Invalid({"import_file": message})


def _from_csv(text: str, delimiter: str):
    try:
        # One column: each line is read whole (a tab is a control character in a title
        # anyway), so that an unquoted "Rain, then sun" keeps its comma.
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter or "\t")
        header = next(reader, None)
        if not header:
            raise _unreadable(_("The file is empty."))
        columns = [h.strip().lower() for h in header]
        records = []
        for values in reader:
            if not any(v.strip() for v in values):
                records.append(None)  # a blank line keeps its row number
                continue
            records.append({columns[i]: v for i, v in enumerate(values) if i < len(columns)})
    except csv.Error as exc:
        raise _unreadable(_("The CSV file cannot be read: %(error)s.", error=exc)) from exc
    return records, columns, 2


def _from_json(text: str):
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise _unreadable(_("The JSON file cannot be read: %(error)s.", error=exc)) from exc
    except RecursionError:  # raised instead of ValueError for very deep nesting
        raise _unreadable(_("The JSON file cannot be read: it is nested too deeply.")) from None
    if isinstance(data, dict) and isinstance(data.get("rows"), list):
        data = data["rows"]
    if not isinstance(data, list):
        raise _unreadable(_("A JSON file must hold a list of objects, each with at least a "
                            "“title”."))
    columns: list[str] = []
    records = []
    for item in data:
        if not isinstance(item, dict):
            records.append({"__invalid__": True})
            continue
        if not all(storable(str(k)) for k in item):
            raise _unreadable(_("Item %(item)s has a column name with a character that "
                                "cannot be stored (NUL or an unpaired surrogate).",
                                item=len(records) + 1))
        record = {str(k).strip().lower(): v for k, v in item.items()}
        for key in record:
            if key not in columns:
                columns.append(key)
        records.append(record)
    return records, columns, 1


def check_records(records: list, first_number: int, max_title_length: int):
    """Rows from CSV, JSON or the API, with an error per bad row (naming row and column)."""
    rows: list[Row] = []
    errors: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for offset, record in enumerate(records):
        number = first_number + offset
        if record is None:
            continue
        if record.get("__invalid__"):
            errors.append((number, _("is not an object with a title")))
            continue
        row, problems = _check_row(number, record, max_title_length)
        if row is not None and not problems:
            key = title_key(row.title)
            if key in seen:
                problems.append(_("duplicate title (same as row %(row)s)", row=seen[key]))
            else:
                seen[key] = number
        if problems:
            errors.extend((number, p) for p in problems)
        else:
            rows.append(row)
    return rows, errors


def storable(text: str) -> bool:
    """No NUL and no unpaired surrogate: a JSON file can spell both as escapes
    ("\\u0000", "\\ud800"), and no database stores them."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _as_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return value if isinstance(value, str) else str(value)


def _check_row(number: int, record: dict, max_title_length: int):
    problems = []
    title = clean_title(_as_text(record.get("title")))
    if not title:
        problems.append(_("title is empty"))
    elif len(title) > max_title_length:
        problems.append(_("title is longer than %(max)s characters", max=max_title_length))
    elif any(ord(c) < 32 for c in title):
        problems.append(_("title has control characters"))
    unstorable = [c for c in COLUMNS if not storable(_as_text(record.get(c)))]
    if unstorable:
        # Said without quoting the value: the page could not be encoded with it either.
        return None, [_("%(column)s has a character that cannot be stored (NUL or an "
                        "unpaired surrogate)", column=c) for c in unstorable]
    values = {}
    for column, limit in LIMITS.items():
        value = _as_text(record.get(column)).strip()
        if len(value) > limit:
            problems.append(_("%(column)s is longer than %(max)s characters", column=column,
                              max=limit))
        values[column] = value
    tone = _as_text(record.get("tone")).strip().lower()
    if tone and tone not in TONES:
        problems.append(_("tone “%(tone)s” is not one of %(tones)s", tone=tone[:30],
                          tones=", ".join(TONES)))
    words = None
    raw_words = _as_text(record.get("words")).strip()
    if raw_words:
        try:
            words = int(float(raw_words)) if "." in raw_words else int(raw_words)
            if not MIN_WORDS <= words <= MAX_WORDS:
                problems.append(_("words must be between %(min)s and %(max)s", min=MIN_WORDS,
                                  max=MAX_WORDS))
        except (ValueError, OverflowError):  # OverflowError: "1.5e999" is infinite
            problems.append(_("words “%(words)s” is not a whole number", words=raw_words[:20]))
    if problems:
        return None, problems
    return Row(number=number, title=title, keywords=values["keywords"], tone=tone, words=words,
               language=values["language"], notes=values["notes"]), []
