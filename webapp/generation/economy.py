"""Economy mode: a batch's articles written through the provider's Batch API, at its
discount, within 24 hours.

The flow, each step safe to repeat:

1. `send_batch` (a task, after the submission's commit) splits the batch's queued
   articles into parts within the provider's limits per file (ECONOMY_MAX_REQUESTS lines,
   ECONOMY_MAX_FILE_BYTES) and stores one ProviderBatch row per part, its articles claimed
   under the row's token, in one transaction, before anything is sent.
2. `send_part` writes the part's requests (one JSONL line per article, the same prompt,
   model and max_tokens as a live request), uploads them and creates the provider batch,
   storing each provider id as soon as it is known. A provider batch created just before a
   crash is found again by the token in its metadata, so none is ever made twice.
3. `follow_part` asks the provider about the part, backing off while nothing changes,
   until it has ended (completed, expired, cancelled or failed).
4. `import_part` reads the output and error files line by line and gives each article
   its result through lifecycle's guarded transitions: a second import changes nothing.
   Articles with no result are failed (or cancelled), and can be sent again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Iterator, Optional

from celery import shared_task
from flask import current_app
from sqlalchemy import func, select

from . import lifecycle
from ..extensions import db, get_redis
from ..models import (Article, ArticleStatus as A, Batch, BatchStatus as B,
                      ProviderBatch, ProviderBatchStatus as P, utcnow)
from .batchapi import BatchAPIError, client_for
from .economy_import import custom_id, import_part
from .pricing import TOKENS_PER_WORD, cost_of, discount_for, price_for
from .prompts import TemplateRefused, build_prompt
from .provider import OFFLINE
from .tokencount import count_chat_tokens

log = logging.getLogger(__name__)

# Longer than the provider's completion window: economy articles are never taken for
# articles whose worker died.
LEASE = timedelta(hours=48)
SEND_ATTEMPTS = 6

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
    try:
        client_for(config, provider_label).probe()
        answer = (True, "")
    except BatchAPIError as exc:
        if not exc.unsupported:
            return False, ("Economy mode cannot be offered right now: the provider could not "
                           f"be asked whether it has a Batch API ({exc.message})")
        status = exc.message.split("answered ", 1)[-1].split(":")[0]
        answer = (False, UNSUPPORTED.format(url=url, status=status))
    try:
        redis.set(key, ("yes " if answer[0] else "no ") + answer[1],
                  ex=int(config["ECONOMY_PROBE_TTL"]))
    except Exception:
        pass
    return answer


# -- requests ---------------------------------------------------------------------------

_ROWS = (select(Article.id, Article.position, Article.title, Article.attempts,
                Article.keywords, Article.notes, Article.extra_instructions,
                func.coalesce(Article.tone, Batch.tone).label("tone"),
                func.coalesce(Article.language, Batch.language).label("language"),
                func.coalesce(Article.target_words, Batch.target_words).label("target_words"),
                Batch.model, Batch.instructions, Batch.template_text)
         .join(Batch, Batch.id == Article.batch_id).order_by(Article.position))


def _line(row, attempt: int) -> bytes:
    """One request of the input file; raises TemplateRefused for a row it cannot make."""
    prompt = build_prompt(row.template_text, title=row.title, words=row.target_words,
                          tone=row.tone, language=row.language, keywords=row.keywords or "",
                          notes=row.notes or "", instructions=row.instructions or "",
                          extra_instructions=row.extra_instructions or "")
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


# -- sending ----------------------------------------------------------------------------

def estimated_cost(batch: Batch) -> Optional[float]:
    """What the batch's queued articles would cost at the discount (None: no price)."""
    cfg = current_app.config
    price = price_for(cfg, batch.provider, batch.model)
    if not price:
        return None
    prompt_tokens = completion_tokens = 0
    for row in _rows(Article.batch_id == batch.id, Article.status == A.QUEUED):
        try:
            body = json.loads(_line(row, 1))["body"]
        except TemplateRefused:
            continue
        prompt_tokens += count_chat_tokens(batch.model, body["messages"])[0]
        completion_tokens += int(row.target_words * TOKENS_PER_WORD)
    db.session.rollback()
    return cost_of(price, prompt_tokens, completion_tokens) * discount_for(cfg, batch.model)


@shared_task(name="webapp.economy.send_batch")
def send_batch(batch_id: int) -> dict:
    """Store the batch's queued articles as provider batches, then send each."""
    batch = db.session.get(Batch, batch_id)
    if batch is None or batch.status not in (B.QUEUED, B.RUNNING):
        return {"status": "not open"}
    if batch.budget_usd is not None:
        # Checked before any provider batch exists: it cannot be stopped half-way.
        estimate = estimated_cost(batch)
        spent = batch.cost_usd or 0.0
        if estimate is not None and spent + estimate > batch.budget_usd:
            lifecycle.stop_batch(batch_id, f"Budget: the economy estimate ${estimate:.4f} "
                                 f"exceeds the budget ${batch.budget_usd:.4f}; nothing was sent.",
                                 "over budget")
            lifecycle.finalize_batch(batch_id)
            return {"status": "over budget"}
    ids = store_parts(batch_id)
    for pb_id in ids:
        send_part.apply_async((pb_id,), queue="generation")
    return {"status": "sent", "parts": ids}


def store_parts(batch_id: int) -> list[int]:
    """The batch's queued articles as provider batch rows, each claiming its articles, in
    one transaction: the ids of the parts to send."""
    until = utcnow() + LEASE
    rows = []
    for part in plan(batch_id):
        pb = ProviderBatch(batch_id=batch_id, token=str(uuid.uuid4()))
        db.session.add(pb)
        db.session.flush()
        pb.requests = lifecycle.claim_for_provider(batch_id, pb.token, part.first, part.last,
                                                   until)
        rows.append(pb)
    db.session.commit()
    ids = [pb.id for pb in rows if pb.requests]
    if ids:
        lifecycle.mark_batch_running(batch_id)
    lifecycle.finalize_batch(batch_id)  # every row refused: nothing to send
    return ids


def _api(pb: ProviderBatch):
    provider = db.session.scalar(select(Batch.provider).where(Batch.id == pb.batch_id))
    return client_for(current_app.config, provider)


@shared_task(bind=True, name="webapp.economy.send_part", max_retries=None)
def send_part(self, pb_id: int) -> dict:
    """Upload a part's requests and create its provider batch (once)."""
    pb = db.session.get(ProviderBatch, pb_id)
    if pb is None or pb.imported_at is not None:
        return {"status": "done"}
    if pb.provider_batch_id:
        follow_part.apply_async((pb_id,), queue="generation")
        return {"status": "sent already"}
    batch_status = db.session.scalar(select(Batch.status).where(Batch.id == pb.batch_id))
    if batch_status in (B.CANCELLING, B.CANCELLED):
        lifecycle.provider_batch_seen(pb_id, P.CANCELLED)
        return import_part(pb_id)
    api = _api(pb)
    try:
        if not pb.input_file_id:
            path = write_requests(pb)
            try:
                file_id = api.upload(path)
            finally:
                path.unlink(missing_ok=True)
            lifecycle.provider_batch_seen(pb_id, P.PREPARING, input_file_id=file_id)
            pb = db.session.get(ProviderBatch, pb_id)
        remote = api.find(pb.token) or api.create(pb.input_file_id, pb.token, pb.batch_id)
    except BatchAPIError as exc:
        if exc.retryable and self.request.retries + 1 < SEND_ATTEMPTS:
            raise self.retry(countdown=min(300, 5 * 2 ** self.request.retries),
                             max_retries=None)
        lifecycle.provider_batch_seen(pb_id, P.FAILED, error=exc.message[:2000])
        return import_part(pb_id)
    _seen(pb_id, remote, changed=True)
    follow_part.apply_async((pb_id,), queue="generation", countdown=next_check_in(0))
    return {"status": remote.status, "provider_batch": remote.id}


# -- following --------------------------------------------------------------------------

def next_check_in(unchanged_checks: int) -> float:
    """Seconds until the next question about a provider batch: it doubles with each
    answer that brought no news, up to the maximum (the provider is not hammered)."""
    cfg = current_app.config
    return min(cfg["ECONOMY_POLL_MAX_SECONDS"],
               cfg["ECONOMY_POLL_SECONDS"] * 2 ** min(unchanged_checks, 16))


def _seen(pb_id: int, remote, *, changed: bool, unchanged: int = 0) -> None:
    lifecycle.provider_batch_seen(
        pb_id, remote.status, provider_batch_id=remote.id, completed=remote.completed,
        failed=remote.failed, expires_at=remote.expires_at,
        output_file_id=remote.output_file_id, error_file_id=remote.error_file_id,
        error=remote.errors, unchanged_checks=0 if changed else unchanged + 1)


@shared_task(bind=True, name="webapp.economy.follow_part", max_retries=None)
def follow_part(self, pb_id: int) -> dict:
    """Ask the provider about a part; import it once it has ended, else ask again later."""
    pb = db.session.get(ProviderBatch, pb_id)
    if pb is None or pb.imported_at is not None:
        return {"status": "done"}
    if not pb.provider_batch_id:
        send_part.apply_async((pb_id,), queue="generation")
        return {"status": "not sent yet"}
    try:
        remote = _api(pb).retrieve(pb.provider_batch_id)
    except BatchAPIError as exc:
        if not exc.retryable:
            lifecycle.provider_batch_seen(pb_id, P.FAILED, error=exc.message[:2000])
            return import_part(pb_id)
        follow_part.apply_async((pb_id,), queue="generation",
                                countdown=next_check_in(pb.unchanged_checks + 1))
        return {"status": "provider unreachable"}
    changed = (remote.status, remote.completed, remote.failed) != (pb.status, pb.completed,
                                                                   pb.failed)
    _seen(pb_id, remote, changed=changed, unchanged=pb.unchanged_checks)
    if remote.status in P.ENDED:
        return import_part(pb_id)
    unchanged = 0 if changed else pb.unchanged_checks + 1
    follow_part.apply_async((pb_id,), queue="generation", countdown=next_check_in(unchanged))
    return {"status": remote.status}


@shared_task(name="webapp.economy.cancel_parts")
def cancel_parts(batch_id: int) -> dict:
    """Ask the provider to cancel the batch's provider batches that are still open."""
    asked = 0
    for pb in db.session.scalars(select(ProviderBatch).where(
            ProviderBatch.batch_id == batch_id, ProviderBatch.imported_at.is_(None))).all():
        if pb.is_ended or not pb.provider_batch_id:
            continue  # a part not yet created is cancelled by send_part itself
        try:
            remote = _api(pb).cancel(pb.provider_batch_id)
        except BatchAPIError as exc:
            log.warning("provider batch %s not cancelled: %s", pb.provider_batch_id, exc)
            continue
        lifecycle.provider_batch_seen(pb.id, remote.status, cancel_requested_at=utcnow(),
                                      unchanged_checks=0)
        asked += 1
    return {"asked": asked}


def follow_lost() -> int:
    """For the reconciler: parts nobody has asked about for a long while (their follow
    message was lost) are asked about again; parts never created are sent again."""
    cutoff = utcnow() - timedelta(seconds=3 * current_app.config["ECONOMY_POLL_MAX_SECONDS"])
    rows = db.session.execute(
        select(ProviderBatch.id, ProviderBatch.provider_batch_id)
        .where(ProviderBatch.imported_at.is_(None),
               func.coalesce(ProviderBatch.checked_at, ProviderBatch.created_at) < cutoff)
    ).all()
    db.session.rollback()
    for pb_id, provider_batch_id in rows:
        (follow_part if provider_batch_id else send_part).apply_async((pb_id,),
                                                                      queue="generation")
    return len(rows)
