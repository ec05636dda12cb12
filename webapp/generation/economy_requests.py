"""Economy mode's requests: whether the provider has a Batch API, and what is sent to it
(one JSONL line per article, in parts within the provider's limits per file). See
economy.py for the flow.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from flask import current_app
from sqlalchemy import select

from . import lifecycle, pricing
from ..extensions import db, get_redis
from ..models import Article, ArticleStatus as A, Batch, ProviderBatch
from .batchapi import BatchAPIError, client_for
from .economy_import import custom_id
from .prompts import ROW_COLUMNS, TemplateRefused, prompt_for
from .provider import OFFLINE

UNSUPPORTED = ("Economy mode is not available: the provider at {url} has no Batch API "
               "(/v1/files or /v1/batches answered {status}).")


# -- is there a Batch API? -------------------------------------------------------------

def availability(config, provider_label: str) -> tuple[bool, str]:
    """(whether economy mode can be offered, why not). Asked of the provider once and
    remembered per base URL for ECONOMY_PROBE_TTL; a server that cannot be reached is
    asked again next time."""
    if provider_label == OFFLINE:
        return True, ""
    url = config.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
    key = "pressroom:batch-api:" + hashlib.sha256(url.encode()).hexdigest()[:24]
    redis = get_redis()
    try:
        known = redis.get(key)
    except Exception:  # Redis down: ask the provider, remember nothing
        known = None
    if known is not None:
        word, _, why = known.decode().partition(" ")
        return word == "yes", why
    ttl = int(config["ECONOMY_PROBE_TTL"])
    try:
        client_for(config, provider_label).probe()
        answer = (True, "")
    except BatchAPIError as exc:
        if exc.unsupported:
            answer = (False, UNSUPPORTED.format(url=url, status=exc.status))
        else:
            # Remembered for a minute only: pages do not wait on a provider that is down.
            answer, ttl = (False, "Economy mode cannot be offered right now: the provider "
                                  f"could not be asked whether it has a Batch API "
                                  f"({exc.message})"), 60
    try:
        redis.set(key, ("yes " if answer[0] else "no ") + answer[1], ex=ttl)
    except Exception:
        pass
    return answer


# -- requests ---------------------------------------------------------------------------

_ROWS = (select(Article.id, Article.position, Article.attempts, Batch.model, *ROW_COLUMNS)
         .join(Batch, Batch.id == Article.batch_id).order_by(Article.position))


def _line(row, attempt: int) -> bytes:
    """One request of the input file; raises TemplateRefused for a row it cannot make."""
    prompt = prompt_for(row)
    return json.dumps({"custom_id": custom_id(row.id, attempt), "method": "POST",
                       "url": "/v1/chat/completions",
                       "body": {"model": row.model, "messages": prompt.messages(),
                                "max_tokens": prompt.max_tokens()}},
                      ensure_ascii=False).encode() + b"\n"


def _rows(*where) -> Iterator:
    yield from db.session.execute(_ROWS.where(*where).execution_options(yield_per=1000))


@dataclass
class Part:
    first: int
    last: int
    count: int = 0
    size: int = 0


def plan(batch_id: int) -> list[Part]:
    """The batch's queued articles in parts within the provider's limits per file, by
    position. Articles whose prompt the template refuses are failed here, as a worker
    would fail them."""
    cfg = current_app.config
    most, most_bytes = cfg["ECONOMY_MAX_REQUESTS"], cfg["ECONOMY_MAX_FILE_BYTES"]
    parts: list[Part] = []
    refused: list[tuple[int, str]] = []
    for row in _rows(Article.batch_id == batch_id, Article.status == A.QUEUED):
        try:
            size = len(_line(row, row.attempts + 1))
        except TemplateRefused as exc:
            refused.append((row.id, f"The prompt template cannot be used for this article. {exc}"))
            continue
        part = parts[-1] if parts else None
        if part is None or part.count >= most or part.size + size > most_bytes:
            part = Part(row.position, row.position)
            parts.append(part)
        part.last, part.count, part.size = row.position, part.count + 1, part.size + size
    db.session.rollback()
    for article_id, message in refused:
        lifecycle.fail_unstarted(article_id, message)
    return parts


def write_requests(pb: ProviderBatch) -> Path:
    """The part's input file, in a temporary file (the caller removes it)."""
    fd, name = tempfile.mkstemp(prefix=f"pressroom-part-{pb.id}-", suffix=".jsonl")
    with os.fdopen(fd, "wb") as out:
        for row in _rows(Article.batch_id == pb.batch_id, Article.claim_token == pb.token,
                         Article.status.in_(A.ACTIVE)):
            out.write(_line(row, row.attempts))
    db.session.rollback()
    return Path(name)


def estimated_cost(batch: Batch) -> Optional[float]:
    """What the batch's queued articles would cost at the discount (None: no price); rows
    the template refuses cost nothing (they are failed, not sent)."""
    def prompts():
        for row in _rows(Article.batch_id == batch.id, Article.status == A.QUEUED):
            try:
                yield prompt_for(row)
            except TemplateRefused:
                continue
    estimate = pricing.estimate(current_app.config, batch.provider, batch.model, prompts())
    db.session.rollback()
    return estimate.economy_cost
