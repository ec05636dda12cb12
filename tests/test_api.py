"""The JSON API for scripts and a CMS, end to end through the real worker."""
from __future__ import annotations

import time

from tests.helpers import FINISH_TIMEOUT, wait_batch_final

TITLES = ["API first article", "API second article"]


def test_create_get_batch_and_article(app, client, api_headers, fake):
    response = client.post("/api/v1/batches", headers=api_headers, json={
        "name": "From the CMS", "titles": TITLES, "target_words": 250, "tone": "friendly",
        "language": "English", "instructions": "Keep it short."})
    assert response.status_code == 201
    created = response.get_json()
    batch_id = created["id"]
    assert response.headers["Location"].endswith(f"/api/v1/batches/{batch_id}")
    assert created["name"] == "From the CMS" and created["total"] == 2
    assert created["tone"] == "friendly" and created["target_words"] == 250
    assert created["dispatched"] is True and created["dispatch_error"] is None
    assert [a["title"] for a in created["articles"]] == TITLES
    assert created["status"] in ("queued", "running", "succeeded")

    wait_batch_final(app, batch_id)
    response = client.get(f"/api/v1/batches/{batch_id}", headers=api_headers)
    assert response.status_code == 200
    batch = response.get_json()
    assert batch["status"] == "succeeded" and batch["percent"] == 100
    assert batch["counts"]["succeeded"] == 2 and batch["done"] == 2
    assert batch["completion_tokens"] == 2 * fake.words

    for item in batch["articles"]:
        assert item["status"] == "succeeded" and item["error"] is None
        response = client.get(item["url"], headers=api_headers)
        assert response.status_code == 200
        article = response.get_json()
        assert article["title"] == item["title"]
        # The Markdown body as the model wrote it, not HTML.
        assert article["body"].startswith(f"# {item['title']}\n\n")
        assert "<h1>" not in article["body"]
        assert article["words"] == item["words"] > 0
        assert article["finish_reason"] == "stop"
    # The settings reached the provider's prompt.
    prompt = fake.requests_for(TITLES[0])[0].messages[-1]["content"]
    assert "friendly" in prompt and "Keep it short." in prompt and "250" in prompt


def test_titles_may_be_one_per_line(app, client, api_headers):
    response = client.post("/api/v1/batches", headers=api_headers,
                           json={"name": "Lines", "titles": "One\n\n  Two  \n"})
    assert response.status_code == 201
    assert [a["title"] for a in response.get_json()["articles"]] == ["One", "Two"]
    wait_batch_final(app, response.get_json()["id"])


def test_cancel_through_the_api(app, client, api_headers, fake):
    fake.latency, fake.chunks = 10.0, 50
    response = client.post("/api/v1/batches", headers=api_headers,
                           json={"name": "Cancel me", "titles": TITLES})
    batch_id = response.get_json()["id"]
    fake.wait_for(lambda: fake.in_flight == 2 and all(r.chunks_sent for r in fake.requests),
                  timeout=FINISH_TIMEOUT)

    response = client.post(f"/api/v1/batches/{batch_id}/cancel", headers=api_headers)
    cancelled_at = time.monotonic()
    assert response.status_code == 202
    assert response.get_json()["status"] in ("cancelling", "cancelled")

    batch = wait_batch_final(app, batch_id)
    assert batch["status"] == "cancelled"
    fake.wait_idle(timeout=10)
    assert all(r.client_disconnected for r in fake.requests)
    assert not [r for r in fake.requests if r.start > cancelled_at]
    api = client.get(f"/api/v1/batches/{batch_id}", headers=api_headers).get_json()
    assert api["counts"]["cancelled"] == 2 and api["percent"] == 100

    # Cancelling a finished batch is accepted and changes nothing.
    again = client.post(f"/api/v1/batches/{batch_id}/cancel", headers=api_headers)
    assert again.status_code == 202 and again.get_json()["status"] == "cancelled"


def test_viewer_cannot_submit(app, client):
    from webapp.models import Role
    from webapp.services import users
    with app.app_context():
        _, _, token = users.create_user("viewer@example.test", Role.VIEWER)
    response = client.post("/api/v1/batches", headers={"Authorization": f"Bearer {token}"},
                           json={"name": "Nope", "titles": ["Nope"]})
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden"
