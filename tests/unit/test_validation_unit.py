"""Checking a batch's input (webapp/services/validation.py), field by field: every bad value
gets a message under its own field name, and nothing clean comes back while anything is
wrong. No lookups: a webhook host is only judged by what needs none."""
from __future__ import annotations

import pytest

from webapp.services.validation import MAX_ID, Row, validate_batch

GOOD = {"name": "Spring guides", "titles": "Quiet parks\nNight markets\n"}


def check(overrides=None, *, rows=None, allowed_models=("gpt-4o-mini", "gpt-4o"),
          max_titles=5, max_title_length=40, webhook_allowed_hosts=""):
    data = dict(GOOD, **(overrides or {}))
    return validate_batch(data, default_model="gpt-4o-mini", allowed_models=list(allowed_models),
                          max_titles=max_titles, max_title_length=max_title_length, rows=rows,
                          webhook_allowed_hosts=webhook_allowed_hosts)


def refused(overrides=None, **kwargs) -> dict[str, list[str]]:
    clean, errors = check(overrides, **kwargs)
    assert clean is None, "a bad input came back as clean"
    return errors.fields


def test_a_good_batch_comes_back_clean_with_the_defaults():
    clean, errors = check({"titles": "  Quiet parks  \n\n\nNight markets"})
    assert not errors and errors.fields == {}
    assert clean.titles == ["Quiet parks", "Night markets"]
    assert [row.number for row in clean.rows] == [1, 2]
    assert (clean.name, clean.model, clean.target_words, clean.tone, clean.language) == (
        "Spring guides", "gpt-4o-mini", 800, "neutral", "English")
    assert (clean.budget_usd, clean.template_id, clean.webhook_url) == (None, None, None)


def test_titles_from_the_api_as_a_list():
    clean, _ = check({"titles": ["Tides", "  Harbours "]})
    assert clean.titles == ["Tides", "Harbours"]


@pytest.mark.parametrize("titles, message", [
    ("", "Enter at least one title."),
    ("\n   \n", "Enter at least one title."),
    ([1, 2], "Titles must be text, one title a line (or a list of strings)."),
    ({"t": "x"}, "Titles must be text, one title a line (or a list of strings)."),
])
def test_no_titles_or_titles_that_are_not_text(titles, message):
    assert refused({"titles": titles}) == {"titles": [message]}


def test_too_many_titles():
    fields = refused({"titles": "\n".join(f"Title {n}" for n in range(7))})
    assert fields == {"titles": ["7 titles given; a batch takes at most 5."]}


def test_titles_too_long_name_their_lines():
    titles = ["ok", "x" * 41, "fine", "y" * 60]
    assert refused({"titles": "\n".join(titles)}) == {
        "titles": ["Titles may be at most 40 characters; too long on lines 2, 4."]}
    assert refused({"titles": "x" * 41}) == {
        "titles": ["Titles may be at most 40 characters; too long on line 1."]}


def test_control_characters_in_a_title():
    assert refused({"titles": ["Fine", "Tab\there", "Nul\x00"]}) == {
        "titles": ["Control characters are not allowed (line 2, 3)."]}


def test_duplicate_titles_ignore_case_and_name_both_lines():
    fields = refused({"titles": "Tides\nHarbours\ntides\nHARBOURS"})
    assert fields == {"titles": ["Duplicate titles: “tides” (lines 1 and 3); "
                                 "“HARBOURS” (lines 2 and 4)."]}


def test_many_duplicates_are_summarised():
    fields = refused({"titles": ["Same"] * 13}, max_titles=20)
    (message,) = fields["titles"]
    assert message.count("“Same”") == 10 and message.endswith("; and 2 more.")


@pytest.mark.parametrize("words, message", [
    ("lots", "Target length must be a whole number."),
    ("8.5", "Target length must be a whole number."),
    (True, "Target length must be a whole number."),
    ("49", "Target length must be between 50 and 5000 words."),
    (5001, "Target length must be between 50 and 5000 words."),
])
def test_a_bad_target_length(words, message):
    assert refused({"target_words": words}) == {"target_words": [message]}


def test_a_chinese_batch_counts_its_target_in_characters():
    assert refused({"target_words": "20000", "language": "繁體中文"}) == {
        "target_words": ["Target length must be between 50 and 5000 characters."]}


def test_a_target_length_is_read_from_text_and_blank_means_the_default():
    assert check({"target_words": " 1200 "})[0].target_words == 1200
    assert check({"target_words": ""})[0].target_words == 800


@pytest.mark.parametrize("raw, expected", [("2.50", 2.5), ("$12", 12.0), (3, 3.0), ("", None)])
def test_a_budget_in_dollars(raw, expected):
    assert check({"budget_usd": raw})[0].budget_usd == expected


@pytest.mark.parametrize("raw, message", [
    ("two dollars", "Budget must be an amount in US dollars, like 2.50."),
    (True, "Budget must be an amount in US dollars, like 2.50."),
    ("0", "Budget must be more than 0 and at most 100,000 dollars."),
    ("-5", "Budget must be more than 0 and at most 100,000 dollars."),
    ("100000.01", "Budget must be more than 0 and at most 100,000 dollars."),
    ("nan", "Budget must be more than 0 and at most 100,000 dollars."),
])
def test_a_bad_budget(raw, message):
    assert refused({"budget_usd": raw}) == {"budget_usd": [message]}


@pytest.mark.parametrize("model, message", [
    ("gpt 4o; drop", "Model names use letters, digits and . _ : / @ + - only."),
    ("o4-mini", "Choose one of: gpt-4o-mini, gpt-4o."),
])
def test_a_bad_or_unlisted_model(model, message):
    assert refused({"model": model}) == {"model": [message]}


def test_any_well_formed_model_when_no_list_is_set():
    assert check({"model": "org/my-model:v2"}, allowed_models=())[0].model == "org/my-model:v2"


def test_name_tone_and_language_are_checked_under_their_own_fields():
    fields = refused({"name": "  ", "tone": "grumpy", "language": "x" * 51,
                      "instructions": 7})
    assert fields == {"name": ["Name is required."],
                      "tone": ["Tone must be one of: neutral, friendly, formal, persuasive, "
                               "playful, authoritative."],
                      "language": ["Language may be at most 50 characters."],
                      "instructions": ["Extra instructions must be text."]}


@pytest.mark.parametrize("raw, expected", [("7", 7), (7, 7), ("0", None), ("", None)])
def test_a_template_choice(raw, expected):
    assert check({"template_id": raw})[0].template_id == expected


@pytest.mark.parametrize("raw", ["seven", "-3", str(MAX_ID + 1)])
def test_a_bad_template_choice(raw):
    assert refused({"template_id": raw}) == {"template_id": ["Choose a template from the list."]}


@pytest.mark.parametrize("url", ["http://127.0.0.1:5432/", "http://169.254.169.254/latest",
                                 "http://0x7f000001/", "http://[::1]/hook",
                                 "https://api.localhost/x"])
def test_a_webhook_to_a_local_address_is_refused_without_a_lookup(url):
    (message,) = refused({"webhook_url": url})["webhook_url"]
    assert "private or local address" in message and "WEBHOOK_ALLOWED_HOSTS" in message


@pytest.mark.parametrize("url", ["ftp://hooks.example.com/x", "http://[::1", "hooks.example.com",
                                 "http://hooks.example.com:99999/", "https://a.example/ x",
                                 "https://a.example/" + "x" * 500, 42])
def test_a_webhook_that_is_not_an_http_url(url):
    (message,) = refused({"webhook_url": url})["webhook_url"]
    assert message.startswith("The webhook URL must be")


def test_a_public_or_allowed_webhook_is_kept():
    assert check({"webhook_url": " https://hooks.example.com/done "})[0].webhook_url == \
        "https://hooks.example.com/done"
    allowed = check({"webhook_url": "http://10.0.0.7:8080/in"},
                    webhook_allowed_hosts="10.0.0.7:8080")[0]
    assert allowed.webhook_url == "http://10.0.0.7:8080/in"


def test_rows_from_an_import_replace_the_titles():
    rows = [Row(number=2, title="From the sheet", tone="formal")]
    clean, _ = check({"titles": ""}, rows=rows)
    assert clean.rows == rows
    assert refused({"titles": "Ignored"}, rows=[]) == {"rows": ["The import has no usable rows."]}


def test_every_problem_is_reported_at_once():
    fields = refused({"name": "", "titles": "", "target_words": "x", "tone": "?",
                      "budget_usd": "-1", "template_id": "t", "webhook_url": "ftp://x"})
    assert set(fields) == {"name", "titles", "target_words", "tone", "budget_usd",
                           "template_id", "webhook_url"}
