"""The interface is translated completely: every string a person sees is wrapped for
translation, and both Chinese catalogs translate every wrapped string.

Three checks, each failing with the list of what is missing:
- the messages extracted from the code and templates (as `make messages` extracts them) all
  have a translation, not fuzzy, with the same placeholders, in zh_Hans and zh_Hant;
- no template shows English text outside `_()` / `{% trans %}`;
- no page-facing Python module (views, services, forms) holds an English sentence outside
  `_()`, `_l()` or `ngettext()`.
"""
from __future__ import annotations

import ast
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from jinja2 import Environment
from jinja2.ext import i18n as jinja_i18n

ROOT = Path(__file__).resolve().parents[2]
TRANSLATIONS = ROOT / "webapp" / "translations"
LOCALES = ("zh_Hans", "zh_Hant")
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "_l": None, "lazy_gettext": None,
            "lazy_ngettext": (1, 2)}


def extracted() -> dict[str, tuple[str, str]]:
    """msgid → (file, line) of every wrapped string, read as `make messages` reads them."""
    method_map = [("webapp/**.py", "python"), ("templates/**.html", "jinja2")]
    found = {}
    # Babel skips folders whose names start with "_" unless told otherwise: not _partials.
    for filename, lineno, message, _comments, _context in extract_from_dir(
            str(ROOT), method_map=method_map, keywords=KEYWORDS,
            directory_filter=lambda path: not Path(path).name.startswith(".")):
        msgid = message[0] if isinstance(message, (tuple, list)) else message
        found.setdefault(msgid, (filename, lineno))
    return found


def catalog(locale: str):
    with open(TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po", "rb") as f:
        return read_po(f, locale=locale)


PLACEHOLDER = re.compile(r"%\(\w+\)[-#0 +]*\d*(?:\.\d+)?[sdif]|%[sdif]")


@pytest.mark.parametrize("locale", LOCALES)
def test_every_message_is_translated(locale):
    messages = extracted()
    assert len(messages) > 50, "the extraction found almost nothing: is babel.cfg right?"
    assert any(f.startswith("templates/_partials/") for f, _ in messages.values())
    cat = catalog(locale)
    problems = []
    for msgid, (filename, lineno) in sorted(messages.items()):
        entry = cat.get(msgid)
        where = f"{filename}:{lineno}: {msgid!r}"
        if entry is None:
            problems.append(f"not in the {locale} catalog (run `make messages`): {where}")
            continue
        strings = entry.string if isinstance(entry.string, (tuple, list)) else (entry.string,)
        if not all(s and s.strip() for s in strings):
            problems.append(f"no {locale} translation: {where}")
        elif entry.fuzzy:
            problems.append(f"fuzzy {locale} translation: {where}")
        else:
            wanted = sorted(PLACEHOLDER.findall(msgid))
            for s in strings:
                if sorted(PLACEHOLDER.findall(s)) != wanted:
                    problems.append(f"{locale} translation has other placeholders: {where} "
                                    f"→ {s!r}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- templates

# Words that are the same in every language here: the product, formats, protocols.
SAME_IN_EVERY_LANGUAGE = {"Pressroom", "API", "CSV", "JSON", "Markdown", "HTML", "URL", "UTC",
                          "ZIP", "zip", "SDK", "OpenAI", "HTTP", "HMAC", "SHA256", "Celery",
                          "Redis", "Flower", "PostgreSQL", "SQLite", "htmx", "ID", "id", "MB",
                          "KB", "ms", "s", "p50", "p95", "p99", "English", "简体中文",
                          "繁體中文", "Bearer", "tiktoken", "Jinja", "UTF"}
# Attributes whose values a person reads or hears.
SHOWN_ATTRIBUTES = {"title", "placeholder", "aria-label", "alt", "label", "data-confirm",
                    "hx-confirm", "aria-description", "aria-roledescription"}
LETTERS = re.compile(r"[A-Za-z]{2,}")
PLACE = "\x00"  # stands for a Jinja expression inside the template's own text


def _unknown_words(text: str) -> list[str]:
    return [w for w in LETTERS.findall(text) if w not in SAME_IN_EVERY_LANGUAGE]


class _Shown(HTMLParser):
    """Collects the text and shown attribute values of HTML (scripts and styles skipped)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.shown: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "code", "pre"):
            self._skip += 1
        for name, value in attrs:
            if name in SHOWN_ATTRIBUTES and value:
                self.shown.append(value)

    def handle_endtag(self, tag):
        if tag in ("script", "style", "code", "pre") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.shown.append(data)


def template_text(source: str) -> str:
    """The template's own HTML with every Jinja tag, comment and trans block taken out."""
    env = Environment(extensions=[jinja_i18n])
    out, in_trans, in_block = [], 0, False
    for _lineno, kind, value in env.lex(source):
        if kind == "block_begin":
            in_block, words = True, []
            continue
        if in_block:
            if kind == "name" and not words:
                words.append(value)
                if value == "trans":
                    in_trans += 1
                elif value == "endtrans":
                    in_trans -= 1
            if kind == "block_end":
                in_block = False
            continue
        if kind == "data" and not in_trans:
            out.append(value)
        elif kind == "variable_begin":
            out.append(PLACE)
    return "".join(out)


def test_templates_show_no_unwrapped_english():
    problems = []
    for path in sorted((ROOT / "templates").rglob("*.html")):
        parser = _Shown()
        parser.feed(template_text(path.read_text(encoding="utf-8")))
        parser.close()
        for text in parser.shown:
            words = _unknown_words(text.replace(PLACE, " "))
            if words:
                problems.append(f"{path.relative_to(ROOT)}: {' '.join(text.split())[:90]!r}")
    assert not problems, ("English outside _() in templates:\n" + "\n".join(problems))


def test_the_template_check_sees_what_it_should():
    """The checker itself: plain text and shown attributes count; wrapped text does not."""
    def shown(source):
        parser = _Shown()
        parser.feed(template_text(source))
        return [t for t in parser.shown if _unknown_words(t.replace(PLACE, " "))]

    assert shown("<p>Hello there</p>") == ["Hello there"]
    assert shown('<input placeholder="Search titles">') == ["Search titles"]
    assert shown("<p>{{ _('Hello there') }}</p>") == []
    assert shown("<p>{% trans %}Hello there{% endtrans %}</p>") == []
    assert shown("<p>{{ count }} · Pressroom · CSV</p>") == []
    assert shown("<script>var x = 'Hello there';</script>") == []


# ---------------------------------------------------------------- Python

# Modules whose strings reach a page. The JSON API (blueprints/api.py), the CLI, logs and
# workers speak English only.
PAGE_FACING = ["webapp/forms.py", "webapp/labels.py", "webapp/i18n.py",
               *[f"webapp/blueprints/{p.name}" for p in (ROOT / "webapp/blueprints").glob("*.py")
                 if p.name not in ("api.py", "ops.py")],
               *[f"webapp/services/{p.name}" for p in (ROOT / "webapp/services").glob("*.py")]]
WRAPPERS = {"_", "gettext", "ngettext", "_l", "lazy_gettext", "lazy_ngettext"}
# Calls whose string arguments a person never reads on a page.
NOT_SHOWN = {"debug", "info", "warning", "error", "exception", "critical", "log", "record",
             "text", "execute", "error_response", "api_error", "getLogger", "startswith",
             "endswith", "split", "replace", "strip", "join", "get", "format_datetime",
             "encode", "decode", "ApiError", "strftime", "strptime", "label", "compile",
             "set_cookie", "redirect", "url_for", "sub", "match", "fullmatch", "search"}
# Starts with a capital and has at least two words (or holds two sentences).
SENTENCE = re.compile(r"^[A-Z][a-z']*[,;:—–]?\s+\S.*[a-z0-9)”'.?!:]$|[a-z]{3,}\. [A-Z]")


def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def unwrapped_sentences(source: str) -> list[tuple[int, str]]:
    """(line, text) of the English sentences in a module that no gettext call wraps."""
    tree = ast.parse(source)
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                skip.add(id(body[0].value))  # a docstring
        if isinstance(node, ast.Call) and (_call_name(node) in WRAPPERS
                                           or _call_name(node) in NOT_SHOWN):
            for inner in ast.walk(node):
                skip.add(id(inner))
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}"
                           for v in node.values)
            for inner in ast.walk(node):
                skip.add(id(inner))
        else:
            continue
        if SENTENCE.search(text.strip()) and _unknown_words(text):
            found.append((node.lineno, text))
    return found


def test_page_facing_python_wraps_its_sentences():
    problems = []
    for name in sorted(set(PAGE_FACING)):
        path = ROOT / name
        for line, text in unwrapped_sentences(path.read_text(encoding="utf-8")):
            problems.append(f"{name}:{line}: {text[:90]!r}")
    assert not problems, ("English sentences outside _() in page-facing code:\n"
                          + "\n".join(problems))


def test_no_message_is_built_before_it_is_translated():
    """`_(f"…{x}")` or `_("…" + x)` looks a message up by text that no catalog holds."""
    problems = []
    for path in sorted((ROOT / "webapp").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and _call_name(node) in WRAPPERS and node.args
                    and (isinstance(node.args[0], (ast.JoinedStr, ast.BinOp))
                         or isinstance(node.args[0], ast.Call)
                         and _call_name(node.args[0]) == "format")):
                problems.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not problems, "messages built before translation:\n" + "\n".join(problems)


def test_the_python_check_sees_what_it_should():
    source = '''
"""A docstring. Not shown."""
from flask import flash
flash("The batch was cancelled.")
flash(_("The batch was cancelled."))
logger.warning("Could not reach Redis, retrying.")
message = f"Row {n} has no title."
name = "succeeded"
'''
    assert sorted(line for line, _ in unwrapped_sentences(source)) == [4, 7]
