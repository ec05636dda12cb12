"""Charts in a real browser: the batch page's charts appear by their own polling as articles
finish (no reload), each an image whose accessible name states its figures, as Chromium
computes it; the system page's charts likewise."""
from __future__ import annotations

import re

import pytest

pytest.importorskip("playwright.sync_api",
                    reason="Playwright is not installed (pip install -r requirements-dev.txt)")

from playwright.sync_api import expect  # noqa: E402

from tests.browser.support import sign_in, submit_batch  # noqa: E402
from tests.helpers import FINISH_TIMEOUT  # noqa: E402
from tests.support import ACCOUNTS  # noqa: E402

TITLES = ["Frost on the orchard", "A lighthouse keeper retires", "Ferry timetables change"]


def test_batch_charts_fill_in_by_polling_and_name_their_figures(page, app, fake, shot):
    email, password = ACCOUNTS["admin"]
    sign_in(page, email, password)
    fake.latency = 2.0  # long enough to see the batch page before anything finished
    batch_id = submit_batch(app, email, "Charts in the browser", TITLES)
    page.goto(f"/batches/{batch_id}")
    charts = page.locator("#batch-charts")
    expect(charts.get_by_text("No articles finished yet.")).to_be_visible()

    finished = page.get_by_role("img", name=re.compile(r"^3 of 3 articles finished in "))
    expect(finished).to_be_visible(timeout=FINISH_TIMEOUT * 1000)
    expect(page.get_by_role("img", name=re.compile(r"^\$[\d.,]+ spent on 3 finished articles in "))
           ).to_be_visible()
    # The final render carries no trigger: the charts stopped polling.
    expect(charts).not_to_have_attribute("hx-get", re.compile("."))
    page.get_by_text("The numbers").click()
    expect(charts.locator("table")).to_be_visible()
    shot(page, "batch-charts")

    page.goto("/admin/system")
    for name in (r"^3 articles finished in the last hour, 0 failed",
                 r"^Provider latency in the last hour: median [\d.]+ s, 95th percentile",
                 r"^3 articles finished in the last 24 hours"):
        expect(page.get_by_role("img", name=re.compile(name))).to_be_visible()
    expect(page.locator("#charts-hour").get_by_text("No article failed in this period.")
           ).to_be_visible()
    shot(page, "system-charts", full_page=True)
