"""Articles in a real browser: read one while it is being written, then review it, edit
its Markdown and export the batch."""
from __future__ import annotations

import csv
import io
import re
import shutil

import pytest

# Skipped, not a collection error, where Playwright is missing.
pytest.importorskip("playwright.sync_api",
                    reason="Playwright is not installed (pip install -r requirements-dev.txt)")

from playwright.sync_api import expect  # noqa: E402

from tests.browser.support import article_ids, sign_in, submit_batch, wait_in_page
from tests.support import ROOT
from tests.helpers import articles_state, wait_batch_final

README_SHOT = ROOT / "docs" / "article-streaming.png"
SO_FAR = re.compile(r"^(\d+) words so far$")


def words_so_far(page) -> int | None:
    """The live count on the article page while it is being written (None otherwise).

    Read without waiting: the element is swapped out by every poll and is gone at the end.
    """
    texts = page.locator("#article-live .meta .words").all_inner_texts()
    match = SO_FAR.match(texts[0].strip()) if texts else None
    return int(match.group(1)) if match else None


def test_article_grows_live_then_shows_the_final_body(page, app, fake, browser_editor, shot):
    """Opened while it streams, the article page shows the text so far growing, then the
    finished, rendered body, without a reload."""
    email, password = browser_editor
    title = "The longest autumn on record"
    fake.latency, fake.chunks, fake.words = 8.0, 40, 320
    sign_in(page, email, password)
    batch_id = submit_batch(app, email, "Long reads", [title])
    (article_id,) = article_ids(app, batch_id)
    page.goto(f"/batches/{batch_id}")
    page.locator(f"#article-{article_id} .title a").click()
    expect(page).to_have_url(re.compile(rf"/articles/{article_id}$"))
    article_url = page.url
    page.evaluate("() => { window.pressroomMarker = 'set while streaming'; }")

    first = wait_in_page(page, lambda: (words_so_far(page) or 0) > 0 and words_so_far(page),
                         20, "the first words of the article on its page")
    expect(page.locator("#article-live article.prose.streaming")).to_be_visible()
    streamed_before = page.locator("#article-live article.prose").inner_text()
    later = wait_in_page(page, lambda: (words_so_far(page) or 0) > first and words_so_far(page),
                         20, f"more than {first} words on the article page")
    assert later > first
    # A third of the way or more: the README's picture of an article being written.
    wait_in_page(page, lambda: (words_so_far(page) or 0) >= fake.words // 3,
                 20, "a third of the article on its page")
    expect(page.locator("#article-live article.prose.streaming")).to_be_visible()
    streamed_after = page.locator("#article-live article.prose").inner_text()
    assert len(streamed_after) > len(streamed_before)
    shot_path = shot(page, "streaming")
    README_SHOT.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot_path, README_SHOT)

    # The end: the stored body, rendered from Markdown, and the final count.
    live = page.locator("#article-live")
    expect(live.locator(".meta .badge")).to_have_text("succeeded", timeout=30_000)
    expect(live.locator("article.prose")).not_to_have_class(re.compile(r"\bstreaming\b"))
    expect(live.locator("article.prose h1")).to_have_text(title)
    stored = articles_state(app, batch_id)[0]
    assert stored["status"] == "succeeded"
    expect(live.locator(".meta")).to_contain_text(f"{stored['words']} words")
    expect(live.locator(".meta")).not_to_contain_text("so far")
    shot(page, "finished")
    # Polling stopped with the last answer, and the page is the one first opened.
    assert live.get_attribute("hx-get") is None
    assert page.url == article_url
    assert page.evaluate("() => window.pressroomMarker") == "set while streaming"


def test_review_edit_and_export(page, app, fake, browser_editor, shot):
    """Approve one article, reject another (a reason is required), edit the approved one's
    Markdown (a new version is listed), then download the approved CSV."""
    email, password = browser_editor
    fake.latency = 0.3
    sign_in(page, email, password)
    batch_id = submit_batch(app, email, "For review", ["Keep this one", "Reject this one"])
    keep, reject = article_ids(app, batch_id)
    wait_batch_final(app, batch_id)

    page.goto(f"/articles/{keep}")
    panel = page.locator("#review-panel")
    expect(panel.locator(".badge")).to_have_text("needs review")
    panel.get_by_role("button", name="Approve").click()
    expect(page.locator(".flash-success")).to_have_text("Article approved.")
    expect(panel.locator(".badge")).to_have_text("approved")
    shot(page, "approved")

    page.goto(f"/articles/{reject}")
    panel.get_by_role("button", name="Reject").click()
    expect(page.locator(".flash-error")).to_have_text("Say why the article is rejected.")
    expect(panel.locator(".badge")).to_have_text("needs review")
    panel.get_by_label("Reason for rejecting").fill("Too generic for our readers")
    panel.get_by_role("button", name="Reject").click()
    expect(page.locator(".flash-success")).to_have_text("Article rejected.")
    expect(panel.locator(".badge")).to_have_text("rejected")
    expect(panel).to_contain_text("— Too generic for our readers")
    shot(page, "rejected")

    page.goto(f"/articles/{keep}")
    versions = page.locator("ol.versions > li")
    versions_before = versions.count()
    assert versions_before >= 1  # the generated text is a version of its own
    panel.get_by_role("link", name="Edit").click()
    expect(page).to_have_url(re.compile(rf"/articles/{keep}/edit$"))
    expect(page.locator("#body")).to_have_value(re.compile(r"^# Keep this one"))
    edited = "# Keep this one\n\nEdited in the browser, with a **short** closing line.\n"
    page.fill("#body", edited)
    shot(page, "editing")
    page.get_by_role("button", name="Save").click()
    expect(page).to_have_url(re.compile(rf"/articles/{keep}$"))
    expect(page.locator(".flash-success")).to_have_text(f"Saved as version {versions_before + 1}.")
    prose = page.locator("#article-live article.prose")
    expect(prose).to_contain_text("Edited in the browser, with a short closing line.")
    expect(prose.locator("strong")).to_have_text("short")
    expect(versions).to_have_count(versions_before + 1)
    expect(versions.first).to_contain_text(f"v{versions_before + 1} · edited")
    expect(versions.first).to_contain_text(email)
    expect(panel.locator(".badge")).to_have_text("approved")  # an edit keeps the review
    shot(page, "edited")

    page.goto(f"/batches/{batch_id}")
    with page.expect_download() as download_info:
        page.locator("#batch-editorial").get_by_role("link", name="CSV").first.click()
    download = download_info.value
    # Named after the batch (its spaces made hyphens).
    assert download.suggested_filename == f"batch-{batch_id}-For-review.csv"
    with open(download.path(), encoding="utf-8-sig") as handle:  # a BOM is fine too
        content = handle.read()
    rows = list(csv.DictReader(io.StringIO(content)))
    # Only the approved article, with its edited text.
    assert [row["title"] for row in rows] == ["Keep this one"]
    assert rows[0]["review_status"] == "approved"
    assert rows[0]["body"] == edited
    assert {a["title"]: a["review_status"] for a in articles_state(app, batch_id)} == {
        "Keep this one": "approved", "Reject this one": "rejected"}
