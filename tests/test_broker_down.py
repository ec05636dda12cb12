"""Submitting while the broker (Redis) is down: a quick, clear answer and a batch kept for later."""
from __future__ import annotations

import time

from tests.support import ACCOUNTS, activate_celery, free_port
from tests.helpers import (articles_state, batch_id_from_location, batch_state, csrf_from, login,
                           submit_form, wait_batch_final)

# Generous: the publish settings give up after about two seconds; a hang would be minutes.
NO_HANG = 20.0


def test_submit_with_the_broker_down(app, make_app, fake, client):
    down = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    browser = down.test_client()
    login(browser, *ACCOUNTS["editor"])

    started = time.monotonic()
    response = submit_form(browser, "Queue is down", ["Down one", "Down two", "Down three"])
    elapsed = time.monotonic() - started
    assert elapsed < NO_HANG, f"the submit hung for {elapsed:.1f} s with the broker down"
    assert response.status_code == 303
    batch_id = batch_id_from_location(response)

    page = browser.get(f"/batches/{batch_id}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "unreachable" in html and "generation has not started" in html
    assert "Retry dispatch" in html

    batch = batch_state(app, batch_id)
    assert batch["dispatch_error"] and "unreachable" in batch["dispatch_error"]
    assert batch["dispatched_at"] is None
    assert batch["status"] == "queued"
    articles = articles_state(app, batch_id)
    assert [a["status"] for a in articles] == ["queued"] * 3
    assert fake.request_count() == 0

    # The API says the same, with a 201 (the batch is stored) and no 500.
    headers = {"Authorization": f"Bearer {app.config['TEST_TOKENS']['editor']}"}
    started = time.monotonic()
    response = browser.post("/api/v1/batches", headers=headers,
                            json={"name": "API while down", "titles": ["Down API"]})
    assert time.monotonic() - started < NO_HANG
    assert response.status_code == 201
    body = response.get_json()
    assert body["dispatched"] is False and "unreachable" in body["dispatch_error"]

    # Once the queue is back (the main app's Redis), "Retry dispatch" sends the batch.
    activate_celery(app)
    csrf = csrf_from(client.get(f"/batches/{batch_id}").get_data(as_text=True))
    response = client.post(f"/batches/{batch_id}/dispatch", data={"csrf_token": csrf})
    assert response.status_code == 303
    assert wait_batch_final(app, batch_id)["status"] == "succeeded"
    assert batch_state(app, batch_id)["dispatch_error"] is None
    assert sorted(r.title for r in fake.requests) == ["Down one", "Down three", "Down two"]
