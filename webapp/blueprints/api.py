"""JSON API for scripts and a CMS. Bearer tokens only, so no CSRF and no cookies."""
from __future__ import annotations

import json
from functools import wraps
from typing import Iterator

from flask import (Blueprint, Response, g, jsonify, request, stream_with_context,
                   url_for)

from ..extensions import db
from ..models import Article, ArticleStatus as A, Batch, ReviewStatus as R, User
from ..services import control, progress, publishing, review, submission, users
from ..services.errors import (Conflict, Invalid, NotAllowed, NotFound, ServiceError,
                               Unavailable)

bp = Blueprint("api", __name__, url_prefix="/api/v1")

# How the JSON API answers the services' errors (400, not 422, for bad input: what
# clients of this API have always been sent).
SERVICE_ERRORS = ((NotAllowed, 403, "forbidden"), (NotFound, 404, "not_found"),
                  (Conflict, 409, "conflict"), (Unavailable, 422, "unavailable"),
                  (Invalid, 400, "invalid"))


class ApiError(Exception):
    """What only the API refuses: a missing token, a body that is not a JSON object."""

    def __init__(self, status: int, code: str, message: str, fields: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields or {}


def error_response(status: int, code: str, message: str, fields: dict | None = None):
    body = {"error": {"code": code, "message": message, "fields": fields or {}}}
    response = jsonify(body)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="pressroom"'
    return response


@bp.errorhandler(ApiError)
def handle_api_error(exc: ApiError):
    return error_response(exc.status, exc.code, exc.message, exc.fields)


@bp.errorhandler(ServiceError)
def handle_service_error(exc: ServiceError):
    db.session.rollback()
    status, code = next((s, c) for cls, s, c in SERVICE_ERRORS if isinstance(exc, cls))
    fields = {name: [value] if isinstance(value, str) else value
              for name, value in getattr(exc, "fields", {}).items()}
    return error_response(status, code, exc.message, fields)


def token_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        user = users.user_for_token(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise ApiError(401, "unauthorized",
                           "Send a valid API token as 'Authorization: Bearer <token>'.")
        g.api_user = user
        return view(*args, **kwargs)
    return wrapper


def _batch_json(batch: Batch, with_articles: bool) -> dict:
    view = progress.batch_view(batch.id, with_rows=False)
    data = {
        "id": batch.id, "name": batch.name, "status": view.batch.status,
        "provider": batch.provider, "model": batch.model, "target_words": batch.target_words,
        "target_unit": view.target_unit,
        "tone": batch.tone, "language": batch.language, "total": view.counts.total,
        "counts": view.counts.by_status, "done": view.counts.done, "percent": view.percent,
        "created_at": batch.created_at.isoformat() + "Z",
        "finished_at": batch.finished_at.isoformat() + "Z" if batch.finished_at else None,
        "dispatched": batch.dispatched_at is not None, "dispatch_error": batch.dispatch_error,
        "prompt_tokens": batch.prompt_tokens, "completion_tokens": batch.completion_tokens,
        "cost_usd": round(view.counts.spend, 6), "budget_usd": batch.budget_usd,
        "flagged": view.counts.flagged, "paused_reason": batch.paused_reason,
        "stop_reason": batch.stop_reason, "mode": batch.mode,
        "url": url_for("api.get_batch", batch_id=batch.id),
    }
    if batch.is_economy:
        data["provider_batches"] = [
            {"id": p.provider_batch_id, "status": p.status,
             "request_counts": {"total": p.requests, "completed": p.completed,
                                "failed": p.failed},
             "expires_at": p.expires_at.isoformat() + "Z" if p.expires_at else None}
            for p in progress.provider_batches(batch.id)]
    if with_articles:
        pubs = publishing.of_positions(batch.id, 1, max(batch.total, 1))
        data["articles"] = [_article_item(r, pubs) for r in progress.all_article_rows(batch.id)]
    return data


def _article_item(r, pubs: dict) -> dict:
    """One row of a batch's articles; `pubs` holds the publications of the rows read with
    it (publishing.of_positions: one query per chunk of rows, not one per row)."""
    return {"id": r.id, "position": r.position, "title": r.title, "status": r.status,
            "words": r.words, **_length(r.words, r.length_unit), "error": r.error,
            "note": r.note, "review_flag": r.review_flag,
            **_review(r.status, r.review_status, r.review_reason, r.reviewer_email,
                      r.reviewed_at),
            "publications": [p.as_json() for p in pubs.get(r.id, ())],
            "url": url_for("api.get_article", article_id=r.id)}


def _review(status: str, review_status, reason, reviewer_email, reviewed_at) -> dict:
    """An article's review as the API tells it: null while the article is not written (there
    is nothing to review), "pending" until someone decides, then "approved" or "rejected".
    The reason, reviewer and time belong to a decision that stands: null otherwise, even where
    an earlier decision's are still stored (a restored version is reviewed again)."""
    if status != A.SUCCEEDED:
        verdict = None
    elif review_status in (R.APPROVED, R.REJECTED):
        verdict = review_status
    else:
        verdict = "pending"
    decided = verdict in (R.APPROVED, R.REJECTED)
    return {"review": verdict, "review_reason": reason if decided else None,
            "reviewed_by": reviewer_email if decided else None,
            "reviewed_at": reviewed_at.isoformat() + "Z" if decided and reviewed_at else None}


def _length(count: int, unit) -> dict:
    """An article's length and its unit. `words` stays beside them for older scripts,
    with the same number: a word count only where the unit is words."""
    return {"length": count, "length_unit": unit or "words"}


def _json_object() -> dict:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object.")
    return data


@bp.post("/batches")
@token_required
def create_batch():
    """Submit a batch: name, titles (a list or one per line) and settings; with
    "paused": true it is held (stored, not sent) so that rows can be added to it."""
    data = _json_object()
    hold = data.get("paused", False)
    if not isinstance(hold, bool):
        raise ApiError(400, "invalid", "“paused” must be true or false.",
                       {"paused": ["Must be true or false."]})
    result = submission.submit(g.api_user, data, hold=hold)
    db.session.expire_all()
    response = jsonify(_batch_json(db.session.get(Batch, result.batch.id), with_articles=True))
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_batch", batch_id=result.batch.id)
    return response


# Rows read per statement while a batch's articles are streamed.
ROWS_PER_READ = 2000


@bp.get("/batches/<int:batch_id>")
@token_required
def get_batch(batch_id: int):
    """A batch's status, counts, percent and articles. The articles are streamed a few
    thousand rows at a time, so a 100,000-article batch answers with flat memory."""
    batch = _batch(batch_id)
    head = json.dumps(_batch_json(batch, with_articles=False))
    total = batch.total

    def body() -> Iterator[str]:
        yield head[:-1] + ', "articles": ['
        sep = ""
        for first in range(1, total + 1, ROWS_PER_READ):
            last = first + ROWS_PER_READ - 1
            rows = progress.article_rows(batch_id, first, last)
            pubs = publishing.of_positions(batch_id, first, last) if rows else {}
            db.session.rollback()  # no read transaction held while the client reads
            if rows:
                yield sep + ",".join(json.dumps(_article_item(r, pubs)) for r in rows)
                sep = ","
        yield "]}"

    return Response(stream_with_context(body()), mimetype="application/json")


@bp.post("/batches/<int:batch_id>/rows")
@token_required
def append_rows(batch_id: int):
    """Add up to IMPORT_MAX_ROWS rows to a batch that has not started, all or none; the
    answer lists the articles added. Resuming the batch sends them with the others."""
    data = _json_object()
    others = sorted(set(data) - {"rows"})
    if others:
        raise ApiError(400, "invalid", "Only “rows” can be sent here: a batch's settings are "
                                       "fixed when it is submitted.",
                       {name[:50]: ["Not accepted here."] for name in others[:10]})
    added = submission.append_rows(g.api_user, _batch(batch_id), data.get("rows"))
    db.session.expire_all()
    body = _batch_json(_batch(batch_id), with_articles=False)
    body["articles"] = [_article_item(r, {})
                        for r in progress.article_rows(batch_id, added.first, added.last)]
    response = jsonify(body)
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_batch", batch_id=batch_id)
    return response


def _batch(batch_id: int) -> Batch:
    batch = db.session.get(Batch, batch_id)
    if batch is None:
        raise NotFound(f"No batch {batch_id}.")
    return batch


def _accepted(batch_id: int):
    """The batch as it is after an action (its dispatch_error says if it waits for the queue)."""
    db.session.expire_all()
    response = jsonify(_batch_json(_batch(batch_id), with_articles=False))
    response.status_code = 202
    return response


@bp.post("/batches/<int:batch_id>/cancel")
@token_required
def cancel_batch(batch_id: int):
    """Cancel a batch; running articles stop within a second."""
    control.cancel_batch(g.api_user, _batch(batch_id))
    return _accepted(batch_id)


@bp.post("/batches/<int:batch_id>/pause")
@token_required
def pause_batch(batch_id: int):
    """Pause a batch: nothing new is sent until it is resumed."""
    control.pause_batch(g.api_user, _batch(batch_id))
    return _accepted(batch_id)


@bp.post("/batches/<int:batch_id>/resume")
@token_required
def resume_batch(batch_id: int):
    """Resume a paused batch where it stopped."""
    control.resume_batch(g.api_user, _batch(batch_id))
    return _accepted(batch_id)


def _article(article_id: int) -> Article:
    article = db.session.get(Article, article_id)
    if article is None:
        raise NotFound(f"No article {article_id}.")
    return article


@bp.get("/articles/<int:article_id>")
@token_required
def get_article(article_id: int):
    """One article with its Markdown body."""
    return jsonify(_article_json(_article(article_id)))


# The API's words for a review decision, and the service's codes for them.
DECISIONS = {"approve": R.APPROVED, "reject": R.REJECTED}


@bp.post("/articles/<int:article_id>/review")
@token_required
def review_article(article_id: int):
    """Approve or reject a written article: {"decision": "approve" or "reject", "reason"}
    (a rejection needs a reason). Answers with the article."""
    article = _article(article_id)
    data = _json_object()
    reason = data.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise ApiError(400, "invalid", "“reason” must be a string.",
                       {"reason": ["Must be a string."]})
    # Any other decision goes to the service as none, which refuses it naming `decision`
    # after its own checks (who may review, whether the article is written).
    decision = data.get("decision")
    review.decide(g.api_user, article,
                  DECISIONS.get(decision, "") if isinstance(decision, str) else "", reason or "")
    db.session.expire_all()
    return jsonify(_article_json(_article(article_id)))


def _article_json(article: Article) -> dict:
    reviewer = db.session.get(User, article.reviewed_by) if article.reviewed_by else None
    return {
        "id": article.id, "batch_id": article.batch_id, "position": article.position,
        "title": article.title, "status": article.status, "words": article.words,
        **_length(article.words, article.length_unit),
        "body": article.body, "error": article.error, "note": article.note,
        "attempts": article.attempts, "finish_reason": article.finish_reason,
        "prompt_tokens": article.prompt_tokens, "completion_tokens": article.completion_tokens,
        "cost_usd": article.cost_usd, "review_flag": article.review_flag,
        "started_at": article.started_at.isoformat() + "Z" if article.started_at else None,
        "finished_at": article.finished_at.isoformat() + "Z" if article.finished_at else None,
        **_review(article.status, article.review_status, article.review_reason,
                  reviewer.email if reviewer else None, article.reviewed_at),
        "publications": [p.as_json() for p in
                         publishing.of_articles([article.id]).get(article.id, ())],
    }


# -- publishing to WordPress ---------------------------------------------------------------

def _publish_body(allowed: tuple[str, ...]) -> dict:
    data = _json_object()
    others = sorted(set(data) - set(allowed))
    if others:
        raise ApiError(400, "invalid", "Unknown fields: " + ", ".join(o[:50] for o in others[:10])
                       + ".", {name[:50]: ["Not accepted here."] for name in others[:10]})
    return data


PUBLISH_KEYS = ("destination", "status", "publish_at", "categories", "tags", "articles")
UNPUBLISH_KEYS = ("destination", "to", "articles")
ONE_ARTICLE = ("articles",)  # the article routes name their article in the URL


def _queued(done: publishing.Requested):
    response = jsonify(done.as_json())
    response.status_code = 202
    return response


@bp.post("/batches/<int:batch_id>/publish")
@token_required
def publish_batch(batch_id: int):
    """Send the batch's approved articles to a destination: {"destination", "status"
    (draft, pending, future, publish; default draft), "publish_at" (ISO 8601, for future),
    "categories", "tags", "articles" (a selection: the batch's article ids; default all)}.
    202 with what was queued and what was skipped."""
    data = _publish_body(PUBLISH_KEYS)
    batch = _batch(batch_id)
    return _queued(publishing.publish(
        g.api_user, batch, data,
        article_ids=publishing.selected_articles(batch, data.get("articles"))))


@bp.post("/batches/<int:batch_id>/unpublish")
@token_required
def unpublish_batch(batch_id: int):
    """Move the batch's posts on a destination back to draft, or to the trash:
    {"destination", "to": "draft" or "trash", "articles" (as for publish)}. 202."""
    data = _publish_body(UNPUBLISH_KEYS)
    batch = _batch(batch_id)
    return _queued(publishing.unpublish(
        g.api_user, batch, data,
        article_ids=publishing.selected_articles(batch, data.get("articles"))))


@bp.post("/articles/<int:article_id>/publish")
@token_required
def publish_article(article_id: int):
    """Send one approved article to a destination (the batch route's body). 202."""
    data = _publish_body(tuple(k for k in PUBLISH_KEYS if k not in ONE_ARTICLE))
    article = _article(article_id)
    return _queued(publishing.publish(g.api_user, article.batch, data,
                                      article_ids=[article.id]))


@bp.post("/articles/<int:article_id>/unpublish")
@token_required
def unpublish_article(article_id: int):
    """Move one article's post back to draft, or to the trash. 202."""
    data = _publish_body(tuple(k for k in UNPUBLISH_KEYS if k not in ONE_ARTICLE))
    article = _article(article_id)
    return _queued(publishing.unpublish(g.api_user, article.batch, data,
                                        article_ids=[article.id]))
