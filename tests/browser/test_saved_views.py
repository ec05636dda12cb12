"""Saved views in a real browser (issue 15, item 7): filter the dashboard, save the filter as
"Mine, failed", pick it from the nav's menu on another page, and see the same filtered list."""
from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

import pytest

pytest.importorskip("playwright.sync_api",
                    reason="Playwright is not installed (pip install -r requirements-dev.txt)")

from playwright.sync_api import expect  # noqa: E402
from sqlalchemy import delete  # noqa: E402

from tests.browser.support import sign_in, submit_batch  # noqa: E402
from tests.fakeai import Fault  # noqa: E402
from tests.helpers import wait_batch_final  # noqa: E402
from tests.support import ACCOUNTS  # noqa: E402


@pytest.fixture(autouse=True)
def no_views(app):
    """The suite's editor keeps its account between tests; its views must not."""
    from webapp.extensions import db
    from webapp.models import SavedView

    def wipe():
        with app.app_context():
            db.session.execute(delete(SavedView))
            db.session.commit()
    wipe()
    yield
    wipe()


def listed(page) -> list[str]:
    return page.locator("#batch-table tbody tr").evaluate_all("rows => rows.map(r => r.id)")


def test_save_the_dashboards_filter_and_pick_it_from_the_nav(page, app, fake, browser_editor,
                                                            shot):
    email, password = browser_editor
    # Failed batches of the editor's and of someone else's, and a good one of the editor's.
    fake.set_default_fault(Fault.bad_request())
    mine_failed = submit_batch(app, email, "My failed batch", ["Will fail"])
    theirs_failed = submit_batch(app, ACCOUNTS["admin"][0], "Their failed batch", ["Fails too"])
    for batch_id in (mine_failed, theirs_failed):
        assert wait_batch_final(app, batch_id)["status"] == "failed"
    fake.set_default_fault(None)
    mine_good = submit_batch(app, email, "My good batch", ["Works"])
    assert wait_batch_final(app, mine_good)["status"] == "succeeded"

    sign_in(page, email, password)
    nav = page.get_by_role("navigation")
    expect(nav.get_by_text("Saved views")).to_have_count(0)  # no views yet, no menu
    page.fill("#f-author", email)
    page.select_option("#f-status", "failed")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#batch-table tbody tr")).to_have_count(1)
    assert listed(page) == [f"batch-row-{mine_failed}"]
    filtered = dict(parse_qsl(urlsplit(page.url).query))

    page.get_by_label("Name of the view").fill("Mine, failed")
    page.get_by_role("button", name="Save this view").click()
    expect(page.get_by_role("status").filter(has_text="“Mine, failed” is saved")).to_be_visible()
    shot(page, "saved")

    # Somewhere else, then back through the nav's menu (a <details>: no script needed).
    page.get_by_role("navigation").get_by_role("link", name="Templates").click()
    expect(page).to_have_url(re.compile(r"/templates$"))
    menu = page.locator("nav details.saved-views-menu")
    menu.locator("summary").click()
    link = menu.get_by_role("link", name="Mine, failed")
    expect(link).to_be_visible()
    shot(page, "menu")
    link.click()
    expect(page).to_have_url(re.compile(r"/\?"))
    assert dict(parse_qsl(urlsplit(page.url).query)) == filtered
    expect(page.locator("#batch-table tbody tr")).to_have_count(1)
    assert listed(page) == [f"batch-row-{mine_failed}"]
    expect(page.locator("#f-status")).to_have_value("failed")
    expect(page.locator("#f-author")).to_have_value(email)
    shot(page, "followed")

    # The save form, the page's list and the open menu pass axe-core in both themes (where
    # the suite has it; test_accessibility covers the pages without views).
    try:
        from tests.browser.test_accessibility import blocking_violations
    except (ImportError, pytest.skip.Exception):
        return
    for theme in ("Dark", "Light"):
        page.locator(".themes").get_by_role("button", name=theme, exact=True).click()
        expect(page.locator(".themes").get_by_role("button", name=theme, exact=True)) \
            .to_have_attribute("aria-pressed", "true")
        page.locator("nav details.saved-views-menu summary").click()
        expect(page.locator("nav details.saved-views-menu")).to_have_attribute("open", "")
        assert blocking_violations(page) == [], theme
        shot(page, f"menu-{theme.lower()}")
