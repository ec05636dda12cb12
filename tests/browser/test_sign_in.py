"""Signing in and out in a real browser, and what a signed-out browser may reach."""
from __future__ import annotations

import re

import pytest

# Skipped, not a collection error, where Playwright is missing.
pytest.importorskip("playwright.sync_api",
                    reason="Playwright is not installed (pip install -r requirements-dev.txt)")

from playwright.sync_api import expect  # noqa: E402

from tests.browser.support import sign_in, submit_batch


def test_sign_in_and_wrong_password(page, browser_editor, no_sign_in_failures, shot):
    """A wrong password keeps the editor on the form with the message; the right one
    opens the dashboard with the editor's name in the top bar."""
    email, password = browser_editor
    page.goto("/")
    # Every page needs a session: the dashboard sends a stranger to the sign-in form.
    expect(page).to_have_url(re.compile(r"/login"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    shot(page, "form")

    page.fill("#email", email)
    page.fill("#password", "not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
    expect(page).to_have_url(re.compile(r"/login"))
    # The email stays typed in; the password never comes back from the server.
    expect(page.locator("#email")).to_have_value(email)
    expect(page.locator("#password")).to_have_value("")
    shot(page, "wrong-password")

    page.fill("#password", password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator(".topbar .who")).to_contain_text(f"{email} · editor")
    expect(page.get_by_role("navigation").get_by_role("link", name="New batch")).to_be_visible()
    shot(page, "dashboard")


def test_sign_out_then_pages_and_polls_need_a_session(page, app, browser_editor, shot):
    """After signing out the browser is at /login, a protected page redirects there again,
    and a poll is told (HX-Redirect) to send the page to the form."""
    email, password = browser_editor
    batch_id = submit_batch(app, email, "Signed-out check", ["One title"])
    sign_in(page, email, password)

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.locator(".flash")).to_have_text("You are signed out.")
    expect(page.locator(".topbar nav")).to_have_count(0)
    shot(page, "signed-out")

    page.goto(f"/batches/{batch_id}")
    # The page asked for rides along (url_for leaves the slashes of a path unescaped).
    expect(page).to_have_url(re.compile(rf"/login\?next=(/|%2F)batches(/|%2F){batch_id}$"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    shot(page, "redirected")

    # A poll from a page left open after the session ended (the browser's cookies, htmx's
    # header): not a redirect to a form htmx would swap in, but a 401 naming where to go.
    poll = page.request.get(f"/batches/{batch_id}/progress", headers={"HX-Request": "true"},
                            max_redirects=0)
    assert poll.status == 401
    assert poll.headers.get("hx-redirect") == "/login"

    # Signing in again from the redirect goes back to the page that was asked for.
    page.fill("#email", email)
    page.fill("#password", password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(rf"/batches/{batch_id}$"))
