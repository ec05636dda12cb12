"""Bulk actions in a real browser (issue 15 item 3): tick batches on the dashboard (the
ticks survive the table's polling), pick an action, read the confirmation with its count,
confirm and see the outcome; then on /review act on every article matching the filter,
which runs on the worker with its own progress bar."""
from __future__ import annotations

import re

import pytest

# Skipped, not a collection error, where Playwright is missing.
pytest.importorskip("playwright.sync_api",
                    reason="Playwright is not installed (pip install -r requirements-dev.txt)")

from playwright.sync_api import expect  # noqa: E402
from sqlalchemy import select  # noqa: E402

from tests.browser.conftest import BULK_SYNC_LIMIT  # noqa: E402
from tests.browser.support import (PollLog, article_ids, sign_in, submit_batch,  # noqa: E402
                                   wait_in_page)
from tests.helpers import wait_batch_final  # noqa: E402
from tests.support import ACCOUNTS  # noqa: E402

TABLE_PATH = re.compile(r"^/batches/rows$")


def reviews(app, batch_id: int) -> list[str]:
    from webapp.extensions import db
    from webapp.models import Article

    with app.app_context():
        return list(db.session.scalars(select(Article.review_status)
                                       .where(Article.batch_id == batch_id)
                                       .order_by(Article.position)))


def bulk_audit(app, action: str) -> list[str]:
    from webapp.extensions import db
    from webapp.models import AuditEvent

    with app.app_context():
        return list(db.session.scalars(select(AuditEvent.detail)
                                       .where(AuditEvent.action == action)
                                       .order_by(AuditEvent.id)))


def test_approve_ticked_batches_then_everything_matching_in_the_queue(page, app, fake,
                                                                       browser_editor, shot):
    email, password = browser_editor
    fake.latency = 0.01
    picked = [submit_batch(app, email, f"Bulk desk {n}", [f"Bulk {n} first", f"Bulk {n} second"])
              for n in range(3)]
    for batch_id in picked:
        wait_batch_final(app, batch_id)
    audits_before = len(bulk_audit(app, "bulk_approved"))
    # Someone else's batch, still being written: the dashboard's table keeps polling.
    fake.latency, fake.chunks = 20.0, 40
    busy = submit_batch(app, ACCOUNTS["admin"][0], "Still writing", ["Slow one"])

    sign_in(page, email, password)
    polls = PollLog(page, TABLE_PATH)
    for n in range(3):
        page.get_by_label(f"Select “Bulk desk {n}”").check()
    # The ticks are kept while the polled table is swapped under them.
    start = len(polls.statuses)
    wait_in_page(page, lambda: len(polls.statuses) >= start + 2, 30,
                 "the dashboard's table to poll twice")
    for batch_id in picked:
        expect(page.locator(f"#pick-batch-{batch_id}")).to_be_checked()
    expect(page.locator(f"#pick-batch-{busy}")).not_to_be_checked()

    page.get_by_label("Action").select_option("approve")
    page.get_by_role("button", name="Continue to the confirmation").click()
    panel = page.locator("#bulk-panel")
    expect(panel.get_by_role("heading")).to_have_text("Approve 6 articles awaiting review?")
    expect(panel).to_contain_text("They are in 3 batches.")
    shot(page, "confirmation")
    assert reviews(app, picked[0]) == ["needs_review", "needs_review"]  # nothing ran yet

    panel.get_by_role("button", name="Confirm").click()
    expect(page.locator(".flash-success")).to_have_text("6 articles approved.")
    shot(page, "approved", full_page=True)
    for batch_id in picked:
        assert reviews(app, batch_id) == ["approved", "approved"]
    details = bulk_audit(app, "bulk_approved")[audits_before:]
    assert len(details) == 1 and "6 articles approved." in details[0]
    page.goto(f"/articles/{article_ids(app, picked[2])[1]}")
    expect(page.locator("#bulk-history")).to_contain_text(
        re.compile(rf"Approved in bulk by {re.escape(email)} on .+ \(filter: picked batches "))

    # The review queue: every article of one batch, more than run in a request.
    fake.latency, fake.chunks = 0.01, 3
    count = BULK_SYNC_LIMIT + 2
    queued = submit_batch(app, email, "Queue in bulk", [f"Queued {n}" for n in range(count)])
    wait_batch_final(app, queued)
    page.goto(f"/review?batch={queued}")
    page.get_by_label(re.compile(rf"All {count} articles matching this filter")).check()
    page.get_by_label("Action").select_option("approve")
    page.get_by_role("button", name="Continue to the confirmation").click()
    panel = page.locator("#bulk-panel")
    expect(panel.get_by_role("heading")).to_have_text(f"Approve {count} articles awaiting review?")
    expect(panel).to_contain_text("runs in the background")
    panel.get_by_role("button", name="Confirm").click()
    bar = page.locator("#bulk-panel [role=progressbar]")
    expect(bar).to_have_attribute("aria-valuenow", "100", timeout=60_000)
    expect(panel).to_contain_text(f"{count} articles approved.")
    expect(panel.locator("[hx-get]")).to_have_count(0)
    expect(page.locator("#bulk-panel[hx-get]")).to_have_count(0)  # polling stopped
    # The bar's width glides to its end (a CSS transition) before the picture is taken.
    page.wait_for_function("""() => {
        const fill = document.querySelector('#bulk-panel .bar-fill');
        return fill && fill.getBoundingClientRect().width >= fill.parentElement.clientWidth - 1;
    }""")
    shot(page, "queue-done")
    assert reviews(app, queued) == ["approved"] * count
