"""Cancelling a whole batch, or one article, while the real worker is writing it."""
from __future__ import annotations

import time

from tests.helpers import (FINISH_TIMEOUT, articles_state, batch_id_from_location, csrf_from,
                           htmx_post, percent_of, status_counts, submit_form,
                           wait_batch_final, wait_until)

CONCURRENCY = 16  # the worker fixture's --concurrency


def _titles(prefix: str, n: int) -> list[str]:
    return [f"{prefix} story {i:02d}" for i in range(1, n + 1)]


def test_cancel_batch_midway(app, client, api_headers, fake):
    titles = _titles("Cancel", 40)
    # First wave: 16 short articles that will succeed. As soon as they have all reached the
    # provider, later requests get a long latency, so the second wave is still running
    # (and the rest still queued) when we cancel.
    fake.latency, fake.chunks = 1.5, 50
    batch_id = batch_id_from_location(submit_form(client, "To cancel", titles))
    fake.wait_for(lambda: fake.request_count() >= CONCURRENCY, timeout=FINISH_TIMEOUT,
                  message="the first wave to reach the provider")
    fake.latency = 10.0
    slow_from = time.monotonic()

    def mid_way():
        counts = status_counts(app, batch_id)
        in_flight = [r for r in fake.requests if not r.done]
        # Some finished, a full second wave of slow requests streaming (words written; no
        # short first-wave request left that could end on its own), the rest queued.
        return (counts.get("succeeded", 0) >= 1 and counts.get("queued", 0) >= 1
                and len(in_flight) == CONCURRENCY
                and all(r.start > slow_from and r.chunks_sent >= 2 for r in in_flight)) and counts
    before = wait_until(mid_way, FINISH_TIMEOUT, "some articles done, some running, some queued")

    page = client.get(f"/batches/{batch_id}").get_data(as_text=True)
    # Nothing can start or end on its own now: every worker thread is busy with a 10 s stream.
    streaming = [r for r in fake.requests if not r.done]
    assert len(streaming) == CONCURRENCY
    response = htmx_post(client, f"/batches/{batch_id}/cancel", csrf_from(page))
    cancel_done = time.monotonic()
    assert response.status_code == 200
    # The action area says "cancelling" while running articles are being stopped.
    assert "cancelling" in response.get_data(as_text=True)

    # The articles that were streaming hang up on the provider and end cancelled.
    fake.wait_for(lambda: all(r.done for r in streaming), timeout=10,
                  message="the running articles to stop streaming")
    for record in streaming:
        assert record.client_disconnected, f"{record.title} was not disconnected"
        assert record.chunks_sent < 50, f"{record.title} was streamed to the end"

    batch = wait_batch_final(app, batch_id)
    assert batch["status"] == "cancelled"
    assert batch["cancel_requested_at"] is not None

    # No provider request started after the cancel response: the queued ones never began.
    late = [r.title for r in fake.requests if r.start > cancel_done]
    assert late == [], f"requests started after the cancel: {late}"

    articles = {a["title"]: a for a in articles_state(app, batch_id)}
    succeeded = [a for a in articles.values() if a["status"] == "succeeded"]
    cancelled = [a for a in articles.values() if a["status"] == "cancelled"]
    assert len(succeeded) + len(cancelled) == len(titles)
    assert len(succeeded) >= before["succeeded"]
    assert len(cancelled) >= before["queued"] + CONCURRENCY
    for article in succeeded:  # finished work is kept
        assert article["body"].startswith(f"# {article['title']}\n")
        assert article["words"] > 0
    never_started = 0
    for article in cancelled:
        assert article["body"] is None
        requests = fake.requests_for(article["title"])
        assert all(r.client_disconnected for r in requests)
        never_started += not requests
    assert never_started >= before["queued"]

    # The page and the API tell the same, true, story.
    api = client.get(f"/api/v1/batches/{batch_id}", headers=api_headers).get_json()
    assert api["status"] == "cancelled"
    assert api["percent"] == 100
    assert api["counts"]["succeeded"] == len(succeeded)
    assert api["counts"]["cancelled"] == len(cancelled)
    assert api["counts"]["failed"] == api["counts"]["running"] == api["counts"]["queued"] == 0
    html = client.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert "badge-cancelled" in html and "cancelling…" not in html
    assert percent_of(html) == 100
    assert f'<div class="count count-cancelled"><dt>cancelled</dt><dd>{len(cancelled)}</dd>' in html
    assert f'<div class="count count-succeeded"><dt>succeeded</dt><dd>{len(succeeded)}</dd>' in html


def test_cancel_one_queued_article(app, client, api_headers, fake):
    # One more article than the worker runs at once: the last one waits in the queue.
    titles = _titles("Queued", CONCURRENCY + 1)
    fake.latency, fake.chunks = 2.0, 20
    batch_id = batch_id_from_location(submit_form(client, "One queued", titles))
    fake.wait_for(lambda: fake.in_flight == CONCURRENCY, timeout=FINISH_TIMEOUT)
    queued = wait_until(
        lambda: [a for a in articles_state(app, batch_id) if a["status"] == "queued"],
        FINISH_TIMEOUT, "one article still queued")
    assert len(queued) == 1
    target = queued[0]

    page = client.get(f"/batches/{batch_id}").get_data(as_text=True)
    response = htmx_post(client, f"/articles/{target['id']}/cancel", csrf_from(page))
    assert response.status_code == 200
    row = response.get_data(as_text=True)
    assert f'id="article-{target["id"]}"' in row and "row-cancelled" in row

    _assert_only_target_cancelled(app, client, api_headers, batch_id, target, len(titles))
    assert fake.requests_for(target["title"]) == [], (
        "a cancelled queued article reached the provider")
    assert fake.request_count() == len(titles) - 1


def test_cancel_one_running_article(app, client, api_headers, fake):
    titles = _titles("Running", 3)
    fake.latency, fake.chunks = 2.0, 20
    batch_id = batch_id_from_location(submit_form(client, "One running", titles))
    target_title = titles[1]
    record = fake.wait_for(
        lambda: next((r for r in fake.requests_for(target_title) if r.chunks_sent >= 3), None),
        timeout=FINISH_TIMEOUT, message="the target article to be streaming")
    target = next(a for a in articles_state(app, batch_id) if a["title"] == target_title)
    assert target["status"] == "running"

    page = client.get(f"/batches/{batch_id}").get_data(as_text=True)
    response = htmx_post(client, f"/articles/{target['id']}/cancel", csrf_from(page))
    assert response.status_code == 200
    # "cancelling" until the task sees the flag (within a quarter second); it may already
    # have seen it while the request was being answered.
    row = response.get_data(as_text=True)
    assert "row-cancelling" in row or "row-cancelled" in row

    fake.wait_for(lambda: record.done, timeout=10, message="the cancelled stream to stop")
    assert record.client_disconnected and record.chunks_sent < fake.chunks

    _assert_only_target_cancelled(app, client, api_headers, batch_id, target, len(titles))
    assert len(fake.requests_for(target_title)) == 1
    assert fake.request_count() == len(titles)


def _assert_only_target_cancelled(app, client, api_headers, batch_id, target, total):
    batch = wait_batch_final(app, batch_id)
    # finalize_batch: no batch cancel was asked for and some articles succeeded, so the
    # batch succeeded; the cancelled article counts as finished, not as a success.
    assert batch["status"] == "succeeded"
    assert batch["cancel_requested_at"] is None
    for article in articles_state(app, batch_id):
        if article["id"] == target["id"]:
            assert article["status"] == "cancelled" and article["body"] is None
        else:
            assert article["status"] == "succeeded"
            assert article["body"].startswith(f"# {article['title']}\n")

    api = client.get(f"/api/v1/batches/{batch_id}", headers=api_headers).get_json()
    assert api["status"] == "succeeded" and api["percent"] == 100
    assert api["counts"]["cancelled"] == 1
    assert api["counts"]["succeeded"] == total - 1
    assert api["done"] == total
    html = client.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert '<div class="count count-cancelled"><dt>cancelled</dt><dd>1</dd>' in html
    assert f'<div class="count count-succeeded"><dt>succeeded</dt><dd>{total - 1}</dd>' in html
    assert f'id="article-{target["id"]}"' in html
