"""Titles from a spreadsheet: CSV or JSON files, checked row by row before anything is stored."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Optional

from .errors import Invalid
from .validation import MAX_WORDS, MIN_WORDS, TONES, Row

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

    @property
    def ok(self) -> bool:
        return self.file_error is None and not self.row_errors and bool(self.rows)


def parse_file(filename: str, data: bytes, *, max_bytes: int, max_rows: int,
               max_title_length: int) -> Preflight:
    """Decode and check an uploaded file; every problem is reported, nothing is stored."""
    if len(data) > max_bytes:
        # The caller reads at most one byte past the limit, so the file's real size is unknown.
        return Preflight(file_error=f"The file is larger than the limit of {_size(max_bytes)}.")
    if not data.strip():
        return Preflight(file_error="The file is empty.")
    if b"\x00" in data:
        return Preflight(file_error="This is a binary file, not CSV or JSON text.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return Preflight(file_error=f"The file is not UTF-8 text (byte {exc.start + 1} cannot be "
                                    "read). Save it as “CSV UTF-8” and try again.")
    return parse_text(filename, text, max_rows=max_rows, max_title_length=max_title_length)


def _size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{round(n / 1048576, 1):g} MB"
    if n >= 1024:
        return f"{round(n / 1024, 1):g} KB"
    return f"{n:,} bytes"


def parse_text(filename: str, text: str, *, max_rows: int, max_title_length: int) -> Preflight:
    stripped = text.lstrip()
    is_json = filename.lower().endswith(".json") or stripped[:1] in ("[", "{")
    try:
        records, columns, first_number = _from_json(text) if is_json else _from_csv(text)
    except Invalid as exc:  # the whole file cannot be read: the pre-flight says why
        return Preflight(file_error=exc.message)
    pre = Preflight(text=text)
    if "title" not in columns:
        pre.file_error = ("The file has no “title” column. Columns Pressroom reads: "
                          + ", ".join(COLUMNS) + ".")
        return pre
    pre.missing_columns = [c for c in COLUMNS if c not in columns]
    pre.ignored_columns = [c for c in columns if c not in COLUMNS]
    if len(records) > max_rows:
        pre.file_error = f"The file has {len(records):,} rows; a batch takes at most {max_rows:,}."
        return pre
    pre.rows, pre.row_errors = check_records(records, first_number, max_title_length)
    if not pre.rows and not pre.row_errors:
        pre.file_error = "The file has a header but no rows."
    return pre


def _unreadable(message: str) -> Invalid:
    return Invalid({"import_file": message})


def _from_csv(text: str):
    sample = text[:4096]
    delimiter = ";" if sample.count(";") > sample.count(",") else ","
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        header = next(reader, None)
        if not header:
            raise _unreadable("The file is empty.")
        columns = [h.strip().lower() for h in header]
        records = []
        for values in reader:
            if not any(v.strip() for v in values):
                records.append(None)  # a blank line keeps its row number
                continue
            records.append({columns[i]: v for i, v in enumerate(values) if i < len(columns)})
    except csv.Error as exc:
        raise _unreadable(f"The CSV file cannot be read: {exc}.") from exc
    return records, columns, 2


def _from_json(text: str):
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise _unreadable(f"The JSON file cannot be read: {exc}.") from exc
    except RecursionError:  # raised instead of ValueError for very deep nesting
        raise _unreadable("The JSON file cannot be read: it is nested too deeply.") from None
    if isinstance(data, dict) and isinstance(data.get("rows"), list):
        data = data["rows"]
    if not isinstance(data, list):
        raise _unreadable("A JSON file must hold a list of objects, each with at least a “title”.")
    columns: list[str] = []
    records = []
    for item in data:
        if not isinstance(item, dict):
            records.append({"__invalid__": True})
            continue
        if not all(storable(str(k)) for k in item):
            raise _unreadable(f"Item {len(records) + 1} has a column name with a character "
                              "that cannot be stored (NUL or an unpaired surrogate).")
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
            errors.append((number, "is not an object with a title"))
            continue
        row, problems = _check_row(number, record, max_title_length)
        if row is not None and not problems:
            key = row.title.casefold()
            if key in seen:
                problems.append(f"duplicate title (same as row {seen[key]})")
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
    title = _as_text(record.get("title")).strip()
    if not title:
        problems.append("title is empty")
    elif len(title) > max_title_length:
        problems.append(f"title is longer than {max_title_length} characters")
    elif any(ord(c) < 32 for c in title):
        problems.append("title has control characters")
    unstorable = [c for c in COLUMNS if not storable(_as_text(record.get(c)))]
    if unstorable:
        # Said without quoting the value: the page could not be encoded with it either.
        return None, [f"{c} has a character that cannot be stored (NUL or an unpaired "
                      "surrogate)" for c in unstorable]
    values = {}
    for column, limit in LIMITS.items():
        value = _as_text(record.get(column)).strip()
        if len(value) > limit:
            problems.append(f"{column} is longer than {limit} characters")
        values[column] = value
    tone = _as_text(record.get("tone")).strip().lower()
    if tone and tone not in TONES:
        problems.append(f"tone “{tone[:30]}” is not one of {', '.join(TONES)}")
    words = None
    raw_words = _as_text(record.get("words")).strip()
    if raw_words:
        try:
            words = int(float(raw_words)) if "." in raw_words else int(raw_words)
            if not MIN_WORDS <= words <= MAX_WORDS:
                problems.append(f"words must be between {MIN_WORDS} and {MAX_WORDS}")
        except (ValueError, OverflowError):  # OverflowError: "1.5e999" is infinite
            problems.append(f"words “{raw_words[:20]}” is not a whole number")
    if problems:
        return None, problems
    return Row(number=number, title=title, keywords=values["keywords"], tone=tone, words=words,
               language=values["language"], notes=values["notes"]), []
