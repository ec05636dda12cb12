"""How pages and the API answer what a service refuses (webapp/blueprints/errors.py, api.py):
one translation each, whatever the view."""
from __future__ import annotations

from tests.helpers import (batch_id_from_location, csrf_from, htmx_post, submit_form,
                           wait_batch_final)
from tests.sec_support import make_account, signed_in
from webapp.models import Role


def _finished_batch(app, client) -> int:
    batch_id = batch_id_from_location(submit_form(client, "Finished already", ["Done soon"]))
    wait_batch_final(app, batch_id)
    return batch_id


def test_a_conflict_is_flashed_on_the_page_it_came_from(app, client, fake):
    batch_id = _finished_batch(app, client)
    page = f"/batches/{batch_id}"
    csrf = csrf_from(client.get(page).get_data(as_text=True))

    # A plain form: 303 back to the page that sent it, which then says why.
    response = client.post(f"{page}/pause", data={"csrf_token": csrf},
                           headers={"Referer": f"http://localhost{page}?page=1"})
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"{page}?page=1")
    assert "This batch has already finished." in client.get(page).get_data(as_text=True)

    # A referrer on another site is no place to send anyone: the dashboard instead.
    response = client.post(f"{page}/dispatch", data={"csrf_token": csrf},
                           headers={"Referer": "https://evil.example/batches/1"})
    assert response.status_code == 303
    assert response.headers["Location"] in ("/", "http://localhost/")
    assert "This batch has already finished." in client.get("/").get_data(as_text=True)

    # An htmx button cannot show a flash in the widget it swaps: the page reloads and does.
    response = htmx_post(client, f"{page}/pause", csrf)
    assert response.status_code == 204 and response.headers["HX-Refresh"] == "true"
    assert "This batch has already finished." in client.get(page).get_data(as_text=True)


def test_invalid_input_outside_a_form_is_flashed_too(app, client, fake):
    batch_id = _finished_batch(app, client)
    page = f"/batches/{batch_id}"
    csrf = csrf_from(client.get(page).get_data(as_text=True))
    response = client.post(f"{page}/regenerate", data={"csrf_token": csrf, "which": "all"},
                           headers={"Referer": f"http://localhost{page}"})
    assert response.status_code == 303 and response.headers["Location"].endswith(page)
    assert "Regenerate the failed or the rejected articles." in \
        client.get(page).get_data(as_text=True)


def test_not_found_and_not_allowed_are_error_pages(app, client, fake):
    batch_id = _finished_batch(app, client)
    viewer_client = signed_in(app, make_account(app, Role.VIEWER))
    response = client.get("/templates/new?copy=2000000000")
    assert response.status_code == 404 and "No such template." in response.get_data(as_text=True)
    response = client.get(f"/batches/{batch_id}/export.pdf")
    assert response.status_code == 404
    csrf = csrf_from(viewer_client.get(f"/batches/{batch_id}").get_data(as_text=True))
    response = viewer_client.post(f"/batches/{batch_id}/duplicate", data={"csrf_token": csrf})
    assert response.status_code == 403
    assert "Viewers cannot submit batches." in response.get_data(as_text=True)


def test_the_api_answers_each_in_its_json_body(app, client, api_headers, fake):
    batch_id = _finished_batch(app, client)
    response = client.post(f"/api/v1/batches/{batch_id}/pause", headers=api_headers)
    assert response.status_code == 409
    assert response.get_json()["error"] == {"code": "conflict", "fields": {},
                                            "message": "This batch has already finished."}
    response = client.post("/api/v1/batches/2000000000/resume", headers=api_headers)
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"
    response = client.post("/api/v1/batches", headers=api_headers, json={"name": "", "titles": []})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid" and set(error["fields"]) == {"name", "titles"}
    assert all(isinstance(m, list) for m in error["fields"].values())
