"""The review queue (/review, issue 15 item 1): every article awaiting review across
batches, flagged first, filtered by the URL, decided through htmx with the next article
shown and the counts updated; viewers read it only; the nav says how many await review."""
from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select, update

from tests.helpers import (articles_state, batch_id_from_location, count_sql, csrf_from,
                           submit_form, wait_batch_final)
from tests.sec_support import make_account, signed_in
from webapp.extensions import db
from webapp.models import Article, AuditEvent, Role

SHORT_TEXT = "# Too short\n\nA few words only."
_ROW = re.compile(r'<li id="review-row-(\d+)"')
_PANE = re.compile(r'<section id="review-pane"[^>]*?data-article-id="(\d+)"')
_TOTAL = re.compile(r'<span id="review-total">([\d,]+) ')
_FLAGGED = re.compile(r'<span id="review-flagged" class="muted">([\d,]+) ')
_NAV = re.compile(r'<a id="nav-review"[^>]*aria-label="Review: (\d+) articles? awaits? review"'
                  r'[^>]*>Review \((\d+)\)</a>')


def _written(client, app, name: str, titles: list[str], **fields) -> list[dict]:
    """A batch written by the fake provider; its articles, in position order."""
    batch_id = batch_id_from_location(submit_form(client, name, titles, **fields))
    wait_batch_final(app, batch_id)
    return articles_state(app, batch_id)


def _rows(page: str) -> list[int]:
    return [int(a) for a in _ROW.findall(page)]


def _pane(page: str) -> int | None:
    match = _PANE.search(page)
    return int(match.group(1)) if match else None


def _counts(page: str) -> tuple[int, int]:
    return (int(_TOTAL.search(page).group(1).replace(",", "")),
            int(_FLAGGED.search(page).group(1).replace(",", "")))


def _nav(page: str) -> int:
    match = _NAV.search(page)
    assert match, "no 'Review (N)' link in the nav"
    assert match.group(1) == match.group(2)
    return int(match.group(1))


def _queue(client, query: str = "", status: int = 200) -> str:
    response = client.get("/review" + query)
    assert response.status_code == status, (response.status_code, response.get_data()[:400])
    return response.get_data(as_text=True)


def _decide(client, article_id: int, csrf: str, query: str = "", **form):
    return client.post(f"/review/articles/{article_id}/decision{query}", data=form,
                       headers={"HX-Request": "true", "X-CSRFToken": csrf})


def _review_state(app, article_id: int) -> tuple:
    with app.app_context():
        article = db.session.get(Article, article_id)
        return article.review_status, article.review_reason


def _expected_order(app, ids) -> list[int]:
    """Flagged first, then the oldest finished (then the id), from the database."""
    with app.app_context():
        rows = db.session.execute(select(Article.id, Article.review_flag, Article.finished_at)
                                  .where(Article.id.in_(list(ids)))).all()
    return [r.id for r in sorted(rows, key=lambda r: (r.review_flag is None, r.finished_at,
                                                       r.id))]


@pytest.fixture
def world(app, client, admin_client, fake):
    """Two editors' batches: the editor's (one article flagged short) and the admin's in
    French; one article already approved, and one written before reviews existed."""
    fake.latency = 0.01
    fake.answer("Queue flagged one", SHORT_TEXT)
    mine = _written(client, app, "Queue desk A", ["Queue plain one", "Queue flagged one",
                                                  "Queue plain two"])
    theirs = _written(admin_client, app, "Queue desk B", ["Queue french one",
                                                          "Queue french two"],
                      language="French")
    with app.app_context():
        # Approved elsewhere: not in the queue. Written before reviews existed (NULL): in it.
        db.session.execute(update(Article).where(Article.id == mine[2]["id"])
                           .values(review_status="approved"))
        db.session.execute(update(Article).where(Article.id == theirs[1]["id"])
                           .values(review_status=None))
        db.session.commit()
    assert mine[1]["review_flag"] == "short" and mine[0]["review_flag"] is None
    return {"mine": mine, "theirs": theirs,
            "awaiting": [mine[0]["id"], mine[1]["id"], theirs[0]["id"], theirs[1]["id"]]}


def test_the_queue_lists_what_awaits_review_flagged_first(app, client, world):
    page = _queue(client)
    rows = _rows(page)
    assert rows == _expected_order(app, world["awaiting"])
    assert rows[0] == world["mine"][1]["id"], "the flagged article comes first"
    assert world["mine"][2]["id"] not in rows, "an approved article is not awaiting review"
    assert _counts(page) == (4, 1)
    assert _nav(page) == 4
    # The first article is in the reading pane, rendered, with its flag and length.
    assert _pane(page) == rows[0]
    pane = page[page.index('id="review-pane"'):]
    assert "Flagged for review: short." in pane
    assert '<article class="prose"' in pane and "A few words only." in pane
    assert re.search(r"\d+ words", pane)
    for decision in ("approved", "rejected"):
        assert f'data-decision="{decision}"' in pane
    assert "Keyboard shortcuts" in page and "js/review.js" in page
    # ?article= shows another one, selected in the list.
    page = _queue(client, f"?article={rows[2]}")
    assert _pane(page) == rows[2]
    assert re.search(rf'<li id="review-row-{rows[2]}" class="review-row[^"]* selected"'
                     r'[^>]*aria-current="true"', page)


def test_each_filter_narrows_the_queue(app, client, world):
    mine, theirs = world["mine"], world["theirs"]
    batch_a = mine[0]["batch_id"]
    assert set(_rows(_queue(client, f"?batch={batch_a}"))) == {mine[0]["id"], mine[1]["id"]}
    assert set(_rows(_queue(client, "?author=admin@"))) == {a["id"] for a in theirs}
    assert _rows(_queue(client, "?flag=flagged")) == [mine[1]["id"]]
    assert _rows(_queue(client, "?flag=short")) == [mine[1]["id"]]
    assert _rows(_queue(client, "?flag=length")) == []
    assert mine[1]["id"] not in _rows(_queue(client, "?flag=unflagged"))
    assert set(_rows(_queue(client, "?language=french"))) == {a["id"] for a in theirs}
    with app.app_context():
        db.session.execute(update(Article).where(Article.id == theirs[0]["id"])
                           .values(finished_at=datetime(2020, 1, 15, 12)))
        db.session.commit()
    assert _rows(_queue(client, "?until=2020-01-31")) == [theirs[0]["id"]]
    assert _rows(_queue(client, "?since=2020-01-15&until=2020-01-15")) == [theirs[0]["id"]]
    assert theirs[0]["id"] not in _rows(_queue(client, "?since=2021-01-01"))
    # Filters combine, and the counts are those of the filtered queue; the nav's is all.
    page = _queue(client, f"?batch={batch_a}&flag=unflagged")
    assert _rows(page) == [mine[0]["id"]]
    assert _counts(page) == (1, 0)
    assert _nav(page) == 4
    # The filters stay in the form, the rows' links and the pane's forms.
    assert 'value="unflagged" selected' in page
    decide_url = re.search(rf'/review/articles/{mine[0]["id"]}/decision\?([^"]+)"', page)
    assert parse_qs(decide_url.group(1).replace("&amp;", "&")) == {
        "page": ["1"], "batch": [str(batch_a)], "flag": ["unflagged"]}


def test_bad_filter_values_say_which_field_and_never_fail(app, client, world):
    page = _queue(client, "?since=yesterday&until=2020-13-01&flag=bogus&batch=abc",
                  status=400)
    for message in ("Finished from: “yesterday” is not a date",
                    "Finished to: “2020-13-01” is not a date",
                    "Flag: “bogus” is not one of the choices",
                    "Batch: “abc” is not a batch number"):
        assert message in page, message
    # What was understood still applies; the rest is left out, and said so.
    assert set(_rows(page)) == set(world["awaiting"])
    page = _queue(client, "?since=2021-02-01&until=2021-01-01", status=400)
    assert "Finished to: the date is before “Finished from”" in page
    for query in ("?batch=99999999999999999999", "?page=abc", "?page=-3", "?article=abc",
                  "?article=2000000000",
                  "?article=99999999999999", "?language=" + "x" * 5000, "?since=9999-12-31"):
        assert client.get("/review" + query).status_code in (200, 400), query
    assert client.get("/review/list?flag=nope").status_code == 200


def test_a_decision_answers_with_the_next_article_and_new_counts(app, client, world):
    page = _queue(client)
    csrf = csrf_from(page)
    first, second, third, fourth = _rows(page)
    # Approve by htmx: the list without it, the next one in the pane, counts and nav.
    response = _decide(client, first, csrf, decision="approved")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert _rows(html) == [second, third, fourth]
    assert _pane(html) == second
    assert re.search(r'<section id="review-pane"[^>]*hx-swap-oob="true"', html)
    assert _counts(html) == (3, 0)
    assert re.search(r'<a id="nav-review"[^>]*hx-swap-oob="true"', html) and _nav(html) == 3
    assert "Approved “Queue flagged one”." in html
    assert f"article={second}" in response.headers["HX-Replace-Url"]
    assert _review_state(app, first)[0] == "approved"
    # A rejection needs a reason: the pane says so, in place; nothing is stored.
    response = _decide(client, second, csrf, decision="rejected", reason="  ")
    assert response.status_code == 200
    assert response.headers["HX-Retarget"] == "#review-pane"
    html = response.get_data(as_text=True)
    assert "Say why the article is rejected." in html and _pane(html) == second
    assert _review_state(app, second) == ("needs_review", None)
    response = client.post(f"/review/articles/{second}/decision",  # without JavaScript
                           data={"decision": "rejected", "csrf_token": csrf})
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "Say why the article is rejected." in html and _pane(html) == second
    response = _decide(client, second, csrf, decision="maybe")
    assert "Choose approve or reject." in response.get_data(as_text=True)
    assert _review_state(app, second) == ("needs_review", None)
    # With a reason it is rejected, and the one after it is shown.
    response = _decide(client, second, csrf, decision="rejected", reason="Off topic")
    html = response.get_data(as_text=True)
    assert _review_state(app, second) == ("rejected", "Off topic")
    assert _rows(html) == [third, fourth] and _pane(html) == third
    assert _counts(html)[0] == 2 and _nav(html) == 2
    with app.app_context():
        # The newest entry for this id: audit rows outlive a test, and ids are reused.
        assert db.session.scalar(select(AuditEvent.detail).where(
            AuditEvent.target == f"article:{second}").order_by(AuditEvent.id.desc())
            .limit(1)) == "rejected: Off topic"
    # The last one decided: the one before it is shown. Without htmx: back to the queue.
    response = client.post(f"/review/articles/{fourth}/decision",
                           data={"decision": "approved", "csrf_token": csrf})
    assert response.status_code == 303
    assert parse_qs(urlsplit(response.headers["Location"]).query)["article"] == [str(third)]
    page = _queue(client)
    assert _rows(page) == [third] and _nav(page) == 1
    with app.app_context():
        title = db.session.get(Article, fourth).title
    assert f"Approved “{title}”." in page  # the flash


def test_decisions_refill_the_page_from_the_next(app, client, world, monkeypatch):
    """Page after page with no page load: deciding the last row of a page shows the one
    that came after it, from the page that followed."""
    monkeypatch.setitem(app.config, "REVIEW_PER_PAGE", 2)
    order = _rows(_queue(client, "?page=1")) + _rows(_queue(client, "?page=2"))
    assert len(order) == 4
    page = _queue(client, f"?page=1&article={order[1]}")
    assert "/review/list?page=2" in page  # where j goes past the end of this page
    html = _decide(client, order[1], csrf_from(page), "?page=1",
                   decision="approved").get_data(as_text=True)
    assert _rows(html) == [order[0], order[2]] and _pane(html) == order[2]
    listed = client.get("/review/list?page=2")
    assert _rows(listed.get_data(as_text=True)) == [order[3]]
    # Past the last page: the last page.
    assert _rows(_queue(client, "?page=9")) == [order[3]]


def test_a_viewer_reads_the_queue_but_cannot_decide(app, world):
    viewer = signed_in(app, make_account(app, Role.VIEWER, "queue-viewer"))
    page = _queue(viewer)
    assert len(_rows(page)) == 4 and _nav(page) == 4
    assert "data-decision" not in page and "/edit" not in page
    article = _rows(page)[0]
    pane = viewer.get(f"/review/articles/{article}").get_data(as_text=True)
    assert _pane(pane) == article and "data-decision" not in pane
    response = _decide(viewer, article, csrf_from(page), decision="approved")
    assert response.status_code == 403
    response = viewer.post(f"/review/articles/{article}/decision",
                           data={"decision": "approved", "csrf_token": csrf_from(page)})
    assert response.status_code == 403
    assert _review_state(app, article) == ("needs_review", None)


def test_the_nav_count_is_one_indexed_query_on_full_pages_only(app, client, world):
    with count_sql(app) as statements:
        page = client.get("/").get_data(as_text=True)
    assert _nav(page) == 4
    counts = [s for s in statements if "review_status" in s and "count(" in s.lower()]
    assert len(counts) == 1, counts
    # A partial never shows (or counts) it.
    with count_sql(app) as statements:
        partial = client.get("/batches/rows").get_data(as_text=True)
    assert "nav-review" not in partial
    assert not [s for s in statements if "review_status" in s]
    pane = client.get(f"/review/articles/{world['awaiting'][0]}").get_data(as_text=True)
    assert "nav-review" not in pane and "<html" not in pane
    with app.app_context():
        if db.engine.dialect.name != "sqlite":
            return
        plan = db.session.connection().exec_driver_sql(
            "EXPLAIN QUERY PLAN " + counts[0], ("succeeded", "needs_review")).all()
    assert "ix_articles_review_queue" in " ".join(str(row) for row in plan), plan
