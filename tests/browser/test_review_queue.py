"""The review queue in a real browser (issue 15 item 1): an editor reviews from the
keyboard, j / k / a / r / ?, with every decision through htmx and no page load."""
from __future__ import annotations

import re

import pytest

# Skipped, not a collection error, where Playwright is missing.
pytest.importorskip("playwright.sync_api",
                    reason="Playwright is not installed (pip install -r requirements-dev.txt)")

from playwright.sync_api import expect  # noqa: E402
from sqlalchemy import select  # noqa: E402

from tests.browser.support import sign_in, submit_batch  # noqa: E402
from tests.helpers import wait_batch_final  # noqa: E402

TITLES = ["Winter tyres, explained", "A kitchen garden in March", "Ten quiet walks by the river",
          "How to bleed a radiator", "The first frost"]
REASON = "Not a joke, sorry: rework"  # a, j, k, o, e, r typed here must not act
# Screenshots here keep the caret (caret="initial"): hiding it leaves style="" on every
# input, which htmx copies onto the inputs of a pane swapped in later, and the CSP refuses.


def queue_order(app, batch_id: int) -> list[int]:
    """The batch's articles in the queue's order (flagged first, then the oldest finished)."""
    from webapp.extensions import db
    from webapp.models import Article

    with app.app_context():
        rows = db.session.execute(select(Article.id, Article.review_flag, Article.finished_at)
                                  .where(Article.batch_id == batch_id)).all()
    return [r.id for r in sorted(rows, key=lambda r: (r.review_flag is None, r.finished_at,
                                                       r.id))]


def review_of(app, article_id: int) -> tuple:
    from webapp.extensions import db
    from webapp.models import Article

    with app.app_context():
        article = db.session.get(Article, article_id)
        return article.review_status, article.review_reason


def written(app, email: str, name: str, titles: list[str]) -> list[int]:
    batch_id = submit_batch(app, email, name, titles)
    wait_batch_final(app, batch_id)
    return queue_order(app, batch_id)


def expect_shown(page, article_id: int) -> None:
    """The pane shows the article, and the list marks it as the current one."""
    expect(page.locator("#review-pane")).to_have_attribute("data-article-id", str(article_id))
    expect(page.locator(f"#review-row-{article_id}")).to_have_attribute("aria-current", "true")


def expect_counts(page, awaiting: int) -> None:
    noun = "article awaits" if awaiting == 1 else "articles await"
    expect(page.locator("#review-total")).to_have_text(f"{awaiting} {noun} review")
    expect(page.locator("#nav-review")).to_have_text(f"Review ({awaiting})")
    expect(page.locator("#nav-review")).to_have_attribute(
        "aria-label", f"Review: {awaiting} {noun} review")


def test_an_editor_reviews_the_queue_from_the_keyboard(page, app, fake, browser_editor, shot):
    email, password = browser_editor
    fake.latency = 0.01
    order = written(app, email, "Keyboard review", TITLES)
    sign_in(page, email, password)
    page.goto("/review")
    # Page loads from here on: documents requested, and load events. (htmx's URL updates,
    # history.replaceState, are same-document navigations, so framenavigated would count them.)
    loads: list[str] = []
    page.on("request", lambda request: loads.append(request.url)
            if request.resource_type == "document" else None)
    page.on("load", lambda _page: loads.append("load event"))
    page.evaluate("() => { window.reviewMarker = 'set on arrival'; }")
    expect_shown(page, order[0])
    expect_counts(page, 5)
    expect(page.locator("#review-pane article.prose")).to_be_visible()

    # j / k move the selection, and the pane follows.
    page.keyboard.press("j")
    expect_shown(page, order[1])
    page.keyboard.press("j")
    expect_shown(page, order[2])
    page.keyboard.press("k")
    expect_shown(page, order[1])
    expect(page).to_have_url(re.compile(rf"/review\?.*article={order[1]}"))
    shot(page, "queue", caret="initial")

    # a approves it; the next one is in the pane at once, and the counts drop.
    page.keyboard.press("a")
    expect_shown(page, order[2])
    expect_counts(page, 4)
    expect(page.locator(f"#review-row-{order[1]}")).to_have_count(0)
    expect(page.locator("#review-status")).to_have_text(re.compile(r"^Approved “.+”\.$"))
    assert review_of(app, order[1]) == ("approved", None)

    # r focuses the reason (the r itself is not typed); Enter rejects.
    page.keyboard.press("r")
    reason = page.locator("#review-reason")
    expect(reason).to_be_focused()
    expect(reason).to_have_value("")
    page.keyboard.type(REASON)
    expect(reason).to_have_value(REASON)
    expect_shown(page, order[2])  # typing a, j, k, o, e did nothing else
    page.keyboard.press("Enter")
    expect_shown(page, order[3])
    expect_counts(page, 3)
    assert review_of(app, order[2]) == ("rejected", REASON)

    # ? shows and hides the shortcuts.
    shortcuts = page.locator("#review-shortcuts")
    page.keyboard.press("?")
    expect(shortcuts).to_have_attribute("open", "")
    expect(shortcuts.get_by_text("next article", exact=True)).to_be_visible()
    shot(page, "shortcuts", caret="initial")
    page.keyboard.press("?")
    expect(shortcuts).not_to_have_attribute("open", "")

    # k goes back to the first; a at once (before its pane has arrived) approves that one,
    # not the one the pane showed when a was pressed.
    page.keyboard.press("k")
    page.keyboard.press("a")
    expect_shown(page, order[3])
    expect_counts(page, 2)
    assert review_of(app, order[0])[0] == "approved"
    assert review_of(app, order[3])[0] == "needs_review"
    # The rest, one key each.
    page.keyboard.press("a")
    expect_shown(page, order[4])
    expect_counts(page, 1)
    page.keyboard.press("a")
    expect(page.locator("#nav-review")).to_have_text("Review (0)")
    assert review_of(app, order[3])[0] == review_of(app, order[4])[0] == "approved"
    expect(page.locator("#review-pane")).to_contain_text("When an article awaits review")
    expect(page.locator("#review-list")).to_contain_text("Nothing awaits review.")
    shot(page, "empty", caret="initial")
    assert loads == [], f"the page was loaded again: {loads}"
    assert page.evaluate("() => window.reviewMarker") == "set on arrival"


def test_e_and_o_go_to_the_article_and_shortcuts_wait_while_typing(page, app, fake,
                                                                    browser_editor):
    email, password = browser_editor
    fake.latency = 0.01
    first, second = written(app, email, "Keyboard links", TITLES[:2])
    sign_in(page, email, password)
    page.goto("/review")
    expect_shown(page, first)
    # Typing in a filter field is typing, not shortcuts; with Ctrl held, j is not j.
    page.locator("#rq-author").fill("")
    page.locator("#rq-author").press("j")
    page.keyboard.press("Control+j")
    page.locator("#rq-author").blur()
    expect_shown(page, first)
    page.keyboard.press("o")
    expect(page).to_have_url(re.compile(rf"/articles/{first}$"))
    page.go_back()
    expect_shown(page, first)
    page.keyboard.press("j")
    expect_shown(page, second)
    page.keyboard.press("e")
    expect(page).to_have_url(re.compile(rf"/articles/{second}/edit$"))
    assert review_of(app, first) == ("needs_review", None)


def test_a_hundred_articles_take_a_hundred_keystrokes_and_no_page_load(page, app, fake,
                                                                         browser_editor):
    """The issue's measure of done: after each `a` the next article is already in the pane,
    so a hundred decisions are a hundred key presses (each waited for), with no page load,
    across the queue's pages (50 a page)."""
    from webapp.extensions import db
    from webapp.models import Article

    email, password = browser_editor
    fake.latency, fake.chunks = 0.0, 2
    batch_id = submit_batch(app, email, "A hundred to review",
                            [f"Article number {i}" for i in range(1, 101)])
    wait_batch_final(app, batch_id)
    sign_in(page, email, password)
    page.goto("/review")
    loads: list[str] = []
    page.on("request", lambda request: loads.append(request.url)
            if request.resource_type == "document" else None)
    expect_counts(page, 100)
    for left in range(99, -1, -1):
        page.keyboard.press("a")
        expect_counts(page, left)
    assert loads == [], f"page loads while reviewing: {loads}"
    with app.app_context():
        statuses = db.session.scalars(select(Article.review_status)
                                      .where(Article.batch_id == batch_id)).all()
    assert statuses == ["approved"] * 100
