"""Sign-in is needed everywhere; API errors are JSON; forms need their CSRF token."""
from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.helpers import (batch_id_from_location, csrf_from, login, row_counts, submit_form,
                           wait_batch_final)

SECRET_TITLE = "Confidential scoop about the mayor"


@pytest.fixture
def batch_id(app, client):
    """A small finished batch owned by the editor."""
    batch = batch_id_from_location(submit_form(client, "Private batch", [SECRET_TITLE]))
    wait_batch_final(app, batch)
    return batch


def _article_id(client, api_headers, batch_id):
    return client.get(f"/api/v1/batches/{batch_id}",
                      headers=api_headers).get_json()["articles"][0]["id"]


@pytest.mark.parametrize("path", ["/", "/batches/new", "/batches/{batch}", "/articles/{article}"])
def test_pages_redirect_to_login(anon_client, client, api_headers, batch_id, path):
    path = path.format(batch=batch_id, article=_article_id(client, api_headers, batch_id))
    response = anon_client.get(path)
    assert response.status_code in (302, 303)
    location = urlsplit(response.headers["Location"])
    assert location.path == "/login"
    assert parse_qs(location.query)["next"] == [path]
    assert SECRET_TITLE not in response.get_data(as_text=True)


def test_login_then_next_returns_to_the_page(app, anon_client, accounts, batch_id):
    page = anon_client.get("/login").get_data(as_text=True)
    email, password = accounts["editor"]
    response = anon_client.post(f"/login?next=/batches/{batch_id}", data={
        "email": email, "password": password, "csrf_token": csrf_from(page)})
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/batches/{batch_id}")
    assert SECRET_TITLE in anon_client.get(f"/batches/{batch_id}").get_data(as_text=True)


@pytest.mark.parametrize("path", ["/batches/{batch}/progress", "/batches/rows",
                                  "/articles/{article}/live"])
def test_partials_do_not_leak_without_login(anon_client, client, api_headers, batch_id, path):
    path = path.format(batch=batch_id, article=_article_id(client, api_headers, batch_id))
    # As htmx polls it: 401 and a redirect of the whole page to the sign-in form.
    response = anon_client.get(path, headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"].startswith("/login")
    assert SECRET_TITLE not in response.get_data(as_text=True)
    assert "Private batch" not in response.get_data(as_text=True)
    # And as a plain GET: a redirect, no data.
    response = anon_client.get(path)
    assert response.status_code in (302, 303)
    assert SECRET_TITLE not in response.get_data(as_text=True)


@pytest.mark.parametrize("method, path", [
    ("post", "/api/v1/batches"), ("get", "/api/v1/batches/{batch}"),
    ("post", "/api/v1/batches/{batch}/cancel"), ("get", "/api/v1/articles/{article}")])
@pytest.mark.parametrize("header", [None, "Bearer pr_wrong-token", "Basic abc", "Bearer "])
def test_api_needs_a_valid_token(anon_client, client, api_headers, batch_id, method, path, header):
    path = path.format(batch=batch_id, article=_article_id(client, api_headers, batch_id))
    headers = {"Authorization": header} if header else {}
    response = getattr(anon_client, method)(path, headers=headers,
                                            json={"name": "x", "titles": ["y"]})
    assert response.status_code == 401
    assert response.is_json
    error = response.get_json()["error"]
    assert set(error) == {"code", "message", "fields"}
    assert error["code"] == "unauthorized" and "Bearer" in error["message"]
    assert SECRET_TITLE not in response.get_data(as_text=True)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_api_not_found_is_json(app, client, api_headers):
    for path in ("/api/v1/batches/999999", "/api/v1/articles/999999",
                 "/api/v1/batches/999999/cancel", "/api/v1/nothing-here"):
        method = client.post if path.endswith("cancel") else client.get
        response = method(path, headers=api_headers)
        assert response.status_code == 404, path
        assert response.is_json, path
        error = response.get_json()["error"]
        assert set(error) == {"code", "message", "fields"}
        assert "<html" not in response.get_data(as_text=True).lower()


def test_posts_without_csrf_token_are_refused(app, client, api_headers, batch_id):
    article_id = _article_id(client, api_headers, batch_id)
    before = row_counts(app)
    response = client.post("/batches/new", data={"name": "No token", "titles": "A\nB"})
    assert response.status_code == 400
    assert row_counts(app) == before
    for path in (f"/batches/{batch_id}/cancel", f"/articles/{article_id}/cancel", "/logout"):
        response = client.post(path, headers={"HX-Request": "true"})
        assert response.status_code == 400, path
        # A wrong token is refused as well.
        response = client.post(path, headers={"HX-Request": "true", "X-CSRFToken": "forged"})
        assert response.status_code == 400, path
    # Still signed in: the logout above was refused.
    assert client.get("/").status_code == 200
    # The login form needs its token too.
    fresh = app.test_client()
    response = fresh.post("/login", data={"email": "editor@example.test", "password": "x"})
    assert response.status_code == 400


def test_admin_sees_an_editors_batch(admin_client, batch_id):
    page = admin_client.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert SECRET_TITLE in page
    assert "editor@example.test" in page


def test_cli_creates_a_user_whose_token_works(app, anon_client):
    email = "new-admin@example.test"
    result = app.test_cli_runner().invoke(args=["users", "create", email, "--admin"])
    assert result.exit_code == 0, result.output
    password = re.search(r"^password: (\S+)$", result.output, re.M)
    token = re.search(r"^token: (\S+)$", result.output, re.M)
    assert password and token, result.output

    headers = {"Authorization": f"Bearer {token.group(1)}"}
    # Authenticated: an unknown batch is a 404, not a 401.
    response = anon_client.get("/api/v1/batches/999999", headers=headers)
    assert response.status_code == 404
    response = anon_client.post("/api/v1/batches", headers=headers,
                                json={"name": "From the CLI token", "titles": ["CLI article"]})
    assert response.status_code == 201
    wait_batch_final(app, response.get_json()["id"])

    # The printed password signs in, and the account is an admin.
    login(anon_client, email, password.group(1))
    assert "new-admin@example.test · admin" in anon_client.get("/").get_data(as_text=True)

    # A second create of the same email fails cleanly.
    again = app.test_cli_runner().invoke(args=["users", "create", email])
    assert again.exit_code != 0 and "already exists" in again.output
