"""Economy mode in a real browser: a batch chosen as "Economy" on the form is sent to the
provider's Batch API (the tests' FakeAI), its page follows the provider batch live (its
state, its counts, the bar driven by them) without a reload and offers no Pause, and once
the results are imported its articles are written."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

# Skipped, not a collection error, where Playwright is missing.
pytest.importorskip("playwright.sync_api",
                    reason="Playwright is not installed (pip install -r requirements-dev.txt)")

from playwright.sync_api import expect  # noqa: E402

from tests.browser.support import (BATCH_URL, bar_percent, batch_id_of, sign_in,
                                   wait_batch_status, wait_in_page)
from tests.fakeai import build_chunks
from tests.helpers import FINISH_TIMEOUT, articles_state, batch_state

TITLES = ["Tides of the northern coast", "A guide to winter cycling", "Bread, slowly"]
# "= $0.0012." then "The same in economy mode: $0.0006 (the provider's Batch API, …)."
PRICES = re.compile(r"= \$([\d.]+)\.\s+The same in economy mode: \$([\d.]+)")
# How much the worker's polls (every 0.2 s, backing off to 1 s) and the page's (0.5 s)
# may take to show a step of the provider batch.
STEP_TIMEOUT = 20.0


def part_text(page, selector: str) -> list[str]:
    """The texts of one field of every provider batch shown (read without waiting: the
    section is swapped by every poll)."""
    return [t.strip() for t in
            page.locator(f"#batch-progress .provider-batch {selector}").all_inner_texts()]


def wait_bars_drawn(page) -> None:
    """Every bar of the batch's progress drawn as wide as its pct-N class says (its width
    eases in over half a second): the screenshots then show what the page says."""
    page.wait_for_function("""() => {
        const fills = [...document.querySelectorAll('#batch-progress .bar-fill')];
        return fills.length > 0 && fills.every(fill => {
            const pct = Number((fill.className.match(/\\bpct-(\\d+)\\b/) || [])[1]);
            const drawn = 100 * fill.getBoundingClientRect().width
                / fill.parentElement.getBoundingClientRect().width;
            return Math.abs(drawn - pct) < 0.5;
        });
    }""", timeout=10_000)


def test_economy_batch_from_the_form_to_its_written_articles(page, app, fake, browser_editor,
                                                             shot):
    """Economy chosen on the form → the provider batch followed on the batch page, step by
    step and without a reload (validating, being written with its bar rising, no Pause) →
    the results imported: the batch succeeded at 100 %, its articles written."""
    email, password = browser_editor
    batches = fake.batches
    # The provider's clock stands still until the test moves it on: every step below is
    # seen on the page for as long as it takes, whatever the machine's speed.
    batches.seconds_per_request = 1.0
    batches.hold()

    sign_in(page, email, password)
    page.goto("/batches/new")
    page.fill("#name", "Economy features")
    page.fill("#titles", "\n".join(TITLES))
    # The provider's answers are short: a target they meet, so that none is flagged short.
    page.fill("#target_words", "200")
    economy = page.get_by_role("radio", name=re.compile(r"^Economy\b"))
    expect(economy).to_be_enabled()
    economy.check()
    expect(economy).to_be_checked()
    expect(page.get_by_role("radio", name=re.compile(r"^Standard\b"))).not_to_be_checked()
    estimate = page.locator("#estimate")
    expect(estimate).to_contain_text(f"{len(TITLES)} articles")
    expect(estimate).to_contain_text("in economy mode")
    standard_price, economy_price = map(float, PRICES.search(estimate.inner_text()).groups())
    # About half the standard price (each rounded to 4 decimals).
    assert 0 < economy_price < standard_price, (standard_price, economy_price)
    assert abs(economy_price - standard_price / 2) <= 0.0001, (standard_price, economy_price)
    shot(page, "economy-form")

    page.get_by_role("button", name="Submit batch").click()
    expect(page).to_have_url(BATCH_URL)
    batch_id = batch_id_of(page)
    batch_url = page.url
    expect(page.locator(".flash-success")).to_have_text(
        f"Batch “Economy features” submitted: {len(TITLES)} articles.")
    assert batch_state(app, batch_id)["mode"] == "economy"
    # A full navigation or reload would lose this; polling (htmx swaps) keeps it.
    page.evaluate("() => { window.pressroomMarker = 'set on arrival'; }")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url)
            if frame == page.main_frame else None)
    percents: list[int] = []

    def bar() -> int:
        pct = bar_percent(page, batch_id)
        if not percents or percents[-1] != pct:
            percents.append(pct)
        return pct

    # The worker has made the provider batch, whose clock stands at 0: validating.
    wait_in_page(page, lambda: part_text(page, ".part-state") == ["validating at the provider"],
                 STEP_TIMEOUT, "the provider batch shown as validating")
    [remote] = batches.created
    assert sorted(remote.titles) == sorted(TITLES)
    expect(page.locator("#batch-progress h3")).to_contain_text("At the provider")
    assert bar() == 0

    # Validated: its requests are being written, none yet.
    batches.advance(batches.validate_seconds)
    wait_in_page(page, lambda: part_text(page, ".part-state") == ["being written at the provider"]
                 and part_text(page, ".part-counts") == [f"0 written, 0 failed of {len(TITLES)}"],
                 STEP_TIMEOUT, "the provider batch shown as being written, none yet")
    assert bar() == 0
    expect(page.locator("#batch-progress .summary .badge")).to_have_text("running")
    window_left = part_text(page, ".part-expires")
    assert len(window_left) == 1 and window_left[0].endswith("left of the 24-hour window"), \
        window_left
    # An economy batch offers no Pause, says why, and can still be cancelled.
    actions = page.locator("#batch-actions")
    expect(actions.locator(".no-pause")).to_be_visible()
    expect(actions.locator(".no-pause")).to_contain_text("Economy batches cannot be paused")
    expect(actions.get_by_role("button", name="Pause")).to_have_count(0)
    expect(actions.get_by_role("button", name="Cancel batch")).to_be_visible()

    # One request written at the provider: its counts and the overall bar move by polling.
    batches.advance(batches.seconds_per_request)
    wait_in_page(page, lambda: bar() > 0, STEP_TIMEOUT, "the batch's bar to rise above 0")
    one_third = 100 // len(TITLES)
    assert percents[-1] == one_third, percents
    expect(page.locator("#batch-progress .summary .percent")).to_have_text(f"{one_third}%")
    assert part_text(page, ".part-state") == ["being written at the provider"]
    assert part_text(page, ".part-counts") == [f"1 written, 0 failed of {len(TITLES)}"]
    assert bar_percent(page, batch_id) == one_third
    # Nothing is imported before the provider batch ends: no article is written yet.
    expect(page.locator(".articles .row.row-succeeded")).to_have_count(0)
    expect(page.get_by_role("button", name="Pause")).to_have_count(0)
    wait_bars_drawn(page)
    shot(page, "economy-in-progress")

    # The provider runs on by itself: the rest, finalizing, then the results imported.
    batches.release()

    def finished() -> bool:
        pct = bar()
        return (pct == 100
                and page.locator("#batch-progress .summary .badge").inner_text() == "succeeded")

    wait_in_page(page, finished, FINISH_TIMEOUT, "the batch page to show the batch finished")
    wait_batch_status(page, "succeeded", timeout=5)
    expect(page.locator("#batch-progress .summary .percent")).to_have_text("100%")
    expect(page.locator("#batch-progress .fraction")).to_have_text(
        f"{len(TITLES)} / {len(TITLES)}")
    assert part_text(page, ".part-state") == ["completed"]
    assert part_text(page, ".part-counts") == [
        f"{len(TITLES)} written, 0 failed of {len(TITLES)}"]
    assert part_text(page, ".part-imported") == ["results in"]
    assert part_text(page, ".part-expires") == []
    expect(page.locator("#batch-actions .no-pause")).to_have_count(0)
    rows = page.locator(".articles .row[id^='article-']")
    expect(rows).to_have_count(len(TITLES))
    expect(rows.locator(".title")).to_have_text(TITLES)
    expect(page.locator(".articles .row.row-succeeded")).to_have_count(len(TITLES))
    expect(rows.locator(".badge")).to_have_text(["succeeded"] * len(TITLES))
    words = [int(w) for w in rows.locator(".words").all_inner_texts()]
    assert all(w > 0 for w in words), words
    wait_bars_drawn(page)
    shot(page, "economy-finished")

    # The bar only rose, from empty to full; all of it in the page as first loaded.
    assert percents[0] == 0 and percents[-1] == 100, percents
    assert percents == sorted(percents), percents
    assert page.url == batch_url
    assert navigations == []
    assert page.evaluate("() => window.pressroomMarker") == "set on arrival"
    # Written through the Batch API alone: not one live chat request.
    assert fake.request_count() == 0
    assert batch_state(app, batch_id)["status"] == "succeeded"

    # An article's page shows the body the provider wrote.
    title = TITLES[1]
    rows.filter(has_text=title).locator(".title a").click()
    expect(page).to_have_url(re.compile(r"/articles/\d+$"))
    live = page.locator("#article-live")
    expect(live.locator(".meta .badge")).to_have_text("succeeded")
    prose = live.locator("article.prose")
    expect(prose).not_to_have_class(re.compile(r"\bstreaming\b"))
    expect(prose.locator("h1")).to_have_text(title)
    written = "".join(build_chunks(title, fake.words, 1))
    first_paragraph = written.split("\n\n")[1]
    expect(prose.locator("p").first).to_have_text(first_paragraph)
    stored = next(a for a in articles_state(app, batch_id) if a["title"] == title)
    assert stored["body"] == written
    expect(live.locator(".meta")).to_contain_text(f"{stored['words']} words")
    shot(page, "economy-article")
    assert urlsplit(page.url).path == f"/articles/{stored['id']}"
