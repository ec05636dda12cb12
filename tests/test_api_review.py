"""Reviewing through the JSON API (issue 15, item 2): POST /api/v1/articles/<id>/review
approves or rejects a written article as the page's Approve/Reject does, and an article's
JSON (alone and in its batch) says its review."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select

from tests.fakeai import Fault
from tests.helpers import articles_state, wait_batch_final
from tests.sec_support import bearer, make_account
from webapp.extensions import db
from webapp.models import Article, AuditEvent, Role, User
from webapp.services import review

EDITOR = "editor@example.test"
NOTHING_DECIDED = {"review": "pending", "review_reason": None, "reviewed_by": None,
                   "reviewed_at": None}


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _written(app, client, headers, titles) -> list[dict]:
    """A finished batch made through the API; its articles as GET /batches/<id> lists them."""
    response = client.post("/api/v1/batches", headers=headers,
                           json={"name": "To review", "titles": titles})
    assert response.status_code == 201, response.get_json()
    batch_id = response.get_json()["id"]
    assert wait_batch_final(app, batch_id)["status"] == "succeeded"
    return client.get(f"/api/v1/batches/{batch_id}", headers=headers).get_json()["articles"]


def _review(client, headers, article_id, body=None, **fields):
    return client.post(f"/api/v1/articles/{article_id}/review", headers=headers,
                       json=fields if body is None else body)


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code
    return error


def _last_audit_id(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.max(AuditEvent.id))) or 0


def _reviews_since(app, marker: int) -> list[tuple[str, str, str]]:
    """(actor, target, detail) of the article_reviewed entries added after `marker`."""
    with app.app_context():
        return [tuple(row) for row in db.session.execute(
            select(AuditEvent.actor, AuditEvent.target, AuditEvent.detail)
            .where(AuditEvent.id > marker, AuditEvent.action == "article_reviewed")
            .order_by(AuditEvent.id)).all()]


def _stored_review(app, batch_id: int, article_id: int) -> tuple:
    article = next(a for a in articles_state(app, batch_id) if a["id"] == article_id)
    return (article["review_status"], article["review_reason"], article["reviewed_by"],
            article["reviewed_at"])


def _review_of(item: dict) -> dict:
    return {k: item[k] for k in ("review", "review_reason", "reviewed_by", "reviewed_at")}


def test_approve_answers_with_the_reviewed_article(app, client, api_headers):
    first, second = _written(app, client, api_headers, ["Approve me", "Leave me"])
    # Written and not yet decided: pending, in the batch's rows and alone.
    assert _review_of(first) == NOTHING_DECIDED
    assert _review_of(client.get(first["url"], headers=api_headers).get_json()) == \
        NOTHING_DECIDED
    marker = _last_audit_id(app)
    before = _utcnow() - timedelta(seconds=1)

    response = _review(client, api_headers, first["id"], decision="approve")
    assert response.status_code == 200, response.get_json()
    article = response.get_json()
    assert article["id"] == first["id"] and article["title"] == "Approve me"
    assert article["body"].startswith("# Approve me")
    assert article["review"] == "approved" and article["review_reason"] is None
    assert article["reviewed_by"] == EDITOR
    assert article["reviewed_at"].endswith("Z")
    reviewed_at = datetime.fromisoformat(article["reviewed_at"][:-1])
    assert before <= reviewed_at <= _utcnow() + timedelta(seconds=1)
    # One audit entry, by the token's user.
    assert _reviews_since(app, marker) == [(EDITOR, f"article:{first['id']}", "approved")]

    assert _review_of(client.get(first["url"], headers=api_headers).get_json()) == \
        _review_of(article)
    rows = {a["id"]: a for a in client.get(f"/api/v1/batches/{article['batch_id']}",
                                           headers=api_headers).get_json()["articles"]}
    assert _review_of(rows[first["id"]]) == _review_of(article)
    assert _review_of(rows[second["id"]]) == NOTHING_DECIDED

    # A restored version is to be reviewed again: pending, and the earlier decision's
    # reviewer and time (still stored) are not passed off as this one's.
    with app.app_context():
        stored = db.session.get(Article, first["id"])
        editor = db.session.scalar(select(User).where(User.email == EDITOR))
        review.restore(editor, stored, review.versions(first["id"])[-1].id)
    assert _stored_review(app, article["batch_id"], first["id"])[2] is not None
    assert _review_of(client.get(first["url"], headers=api_headers).get_json()) == \
        NOTHING_DECIDED


def test_reject_needs_a_reason_as_on_the_page(app, client, api_headers):
    (item,) = _written(app, client, api_headers, ["Reject me"])
    marker = _last_audit_id(app)
    for body in ({"decision": "reject"}, {"decision": "reject", "reason": "   "},
                 {"decision": "reject", "reason": None}):
        error = _error(_review(client, api_headers, item["id"], body), 400, "invalid")
        assert list(error["fields"]) == ["reason"], body
        assert error["message"] == "Say why the article is rejected."
    assert _reviews_since(app, marker) == []
    batch_id = client.get(item["url"], headers=api_headers).get_json()["batch_id"]
    assert _stored_review(app, batch_id, item["id"])[0] == "needs_review"

    response = _review(client, api_headers, item["id"], decision="reject",
                       reason="  Too vague  ")
    assert response.status_code == 200, response.get_json()
    article = response.get_json()
    assert (article["review"], article["review_reason"], article["reviewed_by"]) == \
        ("rejected", "Too vague", EDITOR)
    assert article["reviewed_at"] is not None
    assert _reviews_since(app, marker) == [
        (EDITOR, f"article:{item['id']}", "rejected: Too vague")]
    (row,) = client.get(f"/api/v1/batches/{batch_id}", headers=api_headers).get_json()["articles"]
    assert _review_of(row) == _review_of(article)


def test_a_viewer_may_not_review(app, client, api_headers):
    (item,) = _written(app, client, api_headers, ["Not for viewers"])
    batch_id = client.get(item["url"], headers=api_headers).get_json()["batch_id"]
    viewer = make_account(app, Role.VIEWER, "api-review-viewer")
    marker = _last_audit_id(app)
    for body in ({"decision": "approve"}, {"decision": "reject", "reason": "No"}, {}):
        _error(_review(client, bearer(viewer.token), item["id"], body), 403, "forbidden")
    assert _stored_review(app, batch_id, item["id"]) == ("needs_review", None, None, None)
    assert _reviews_since(app, marker) == []
    # Reading stays open to viewers, review fields included.
    seen = client.get(item["url"], headers=bearer(viewer.token)).get_json()
    assert _review_of(seen) == NOTHING_DECIDED


def test_an_unknown_article_is_not_found(app, client, api_headers):
    error = _error(_review(client, api_headers, 2_000_000_000, decision="approve"), 404,
                   "not_found")
    assert error["message"] == "No article 2000000000."
    response = client.post("/api/v1/articles/2000000000/review", json={"decision": "approve"})
    _error(response, 401, "unauthorized")


def test_only_a_written_article_can_be_reviewed(app, client, api_headers, fake):
    held = client.post("/api/v1/batches", headers=api_headers, json={
        "name": "Held", "titles": ["Still queued"], "paused": True}).get_json()
    (queued,) = held["articles"]
    assert queued["status"] == "queued" and queued["review"] is None
    fake.set_default_fault(Fault.bad_request("The prompt is too long."))
    created = client.post("/api/v1/batches", headers=api_headers,
                          json={"name": "Fails", "titles": ["Will fail"]}).get_json()
    assert wait_batch_final(app, created["id"])["status"] == "failed"
    (failed,) = client.get(f"/api/v1/batches/{created['id']}",
                           headers=api_headers).get_json()["articles"]
    assert failed["status"] == "failed"
    marker = _last_audit_id(app)

    for batch_id, item in ((held["id"], queued), (created["id"], failed)):
        # Not written yet (or never): nothing to review, so `review` is null, not pending.
        assert _review_of(item) == {**NOTHING_DECIDED, "review": None}
        assert _review_of(client.get(item["url"], headers=api_headers).get_json()) == \
            {**NOTHING_DECIDED, "review": None}
        for body in ({"decision": "approve"}, {"decision": "reject", "reason": "Bad"}):
            error = _error(_review(client, api_headers, item["id"], body), 409, "conflict")
            assert error["message"] == "Only a written article can be reviewed."
        assert _stored_review(app, batch_id, item["id"]) == (None, None, None, None)
    assert _reviews_since(app, marker) == []


def test_bad_bodies_name_the_field_and_store_nothing(app, client, api_headers):
    (item,) = _written(app, client, api_headers, ["Bad bodies"])
    batch_id = client.get(item["url"], headers=api_headers).get_json()["batch_id"]
    marker = _last_audit_id(app)
    cases = [
        ({}, "decision"),
        ({"decision": "approved"}, "decision"),  # the service's code is not the API's word
        ({"decision": "APPROVE"}, "decision"),
        ({"decision": ["approve"]}, "decision"),
        ({"decision": None}, "decision"),
        ({"reason": "Fine"}, "decision"),
        ({"decision": "approve", "reason": 5}, "reason"),
        ({"decision": "reject", "reason": ["Too", "vague"]}, "reason"),
        ({"decision": "approve", "reason": "x" * 2001}, "reason"),
        ({"decision": "reject", "reason": "x" * 2001}, "reason"),
    ]
    for body, field in cases:
        error = _error(_review(client, api_headers, item["id"], body), 400, "invalid")
        assert list(error["fields"]) == [field], body
        assert all(isinstance(m, str) and m for m in error["fields"][field])
    for raw in (b"[]", b'"approve"', b"not json"):
        response = client.post(f"/api/v1/articles/{item['id']}/review", data=raw,
                               headers={**api_headers, "Content-Type": "application/json"})
        _error(response, 400, "invalid_json")
    assert _stored_review(app, batch_id, item["id"]) == ("needs_review", None, None, None)
    assert _reviews_since(app, marker) == []

    # The page's limit, 2,000 characters, is allowed.
    response = _review(client, api_headers, item["id"], decision="approve", reason="y" * 2000)
    assert response.status_code == 200 and response.get_json()["review_reason"] == "y" * 2000
