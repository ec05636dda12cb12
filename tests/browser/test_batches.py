"""Batches in a real browser: submit (typed titles or a CSV file), watch them being
written live without a reload, and cancel a batch or one article."""
from __future__ import annotations

import re
import shutil
from urllib.parse import urlsplit

import pytest

# Skipped, not a collection error, where Playwright is missing.
pytest.importorskip("playwright.sync_api",
                    reason="Playwright is not installed (pip install -r requirements-dev.txt)")

from playwright.sync_api import expect  # noqa: E402

from tests.browser.conftest import POLL_INTERVAL
from tests.browser.support import (BATCH_URL, PollLog, article_ids, assert_no_polls_for,
                                   bar_percent, batch_id_of, sign_in, submit_batch,
                                   wait_batch_status, wait_in_page)
from tests.support import ACCOUNTS, ROOT, WORKER_NAME
from tests.helpers import FINISH_TIMEOUT, articles_state, batch_state, wait_until

README_SHOT = ROOT / "docs" / "batch-in-progress.png"
TITLES = ["Autumn apple harvest: a field guide", "Ten soups for the first cold week",
          "Where the leaves turn first", "Repairing a bicycle before the rain",
          "The quiet art of pickling", "Mushroom walks for beginners",
          "Insulating an old house on a budget", "A week of pumpkin recipes",
          "Planting bulbs for the spring", "Night skies of October",
          "Wool, linen and layering", "Harvest festivals near you"]
# The other desk's batch holds the worker's threads this long; ours runs two at a time
# meanwhile. Well under OPENAI_TIMEOUT (30 s), past the time ours needs to show its steps.
BUSY_SECONDS = 7.0


def worker_threads(worker) -> int:
    """How many articles the session's worker writes at once (its pool's size)."""
    stats = worker.celery.control.inspect(destination=[WORKER_NAME], timeout=5).stats() or {}
    assert WORKER_NAME in stats, f"the session worker did not answer `inspect stats`: {stats}"
    return int(stats[WORKER_NAME]["pool"]["max-concurrency"])


def rows_snapshot(page) -> list[tuple[str, str, int]]:
    """(row id, status, words shown) of every article row, read in one round trip."""
    return [(row_id, status, int(words or 0)) for row_id, status, words in
            page.locator(".articles .row[id^='article-']").evaluate_all(
                """rows => rows.map(r => [r.id,
                    (r.className.match(/row-(\\w+)/) || [])[1],
                    r.querySelector('.words').textContent.trim()])""")]


def test_submit_from_form_watch_it_live_then_polling_stops(page, app, fake, worker,
                                                           browser_editor, shot):
    """Typed titles → the batch page, whose bar and rows move by polling alone (no reload,
    no navigation), and whose polling stops once the batch is final."""
    email, password = browser_editor
    # Another desk's batch keeps all but two of the worker's threads busy for a few seconds,
    # so this batch is written two articles at a time: its bar rises in steps and its rows go
    # queued → running (words growing) → succeeded while the page watches.
    threads = worker_threads(worker)
    assert threads > 2, f"the session worker has {threads} threads; this test needs three or more"
    fake.latency, fake.chunks = BUSY_SECONDS, 20
    submit_batch(app, ACCOUNTS["admin"][0], "Another desk's batch",
                 [f"Busy article {i}" for i in range(1, threads - 1)])
    wait_until(lambda: fake.in_flight >= threads - 2, 30,
               "the other desk's articles to be streaming")
    fake.latency, fake.chunks = 2.0, 20

    sign_in(page, email, password)
    page.get_by_role("navigation").get_by_role("link", name="New batch").click()
    page.fill("#name", "Autumn features")
    page.fill("#titles", "\n".join(TITLES))
    shot(page, "form")
    polls = PollLog(page)
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url)
            if frame == page.main_frame else None)
    with page.expect_response(lambda r: r.request.method == "GET"
                              and BATCH_URL.search(urlsplit(r.url).path)) as landing:
        page.get_by_role("button", name="Submit batch").click()
    page.wait_for_load_state()
    navigations_on_arrival = len(navigations)
    batch_id = batch_id_of(page)
    batch_url = page.url
    expect(page.locator(".flash-success")).to_have_text(
        f"Batch “Autumn features” submitted: {len(TITLES)} articles.")
    # The bar starts empty in the page as the server rendered it.
    assert re.search(rf'id="batch-bar-{batch_id}" class="bar-fill pct-0"', landing.value.text())
    # A full navigation or reload would lose this.
    page.evaluate("() => { window.pressroomMarker = 'set before polling'; }")

    percents: list[int] = []
    words_seen: dict[str, list[tuple[str, int]]] = {}
    readme_shot = []

    def watch():
        pct = bar_percent(page, batch_id)
        if not percents or percents[-1] != pct:
            percents.append(pct)
        rows = rows_snapshot(page)
        for row_id, status, words in rows:
            history = words_seen.setdefault(row_id, [])
            if not history or history[-1] != (status, words):
                history.append((status, words))
        statuses = [status for _, status, _ in rows]
        running_with_words = [w for _, s, w in rows if s == "running" and w > 0]
        if (not readme_shot and 0 < pct < 100 and running_with_words
                and "queued" in statuses and "succeeded" in statuses):
            # The README's picture: the bar partly filled, rows written, being written
            # and waiting. Taken from this run, so it always shows the current pages.
            readme_shot.append(shot(page, "mid-way"))
        return (pct == 100
                and page.locator("#batch-progress .summary .badge").inner_text() == "succeeded")

    wait_in_page(page, watch, FINISH_TIMEOUT, "the batch page to show the batch finished")
    shot(page, "finished")

    assert readme_shot, f"no moment with a partly filled bar and running rows: {percents}"
    README_SHOT.parent.mkdir(exist_ok=True)
    shutil.copyfile(readme_shot[0], README_SHOT)

    # The bar only rose, through values between empty and full, to 100 at the end.
    assert percents[0] == 0 and percents[-1] == 100, percents
    assert percents == sorted(percents), percents
    assert any(0 < p < 100 for p in percents), percents
    # Some row's word count grew while the article was being written, then settled.
    grew = [row for row, history in words_seen.items()
            if any(s1 == s2 == "running" and 0 < w1 < w2
                   for (s1, w1), (s2, w2) in zip(history, history[1:]))
            or any(s1 == "running" and w1 > 0 and s2 == "succeeded" and w2 >= w1
                   for (s1, w1), (s2, w2) in zip(history, history[1:]))]
    assert grew, f"no row was seen growing while running: {words_seen}"
    final_words = {row: history[-1] for row, history in words_seen.items()}
    assert all(status == "succeeded" and words > 0 for status, words in final_words.values()), \
        final_words
    expect(page.locator(".articles .row[id^='article-']")).to_have_count(len(TITLES))
    expect(page.locator(".articles .row.row-succeeded")).to_have_count(len(TITLES))
    expect(page.locator("#batch-progress .fraction")).to_have_text(f"{len(TITLES)} / {len(TITLES)}")

    # All of it happened in the page as first loaded: same URL, no navigation, marker kept.
    assert page.url == batch_url
    assert navigations[navigations_on_arrival:] == []
    assert page.evaluate("() => window.pressroomMarker") == "set before polling"

    # Polling stopped: the last answer said so (286) and carried no trigger, and nothing is
    # sent for three poll intervals afterwards.
    wait_in_page(page, polls.idle, 10, "the last poll to finish")
    assert polls.statuses[-1] == 286, polls.statuses[-5:]
    assert page.locator("#batch-progress").get_attribute("hx-get") is None
    assert_no_polls_for(page, polls, 3 * POLL_INTERVAL, "the batch is final")
    assert polls.max_in_flight == 1, polls.max_in_flight
    assert polls.failures == []
    assert batch_state(app, batch_id)["status"] == "succeeded"


def test_submit_from_csv_file_with_preflight(page, app, fake, browser_editor, tmp_path, shot):
    """A CSV file is checked and shown first; confirming creates the batch it showed."""
    email, password = browser_editor
    fake.latency = 0.3
    csv_file = tmp_path / "autumn.csv"
    csv_file.write_text("title,keywords,tone\n"
                        "Apple harvest guide,\"apples, orchards\",friendly\n"
                        "Pumpkin soup three ways,soup,\n"
                        "Leaf-peeping routes,\"foliage, drives\",formal\n", encoding="utf-8")
    sign_in(page, email, password)
    page.goto("/batches/new")
    page.fill("#name", "Imported features")
    page.set_input_files("#import_file", str(csv_file))
    page.get_by_role("button", name="Submit batch").click()

    preflight = page.locator("#preflight")
    expect(preflight).to_be_visible()
    expect(preflight.locator("h2")).to_have_text("Import check: autumn.csv")
    expect(preflight).to_contain_text("3 articles ready")
    expect(preflight.locator("table.preview tbody tr")).to_have_count(3)
    expect(preflight.locator("table.preview tbody tr").nth(0)).to_contain_text("apples, orchards")
    expect(preflight.locator("table.preview tbody tr").nth(2)).to_contain_text("formal")
    shot(page, "preflight")
    # Nothing is stored before the confirmation.
    assert "/batches/new" in page.url

    page.get_by_role("button", name="Create batch with 3 articles").click()
    expect(page).to_have_url(BATCH_URL)
    batch_id = batch_id_of(page)
    expect(page.locator("h1")).to_have_text("Imported features")
    expect(page.locator(".articles .row[id^='article-'] .title")).to_have_text(
        ["Apple harvest guide", "Pumpkin soup three ways", "Leaf-peeping routes"])
    wait_batch_status(page, "succeeded")
    expect(page.locator(".articles .row.row-succeeded")).to_have_count(3)
    shot(page, "finished")
    stored = articles_state(app, batch_id)
    assert [(a["title"], a["keywords"], a["tone"]) for a in stored] == [
        ("Apple harvest guide", "apples, orchards", "friendly"),
        ("Pumpkin soup three ways", "soup", None),
        ("Leaf-peeping routes", "foliage, drives", "formal")]


def test_cancel_one_article_then_the_batch(page, app, fake, browser_editor, shot):
    """A row's Cancel stops that article; "Cancel batch" (confirmed) shows cancelling, then
    cancelled; nothing else is written."""
    email, password = browser_editor
    # The first chunk comes after 9 s: a worker notices a cancel when a chunk arrives, so
    # the articles stay "cancelling" for seconds after the clicks, long enough to be seen.
    fake.latency, fake.chunks = 27.0, 3
    sign_in(page, email, password)
    batch_id = submit_batch(app, email, "To be cancelled", ["First", "Second", "Third"])
    first, second, third = article_ids(app, batch_id)
    dialogs: list[str] = []

    def answer(dialog):
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", answer)
    page.goto(f"/batches/{batch_id}")
    for article_id in (first, second, third):
        expect(page.locator(f"#article-{article_id}")).to_have_class(re.compile(r"\brow-running\b"))
    shot(page, "running")

    row = page.locator(f"#article-{second}")
    with page.expect_response(f"**/articles/{second}/cancel") as cancelled_row:
        row.get_by_role("button", name="Cancel").click()
    assert cancelled_row.value.status == 200
    assert dialogs == ["Cancel this article?"]
    # The answer is the row, now cancelling and without its Cancel button...
    expect(row.locator(".badge")).to_have_text(re.compile(r"^cancel(ling|led)$"))
    expect(row.get_by_role("button", name="Cancel")).to_have_count(0)
    shot(page, "article-cancelling")

    with page.expect_response(f"**/batches/{batch_id}/cancel") as cancelled_batch:
        page.get_by_role("button", name="Cancel batch").click()
    assert cancelled_batch.value.status == 200
    assert dialogs[1] == "Cancel the whole batch “To be cancelled”? Finished articles are kept."
    assert "cancelling…" in cancelled_batch.value.text()
    expect(page.locator("#batch-actions")).to_contain_text("cancelling…")
    expect(page.get_by_role("button", name="Cancel batch")).to_have_count(0)
    shot(page, "batch-cancelling")

    # ...and polling brings the end: every row and the batch cancelled, no actions left.
    wait_batch_status(page, "cancelled", timeout=40)
    expect(row.locator(".badge")).to_have_text("cancelled")
    expect(row).to_have_class(re.compile(r"\brow-cancelled\b"))
    expect(page.locator(".articles .row.row-cancelled")).to_have_count(3)
    expect(page.locator("#batch-actions")).not_to_contain_text("cancelling")
    expect(page.locator(".articles .row-actions button")).to_have_count(0)
    shot(page, "cancelled")
    assert batch_state(app, batch_id)["status"] == "cancelled"
    assert {a["status"] for a in articles_state(app, batch_id)} == {"cancelled"}
    # No article was finished: the provider never got to send a whole answer.
    assert all(not a["body"] for a in articles_state(app, batch_id))
