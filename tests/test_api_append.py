"""A batch larger than one request takes, through the JSON API: submit it held
("paused": true), add rows with POST /api/v1/batches/<id>/rows, then resume it."""
from __future__ import annotations

import uuid

import pytest

from tests.helpers import articles_state, batch_state, row_counts, wait_batch_final


def _held(client, headers, titles, **fields) -> dict:
    response = client.post("/api/v1/batches", headers=headers, json={
        "name": "Grown in pieces", "titles": titles, "paused": True, **fields})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _append(client, headers, batch_id, body):
    return client.post(f"/api/v1/batches/{batch_id}/rows", headers=headers, json=body)


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code
    return error


def test_a_held_batch_grows_in_pieces_and_runs_whole_when_resumed(app, client, api_headers,
                                                                   fake):
    held = _held(client, api_headers, ["Piece one A", "Piece one B"], tone="formal")
    batch_id = held["id"]
    assert held["status"] == "paused" and held["dispatched"] is False
    assert "resumed" in held["paused_reason"]

    response = _append(client, api_headers, batch_id, {"rows": [
        {"title": "Piece two A"}, {"title": "Piece two B", "tone": "playful", "words": 120}]})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["total"] == 4 and body["status"] == "paused"
    # Only the articles this request added are listed, at the positions that follow.
    assert [(a["position"], a["title"]) for a in body["articles"]] == [
        (3, "Piece two A"), (4, "Piece two B")]
    assert response.headers["Location"].endswith(f"/api/v1/batches/{batch_id}")
    third = _append(client, api_headers, batch_id, {"rows": [{"title": "Piece three"}]})
    assert third.status_code == 201 and third.get_json()["total"] == 5

    listed = client.get(f"/api/v1/batches/{batch_id}", headers=api_headers).get_json()
    assert [a["position"] for a in listed["articles"]] == [1, 2, 3, 4, 5]
    assert listed["counts"]["queued"] == 5 and listed["done"] == 0
    assert batch_state(app, batch_id)["dispatched_at"] is None
    assert fake.requests == []  # held: nothing was sent

    resumed = client.post(f"/api/v1/batches/{batch_id}/resume", headers=api_headers)
    assert resumed.status_code == 202
    assert wait_batch_final(app, batch_id)["status"] == "succeeded"
    articles = articles_state(app, batch_id)
    assert [a["status"] for a in articles] == ["succeeded"] * 5
    assert len({a["task_id"] for a in articles}) == 5
    # Each row keeps its own settings, the batch's fill the rest.
    assert "playful" in fake.requests_for("Piece two B")[0].messages[-1]["content"]
    assert "formal" in fake.requests_for("Piece three")[0].messages[-1]["content"]

    # Started: no more rows.
    late = _append(client, api_headers, batch_id, {"rows": [{"title": "Too late"}]})
    assert "not started" in _error(late, 409, "conflict")["message"]


def test_rows_go_only_to_a_batch_that_has_not_started(app, client, api_headers):
    sent = client.post("/api/v1/batches", headers=api_headers,
                       json={"name": "Sent at once", "titles": ["Sent article"]})
    batch_id = sent.get_json()["id"]
    wait_batch_final(app, batch_id)
    _error(_append(client, api_headers, batch_id, {"rows": [{"title": "More"}]}), 409,
           "conflict")
    assert batch_state(app, batch_id)["total"] == 1

    _error(_append(client, api_headers, 2**31 - 1, {"rows": [{"title": "More"}]}), 404,
           "not_found")


def test_only_the_author_or_an_admin_adds_rows(app, client, api_headers):
    from webapp.models import Role
    from webapp.services import users
    batch_id = _held(client, api_headers, ["Owned article"])["id"]
    with app.app_context():
        _, _, other = users.create_user(f"other-{uuid.uuid4().hex[:8]}@example.test",
                                        Role.EDITOR)
        _, _, viewer = users.create_user(f"viewer-{uuid.uuid4().hex[:8]}@example.test",
                                         Role.VIEWER)
    for token in (other, viewer):
        response = _append(client, {"Authorization": f"Bearer {token}"}, batch_id,
                           {"rows": [{"title": "Not mine"}]})
        _error(response, 403, "forbidden")
    _error(_append(client, {}, batch_id, {"rows": [{"title": "Anonymous"}]}), 401,
           "unauthorized")
    admin = {"Authorization": f"Bearer {app.config['TEST_TOKENS']['admin']}"}
    response = _append(client, admin, batch_id, {"rows": [{"title": "From the admin"}]})
    assert response.status_code == 201
    assert [a["title"] for a in articles_state(app, batch_id)] == ["Owned article",
                                                                  "From the admin"]


@pytest.mark.parametrize("body, field", [
    ({"rows": []}, "rows"),
    ({"rows": "Just a title"}, "rows"),
    ({}, "rows"),
    ({"rows": [{"title": "Fine"}, {"title": ""}]}, "rows"),
    ({"rows": [{"title": "Fine"}, "not an object"]}, "rows"),
    ({"rows": [{"title": "Fine"}, {"title": "Bad words", "words": 3}]}, "rows"),
    ({"rows": [{"title": "Same"}, {"title": "same"}]}, "rows"),
    # Same as a title the batch has already, whatever the case.
    ({"rows": [{"title": "Fine"}, {"title": "FIRST HELD ARTICLE"}]}, "rows"),
    ({"rows": [{"title": "Fine"}], "tone": "formal"}, "tone"),
])
def test_bad_rows_store_nothing(app, client, api_headers, body, field):
    batch_id = _held(client, api_headers, ["First held article"])["id"]
    before = row_counts(app)
    error = _error(_append(client, api_headers, batch_id, body), 400, "invalid")
    assert field in error["fields"], error
    assert row_counts(app) == before
    assert batch_state(app, batch_id)["total"] == 1


def test_the_body_must_be_an_object(app, client, api_headers):
    batch_id = _held(client, api_headers, ["Object article"])["id"]
    response = client.post(f"/api/v1/batches/{batch_id}/rows", headers=api_headers,
                           data="[1, 2]", content_type="application/json")
    _error(response, 400, "invalid_json")


def test_limits_per_request_and_per_batch(app, client, api_headers, monkeypatch):
    batch_id = _held(client, api_headers, ["Limit one", "Limit two"])["id"]
    monkeypatch.setitem(app.config, "IMPORT_MAX_ROWS", 3)
    monkeypatch.setitem(app.config, "BATCH_MAX_ARTICLES", 5)
    rows = [{"title": f"Limit row {i}"} for i in range(4)]
    error = _error(_append(client, api_headers, batch_id, {"rows": rows}), 400, "invalid")
    assert "at most 3" in error["fields"]["rows"][0]
    assert _append(client, api_headers, batch_id, {"rows": rows[:3]}).status_code == 201
    error = _error(_append(client, api_headers, batch_id, {"rows": [{"title": "Sixth"}]}),
                   400, "invalid")
    assert "5" in error["fields"]["rows"][0]
    assert batch_state(app, batch_id)["total"] == 5
    assert len(articles_state(app, batch_id)) == 5


def test_paused_must_be_a_boolean(app, client, api_headers):
    before = row_counts(app)
    response = client.post("/api/v1/batches", headers=api_headers, json={
        "name": "Maybe held", "titles": ["Maybe"], "paused": "yes"})
    assert "paused" in _error(response, 400, "invalid")["fields"]
    assert row_counts(app) == before


@pytest.mark.parametrize("rows", [7, 6])
def test_get_batch_streams_every_article_a_chunk_at_a_time(app, client, api_headers,
                                                           monkeypatch, rows):
    """GET /api/v1/batches/<id> reads the articles a chunk at a time (flat memory at
    100,000): every chunk is in the answer, in order, and the answer is one JSON object."""
    from webapp.blueprints import api

    monkeypatch.setattr(api, "ROWS_PER_READ", 3)
    titles = [f"Streamed {i}" for i in range(1, rows + 1)]
    held = _held(client, api_headers, titles)
    response = client.get(f"/api/v1/batches/{held['id']}", headers=api_headers)
    assert response.status_code == 200 and response.mimetype == "application/json"
    body = response.get_json()
    assert [a["title"] for a in body["articles"]] == titles
    assert [a["position"] for a in body["articles"]] == list(range(1, rows + 1))
    assert body["total"] == rows and body["id"] == held["id"]
