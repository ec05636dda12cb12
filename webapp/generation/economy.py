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

import logging
import time
import uuid
from datetime import timedelta

from celery import shared_task
from flask import current_app
from sqlalchemy import func, select, update

from . import lifecycle
from ..extensions import db, get_redis
from ..installation import prefix
from ..models import (Batch, BatchStatus as B,
                      ProviderBatch, ProviderBatchStatus as P, utcnow)
from .batchapi import BatchAPIError, client_for
from .economy_import import import_part, only_one
from .economy_requests import estimated_cost, plan, write_requests

log = logging.getLogger(__name__)

# Longer than the provider's completion window: economy articles are never taken for
# articles whose worker died.
LEASE = timedelta(hours=48)
SEND_ATTEMPTS = 6


# -- sending ----------------------------------------------------------------------------

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
    one transaction: the ids of the parts to send. A part that claimed nothing (another
    send took its articles, or a cancel did) is not kept."""
    until = utcnow() + LEASE
    ids = []
    for part in plan(batch_id):
        pb = ProviderBatch(batch_id=batch_id, token=str(uuid.uuid4()))
        db.session.add(pb)
        db.session.flush()
        pb.requests = lifecycle.claim_for_provider(batch_id, pb.token, part.first, part.last,
                                                   until)
        if pb.requests:
            ids.append(pb.id)
        else:
            db.session.delete(pb)
    db.session.commit()
    if ids:
        lifecycle.mark_batch_running(batch_id)
    lifecycle.finalize_batch(batch_id)  # every row refused: nothing to send
    return ids


def _api(pb: ProviderBatch):
    provider = db.session.scalar(select(Batch.provider).where(Batch.id == pb.batch_id))
    return client_for(current_app.config, provider)


def _cancel_wanted(batch_id: int) -> bool:
    return db.session.scalar(select(Batch.status).where(Batch.id == batch_id)) in (
        B.CANCELLING, B.CANCELLED)


@shared_task(bind=True, name="webapp.economy.send_part", max_retries=None)
def send_part(self, pb_id: int) -> dict:
    """Upload a part's requests and create its provider batch (once)."""
    # One sender at a time, whatever was sent twice (a redelivery, the reconciler): two
    # could each create a provider batch.
    with only_one("send", pb_id, 900) as mine:
        return _send_part(self, pb_id) if mine else {"status": "being sent elsewhere"}


def _send_part(task, pb_id: int) -> dict:
    pb = db.session.get(ProviderBatch, pb_id)
    if pb is None or pb.imported_at is not None or pb.status != P.PREPARING:
        if pb is not None and pb.provider_batch_id and pb.imported_at is None:
            _follow_soon(pb_id, 0)
        return {"status": "sent already" if pb else "gone"}
    api = _api(pb)
    try:
        if _cancel_wanted(pb.batch_id):
            # Cancelled before its provider batch was known: one may still have been made
            # just before a crash, and it is cancelled too.
            found = api.find(pb.token) if pb.input_file_id else None
            if found is None:
                lifecycle.provider_batch_seen(pb_id, P.CANCELLED)
                return import_part(pb_id)
            _seen(pb_id, found, changed=True)
            _ask_to_cancel(pb_id, api, found.id)
            _follow_soon(pb_id, 0)
            return {"status": "cancelling"}
        if not pb.input_file_id:
            path = write_requests(pb)
            try:
                file_id = api.upload(path)
            finally:
                path.unlink(missing_ok=True)
            lifecycle.provider_batch_seen(pb_id, P.PREPARING, input_file_id=file_id)
            pb = db.session.get(ProviderBatch, pb_id)
        remote = api.find(pb.token)
        if remote is None:
            if _cancel_wanted(pb.batch_id):  # cancelled during the upload: nothing made
                lifecycle.provider_batch_seen(pb_id, P.CANCELLED)
                return import_part(pb_id)
            remote = api.create(pb.input_file_id, pb.token, pb.batch_id)
    except BatchAPIError as exc:
        if exc.retryable and task.request.retries + 1 < SEND_ATTEMPTS:
            raise task.retry(countdown=min(300, 5 * 2 ** task.request.retries),
                             max_retries=None)
        lifecycle.provider_batch_seen(pb_id, P.FAILED, error=exc.message[:2000])
        return import_part(pb_id)
    _seen(pb_id, remote, changed=True)
    if _cancel_wanted(pb.batch_id):  # cancelled while it was being created
        _ask_to_cancel(pb_id, api, remote.id)
    _follow_soon(pb_id, 0)
    return {"status": remote.status, "provider_batch": remote.id}


# -- following --------------------------------------------------------------------------

def next_check_in(unchanged_checks: int) -> float:
    """Seconds until the next question about a provider batch: it doubles with each
    answer that brought no news, up to the maximum (the provider is not hammered)."""
    cfg = current_app.config
    return min(cfg["ECONOMY_POLL_MAX_SECONDS"],
               cfg["ECONOMY_POLL_SECONDS"] * 2 ** min(unchanged_checks, 16))


def _due_key(pb_id: int) -> str:
    return f"{prefix()}economy:due:{pb_id}"


def _follow_soon(pb_id: int, unchanged_checks: int) -> None:
    """Ask about the part again after its interval. The time it is due is kept in Redis,
    so a second chain of follows (a redelivered message, the reconciler) finds it is early
    and ends: there is one chain per part."""
    delay = next_check_in(unchanged_checks)
    get_redis().set(_due_key(pb_id), f"{time.time() + delay:.3f}",
                    ex=int(delay + 3 * current_app.config["ECONOMY_POLL_MAX_SECONDS"]))
    follow_part.apply_async((pb_id,), queue="generation", countdown=delay)


def _early(pb_id: int) -> bool:
    due = get_redis().get(_due_key(pb_id))
    return due is not None and time.time() < float(due) - 0.05


def _seen(pb_id: int, remote, *, changed: bool, unchanged: int = 0) -> None:
    lifecycle.provider_batch_seen(
        pb_id, remote.status, provider_batch_id=remote.id, completed=remote.completed,
        failed=remote.failed, expires_at=remote.expires_at,
        output_file_id=remote.output_file_id, error_file_id=remote.error_file_id,
        error=remote.errors, unchanged_checks=0 if changed else unchanged + 1)


@shared_task(bind=True, name="webapp.economy.follow_part", max_retries=None)
def follow_part(self, pb_id: int) -> dict:
    """Ask the provider about a part; import it once it has ended, else ask again later."""
    if _early(pb_id):
        return {"status": "another follow is due later"}
    with only_one("follow", pb_id, 3600) as mine:
        return _follow_part(pb_id) if mine else {"status": "followed elsewhere"}


def _follow_part(pb_id: int) -> dict:
    pb = db.session.get(ProviderBatch, pb_id)
    if pb is None or pb.imported_at is not None:
        return {"status": "done"}
    if not pb.provider_batch_id:
        if pb.status == P.PREPARING:
            send_part.apply_async((pb_id,), queue="generation")
            return {"status": "not sent yet"}
        return _import(pb_id)  # failed before it was created
    api = _api(pb)
    if pb.cancel_requested_at is None and not pb.is_ended and _cancel_wanted(pb.batch_id):
        _ask_to_cancel(pb_id, api, pb.provider_batch_id)  # again, if the first ask failed
    try:
        remote = api.retrieve(pb.provider_batch_id)
    except BatchAPIError as exc:
        if exc.unsupported:  # the provider no longer knows this batch
            lifecycle.provider_batch_seen(pb_id, P.FAILED, error=exc.message[:2000])
            return _import(pb_id)
        # Unreachable, or refusing for now (a key being rotated): asked again later, and
        # the page says why meanwhile.
        lifecycle.provider_batch_seen(pb_id, pb.status, error=exc.message[:2000],
                                      unchanged_checks=pb.unchanged_checks + 1)
        _follow_soon(pb_id, pb.unchanged_checks + 1)
        return {"status": "provider not answering"}
    changed = (remote.status, remote.completed, remote.failed) != (pb.status, pb.completed,
                                                                   pb.failed)
    _seen(pb_id, remote, changed=changed, unchanged=pb.unchanged_checks)
    if remote.status in P.ENDED:
        return _import(pb_id)
    _follow_soon(pb_id, 0 if changed else pb.unchanged_checks + 1)
    return {"status": remote.status}


def _import(pb_id: int) -> dict:
    try:
        return import_part(pb_id)
    except BatchAPIError as exc:  # the results could not be read now: tried again later
        log.warning("results of provider batch row %s not read yet: %s", pb_id, exc.message)
        _follow_soon(pb_id, 1)
        return {"status": "import postponed"}


def _ask_to_cancel(pb_id: int, api, provider_batch_id: str) -> None:
    """Ask the provider to cancel; recorded only when it agreed, so that the part's next
    follow asks again after a failure."""
    try:
        remote = api.cancel(provider_batch_id)
    except BatchAPIError as exc:
        log.warning("provider batch %s not cancelled (yet): %s", provider_batch_id, exc.message)
        return
    lifecycle.provider_batch_seen(pb_id, remote.status, cancel_requested_at=utcnow(),
                                  unchanged_checks=0)


@shared_task(name="webapp.economy.cancel_parts")
def cancel_parts(batch_id: int) -> dict:
    """Ask the provider to cancel the batch's provider batches that are still open (parts
    not yet created are cancelled by send_part, and a failed ask is repeated by each
    part's next follow)."""
    asked = 0
    for pb in db.session.scalars(select(ProviderBatch).where(
            ProviderBatch.batch_id == batch_id, ProviderBatch.imported_at.is_(None))).all():
        if pb.is_ended or not pb.provider_batch_id:
            continue
        _ask_to_cancel(pb.id, _api(pb), pb.provider_batch_id)
        asked += 1
    return {"asked": asked}


def follow_lost() -> int:
    """For the reconciler: parts nobody has asked about for a long while (their follow
    message was lost) are asked about again, once per such while; parts never created are
    sent again."""
    stale = timedelta(seconds=3 * current_app.config["ECONOMY_POLL_MAX_SECONDS"])
    now = utcnow()
    rows = db.session.execute(
        select(ProviderBatch.id, ProviderBatch.provider_batch_id)
        .where(ProviderBatch.imported_at.is_(None),
               func.coalesce(ProviderBatch.checked_at, ProviderBatch.created_at) < now - stale)
    ).all()
    if rows:
        # Not a status: the time of the last look, so the next pass leaves them alone.
        db.session.execute(update(ProviderBatch).where(ProviderBatch.id.in_([r.id for r in rows]))
                           .values(checked_at=now))
    db.session.commit()
    for pb_id, provider_batch_id in rows:
        get_redis().delete(_due_key(pb_id))
        (follow_part if provider_batch_id else send_part).apply_async((pb_id,),
                                                                      queue="generation")
    return len(rows)
