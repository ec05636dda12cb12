"""Economy mode's results: each line of a provider batch's output and error files given
to its article through lifecycle's guarded transitions (see economy.py for the flow).

The files are read line by line as they arrive, never whole; each line commits on its own,
so a worker killed mid-import leaves every article either written once or still open, and
the next import (any number of them, even at once) finishes the rest and writes nothing twice.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

import redis
from flask import current_app
from sqlalchemy import func, select, update

from . import lifecycle
from ..extensions import db, get_redis
from ..installation import prefix
from ..models import (Article, ArticleStatus as A, ArticleVersion, Batch, ProviderBatch,
                      ProviderBatchStatus as P, utcnow)
from .batchapi import BatchAPIError, client_for
from .lengths import measure
from .pricing import cost_of, discount_for, price_for
from .provider import cut_off, review_flag

log = logging.getLogger(__name__)


def custom_id(article_id: int, attempt: int) -> str:
    """Names the article and its attempt in a request line and its result."""
    return f"article-{article_id}-attempt-{attempt}"


def article_of(custom) -> "int | None":
    parts = (custom or "").split("-")
    if len(parts) == 4 and parts[0] == "article" and parts[1].isdigit():
        return int(parts[1])
    return None


# -- results ----------------------------------------------------------------------------

EXPIRED = ("The provider's batch expired (its 24-hour window ran out) before this article "
           "was written. Send it again.")
NO_RESULT = "The provider returned no result for this article. Send it again."


@contextmanager
def only_one(kind: str, pb_id: int, seconds: int) -> Iterator[bool]:
    """One holder at a time of a part's sending, following or importing: redis-py's Lock
    (as webhooks.deliver uses), which expires if its holder dies and is released only by
    its holder. Yields whether this caller holds it."""
    held = get_redis().lock(f"{prefix()}economy:{kind}:{pb_id}", timeout=seconds,
                            blocking=False)
    mine = held.acquire()
    try:
        yield mine
    finally:
        if mine:
            try:
                held.release()
            except redis.exceptions.LockError:  # it expired, and may be another's by now
                log.warning("economy %s lock of part %s expired before its work ended",
                            kind, pb_id)


def import_part(pb_id: int) -> dict:
    """Give each article of an ended provider batch its result; safe to run twice, and two
    at once leave it to one of them. Raises BatchAPIError when the files cannot be read
    now (nothing is lost: the next try reads them again)."""
    with only_one("import", pb_id, 3600) as mine:
        return _import_part(pb_id) if mine else {"status": "imported elsewhere"}


def _import_part(pb_id: int) -> dict:
    pb = db.session.get(ProviderBatch, pb_id)
    if pb is None or pb.imported_at is not None:
        return {"status": "done"}
    batch = db.session.get(Batch, pb.batch_id)
    cfg = current_app.config
    price = price_for(cfg, batch.provider, batch.model)
    discount = discount_for(cfg, batch.model)
    provider, budget = batch.provider, batch.budget_usd
    token, batch_id, status, error = pb.token, pb.batch_id, pb.status, pb.error
    files = [f for f in (pb.output_file_id, pb.error_file_id) if f]
    input_file = pb.input_file_id
    # Each article's target length and language, for its length and the "short" flag: one
    # read for the whole part, not one a line.
    targets = {r.id: (r.target, r.language) for r in db.session.execute(
        select(Article.id,
               func.coalesce(Article.target_words, Batch.target_words).label("target"),
               func.coalesce(Article.language, Batch.language).label("language"))
        .join(Batch, Batch.id == Article.batch_id).where(Article.batch_id == batch_id))}
    db.session.rollback()
    api = client_for(cfg, provider)
    counted = {"written": 0, "failed": 0, "kept": 0}
    for file_id in files:
        for line in api.lines(file_id):
            counted[_apply(line, batch_id, token, price, discount, targets)] += 1
    if status == P.CANCELLED:
        left = lifecycle.end_unanswered(batch_id, token, None)
    else:
        left = lifecycle.end_unanswered(batch_id, token, EXPIRED if status == P.EXPIRED else (
            f"The provider's batch failed: {error}" if status == P.FAILED and error
            else NO_RESULT))
    # Marked imported before its files go: a crash in between leaves files behind, never
    # an import that would find its files gone.
    lifecycle.provider_batch_imported(pb_id)
    if cfg["ECONOMY_DELETE_FILES"]:
        _delete_files(api, pb_id, [input_file, *files])
    if budget is not None:
        lifecycle.enforce_budget(batch_id)
    from .tasks import _finalize  # the same close-and-webhook step as a live article
    _finalize(batch_id)
    return {"status": status, **counted, "without_result": left}


def _delete_files(api, pb_id: int, file_ids) -> None:
    for file_id in filter(None, file_ids):
        try:
            api.delete(file_id)
        except BatchAPIError as exc:  # the results are in: a file left behind is harmless
            log.warning("provider file %s not deleted: %s", file_id, exc)
    db.session.execute(update(ProviderBatch).where(ProviderBatch.id == pb_id)
                       .values(files_deleted_at=utcnow()))
    db.session.commit()


def _apply(line: dict, batch_id: int, token: str, price, discount: float,
           targets: dict) -> str:
    """One line of a result file: written, failed or kept (as a version only). `targets`
    holds each article's (target length, language)."""
    article_id = article_of(line.get("custom_id"))
    if article_id is None:
        return "failed"
    response = line.get("response") or {}
    error = line.get("error") or {}
    if response.get("status_code") == 200:
        target, language = targets.get(article_id, (None, None))
        return _store(article_id, token, response.get("body") or {}, price, discount,
                      target, language)
    code = error.get("code")
    if code == "batch_cancelled":
        lifecycle.mark_cancelled(article_id, token)
        return "failed"
    if code == "batch_expired":
        lifecycle.fail(article_id, token, EXPIRED)
        return "failed"
    detail = ((response.get("body") or {}).get("error") or {}).get("message") \
        or error.get("message") or f"status {response.get('status_code')}"
    lifecycle.fail(article_id, token, f"The provider could not write this article: {detail}")
    return "failed"


def _store(article_id: int, token: str, body: dict, price, discount: float,
           target: "int | None", language: "str | None") -> str:
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    text = message.get("content") or ""
    finish = choice.get("finish_reason")
    if finish is None:  # the same rule as a stream's (provider.require_finish)
        lifecycle.fail(article_id, token, cut_off(
            "the provider's result has no finish reason, so it may be incomplete").message
            + " Send it again.")
        return "failed"
    usage = body.get("usage") or {}
    prompt_tokens = int(usage.get("prompt_tokens") or 0)
    completion_tokens = int(usage.get("completion_tokens") or 0)
    length = measure(text, language)
    if lifecycle.complete(article_id, token, body=text, words=length.count,
                          length_unit=length.unit,
                          prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                          finish_reason=finish, cost_usd=cost_of(price, prompt_tokens,
                                                                 completion_tokens) * discount,
                          review_flag=review_flag(message.get("refusal") or "", text, finish,
                                                  length, target)):
        return "written"
    # The article was cancelled meanwhile (or this is a second import). A body paid for is
    # kept as a version of a cancelled article, never dropped; a second import keeps none.
    status = db.session.scalar(select(Article.status).where(Article.id == article_id))
    if status == A.CANCELLED and text.strip() and not db.session.scalar(
            select(ArticleVersion.id).where(ArticleVersion.article_id == article_id,
                                            ArticleVersion.body == text).limit(1)):
        ArticleVersion.keep(article_id, text, "economy (after cancel)", None)
        db.session.commit()
        return "kept"
    db.session.rollback()
    return "failed"
