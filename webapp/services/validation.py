"""Validation of batch input, shared by the form and the JSON API."""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from flask_babel import gettext as _, lazy_gettext as _l, ngettext

from .. import netguard
from ..generation.lengths import CHARACTERS, unit_for_language
from ..models import BatchMode

TONES = ("neutral", "friendly", "formal", "persuasive", "playful", "authoritative")
MIN_WORDS, MAX_WORDS = 50, 5000
MAX_ID = 2**31 - 1  # the largest id PostgreSQL's INTEGER holds
# Ids per IN (...): far under every database's limit on bound parameters.
ID_CHUNK = 500


def id_chunks(ids: list[int]):
    """`ids` a slice at a time, each small enough for one IN (...)."""
    for start in range(0, len(ids), ID_CHUNK):
        yield ids[start:start + ID_CHUNK]


_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,99}$")

# Separators a list pasted from a Chinese document leaves around a title (the full-width
# space U+3000 goes with str.strip). "？" and "！" belong to a title and stay; ASCII
# punctuation stays too, as it always has ("etc.", "Q&A:").
_EDGE_PUNCTUATION = "，、。；：．｡､"
# Quotes that wrap a whole title are dropped; 《》 stays: it names a book or a film.
_WRAPPING_QUOTES = {"“": "”", "‘": "’", "「": "」", "『": "』", "＂": "＂"}


def clean_title(raw: str) -> str:
    """A title without the spaces, stray CJK punctuation and wrapping quotes around it.

    Quotes go only when they wrap all of it: “甲”与“乙” keeps its own."""
    title = raw
    while True:
        before = title
        title = title.strip().strip(_EDGE_PUNCTUATION).strip()
        close = _WRAPPING_QUOTES.get(title[:1])
        if close and len(title) > 2 and title.endswith(close) \
                and title[0] not in title[1:-1] and close not in title[1:-1]:
            title = title[1:-1]
        if title == before:
            return title


def title_key(title: str) -> str:
    """What makes two titles the same: "ＡＢＣ" is "abc", "１２" is "12", runs of spaces are one."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", title).casefold())
    return " ".join(folded.split())


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
        errors.add("titles", _("Titles must be text, one title a line (or a list of strings)."))
        return []
    cleaned = [(n, clean_title(line)) for n, line in enumerate(lines, 1)]
    titles: list[tuple[int, str]] = [(n, title) for n, title in cleaned if title]
    if not titles:
        errors.add("titles", _("Enter at least one title."))
        return []
    if len(titles) > max_titles:
        errors.add("titles", _("%(count)s titles given; a batch takes at most %(most)s.",
                               count=len(titles), most=max_titles))
    too_long = [n for n, t in titles if len(t) > max_length]
    if too_long:
        errors.add("titles", ngettext(
            "Titles may be at most %(most)s characters; too long on line %(lines)s.",
            "Titles may be at most %(most)s characters; too long on lines %(lines)s.",
            len(too_long), most=max_length, lines=_list(too_long)))
    control = [n for n, t in titles if any(ord(c) < 32 for c in t)]
    if control:
        errors.add("titles", _("Control characters are not allowed (line %(lines)s).",
                               lines=_list(control)))
    seen: dict[str, int] = {}
    duplicates = []
    for n, title in titles:
        key = title_key(title)
        if key in seen:
            duplicates.append(_("“%(title)s” (lines %(first)s and %(second)s)",
                                title=title[:60], first=seen[key], second=n))
        else:
            seen[key] = n
    if duplicates:
        shown = "; ".join(duplicates[:10])
        errors.add("titles", _("Duplicate titles: %(titles)s; and %(count)s more.",
                               titles=shown, count=len(duplicates) - 10)
                   if len(duplicates) > 10 else _("Duplicate titles: %(titles)s.", titles=shown))
    return [t for _, t in titles]


def _list(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:10])
    if len(numbers) > 10:
        return _("%(numbers)s and %(count)s more", numbers=shown, count=len(numbers) - 10)
    return shown


def _text(data: dict, name: str, label, errors: Errors, *, required: bool,
          max_len: int, default: str = "") -> str:
    """`label` is what the messages call the field (a lazy string, in the page's language)."""
    value = data.get(name, default)
    if value is None:
        value = default
    if not isinstance(value, str):
        errors.add(name, _("%(field)s must be text.", field=label))
        return ""
    value = value.strip()
    if required and not value:
        errors.add(name, _("%(field)s is required.", field=label))
    elif len(value) > max_len:
        errors.add(name, _("%(field)s may be at most %(most)s characters.", field=label,
                           most=max_len))
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
    name = _text(data, "name", _l("Name"), errors, required=True, max_len=200)
    if rows is None:
        rows = [Row(number=n, title=t) for n, t in
                enumerate(parse_titles(data.get("titles", ""), max_titles, max_title_length,
                                       errors), 1)]
    elif not rows:
        errors.add("rows", _("The import has no usable rows."))
    model = (_text(data, "model", _l("Model"), errors, required=False, max_len=100)
             or default_model)
    if not _MODEL_RE.match(model):
        errors.add("model", _("Model names use letters, digits and . _ : / @ + - only."))
    elif allowed_models and model not in allowed_models:
        errors.add("model", _("Choose one of: %(models)s.", models=", ".join(allowed_models)))
    words_raw = data.get("target_words", 800)
    try:
        if isinstance(words_raw, bool):
            raise ValueError
        target_words = int(str(words_raw).strip()) if str(words_raw).strip() else 800
        if not MIN_WORDS <= target_words <= MAX_WORDS:
            # The same numbers for either unit: the batch's language says which it is.
            if unit_for_language(str(data.get("language") or "")) == CHARACTERS:
                message = _("Target length must be between %(least)s and %(most)s characters.",
                            least=MIN_WORDS, most=MAX_WORDS)
            else:
                message = _("Target length must be between %(least)s and %(most)s words.",
                            least=MIN_WORDS, most=MAX_WORDS)
            errors.add("target_words", message)
    except (TypeError, ValueError):
        errors.add("target_words", _("Target length must be a whole number."))
        target_words = 0
    tone = _text(data, "tone", _l("Tone"), errors, required=False, max_len=50) or "neutral"
    if tone not in TONES:
        errors.add("tone", _("Tone must be one of: %(tones)s.", tones=", ".join(TONES)))
    # The default is the articles' language, sent in the prompt: not translated.
    language = (_text(data, "language", _l("Language"), errors, required=False, max_len=50)
                or "English")
    instructions = _text(data, "instructions", _l("Extra instructions"), errors,
                         required=False, max_len=2000)
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
            errors.add("template_id", _("Choose a template from the list."))
    mode = data.get("mode") or BatchMode.STANDARD
    if mode not in BatchMode.ALL:
        errors.add("mode", _("Mode must be “standard” (written now) or “economy” (the "
                             "provider's Batch API, within 24 h)."))
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
        errors.add("webhook_url", _("The webhook URL must be text."))
        return None
    url = raw.strip()
    try:
        parts = urlsplit(url)
        local = netguard.static_refusal(url, allowed_hosts)
    except (ValueError, netguard.Refused):  # e.g. "http://[::1", or a port out of range
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname \
            or len(url) > 500 or any(c.isspace() or ord(c) < 32 for c in url):
        errors.add("webhook_url", _("The webhook URL must be an http:// or https:// address "
                                    "of at most 500 characters."))
        return None
    if local:
        errors.add("webhook_url", _("The webhook URL points at a private or local address; "
                                    "use a public address, or ask an administrator to allow "
                                    "an internal receiver (WEBHOOK_ALLOWED_HOSTS)."))
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
        errors.add("budget_usd", _("Budget must be an amount in US dollars, like 2.50."))
        return None
    if not 0 < value <= MAX_BUDGET or value != value:
        most = format(MAX_BUDGET, ",.0f")
        errors.add("budget_usd", _("Budget must be more than 0 and at most %(most)s dollars.",
                                   most=most))
        return None
    return value
