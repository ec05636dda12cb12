"""Validation of batch input, shared by the form and the JSON API."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .. import netguard
from ..models import BatchMode

TONES = ("neutral", "friendly", "formal", "persuasive", "playful", "authoritative")
MIN_WORDS, MAX_WORDS = 50, 5000
MAX_ID = 2**31 - 1  # the largest id PostgreSQL's INTEGER holds
_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,99}$")


@dataclass
class Row:
    """One article to write: a title, and settings that override the batch's."""
    number: int  # as a person sees it: the line, spreadsheet row (header = 1) or JSON item
    title: str
    keywords: str = ""
    tone: str = ""
    words: int | None = None
    language: str = ""
    notes: str = ""


@dataclass
class BatchInput:
    name: str
    rows: list[Row]
    model: str
    target_words: int
    tone: str
    language: str
    instructions: str = ""
    budget_usd: float | None = None
    template_id: int | None = None
    webhook_url: str | None = None
    mode: str = BatchMode.STANDARD

    @property
    def titles(self) -> list[str]:
        return [row.title for row in self.rows]


@dataclass
class Errors:
    fields: dict[str, list[str]] = field(default_factory=dict)

    def add(self, name: str, message: str) -> None:
        self.fields.setdefault(name, []).append(message)

    def __bool__(self) -> bool:
        return bool(self.fields)


def parse_titles(raw, max_titles: int, max_length: int, errors: Errors) -> list[str]:
    """One title a line (or a list from the API); blank lines are ignored."""
    if isinstance(raw, str):
        lines = raw.splitlines()
    elif isinstance(raw, list) and all(isinstance(t, str) for t in raw):
        lines = raw
    else:
        errors.add("titles", "Titles must be text, one title a line (or a list of strings).")
        return []
    titles: list[tuple[int, str]] = [(n, line.strip()) for n, line in enumerate(lines, 1)
                                     if line.strip()]
    if not titles:
        errors.add("titles", "Enter at least one title.")
        return []
    if len(titles) > max_titles:
        errors.add("titles", f"{len(titles)} titles given; a batch takes at most {max_titles}.")
    too_long = [n for n, t in titles if len(t) > max_length]
    if too_long:
        errors.add("titles", f"Titles may be at most {max_length} characters; too long on "
                             f"line{'s' if len(too_long) > 1 else ''} {_list(too_long)}.")
    control = [n for n, t in titles if any(ord(c) < 32 for c in t)]
    if control:
        errors.add("titles", f"Control characters are not allowed (line {_list(control)}).")
    seen: dict[str, int] = {}
    duplicates = []
    for n, title in titles:
        key = title.casefold()
        if key in seen:
            duplicates.append(f"“{title[:60]}” (lines {seen[key]} and {n})")
        else:
            seen[key] = n
    if duplicates:
        errors.add("titles", "Duplicate titles: " + "; ".join(duplicates[:10])
                   + (f"; and {len(duplicates) - 10} more" if len(duplicates) > 10 else "") + ".")
    return [t for _, t in titles]


def _list(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:10])
    return shown + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")


def _text(data: dict, name: str, label: str, errors: Errors, *, required: bool,
          max_len: int, default: str = "") -> str:
    value = data.get(name, default)
    if value is None:
        value = default
    if not isinstance(value, str):
        errors.add(name, f"{label} must be text.")
        return ""
    value = value.strip()
    if required and not value:
        errors.add(name, f"{label} is required.")
    elif len(value) > max_len:
        errors.add(name, f"{label} may be at most {max_len} characters.")
    return value


def validate_batch(data: dict, *, default_model: str, allowed_models: list[str],
                   max_titles: int, max_title_length: int,
                   rows: list | None = None,
                   webhook_allowed_hosts: str = "") -> tuple[BatchInput | None, Errors]:
    """Check everything; return the clean input only when nothing is wrong.

    `rows` are already-checked rows from an import; otherwise titles come from `titles`.
    `webhook_allowed_hosts` is WEBHOOK_ALLOWED_HOSTS (internal receivers let through).
    """
    errors = Errors()
    name = _text(data, "name", "Name", errors, required=True, max_len=200)
    if rows is None:
        rows = [Row(number=n, title=t) for n, t in
                enumerate(parse_titles(data.get("titles", ""), max_titles, max_title_length,
                                       errors), 1)]
    elif not rows:
        errors.add("rows", "The import has no usable rows.")
    model = _text(data, "model", "Model", errors, required=False, max_len=100) or default_model
    if not _MODEL_RE.match(model):
        errors.add("model", "Model names use letters, digits and . _ : / @ + - only.")
    elif allowed_models and model not in allowed_models:
        errors.add("model", f"Choose one of: {', '.join(allowed_models)}.")
    words_raw = data.get("target_words", 800)
    try:
        if isinstance(words_raw, bool):
            raise ValueError
        target_words = int(str(words_raw).strip()) if str(words_raw).strip() else 800
        if not MIN_WORDS <= target_words <= MAX_WORDS:
            errors.add("target_words",
                       f"Target length must be between {MIN_WORDS} and {MAX_WORDS} words.")
    except (TypeError, ValueError):
        errors.add("target_words", "Target length must be a whole number of words.")
        target_words = 0
    tone = _text(data, "tone", "Tone", errors, required=False, max_len=50) or "neutral"
    if tone not in TONES:
        errors.add("tone", f"Tone must be one of: {', '.join(TONES)}.")
    language = _text(data, "language", "Language", errors, required=False, max_len=50) or "English"
    instructions = _text(data, "instructions", "Extra instructions", errors, required=False,
                         max_len=2000)
    budget = _budget(data.get("budget_usd"), errors)
    webhook_url = _webhook(data.get("webhook_url"), errors, webhook_allowed_hosts)
    template_id = None
    raw_template = data.get("template_id")
    if raw_template not in (None, "", 0, "0"):
        try:
            template_id = int(str(raw_template))
            if not 0 < template_id <= MAX_ID:  # beyond it the database driver overflows
                raise ValueError
        except ValueError:
            template_id = None
            errors.add("template_id", "Choose a template from the list.")
    mode = data.get("mode") or BatchMode.STANDARD
    if mode not in BatchMode.ALL:
        errors.add("mode", "Mode must be “standard” (written now) or “economy” (the "
                           "provider's Batch API, within 24 h).")
    if errors:
        return None, errors
    return BatchInput(name=name, rows=rows, model=model, target_words=target_words,
                      tone=tone, language=language, instructions=instructions,
                      budget_usd=budget, template_id=template_id,
                      webhook_url=webhook_url, mode=mode), errors


def _webhook(raw, errors: Errors, allowed_hosts: str = "") -> str | None:
    """An optional URL called once when the batch finishes.

    Only what needs no lookup is refused here (localhost, private IP literals in any
    spelling); a name is resolved and checked when the webhook is sent (webhooks.py)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if not isinstance(raw, str):
        errors.add("webhook_url", "The webhook URL must be text.")
        return None
    url = raw.strip()
    try:
        parts = urlsplit(url)
        local = netguard.static_refusal(url, allowed_hosts)
    except (ValueError, netguard.Refused):  # e.g. "http://[::1", or a port out of range
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname \
            or len(url) > 500 or any(c.isspace() or ord(c) < 32 for c in url):
        errors.add("webhook_url", "The webhook URL must be an http:// or https:// address of "
                                  "at most 500 characters.")
        return None
    if local:
        errors.add("webhook_url", "The webhook URL points at a private or local address; "
                                  "use a public address, or ask an administrator to allow "
                                  "an internal receiver (WEBHOOK_ALLOWED_HOSTS).")
        return None
    return url


MAX_BUDGET = 100_000.0


def _budget(raw, errors: Errors) -> float | None:
    """An optional spending cap in US dollars; empty means none."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    try:
        if isinstance(raw, bool):
            raise ValueError
        value = float(str(raw).strip().lstrip("$"))
    except ValueError:
        errors.add("budget_usd", "Budget must be an amount in US dollars, like 2.50.")
        return None
    if not 0 < value <= MAX_BUDGET or value != value:
        errors.add("budget_usd",
                   f"Budget must be more than 0 and at most {MAX_BUDGET:,.0f} dollars.")
        return None
    return value
