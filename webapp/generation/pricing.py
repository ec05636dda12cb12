"""Prices per model and what a batch costs, before (estimate) and after (usage)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Optional

from .provider import OFFLINE, Prompt
from .tokencount import count_chat_tokens

# US dollars per million tokens (input, output), as listed by OpenAI in 2025. Override or
# extend with PRICE_TABLE='{"model": [input, output]}'; a model with no price costs 0 and
# the pages say the price is unknown.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o4-mini": (1.10, 4.40),
    "gpt-3.5-turbo": (0.50, 1.50),
}

# Roughly how many tokens an English word takes; used for the completion estimate.
TOKENS_PER_WORD = 1.35


def price_table(config) -> dict[str, tuple[float, float]]:
    table = dict(DEFAULT_PRICES)
    raw = config.get("PRICE_TABLE") or ""
    if raw:
        try:
            extra = json.loads(raw)
            for model, pair in extra.items():
                table[model] = (float(pair[0]), float(pair[1]))
        except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
            raise ValueError(f"PRICE_TABLE must be JSON like {{\"model\": [input, output]}}: {exc}")
    return table


def price_for(config, provider: str, model: str) -> Optional[tuple[float, float]]:
    if provider == OFFLINE:
        return (0.0, 0.0)
    return price_table(config).get(model)


def discount_for(config, model: str) -> float:
    """What a Batch API token costs against a live one (0.5: half price)."""
    raw = config.get("BATCH_DISCOUNTS") or ""
    if raw:
        try:
            per_model = json.loads(raw)
            if model in per_model:
                return float(per_model[model])
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"BATCH_DISCOUNTS must be JSON like {{\"model\": 0.5}}: {exc}")
    return float(config.get("BATCH_DISCOUNT", 0.5))


def cost_of(price: Optional[tuple[float, float]], prompt_tokens: int,
            completion_tokens: int) -> float:
    if not price:
        return 0.0
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1_000_000


@dataclass
class Estimate:
    articles: int
    prompt_tokens: int
    completion_tokens: int
    cost: Optional[float]
    exact_prompt: bool
    free: bool = False
    economy_cost: Optional[float] = None  # the same tokens through the Batch API

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def estimate(config, provider: str, model: str, prompts: Iterable[Prompt]) -> Estimate:
    """Tokens and cost before submitting: prompts counted, completions from the target
    length. `prompts` is read once (a generator keeps a large batch out of memory)."""
    prompt_tokens, exact = 0, True
    completion_tokens = articles = 0
    for prompt in prompts:
        articles += 1
        count, is_exact = count_chat_tokens(model, prompt.messages())
        prompt_tokens += count
        exact = exact and is_exact
        completion_tokens += int(prompt.words * TOKENS_PER_WORD)
    price = price_for(config, provider, model)
    cost = cost_of(price, prompt_tokens, completion_tokens) if price else None
    return Estimate(articles, prompt_tokens, completion_tokens, cost, exact,
                    free=provider == OFFLINE,
                    economy_cost=cost * discount_for(config, model) if cost is not None else None)
