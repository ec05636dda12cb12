"""Polling manners (static/js/app.js) in a real browser: no polls from a hidden tab, a
visible "connection lost" banner and recovery when polls fail, and never two polls of one
element at once."""
from __future__ import annotations

import re

import pytest

# Skipped, not a collection error, where Playwright is missing.
pytest.importorskip("playwright.sync_api",
                    reason="Playwright is not installed (pip install -r requirements-dev.txt)")

from playwright.sync_api import expect  # noqa: E402

from tests.browser.conftest import POLL_INTERVAL
from tests.browser.support import (PollLog, assert_no_polls_for, sign_in, submit_batch,
                                   wait_in_page)

# The batch page's progress polls, as page.route sees them (full URL, with the query).
PROGRESS_URL = re.compile(r"/batches/\d+/progress\?")
LOST = "Connection to Pressroom lost — retrying"
# What app.js does to a paused or failed poll element when it is time to poll again.
RESUME = "() => htmx.trigger(document.getElementById('batch-progress'), 'pressroom:poll')"

# Headless Chromium reports every page as visible, whatever is done to it: a second tab
# brought to the front, Page.setWebLifecycleState (frozen/active), a minimized window
# (Browser.setWindowBounds), Emulation.setFocusEmulationEnabled(false), or dropping
# Playwright's --disable-backgrounding-occluded-windows all leave document.hidden false (it is
# a known limit of headless Chrome). So the test gives the page what a browser gives it when
# a tab is hidden or shown again: document.hidden / visibilityState, and a visibilitychange
# event. DevTools evaluation is not subject to the page's CSP, so this works under it.
SET_HIDDEN = """hidden => {
  if (hidden) {
    Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});
    Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'hidden'});
  } else {
    // Back to the browser's own (prototype) getters.
    delete document.hidden;
    delete document.visibilityState;
  }
  document.dispatchEvent(new Event('visibilitychange'));
}"""


def set_hidden(page, hidden: bool) -> None:
    page.evaluate(SET_HIDDEN, hidden)
    assert page.evaluate("() => [document.hidden, document.visibilityState]") == \
        [hidden, "hidden" if hidden else "visible"]


def open_long_batch(page, app, fake, browser_editor) -> tuple[int, PollLog]:
    """A batch that stays unfinished for the whole test (40 articles, 20 s each, on a
    worker of 16 threads), with its page open and polling."""
    email, password = browser_editor
    fake.latency, fake.chunks = 20.0, 20
    sign_in(page, email, password)
    batch_id = submit_batch(app, email, "A long batch", [f"Article {i}" for i in range(1, 41)])
    polls = PollLog(page)
    page.goto(f"/batches/{batch_id}")
    wait_in_page(page, lambda: polls.statuses.count(200) >= 2, 15, "the page to poll twice")
    return batch_id, polls


def wait_for_more_polls(page, polls: PollLog, n: int, why: str) -> None:
    """`n` more polls answered 200: polling goes on."""
    target = polls.statuses.count(200) + n
    wait_in_page(page, lambda: polls.statuses.count(200) >= target, 20, why)


def test_no_polls_while_the_tab_is_hidden(page, app, fake, browser_editor, shot):
    batch_id, polls = open_long_batch(page, app, fake, browser_editor)

    set_hidden(page, True)
    # A poll already on its way may finish; after it nothing more is sent.
    wait_in_page(page, polls.idle, 10, "the poll in flight to finish")
    assert_no_polls_for(page, polls, 4 * POLL_INTERVAL, "the tab is hidden")
    shot(page, "hidden")

    before = polls.count
    set_hidden(page, False)
    # Shown again: polling resumes (the poll skipped while hidden is sent at once), and
    # keeps its rhythm.
    wait_in_page(page, lambda: polls.count > before, 5, "a poll once the tab is visible again")
    wait_for_more_polls(page, polls, 3, "polling to go on after the tab is visible")
    expect(page.locator("#connection-status")).to_be_hidden()
    assert polls.max_in_flight == 1, polls.max_in_flight
    assert polls.failures == []


def test_failed_polls_show_the_banner_and_polling_recovers(page, app, fake, live_server,
                                                           browser_editor, shot):
    batch_id, polls = open_long_batch(page, app, fake, browser_editor)
    banner = page.locator("#connection-status")
    expect(banner).to_be_hidden()

    # 1. An error answer (a proxy in front of a dead app says 502).
    page.route(PROGRESS_URL, lambda route: route.fulfill(status=502, body="Bad gateway"))
    expect(banner).to_be_visible()
    expect(banner).to_contain_text(LOST)
    expect(banner).to_contain_text("What you see may be out of date.")
    shot(page, "bad-gateway")
    page.unroute(PROGRESS_URL)
    expect(banner).to_be_hidden(timeout=20_000)
    wait_for_more_polls(page, polls, 2, "polling to go on after the 502s")
    assert 502 in polls.statuses

    # 2. No server at all (connection refused) while gunicorn is down, then back.
    live_server.stop()
    expect(banner).to_be_visible(timeout=20_000)
    expect(banner).to_contain_text(LOST)
    shot(page, "server-down")
    assert polls.failures, "no poll failed while the server was down"
    live_server.start()
    # Retries back off (1, 2, 4... s), so the next one after the restart may take a while.
    expect(banner).to_be_hidden(timeout=40_000)
    wait_for_more_polls(page, polls, 2, "polling to go on after the server is back")
    expect(page.locator("#batch-progress .summary .badge")).to_have_text("running")
    shot(page, "recovered")
    assert polls.max_in_flight == 1, polls.max_in_flight


def test_polls_never_overlap(page, app, fake, browser_editor):
    """A resume (what app.js sends when a tab is shown again or a retry is due) that lands
    while a poll is on its way, or while the next one is scheduled, never makes two polls
    of one element at once, nor a second chain of polls."""
    batch_id, polls = open_long_batch(page, app, fake, browser_editor)
    for _ in range(8):
        # Right after a poll is sent, while its answer is still on the way.
        with page.expect_request(lambda r: PROGRESS_URL.search(r.url)):
            pass
        page.evaluate(RESUME)
        # And between polls, while the next one waits for its delay.
        wait_in_page(page, polls.idle, 5, "the poll to finish")
        page.evaluate(RESUME)
    wait_for_more_polls(page, polls, 3, "polling to go on after the resumes")
    assert polls.max_in_flight == 1, polls.max_in_flight
    assert polls.failures == []
    # Still one chain of polls: at most one per interval (plus one for where the window
    # falls), where a second chain would make twice as many. A rate is measured over a
    # stretch of time, so this waits a fixed six intervals.
    start = polls.count
    page.wait_for_timeout(int(6 * POLL_INTERVAL * 1000))
    assert 1 <= polls.count - start <= 7, polls.count - start
