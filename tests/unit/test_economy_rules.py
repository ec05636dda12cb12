"""Economy mode's pure rules: the Batch API's discount, how often a provider batch is asked
about, and the custom ids that tie a result line to its article."""
from __future__ import annotations

import pytest

from webapp.generation import economy, economy_import
from webapp.generation.pricing import discount_for


def test_the_batch_discount_is_half_by_default_and_overridable_per_model():
    assert discount_for({}, "gpt-4o-mini") == 0.5
    config = {"BATCH_DISCOUNT": 0.6, "BATCH_DISCOUNTS": '{"gpt-4o": 0.4}'}
    assert discount_for(config, "gpt-4o") == 0.4
    assert discount_for(config, "gpt-4o-mini") == 0.6


def test_a_malformed_discount_table_is_refused_saying_how_to_write_it():
    with pytest.raises(ValueError, match="BATCH_DISCOUNTS must be JSON"):
        discount_for({"BATCH_DISCOUNTS": "[0.5"}, "gpt-4o")


def test_questions_back_off_while_nothing_changes_and_never_exceed_the_maximum(bare_app):
    bare_app.config.update(ECONOMY_POLL_SECONDS=30.0, ECONOMY_POLL_MAX_SECONDS=600.0)
    waits = [economy.next_check_in(n) for n in range(8)]
    assert waits[:4] == [30.0, 60.0, 120.0, 240.0]
    assert waits == sorted(waits) and max(waits) == 600.0
    assert economy.next_check_in(10_000) == 600.0  # no overflow after days of silence


@pytest.mark.parametrize("article_id, attempt", [(1, 1), (123456, 3)])
def test_a_custom_id_names_the_article_and_its_attempt(article_id, attempt):
    custom = economy_import.custom_id(article_id, attempt)
    assert custom == f"article-{article_id}-attempt-{attempt}"
    assert economy_import.article_of(custom) == article_id


@pytest.mark.parametrize("custom", ["", None, "article-x-attempt-1", "request-1", "article-1"])
def test_a_custom_id_that_is_not_ours_names_no_article(custom):
    assert economy_import.article_of(custom) is None
