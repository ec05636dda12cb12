"""The colour theme and the batch page's live region (issue 15, items 5 and 6).

The header's switch (light, dark, system) is a plain form: its choice is kept on the
signed-in user's profile and in a cookie (so the sign-in page keeps it too), and every page
names it in `<html data-theme>`; "system" clears both, and the CSS then follows the
browser's prefers-color-scheme. The batch page's polite live region is told a batch's
completion, failure or pause once: by the poll whose `seen` status differs.
"""
from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from tests.helpers import (batch_id_from_location, csrf_from, htmx_post, login, poll_url_of,
                           submit_form, wait_batch_final, wait_until)
from tests.support import ACCOUNTS
from webapp.extensions import db
from webapp.models import User

COOKIE = "pressroom_theme"
HX = {"HX-Request": "true"}
DATA_THEME = re.compile(r'<html lang="[^"]*"(?: data-theme="([a-z]+)")?>')
ANNOUNCEMENT = re.compile(r'<p id="batch-announcement" hx-swap-oob="innerHTML">([^<]*)</p>')


def data_theme(page: str):
    match = DATA_THEME.search(page)
    assert match, page[:300]
    return match.group(1)


def pressed(page: str) -> list[str]:
    """The switch's buttons marked pressed (one, always)."""
    return re.findall(r'name="theme" value="(\w+)" aria-pressed="true"', page)


def stored_theme(app, email: str):
    with app.app_context():
        return db.session.scalar(select(User.theme).where(User.email == email))


def choose(client, theme: str, from_path: str = "/"):
    """Press a button of the header's switch on `from_path`, as a browser does (Referer)."""
    page = client.get(from_path).get_data(as_text=True)
    return client.post("/account/theme", data={"theme": theme, "csrf_token": csrf_from(page)},
                       headers={"Referer": f"http://localhost{from_path}"})


def cookie_value(client):
    cookie = client.get_cookie(COOKIE)
    return cookie.value if cookie else None


def test_the_choice_is_kept_on_the_profile_and_in_a_cookie(app, client):
    email = ACCOUNTS["editor"][0]
    page = client.get("/").get_data(as_text=True)
    assert data_theme(page) is None and pressed(page) == ["system"]
    assert 'action="/account/theme"' in page

    response = choose(client, "dark", "/batches/new")
    assert response.status_code == 303
    assert response.headers["Location"] == "/batches/new"  # back to the page it came from
    assert stored_theme(app, email) == "dark"
    assert cookie_value(client) == "dark"
    page = client.get("/").get_data(as_text=True)
    assert data_theme(page) == "dark" and pressed(page) == ["dark"]

    # Another browser of the same person, without the cookie: the profile decides.
    other = app.test_client()
    login(other, *ACCOUNTS["editor"])
    assert data_theme(other.get("/").get_data(as_text=True)) == "dark"

    assert choose(client, "light").status_code == 303
    assert stored_theme(app, email) == "light"
    assert data_theme(client.get("/").get_data(as_text=True)) == "light"


def test_system_clears_the_choice(app, client):
    email = ACCOUNTS["editor"][0]
    choose(client, "dark")
    assert stored_theme(app, email) == "dark"
    response = choose(client, "system")
    assert response.status_code == 303
    assert stored_theme(app, email) is None
    assert cookie_value(client) is None
    page = client.get("/").get_data(as_text=True)
    assert data_theme(page) is None and pressed(page) == ["system"]


def test_signed_out_the_cookie_keeps_it(app, anon_client):
    response = choose(anon_client, "dark", "/login")
    assert response.status_code == 303 and response.headers["Location"] == "/login"
    assert cookie_value(anon_client) == "dark"
    page = anon_client.get("/login").get_data(as_text=True)
    assert data_theme(page) == "dark" and pressed(page) == ["dark"]
    # Signing in keeps it (the profile has no choice yet), and stores nothing.
    login(anon_client, *ACCOUNTS["editor"])
    assert data_theme(anon_client.get("/").get_data(as_text=True)) == "dark"
    assert stored_theme(app, ACCOUNTS["editor"][0]) is None


@pytest.mark.parametrize("bad", ["", "purple", "Dark", "dark;", "x" * 300])
def test_a_bad_value_is_refused_with_a_message(app, client, bad):
    choose(client, "dark")
    response = choose(client, bad, "/batches/new")
    assert response.status_code == 303 and response.headers["Location"] == "/batches/new"
    page = client.get("/batches/new").get_data(as_text=True)
    assert "Choose a theme: light, dark or system." in page
    # Nothing changed.
    assert stored_theme(app, ACCOUNTS["editor"][0]) == "dark"
    assert cookie_value(client) == "dark"


def test_another_site_is_not_a_place_to_go_back_to(app, client):
    page = client.get("/").get_data(as_text=True)
    response = client.post("/account/theme", data={"theme": "dark",
                                                   "csrf_token": csrf_from(page)},
                           headers={"Referer": "https://evil.example/phish"})
    assert response.status_code == 303 and response.headers["Location"] == "/"


def test_the_switch_needs_the_csrf_token(app, client):
    response = client.post("/account/theme", data={"theme": "dark"})
    assert response.status_code == 400
    assert stored_theme(app, ACCOUNTS["editor"][0]) is None


def test_other_account_pages_still_need_a_sign_in(anon_client):
    response = anon_client.get("/account/tokens")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


# -- the live region ------------------------------------------------------------------------

def announcements(answer) -> list[str]:
    return ANNOUNCEMENT.findall(answer.get_data(as_text=True))


def test_a_finished_batch_is_announced_once(app, client, fake):
    fake.latency = 1.0
    batch_id = batch_id_from_location(submit_form(client, "Announced", ["One", "Two"]))
    page = client.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert re.search(r'<p id="batch-announcement" class="visually-hidden" role="status" '
                     r'aria-live="polite"></p>', page)
    poll = poll_url_of(page)
    assert poll and "seen=" in poll and "seen=succeeded" not in poll
    wait_batch_final(app, batch_id)

    # The poll the page sends next (its `seen` is the status it showed) says it, once...
    first = client.get(poll, headers=HX)
    assert first.status_code == 286
    assert announcements(first) == ["Batch “Announced” finished: every article was "
                                    "written."]
    # ...and a poll that has already seen the batch finished says nothing.
    again = client.get(re.sub(r"seen=\w+", "seen=succeeded", poll), headers=HX)
    assert again.status_code == 286 and announcements(again) == []


def test_a_pause_is_announced_once_then_polls_are_quiet(app, client, fake):
    fake.latency, fake.chunks = 2.0, 20
    batch_id = batch_id_from_location(submit_form(client, "Held", [f"T{i}" for i in range(30)]))
    page = client.get(f"/batches/{batch_id}").get_data(as_text=True)
    poll = poll_url_of(page)
    assert htmx_post(client, f"/batches/{batch_id}/pause", csrf_from(page)).status_code == 200

    first = client.get(poll, headers=HX)
    assert first.status_code == 200
    assert announcements(first) == ["Batch “Held” is paused."]
    # The answer's own poll carries seen=paused: the polls after it announce nothing.
    following = poll_url_of(first.get_data(as_text=True))
    assert following and "seen=paused" in following

    def quiet_poll():
        answer = client.get(following, headers=HX)
        return answer if answer.status_code in (200, 204) else None
    second = wait_until(quiet_poll, 10, "a poll of the paused batch")
    assert announcements(second) == []
