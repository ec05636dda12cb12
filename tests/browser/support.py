"""Helpers for the browser tests: signing in, making batches, watching polls, waiting.

Waiting is always on a condition with a deadline. While the test waits, Playwright must be
given the turn (page.wait_for_timeout rather than time.sleep): its sync API delivers the
page's events (requests, responses, dialogs) only while one of its calls is running.
"""
from __future__ import annotations

import re
from typing import Any, Callable
from urllib.parse import urlsplit

from playwright.sync_api import Page, Request, expect
from sqlalchemy import select

from tests.helpers import FINISH_TIMEOUT, wait_until

PROGRESS_PATH = re.compile(r"^/batches/\d+/progress$")
ARTICLE_LIVE_PATH = re.compile(r"^/articles/\d+/live$")
BATCH_URL = re.compile(r"/batches/(\d+)$")


def wait_in_page(page: Page, predicate: Callable[[], Any], timeout: float,
                 message: str, every_ms: int = 50) -> Any:
    """Poll `predicate` (from Python) until truthy; fail after `timeout` seconds."""
    pause = every_ms / 1000
    return wait_until(predicate, timeout, message,
                      sleep=lambda seconds: page.wait_for_timeout(seconds * 1000),
                      first_pause=pause, max_pause=pause)


def sign_in(page: Page, email: str, password: str) -> None:
    """Through the real form, as a person does; lands on the dashboard."""
    page.goto("/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/$"))


def batch_id_of(page: Page) -> int:
    match = BATCH_URL.search(urlsplit(page.url).path)
    assert match, f"not on a batch page: {page.url}"
    return int(match.group(1))


def submit_batch(app, email: str, name: str, titles: list[str], **fields) -> int:
    """Store and dispatch a batch through the service layer, as `email` (for tests whose
    subject is what happens after the form, which test_batches covers)."""
    from webapp.extensions import db
    from webapp.models import User
    from webapp.services import submission

    data = {"name": name, "titles": "\n".join(titles), "model": "gpt-4o-mini",
            "target_words": "200", "tone": "neutral", "language": "English",
            "instructions": ""}
    data.update({k: str(v) for k, v in fields.items()})
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == email))
        result = submission.submit(user, data)
        assert result.batch is not None, result.errors
        assert not result.dispatch_error, result.dispatch_error
        return result.batch.id


def article_ids(app, batch_id: int) -> list[int]:
    """The batch's article ids in position order."""
    from webapp.extensions import db
    from webapp.models import Article

    with app.app_context():
        return list(db.session.scalars(select(Article.id).where(Article.batch_id == batch_id)
                                       .order_by(Article.position)))


def wait_batch_status(page: Page, status: str, timeout: float = FINISH_TIMEOUT) -> None:
    """The batch page's own summary badge shows `status` (reached by polling, not reload)."""
    expect(page.locator("#batch-progress .summary .badge")).to_have_text(status,
                                                                          timeout=timeout * 1000)


def bar_percent(page: Page, batch_id: int) -> int:
    """The pct-N class of the batch's bar, as the CSS sees it."""
    classes = page.locator(f"#batch-bar-{batch_id}").get_attribute("class") or ""
    match = re.search(r"\bpct-(\d+)\b", classes)
    assert match, f"no pct-N class on the bar: {classes!r}"
    return int(match.group(1))


class PollLog:
    """The polls one page sends to a path, as the network sees them.

    Counts requests, the most in flight at once (a request is in flight from `request`
    until `requestfinished` or `requestfailed`) and each answer's status.
    """

    def __init__(self, page: Page, path: re.Pattern = PROGRESS_PATH):
        self.path = path
        self.sent: list[str] = []
        self.statuses: list[int] = []
        self.failures: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        page.on("request", self._sent)
        page.on("response", self._answered)
        page.on("requestfinished", self._ended)
        page.on("requestfailed", self._failed)

    def _ours(self, request: Request) -> bool:
        return bool(self.path.match(urlsplit(request.url).path))

    def _sent(self, request: Request) -> None:
        if self._ours(request):
            self.sent.append(request.url)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _answered(self, response) -> None:
        if self._ours(response.request):
            self.statuses.append(response.status)

    def _ended(self, request: Request) -> None:
        if self._ours(request):
            self.in_flight -= 1

    def _failed(self, request: Request) -> None:
        if self._ours(request):
            self.failures.append(request.failure or "failed")
            self.in_flight -= 1

    @property
    def count(self) -> int:
        return len(self.sent)

    def idle(self) -> bool:
        return self.in_flight == 0


def assert_no_polls_for(page: Page, log: PollLog, seconds: float, why: str) -> None:
    """No poll is sent during a window of `seconds`.

    An absence can only be shown over a stretch of time, so this is the one place that waits
    a fixed time: a few poll intervals, during which any poll would have been sent.
    """
    before = log.count
    page.wait_for_timeout(int(seconds * 1000))
    assert log.count == before, (f"{log.count - before} poll(s) sent while {why}: "
                                 f"{log.sent[before:]}")
