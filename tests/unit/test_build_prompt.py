"""The prompt for one article (webapp/generation/prompts.py `build_prompt`): the template
with the article's row, then the batch's and the version's instructions, in that order."""
from __future__ import annotations

import pytest

from webapp.generation import prompts

ROW = {"title": "Tides", "words": 300, "tone": "formal", "language": "English"}


def test_an_empty_template_means_the_default_one():
    prompt = prompts.build_prompt("", **ROW, keywords="moon, sea", notes="Cite tables.")
    assert prompt.user_text == (
        "Title: Tides\n"
        "Write a complete article of about 300 words with this title.\n"
        "Tone: formal\n"
        "Language: English\n"
        "Keywords to work in naturally: moon, sea\n"
        "Notes from the editor: Cite tables.\n"
        "Use Markdown, and start with a level-one heading that is the title.")
    assert (prompt.title, prompt.words) == ("Tides", 300)


def test_the_default_template_leaves_out_empty_keywords_and_notes():
    text = prompts.build_prompt("", **ROW).user_text
    assert "Keywords" not in text and "Notes" not in text
    assert text.endswith("Language: English\nUse Markdown, and start with a level-one heading "
                         "that is the title.")


def test_no_instructions_adds_nothing():
    assert prompts.build_prompt("About {{ title }}.", **ROW).user_text == "About Tides."


def test_batch_instructions_alone():
    prompt = prompts.build_prompt("About {{ title }}.", **ROW, instructions="Use British spelling.")
    assert prompt.user_text == ("About Tides.\n\n"
                                "Instructions for the whole batch: Use British spelling.")


def test_version_instructions_alone():
    prompt = prompts.build_prompt("About {{ title }}.", **ROW, extra_instructions="Shorter.")
    assert prompt.user_text == "About Tides.\n\nInstructions for this version: Shorter."


def test_every_variable_reaches_the_template():
    text = prompts.build_prompt(" ".join(f"[{{{{ {name} }}}}]" for name in prompts.VARIABLES),
                                **ROW, keywords="k", notes="n").user_text
    # `unit` is no column of the row: it follows from the language (lengths.py).
    assert text == "[Tides] [k] [formal] [300] [English] [n] [words]"


def test_the_prompt_asks_for_enough_tokens_for_the_length():
    prompt = prompts.build_prompt("", **dict(ROW, words=1000))
    assert prompt.max_tokens() == 2200
    system, user = prompt.messages()
    assert (system["role"], user["role"]) == ("system", "user")
    assert user["content"] == prompt.user_text


def test_a_template_that_breaks_on_this_row_is_refused_naming_why():
    with pytest.raises(prompts.RowRefused, match="does not render for this row"):
        prompts.build_prompt("{{ words // 0 }}", **ROW)
    with pytest.raises(prompts.TemplateRefused, match="'topic' is undefined"):
        prompts.build_prompt("{{ topic }}", **ROW)


def test_a_missing_or_empty_value_renders_as_nothing():
    # A preview row typed into a form may leave fields out; None is not the word "None".
    assert prompts.render("[{{ title }}|{{ notes }}|{{ keywords }}]",
                          {"title": "T", "notes": None}) == "[T||]"
