"""Prices and costs (webapp/generation/pricing.py): the price table with PRICE_TABLE
overrides, the price of a batch's provider and model, cost arithmetic, and the estimate."""
from __future__ import annotations

import pytest

from webapp.generation import pricing
from webapp.generation.provider import OFFLINE, Prompt
from webapp.generation.tokencount import count_chat_tokens


def test_cost_is_per_million_tokens_input_and_output_priced_apart():
    assert pricing.cost_of((0.15, 0.60), 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert pricing.cost_of((2.50, 10.00), 1_200, 800) == pytest.approx(0.011)
    assert pricing.cost_of((2.50, 10.00), 0, 0) == 0.0


def test_an_unknown_price_costs_nothing():
    assert pricing.cost_of(None, 5_000, 5_000) == 0.0


def test_the_default_table_without_overrides():
    table = pricing.price_table({})
    assert table == pricing.DEFAULT_PRICES
    assert table is not pricing.DEFAULT_PRICES  # a copy: callers may not change the defaults
    assert pricing.price_table({"PRICE_TABLE": ""}) == pricing.DEFAULT_PRICES


def test_price_table_overrides_and_extends_the_defaults():
    table = pricing.price_table(
        {"PRICE_TABLE": '{"gpt-4o-mini": [1, 2], "house-model": ["0.5", 3.25]}'})
    assert table["gpt-4o-mini"] == (1.0, 2.0)
    assert table["house-model"] == (0.5, 3.25)
    assert table["gpt-4o"] == pricing.DEFAULT_PRICES["gpt-4o"]
    assert pricing.DEFAULT_PRICES["gpt-4o-mini"] == (0.15, 0.60)  # left as it was


@pytest.mark.parametrize("raw", [
    "{gpt-4o: [1, 2]}",          # not JSON
    '["gpt-4o", 1, 2]',          # not an object
    '{"gpt-4o": [1]}',           # one price, not two
    '{"gpt-4o": 5}',             # not a pair
    '{"gpt-4o": ["cheap", 2]}',  # not a number
    '{"gpt-4o": [null, 2]}',
])
def test_a_bad_price_table_says_what_it_should_look_like(raw):
    with pytest.raises(ValueError,
                       match=r'PRICE_TABLE must be JSON like \{"model": \[input, output\]\}'):
        pricing.price_table({"PRICE_TABLE": raw})


def test_the_price_for_a_batch():
    config = {"PRICE_TABLE": '{"house-model": [0.2, 0.4]}'}
    assert pricing.price_for(config, "openai", "gpt-4.1-nano") == (0.10, 0.40)
    assert pricing.price_for(config, "openai-compatible (llm.internal)",
                             "house-model") == (0.2, 0.4)
    assert pricing.price_for(config, "openai", "no-such-model") is None
    # The offline provider is free whatever the model, even one with no price.
    assert pricing.price_for(config, OFFLINE, "no-such-model") == (0.0, 0.0)
    assert pricing.price_for(config, OFFLINE, "gpt-4o") == (0.0, 0.0)


def _prompts():
    return [Prompt("Tides", 300, "Write about tides."), Prompt("Harbours", 500, "Harbours.")]


def test_an_estimate_counts_prompts_and_expects_the_target_length():
    est = pricing.estimate({}, "openai", "gpt-4o-mini", _prompts())
    assert est.articles == 2
    assert est.completion_tokens == (int(300 * pricing.TOKENS_PER_WORD)
                                     + int(500 * pricing.TOKENS_PER_WORD))
    # Each prompt counted whole (system message and the user's text), then summed.
    assert est.prompt_tokens == sum(count_chat_tokens("gpt-4o-mini", p.messages())[0]
                                    for p in _prompts())
    assert est.prompt_tokens > 2 * len("Write about tides.".split()) and est.exact_prompt
    assert est.total_tokens == est.prompt_tokens + est.completion_tokens
    assert est.cost == pytest.approx((est.prompt_tokens * 0.15
                                      + est.completion_tokens * 0.60) / 1e6)
    assert not est.free


def test_an_estimate_for_a_model_without_a_price_has_no_cost():
    est = pricing.estimate({}, "openai", "no-such-model", _prompts())
    assert est.cost is None and est.completion_tokens > 0


def test_an_offline_estimate_is_free():
    est = pricing.estimate({}, OFFLINE, "gpt-4o", _prompts())
    assert est.free and est.cost == 0.0
