"""Prompt templates: Jinja text with a few variables, rendered in a sandbox.

Editors write templates, so they are untrusted: the sandbox refuses attribute tricks, and
an unknown variable is an error at save time rather than a silent blank in every prompt.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from .provider import Prompt

VARIABLES = ("title", "keywords", "tone", "words", "language", "notes")

DEFAULT_TEMPLATE = """Title: {{ title }}
Write a complete article of about {{ words }} words with this title.
Tone: {{ tone }}
Language: {{ language }}
{% if keywords %}Keywords to work in naturally: {{ keywords }}
{% endif %}{% if notes %}Notes from the editor: {{ notes }}
{% endif %}Use Markdown, and start with a level-one heading that is the title."""

SAMPLE_ROW = {"title": "Ten quiet places to read in the city", "keywords": "libraries, parks",
              "tone": "friendly", "words": 800, "language": "English",
              "notes": "Mention opening hours where known."}

MAX_TEMPLATE_LENGTH = 10_000

_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


@lru_cache(maxsize=256)
def _compiled(template_text: str):
    # Compiling costs about a millisecond of CPU; every article of a batch renders the same
    # template, so each text is compiled once per process. Templates render thread-safely.
    return _env.from_string(template_text)


def render(template_text: str, row: dict) -> str:
    values = {name: row.get(name) or "" for name in VARIABLES}
    return _compiled(template_text).render(**values).strip()


def check(template_text: str) -> Optional[str]:
    """Why a template cannot be used, or None when it renders the sample row."""
    if not template_text.strip():
        return "The template is empty."
    if len(template_text) > MAX_TEMPLATE_LENGTH:
        return f"A template may be at most {MAX_TEMPLATE_LENGTH:,} characters."
    try:
        render(template_text, SAMPLE_ROW)
    except TemplateError as exc:
        return f"The template does not render: {exc.message or exc}"
    return None


def build_prompt(template_text: str, *, title: str, words: int, tone: str, language: str,
                 keywords: str = "", notes: str = "", instructions: str = "",
                 extra_instructions: str = "") -> Prompt:
    """The prompt for one article: the template with its row, then any instructions."""
    text = render(template_text or DEFAULT_TEMPLATE,
                  {"title": title, "keywords": keywords, "tone": tone, "words": words,
                   "language": language, "notes": notes})
    if instructions:
        text += f"\n\nInstructions for the whole batch: {instructions}"
    if extra_instructions:
        text += f"\n\nInstructions for this version: {extra_instructions}"
    return Prompt(title=title, words=words, user_text=text)
