"""Baseline tasks for the benchmark, loaded on the worker with `--include bench.seedtasks`.

- `bench.seed_batch`: the way the seed project wrote a batch, one task looping over all
  titles and calling the provider one after another, so a batch takes the sum of its
  latencies. It uses the real openai SDK against the same server as the app.
- `bench.noop`: the cheapest possible task, to measure what Celery itself costs on the same
  broker, backend and worker settings as the article pipeline.
"""
from __future__ import annotations

import os

import openai
from celery import shared_task


@shared_task(name="bench.seed_batch")
def seed_batch(titles: list[str], model: str = "gpt-4o-mini", words: int = 600) -> dict:
    """Write every title in turn, streaming each completion to its end."""
    client = openai.OpenAI(api_key=os.environ["OPENAI_API_KEY"],
                           base_url=os.environ["OPENAI_BASE_URL"], max_retries=0)
    total_words = 0
    for title in titles:
        # A fixed prompt of its own, so that the baseline does not move with the app's.
        messages = [
            {"role": "system", "content": "You are a staff writer. Write complete articles "
                                          "in Markdown, starting with the title as a heading."},
            {"role": "user", "content": f"Title: {title}\nLength: about {words} words\n"
                                        "Tone: neutral\nLanguage: English\n"},
        ]
        stream = client.chat.completions.create(model=model, messages=messages,
                                                max_tokens=words * 2 + 200, stream=True)
        parts = [c.choices[0].delta.content or "" for c in stream if c.choices]
        total_words += len("".join(parts).split())
    return {"articles": len(titles), "words": total_words}


@shared_task(name="bench.noop")
def noop() -> None:
    """Nothing at all: the floor of what one task costs."""
    return None
