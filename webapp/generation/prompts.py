"""Prompts: the row a template sees, the default template, and the prompt for one article.

Editors' templates are untrusted text: template_check.py holds them to a small subset of
Jinja, and templating.py renders them with an output budget, a loop budget and a deadline.
This module binds that machinery to an article's row (VARIABLES) and is what the rest of
the app calls; the template names it re-exports below are the ones callers use.
"""
from __future__ import annotations

from typing import Optional

from sqlalchemy import func

from . import templating
from .lengths import unit_for_language
from ..models import Article, Batch
from .provider import Prompt
from .template_check import FILTERS, METHODS, TemplateRefused
from .templating import (MAX_LOOP_ITERATIONS, MAX_TEMPLATE_LENGTH, OUTPUT_BUDGET,
                         ROWS_RENDER_SECONDS, RowRefused, output_budget)

__all__ = ["DEFAULT_TEMPLATE", "FILTERS", "MAX_LOOP_ITERATIONS", "MAX_TEMPLATE_LENGTH",
           "METHODS", "OUTPUT_BUDGET", "ROWS_RENDER_SECONDS", "ROW_VARIABLES", "RowRefused",
           "SAMPLE_ROW", "TemplateRefused", "VARIABLES", "build_prompt", "check",
           "output_budget", "render", "validate"]

# What a row gives a template, and what a template may name: those, and `unit`, which is
# not typed anywhere but follows from the language ("words", or "characters" for Chinese
# and Japanese: lengths.py), so that `{{ words }} {{ unit }}` says the target rightly.
ROW_VARIABLES = ("title", "keywords", "tone", "words", "language", "notes")
VARIABLES = ROW_VARIABLES + ("unit",)

DEFAULT_TEMPLATE = """Title: {{ title }}
Write a complete article of about {{ words }} {{ unit }}\
{% if unit == "characters" %} (字){% endif %} with this title.
Tone: {{ tone }}
Language: {{ language }}
{% if keywords %}Keywords to work in naturally: {{ keywords }}
{% endif %}{% if notes %}Notes from the editor: {{ notes }}
{% endif %}Use Markdown, and start with a level-one heading that is the title."""

SAMPLE_ROW = {"title": "Ten quiet places to read in the city", "keywords": "libraries, parks",
              "tone": "friendly", "words": 800, "language": "English",
              "notes": "Mention opening hours where known."}


def validate(template_text: str) -> None:
    """Raise TemplateRefused when the text is not a template Pressroom runs."""
    templating.validate(template_text, VARIABLES)


def render(template_text: str, row: dict, *, budget: Optional[int] = None,
           deadline: Optional[float] = None) -> str:
    """The template with one article's row. TemplateRefused says why the template cannot
    be used; RowRefused (a kind of it) why it cannot be used for this row.

    `deadline` (a time.monotonic() value) lets a caller rendering many rows share one
    time limit (ROWS_RENDER_SECONDS)."""
    row = dict(row, unit=unit_for_language(row.get("language")))
    return templating.render(template_text, row, VARIABLES, budget=budget, deadline=deadline)


def check(template_text: str) -> Optional[str]:
    """Why a template cannot be used, or None when it renders the sample row."""
    try:
        validate(template_text)
        render(template_text, SAMPLE_ROW)
    except TemplateRefused as exc:
        return str(exc)
    return None


def build_prompt(template_text: str, *, title: str, words: int, tone: str, language: str,
                 keywords: str = "", notes: str = "", instructions: str = "",
                 extra_instructions: str = "", deadline: Optional[float] = None) -> Prompt:
    """The prompt for one article: the template with its row, then any instructions.

    Raises TemplateRefused when the template cannot be used for this row."""
    text = render(template_text or DEFAULT_TEMPLATE,
                  {"title": title, "keywords": keywords, "tone": tone, "words": words,
                   "language": language, "notes": notes}, deadline=deadline)
    if instructions:
        text += f"\n\nInstructions for the whole batch: {instructions}"
    if extra_instructions:
        text += f"\n\nInstructions for this version: {extra_instructions}"
    return Prompt(title=title, words=words, user_text=text)


# What an article's prompt is made of, read in the statement that loads it (select these
# from Article joined to Batch): the row's own settings, else its batch's.
ROW_COLUMNS = (Article.title, Article.keywords, Article.notes, Article.extra_instructions,
               func.coalesce(Article.tone, Batch.tone).label("tone"),
               func.coalesce(Article.language, Batch.language).label("language"),
               func.coalesce(Article.target_words, Batch.target_words).label("target_words"),
               Batch.instructions, Batch.template_text)


def prompt_for(row) -> Prompt:
    """The prompt of an article loaded with ROW_COLUMNS; raises TemplateRefused."""
    return build_prompt(row.template_text, title=row.title, words=row.target_words,
                        tone=row.tone, language=row.language, keywords=row.keywords or "",
                        notes=row.notes or "", instructions=row.instructions or "",
                        extra_instructions=row.extra_instructions or "")
