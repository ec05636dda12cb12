"""Publishing to WordPress in a real browser (issue 16): an admin adds the tests' fake site
on the Destinations page and tests the connection; an editor approves a small batch and
publishes it once from the batch page as drafts, and sees each post's link appear. The site
then holds exactly one draft per article; ticked on the dashboard and published again as a
selection, for review, its two posts are updated, not doubled."""
from __future__ import annotations

import re

import pytest

# Skipped, not a collection error, where Playwright is missing.
pytest.importorskip("playwright.sync_api",
                    reason="Playwright is not installed (pip install -r requirements-dev.txt)")

from playwright.sync_api import expect  # noqa: E402
from sqlalchemy import select  # noqa: E402

from tests.browser.support import sign_in, submit_batch, wait_in_page  # noqa: E402
from tests.helpers import FINISH_TIMEOUT, wait_batch_final  # noqa: E402
from tests.support import ACCOUNTS  # noqa: E402


def _axe_findings(page) -> list[str]:
    """axe-core's serious and critical findings on the page (none checked when
    axe-playwright-python is missing: test_accessibility.py says so, and skips)."""
    try:
        from axe_playwright_python.sync_playwright import Axe
    except ImportError:
        return []
    results = Axe().run(page)
    return [f"{v['id']} at {n['target']}: {v['help']}" for v in results.response["violations"]
            if v.get("impact") in ("serious", "critical") for n in v["nodes"]]


def _article_ids(app, batch_id: int) -> list[int]:
    from webapp.extensions import db
    from webapp.models import Article

    with app.app_context():
        return list(db.session.scalars(select(Article.id).where(Article.batch_id == batch_id)
                                       .order_by(Article.position)))


def _publications(app, batch_id: int) -> list[tuple[str, int | None, str | None]]:
    from webapp.extensions import db
    from webapp.models import Article, Publication

    with app.app_context():
        return list(db.session.execute(
            select(Publication.status, Publication.remote_id, Publication.url)
            .join(Article).where(Article.batch_id == batch_id).order_by(Article.position)))


def test_an_editor_publishes_a_reviewed_batch_as_drafts_once(page, app, fake, fakewp,
                                                            browser_editor, shot):
    email, password = browser_editor
    fake.latency = 0.01
    titles = ["Rock pools for beginners", "Reading the tide tables"]
    batch_id = submit_batch(app, email, "Coastal guides", titles)
    wait_batch_final(app, batch_id)

    # An admin adds the site and checks its password.
    admin_email, admin_password = ACCOUNTS["admin"]
    sign_in(page, admin_email, admin_password)
    page.get_by_role("link", name="Destinations").click()
    expect(page.get_by_role("heading", name="Destinations", exact=True)).to_be_visible()
    login, app_password = fakewp.credentials("editor")
    form = page.locator("#add-destination")
    form.get_by_label("Name").fill("Coast blog")
    form.get_by_label("Site address").fill(fakewp.url)
    form.get_by_label("WordPress user").fill(login)
    form.get_by_label("Application password").fill(app_password)
    form.get_by_role("button", name="Add destination").click()
    expect(page.locator(".flash-success")).to_contain_text("Coast blog was added.")
    row = page.locator("tr", has_text="Coast blog")
    expect(row).to_contain_text("set")
    assert app_password not in page.content()
    row.get_by_role("button", name="Test connection").click()
    expect(page.locator(".flash-success")).to_contain_text("this user may publish posts")
    shot(page, "destination")
    assert _axe_findings(page) == []
    page.get_by_role("button", name="Sign out").click()

    # The editor approves the batch's articles, then publishes it from its page.
    sign_in(page, email, password)
    for article_id in _article_ids(app, batch_id):
        page.goto(f"/articles/{article_id}")
        page.get_by_role("button", name="Approve").click()
        expect(page.locator(".flash-success")).to_contain_text("Article approved.")
    page.goto(f"/batches/{batch_id}")
    publish = page.locator("#publish-form")
    expect(publish).to_contain_text("2 approved articles will be sent")
    publish.get_by_label("Destination").select_option("Coast blog")
    expect(publish.get_by_label("Post status")).to_have_value("draft")
    publish.get_by_role("button", name="Publish").click()
    expect(page.locator(".flash-success")).to_contain_text(
        "2 articles are being sent to Coast blog.")

    # The publications area polls until both posts are there, with their links.
    area = page.locator("#batch-publications")
    links = area.locator("a.post-link")
    expect(links).to_have_count(2, timeout=FINISH_TIMEOUT * 1000)
    wait_in_page(page, lambda: [s for s, _, _ in _publications(app, batch_id)]
                 == ["published", "published"], FINISH_TIMEOUT, "both publications recorded")
    for (_, remote_id, url) in _publications(app, batch_id):
        expect(area.locator(f'a.post-link[href="{url}"]')).to_have_text(f"Post {remote_id}")
    expect(area).to_contain_text("draft")
    expect(area).not_to_have_attribute("hx-get", re.compile(".+"))  # the poll has stopped
    shot(page, "published")
    assert _axe_findings(page) == []  # the publish form, the unpublish form, the table

    # The site holds exactly one draft per article.
    posts = fakewp.posts
    assert sorted(p.title for p in posts) == sorted(titles)
    assert {p.status for p in posts} == {"draft"}
    assert fakewp.duplicates() == {} and fakewp.duplicates("title") == {}
    assert fakewp.count("POST /wp/v2/posts") == 2

    # The same batch ticked on the dashboard and published again as a selection, now for
    # review: the publish fields appear only once "publish" is the action, the confirmation
    # counts the approved articles, and the site's two posts are updated, not doubled.
    page.goto("/")
    bar = page.locator("#bulk-form")
    expect(bar.get_by_label("Post status")).to_be_hidden()
    page.get_by_label("Select “Coastal guides”").check()
    bar.get_by_label("Action").select_option("publish")
    expect(bar.get_by_label("Post status")).to_be_visible()
    bar.get_by_label("Destination").select_option("Coast blog")
    bar.get_by_label("Post status").select_option("pending")
    bar.get_by_role("button", name="Continue to the confirmation").click()
    panel = page.locator("#bulk-panel")
    expect(panel.locator("h2")).to_have_text("Publish 2 approved articles to Coast blog?")
    expect(panel).to_contain_text("as pending review")
    assert _axe_findings(page) == []  # the bar with its publish fields, and the panel
    shot(page, "bulk-publish")
    panel.get_by_role("button", name="Confirm").click()
    expect(page.locator(".flash-success")).to_contain_text("2 articles are being published.")
    wait_in_page(page, lambda: {p.status for p in fakewp.posts} == {"pending"}
                 and all(s == "published" for s, _, _ in _publications(app, batch_id)),
                 FINISH_TIMEOUT, "both posts to be moved to pending review")
    assert fakewp.count("POST /wp/v2/posts") == 2 and len(fakewp.posts) == 2
