"""Submit a batch through the HTML form, let the real worker write it, watch it live."""
from __future__ import annotations

from tests.helpers import (FINISH_TIMEOUT, articles_state, batch_id_from_location, done_of,
                           percent_of, poll_url_of, prose_of, rows_of, submit_form,
                           wait_batch_final, words_of)
from webapp.extensions import db
from webapp.models import Article

TITLES = ["Harbour reopens after storm", "City council votes on budget",
          "Local bakery wins award", "New tram line opens"]


def test_submit_form_every_article_succeeds(app, client, api_headers, fake):
    response = submit_form(client, "Morning news", TITLES)
    # 303 after POST, to the batch page.
    assert response.status_code == 303
    batch_id = batch_id_from_location(response)

    batch = wait_batch_final(app, batch_id)
    assert batch["status"] == "succeeded"
    assert batch["dispatched_at"] is not None and batch["dispatch_error"] is None

    page = client.get(f"/batches/{batch_id}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert percent_of(html) == 100
    assert done_of(html) == len(TITLES)
    assert "badge-succeeded" in html

    # The final poll stops polling: HTTP 286 and no trigger in the partial.
    poll = client.get(f"/batches/{batch_id}/progress?since=2000-01-01T00:00:00",
                      headers={"HX-Request": "true"})
    assert poll.status_code == 286
    body = poll.get_data(as_text=True)
    assert "hx-trigger" not in body and "hx-get" not in body
    assert percent_of(body) == 100

    api = client.get(f"/api/v1/batches/{batch_id}", headers=api_headers).get_json()
    assert api["status"] == "succeeded"
    assert api["percent"] == 100
    assert api["done"] == api["total"] == len(TITLES)
    assert api["counts"]["succeeded"] == len(TITLES)
    assert sum(api["counts"].values()) == len(TITLES)
    assert {a["title"] for a in api["articles"]} == set(TITLES)
    assert all(a["status"] == "succeeded" and a["words"] > 0 for a in api["articles"])

    # Each body is what the provider wrote for its own title, and each title cost one request.
    for article in articles_state(app, batch_id):
        assert article["body"].startswith(f"# {article['title']}\n")
        assert article["attempts"] == 1
        assert article["completion_tokens"] == fake.words
        assert len(fake.requests_for(article["title"])) == 1
    assert fake.request_count() == len(TITLES)
    assert batch["completion_tokens"] == fake.words * len(TITLES)


def test_progress_is_live_and_never_goes_backwards(app, client, fake):
    fake.latency, fake.chunks = 2.0, 20
    titles = TITLES[:3]
    batch_id = batch_id_from_location(submit_form(client, "Live", titles))

    page = client.get(f"/batches/{batch_id}").get_data(as_text=True)
    url = poll_url_of(page)
    assert url and "since=" in url, "the batch page must poll its progress partial"

    last_percent, last_done = 0, 0
    last_words: dict[int, int] = {}
    saw_live_words = False
    saw_live_text = False
    polls = 0
    while True:
        polls += 1
        assert polls < 2000, "the poll never reached a final state"
        response = client.get(url, headers={"HX-Request": "true"})
        body = response.get_data(as_text=True)
        percent, done = percent_of(body), done_of(body)
        # Never backwards: the bar, the done count and each article's word count.
        assert percent >= last_percent and done >= last_done, (percent, last_percent)
        words = words_of(body)
        for article_id, n in words.items():
            assert n >= last_words.get(article_id, 0), f"words of {article_id} went backwards"
        last_words.update(words)
        last_percent, last_done = percent, done
        if response.status_code == 286:
            assert "hx-trigger" not in body
            assert percent == 100
            break
        assert response.status_code == 200
        assert 'hx-trigger="load delay:' in body
        assert percent < 100, "100 % shown before the batch is final"
        rows = rows_of(body)
        running = [a for a, s in rows.items() if s == "running"]
        # A running row's words are 0 in the database until it is stored; more than 0 can
        # only come from the task's PROGRESS meta in Redis. Counters sent without their
        # row (out of band) belong to running rows too.
        live = running + [a for a in words if a not in rows]
        if any(words.get(a, 0) > 0 for a in live):
            saw_live_words = True
        if running and not saw_live_text:
            saw_live_text = _live_text_shows(client, app, running[0])
        url = poll_url_of(body)
        assert url, "a poll that is not final must carry its next poll URL"
        # Pace the polls on real progress at the provider, not on a timer.
        chunks = sum(r.chunks_sent for r in fake.requests)
        fake.wait_for(lambda: sum(r.chunks_sent for r in fake.requests) != chunks
                      or fake.in_flight == 0, timeout=FINISH_TIMEOUT)

    assert saw_live_words, "no running article ever showed its words so far (PROGRESS meta)"
    assert saw_live_text, "the article page never showed the text written so far"
    assert wait_batch_final(app, batch_id)["status"] == "succeeded"


def _live_text_shows(client, app, article_id: int) -> bool:
    """While an article is running, its live partial and its page show the text so far."""
    with app.app_context():
        title = db.session.get(Article, article_id).title
    live = client.get(f"/articles/{article_id}/live", headers={"HX-Request": "true"})
    body = live.get_data(as_text=True)
    if live.status_code != 200 or "prose streaming" not in body:
        return False  # no text stored yet (the task stores it every 0.25 s)
    assert 'hx-trigger="load delay:' in body  # and it keeps polling
    assert "words so far" in body
    # The text so far is the provider's Markdown, rendered: it starts with the title.
    assert f"<h1>{title}</h1>" in prose_of(body)
    page = client.get(f"/articles/{article_id}").get_data(as_text=True)
    assert f"<h1>{title}</h1>" in prose_of(page)
    return True
