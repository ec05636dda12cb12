"""Prompt templates: the Jinja subset, the output budget while rendering, the loop budget,
the deadline, and the sandbox hooks behind the tree check (webapp/generation/prompts.py,
template_check.py, templating.py)."""
from __future__ import annotations

import time
import tracemalloc

import pytest

from webapp.generation import prompts, templating
from webapp.generation.prompts import RowRefused, TemplateRefused

# Each is refused, and none may hold the process: two seconds is a guard against a hang,
# not a speed goal (a refusal takes milliseconds).
HANG_GUARD = 2.0

BOMBS = {
    "repeat": ("{{ title * 200000000 }}", "the operator '*' is not allowed"),
    "range": ("{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}",
              "loops may only go over the row's values (such as keywords.split(',')), "
              "not range(...)"),
    "format": ("{{ '{:>300000000}'.format(title) }}", "calling '.format()' is not allowed"),
    "center": ("{{ title|center(300000000) }}", "the filter 'center' is not allowed"),
    "percent": ('{{ "%300000000s" % title }}', "the operator '%' is not allowed"),
    "power": ("{{ words ** 99999999 }}", "the operator '**' is not allowed"),
    "indent": ("{{ notes|indent(300000000) }}", "the filter 'indent' is not allowed"),
    "zfill": ("{{ title.zfill(300000000) }}", "calling '.zfill()' is not allowed"),
    "ljust": ("{{ title.ljust(300000000) }}", "calling '.ljust()' is not allowed"),
    "expandtabs": ("{{ notes.expandtabs(99999999) }}", "calling '.expandtabs()' is not allowed"),
    "set": ("{% set x = title %}{{ x }}", "{% set %} is not allowed"),
    "macro": ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "{% macro %} is not allowed"),
    "include": ("{% include 'other.txt' %}", "{% include %} is not allowed"),
    "extends": ("{% extends 'base.txt' %}", "{% extends %} is not allowed"),
    "import": ("{% import 'x' as x %}", "{% import %} is not allowed"),
    "recursive": ("{% for k in keywords recursive %}{{ loop(k) }}{% endfor %}",
                  "recursive loops are not allowed"),
    "literal loop": ("{% for i in [1, 2, 3] %}x{% endfor %}",
                     "not a list written in the template"),
    "lipsum": ("{{ lipsum(99999) }}", "calling lipsum() is not allowed"),
    "namespace": ("{{ namespace }}", "'namespace' is not available in templates"),
    "dunder": ("{{ title.__class__.__mro__ }}", "is unsafe"),
    "item": ("{{ title['__class__'] }}", "is unsafe"),
    "map": ("{{ keywords|map('center', 99999999)|join }}", "the filter 'map' is not allowed"),
    "filter block": ("{% filter upper %}{{ title }}{% endfilter %}",
                     "{% filter %} is not allowed"),
    "unpacking": ("{{ title.split(*keywords) }}", "unpacking arguments"),
    "deep chain": ("{{ title" + "|upper" * 300 + " }}", "may be nested at most"),
    "deep blocks": ("{% if title %}" * 30 + "x" + "{% endif %}" * 30, "nested at most"),
    "deep brackets": ("{{ " + "(" * 4000 + "title" + ")" * 4000 + " }}", "nested too deeply"),
}

# Fine on the sample row; over the budget for a long real row.
LONG_ROW_BOMB = "{% for k in keywords.split(',') %}{{ notes }}{% endfor %}"
LONG_ROW = dict(prompts.SAMPLE_ROW, keywords=",".join(["kw"] * 160), notes="n" * 2000)

ALLOWED = """Title: {{ title|upper }} ({{ words }} words, {{ language|lower }})
{% if tone == 'formal' %}Be formal.{% elif tone == 'friendly' and words > 500 %}\
Be friendly, at length.{% else %}Be plain.{% endif %}
{% for k in keywords.split(',') %}- {{ k|trim|capitalize }}{% if not loop.last %}
{% endif %}{% endfor %}
{{ notes|default('no notes', true)|truncate(20) }} / {{ keywords|replace(',', ';') }} / \
{{ title ~ '!' }}
{{ keywords.split(',')|join(' + ') }} / {{ title|wordcount }} words / {{ title[:3] }} / \
{{ words // 2 }}"""


def _timed(fn, *args, **kwargs):
    start = time.monotonic()
    try:
        return fn(*args, **kwargs), time.monotonic() - start
    except Exception as exc:
        return exc, time.monotonic() - start


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_each_bomb_is_refused_at_once_saying_why(name):
    text, why = BOMBS[name]
    error, elapsed = _timed(prompts.check, text)
    assert elapsed < HANG_GUARD, f"{name} took {elapsed:.2f} s"
    assert error is not None and why in error, (name, error)
    with pytest.raises(TemplateRefused):  # render() refuses it too, not only check()
        prompts.render(text, prompts.SAMPLE_ROW)


def test_a_template_fine_on_the_sample_row_is_refused_for_a_long_real_row():
    assert prompts.check(LONG_ROW_BOMB) is None  # it passes the save check
    result, elapsed = _timed(prompts.render, LONG_ROW_BOMB, LONG_ROW)
    assert elapsed < HANG_GUARD
    assert isinstance(result, RowRefused)
    assert "more than 20,000 characters (its output budget) for this row" in str(result)


def test_the_budget_stops_the_render_while_it_renders_not_after():
    """A loop that would write 4,000,000 characters: only a little is ever held."""
    text = "{% for c in notes %}{{ notes }}{{ notes }}{% endfor %}"
    tracemalloc.start()
    try:
        with pytest.raises(RowRefused, match="output budget"):
            prompts.render(text, LONG_ROW)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"{peak:,} bytes held: the output was made before it was counted"


def test_one_expression_cannot_make_a_huge_string_in_one_step():
    """Filters that can grow text check the size before they make it; chains stop at the
    first step past the budget."""
    for text in ("{{ keywords|replace('', 'xxxxxxxxxx')|replace('', 'xxxxxxxxxx') }}",
                 "{{ keywords" + "|join('xx')" * 20 + " }}",
                 "{{ " + " ~ ".join(["notes"] * 30) + " }}",
                 "{{ notes + notes + notes + notes + notes + notes + notes + notes + notes"
                 " + notes + notes }}"):
        result, elapsed = _timed(prompts.render, text, LONG_ROW)
        assert elapsed < HANG_GUARD, text
        assert isinstance(result, RowRefused) and "characters" in str(result), (text, result)
        assert "one expression alone would make" in str(result), text


def test_loops_that_write_nothing_are_bounded_too():
    text = "{% for a in notes %}{% for b in notes %}{% for c in notes %}{% endfor %}" \
           "{% endfor %}{% endfor %}"
    result, elapsed = _timed(prompts.render, text, LONG_ROW)
    assert elapsed < HANG_GUARD
    assert isinstance(result, RowRefused)
    assert f"loops run more than {prompts.MAX_LOOP_ITERATIONS:,} times" in str(result)


def test_a_render_past_its_deadline_is_refused():
    with pytest.raises(RowRefused, match="takes too long to render"):
        prompts.render("{% for k in keywords %}{{ k }}{% endfor %}", prompts.SAMPLE_ROW,
                       deadline=time.monotonic() - 1)


def test_the_allowed_subset_works():
    assert prompts.check(ALLOWED) is None
    row = dict(prompts.SAMPLE_ROW, tone="friendly", keywords="libraries, parks,quiet corners")
    assert prompts.render(ALLOWED, row) == (
        "Title: TEN QUIET PLACES TO READ IN THE CITY (800 words, english)\n"
        "Be friendly, at length.\n"
        "- Libraries\n- Parks\n- Quiet corners\n"
        "Mention opening... / libraries; parks;quiet corners / "
        "Ten quiet places to read in the city!\n"
        "libraries +  parks + quiet corners / 8 words / Ten / 400")
    formal = prompts.render(ALLOWED, dict(row, tone="formal", notes=""))
    assert "Be formal." in formal and "no notes" in formal
    assert "Be plain." in prompts.render(ALLOWED, dict(row, tone="friendly", words=300))
    # The shipped default is inside the subset.
    assert prompts.check(prompts.DEFAULT_TEMPLATE) is None


def test_an_unknown_variable_names_the_variables():
    error = prompts.check("Title: {{ title }}\nCover {{ topic }}.")
    assert error == ("The template does not render (line 2): 'topic' is undefined; the "
                     "variables are title, keywords, tone, words, language, notes, unit.")


def test_a_row_value_that_breaks_the_template_is_a_row_refusal():
    with pytest.raises(RowRefused, match="does not render for this row"):
        prompts.render("{{ words / 0 }}", prompts.SAMPLE_ROW)


def test_the_budget_comes_from_the_config(bare_app):
    bare_app.config["TEMPLATE_OUTPUT_BUDGET"] = 50
    assert prompts.output_budget() == 50
    with pytest.raises(RowRefused, match="more than 50 characters"):
        prompts.render("{{ title }} {{ notes }}", prompts.SAMPLE_ROW)
    assert prompts.render("{{ title }}", prompts.SAMPLE_ROW) == prompts.SAMPLE_ROW["title"]


def test_the_budget_without_an_app_is_the_default():
    assert prompts.output_budget() == prompts.OUTPUT_BUDGET == 20_000


@pytest.mark.parametrize("text, why", [
    ("{{ title * 200000000 }}", "the operator '*' is not allowed"),
    ('{{ "%300000000s" % title }}', "the operator '%' is not allowed"),
    ("{{ words ** 99999999 }}", "the operator '**' is not allowed"),
    ("{{ '{:>300000000}'.format(title) }}", "attribute 'format' of 'str' object is unsafe"),
    ("{{ title.zfill(300000000) }}", "attribute 'zfill' of 'str' object is unsafe"),
    ("{{ title['center'](300000000) }}", "attribute 'center' of 'str' object is unsafe"),
    ("{% for i in range(99999) %}x{% endfor %}", "is not allowed"),
])
def test_the_sandbox_hooks_refuse_what_the_tree_check_would(text, why):
    """The second line: compiled without the tree check, the hooks still refuse."""
    template = templating._env.from_string(text)
    result, elapsed = _timed(templating._run, template, prompts.SAMPLE_ROW, 20_000, None)
    assert elapsed < HANG_GUARD
    assert isinstance(result, RowRefused) and why in str(result), result


def test_filters_the_environment_does_not_have_do_not_compile():
    with pytest.raises(Exception, match="No filter named 'center'"):
        templating._env.from_string("{{ title|center(300000000) }}")


def test_build_prompt_adds_the_instructions_after_the_template():
    prompt = prompts.build_prompt("Write {{ title }}.", title="Tides", words=300,
                                  tone="formal", language="English", instructions="Be brief.",
                                  extra_instructions="Shorter.")
    assert prompt.user_text == ("Write Tides.\n\nInstructions for the whole batch: Be brief."
                                "\n\nInstructions for this version: Shorter.")
    with pytest.raises(RowRefused):
        prompts.build_prompt(LONG_ROW_BOMB, title="x", words=300, tone="formal",
                             language="English", keywords=LONG_ROW["keywords"],
                             notes=LONG_ROW["notes"])
