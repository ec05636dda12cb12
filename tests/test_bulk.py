"""Bulk actions (issue 15, item 3) on the real pages with the real worker: pick batches on
the dashboard or articles in the review queue (or every row matching a filter), see the
exact count in a confirmation, confirm; one audit entry with the filter and the counts,
each article's history; large selections as a Celery task with a polled progress bar;
someone else's batches skipped and counted; bad input refused with nothing stored.
"""
from __future__ import annotations

import csv
import html
import io
import re
import zipfile

import pytest
from sqlalchemy import func, select

from tests.fakeai import Fault
from tests.helpers import (articles_state, batch_id_from_location, batch_state, csrf_from,
                           login, page_csrf, submit_form, wait_batch_final, wait_until)
from tests.support import ACCOUNTS, activate_celery, free_port
from webapp.extensions import db
from webapp.models import AuditEvent, BulkAction, BulkActionItem

_TOKEN = re.compile(r'name="confirm" value="([^"]+)"')
_QUESTION = re.compile(r'<h2 id="bulk-question">(.*?)</h2>', re.S)
_PROGRESS_URL = re.compile(r'id="bulk-panel"[^>]*?hx-get="([^"]+)"', re.S)


# -- helpers ----------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def audit_mark(app):
    """Where the audit log stood when the test began."""
    with app.app_context():
        app.audit_mark = db.session.scalar(select(func.max(AuditEvent.id))) or 0
    yield
    del app.audit_mark


def _batch(client, app, name: str, titles: list[str], wait: bool = True) -> int:
    batch_id = batch_id_from_location(submit_form(client, name, titles))
    if wait:
        wait_batch_final(app, batch_id)
    return batch_id


def _preview(client, csrf: str, *, ids=(), action="approve", scope="batches", select="rows",
             filter_query="", htmx=False, **extra):
    data = {"csrf_token": csrf, "scope": scope, "action": action, "select": select,
            "filter": filter_query, "ids": [str(i) for i in ids], **extra}
    headers = {"HX-Request": "true"} if htmx else {}
    return client.post("/bulk/preview", data=data, headers=headers)


def _token(page: str) -> str:
    match = _TOKEN.search(page)
    assert match, f"no confirmation in the page: {page[:2000]}"
    return html.unescape(match.group(1))


def _question(page: str) -> str:
    match = _QUESTION.search(page)
    assert match, "no question in the confirmation"
    return html.unescape(match.group(1)).strip()


def _run(client, csrf: str, token: str, htmx: bool = False):
    headers = {"HX-Request": "true"} if htmx else {}
    return client.post("/bulk/run", data={"csrf_token": csrf, "confirm": token},
                       headers=headers)


def _audits(app, action: str) -> list[AuditEvent]:
    """This test's entries of `action` (the audit log is kept between tests)."""
    with app.app_context():
        rows = db.session.scalars(select(AuditEvent).where(AuditEvent.action == action,
                                                           AuditEvent.id > app.audit_mark)
                                  .order_by(AuditEvent.id)).all()
        db.session.expunge_all()
        return rows


def _audit_count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(AuditEvent))


def _bulk_rows(app) -> tuple[int, int]:
    with app.app_context():
        return (db.session.scalar(select(func.count()).select_from(BulkAction)),
                db.session.scalar(select(func.count()).select_from(BulkActionItem)))


def _reviews(app, batch_id: int) -> list[str]:
    return [a["review_status"] for a in articles_state(app, batch_id)]


# -- the dashboard --------------------------------------------------------------------------

def test_approve_three_picked_batches(app, client):
    """Pick 3 batches on the dashboard, see the count, confirm: their articles are approved,
    one audit entry holds the filter and the count, and each article's page says so."""
    picked = [_batch(client, app, f"Bulk approve {n}", [f"Pick {n} one", f"Pick {n} two"])
              for n in range(3)]
    other = _batch(client, app, "Left alone", ["Not picked"])
    dashboard = client.get("/").get_data(as_text=True)
    for batch_id in picked + [other]:
        assert f'id="pick-batch-{batch_id}"' in dashboard
    assert 'id="bulk-form"' in dashboard and 'role="progressbar"' in dashboard
    csrf = csrf_from(dashboard)
    audits_before = _audit_count(app)

    preview = _preview(client, csrf, ids=picked)
    page = preview.get_data(as_text=True)
    assert preview.status_code == 200
    assert _question(page) == "Approve 6 articles awaiting review?"
    assert "They are in 3 batches." in page
    # Nothing has run yet.
    assert _reviews(app, picked[0]) == ["needs_review", "needs_review"]
    assert _bulk_rows(app) == (0, 0) and _audit_count(app) == audits_before

    token = _token(page)
    done = _run(client, csrf, token)
    assert done.status_code == 303 and done.headers["Location"].endswith("/")
    assert "6 articles approved." in client.get("/").get_data(as_text=True)
    for batch_id in picked:
        assert _reviews(app, batch_id) == ["approved", "approved"]
        assert {a["reviewed_by"] for a in articles_state(app, batch_id)} != {None}
    assert _reviews(app, other) == ["needs_review"]

    (entry,) = _audits(app, "bulk_approved")
    assert entry.actor == ACCOUNTS["editor"][0]
    assert "6 articles approved." in entry.detail and "skipped 0." in entry.detail
    listed = ", ".join(str(i) for i in sorted(picked))
    assert f"filter: picked batches {listed}." in entry.detail
    # One entry for the whole action, none per article.
    assert _audit_count(app) == audits_before + 1 and not _audits(app, "article_reviewed")

    article_id = articles_state(app, picked[1])[0]["id"]
    article_page = html.unescape(client.get(f"/articles/{article_id}").get_data(as_text=True))
    assert re.search(rf"Approved in bulk by {re.escape(ACCOUNTS['editor'][0])} on .+ UTC "
                     rf"\(filter: picked batches {re.escape(listed)}\)\.", article_page)
    untouched = articles_state(app, other)[0]["id"]
    assert "in bulk" not in client.get(f"/articles/{untouched}").get_data(as_text=True)

    # The same confirmation sent again (a double click) does not run a second time.
    again = _run(client, csrf, token)
    assert again.status_code == 303
    assert _bulk_rows(app)[0] == 1 and len(_audits(app, "bulk_approved")) == 1


def test_all_matching_is_resolved_on_the_server_and_frozen(app, client):
    """"All matching this filter" is found from the filter on the server (the ids and any
    count the browser sends are ignored), and the confirmed list is the one acted on."""
    spring = [_batch(client, app, f"Spring catalogue {n}", [f"Spring {n} a", f"Spring {n} b"])
              for n in range(2)]
    autumn = _batch(client, app, "Autumn catalogue", ["Autumn a"])
    csrf = page_csrf(client, "/?q=spring")

    page = _preview(client, csrf, select="all", filter_query="q=spring", ids=[autumn],
                    count="999", total="999").get_data(as_text=True)
    assert _question(page) == "Approve 4 articles awaiting review?"
    assert "They are in 2 batches." in page
    assert "Selection: all batches matching q=spring" in page
    token = _token(page)

    # A batch that matches the filter after the confirmation is not part of it.
    late = _batch(client, app, "Spring late arrival", ["Spring late"])
    assert _run(client, csrf, token).status_code == 303
    for batch_id in spring:
        assert _reviews(app, batch_id) == ["approved", "approved"]
    assert _reviews(app, autumn) == ["needs_review"] and _reviews(app, late) == ["needs_review"]
    (entry,) = _audits(app, "bulk_approved")
    assert "4 articles approved." in entry.detail
    assert "filter: all batches matching q=spring." in entry.detail


def test_a_large_selection_runs_on_a_worker_with_its_own_progress(app, client, monkeypatch):
    """Past BULK_SYNC_LIMIT the action runs as a Celery task; its polled progress partial
    (a progressbar) reaches 100 % and then stops polling with HTTP 286."""
    monkeypatch.setitem(app.config, "BULK_SYNC_LIMIT", 3)
    batch_id = _batch(client, app, "Large selection", [f"Large {n}" for n in range(8)])
    csrf = page_csrf(client, "/")
    page = _preview(client, csrf, ids=[batch_id], htmx=True).get_data(as_text=True)
    assert _question(page) == "Approve 8 articles awaiting review?"
    assert "runs in the background" in page

    started = _run(client, csrf, _token(page), htmx=True)
    assert started.status_code == 200, started.status_code
    panel = started.get_data(as_text=True)
    assert 'role="progressbar"' in panel and 'aria-valuemax="100"' in panel
    poll = _PROGRESS_URL.search(panel)
    assert poll, "the progress panel does not poll"
    url = html.unescape(poll.group(1))

    def finished():
        answer = client.get(url, headers={"HX-Request": "true"})
        assert answer.status_code in (200, 286), answer.status_code
        return answer if answer.status_code == 286 else None
    last = wait_until(finished, 60, "the bulk action to finish on the worker")
    body = last.get_data(as_text=True)
    assert 'aria-valuenow="100"' in body and "8 / 8" in body
    assert "hx-get" not in body and "hx-trigger" not in body  # polling stops
    assert "8 articles approved." in body
    assert _reviews(app, batch_id) == ["approved"] * 8
    (entry,) = _audits(app, "bulk_approved")
    assert "8 articles approved." in entry.detail

    # Without htmx the same goes through the bulk action's own page.
    other = _batch(client, app, "Large regeneration", [f"Again {n}" for n in range(5)])
    token = _token(_preview(client, csrf, ids=[other], action="regenerate")
                   .get_data(as_text=True))
    moved = _run(client, csrf, token)
    assert moved.status_code == 303 and re.search(r"/bulk/\d+$", moved.headers["Location"])
    shown = client.get(moved.headers["Location"]).get_data(as_text=True)
    assert 'role="progressbar"' in shown
    wait_until(lambda: "5 articles are being written again." in client.get(
        moved.headers["Location"]).get_data(as_text=True), 60, "the regeneration to be sent")
    wait_batch_final(app, other)


def test_someone_elses_batches_are_skipped_and_counted(app, client, admin_client):
    """Writing again is the batch's author's (or an admin's) call, as for one batch: the
    admin's batch is left out and counted, in the confirmation and in the outcome."""
    mine = [_batch(client, app, f"Mine {n}", [f"Mine {n} a", f"Mine {n} b"]) for n in range(2)]
    theirs = _batch(admin_client, app, "Someone else's", ["Theirs a", "Theirs b"])
    csrf = page_csrf(client, "/")
    page = _preview(client, csrf, ids=mine + [theirs], action="regenerate").get_data(as_text=True)
    assert _question(page) == "Write 4 articles again?"
    assert "1 batch belongs to someone else and will be skipped." in page
    theirs_before = articles_state(app, theirs)

    done = _run(client, csrf, _token(page))
    assert done.status_code == 303, done.status_code
    flashes = client.get("/").get_data(as_text=True)
    assert "4 articles are being written again." in flashes
    assert "1 batch belongs to someone else and was skipped." in flashes
    for batch_id in mine:
        wait_batch_final(app, batch_id)
        assert [a["attempts"] for a in articles_state(app, batch_id)] == [1, 1]
    assert [(a["task_id"], a["finished_at"]) for a in articles_state(app, theirs)] == \
        [(a["task_id"], a["finished_at"]) for a in theirs_before]
    assert batch_state(app, theirs)["status"] == "succeeded"
    (entry,) = _audits(app, "bulk_regenerated")
    assert "skipped 1: 1 batch belongs to someone else and was skipped." in entry.detail
    article_id = articles_state(app, mine[0])[0]["id"]
    assert "Written again in bulk by" in html.unescape(
        client.get(f"/articles/{article_id}").get_data(as_text=True))

    # An export skips them too: only the editor's own articles are in the file.
    page = _preview(client, csrf, ids=mine + [theirs], action="export", fmt="csv") \
        .get_data(as_text=True)
    assert _question(page) == "Export 4 articles as CSV?"
    download = _run(client, csrf, _token(page))
    assert download.status_code == 200 and download.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(download.get_data(as_text=True).lstrip("\ufeff"))))
    assert sorted(r["title"] for r in rows) == ["Mine 0 a", "Mine 0 b", "Mine 1 a", "Mine 1 b"]
    assert {int(r["batch_id"]) for r in rows} == set(mine)
    (exported,) = _audits(app, "bulk_exported")
    assert "4 articles exported as csv." in exported.detail and "skipped 1" in exported.detail


def test_retry_failed_cancel_and_zip_export(app, client, fake):
    """Retry writes only the failed articles again; cancel stops running batches (and an
    article's page says its batch was cancelled in bulk); a zip export has a folder per
    batch."""
    fake.set_default_fault(Fault.bad_request("No."))
    failed = _batch(client, app, "Failing", ["Fails a", "Fails b"])
    assert {a["status"] for a in articles_state(app, failed)} == {"failed"}
    fake.set_default_fault(None)
    csrf = page_csrf(client, "/")
    page = _preview(client, csrf, ids=[failed], action="retry").get_data(as_text=True)
    assert _question(page) == "Write 2 failed articles again?"
    assert _run(client, csrf, _token(page)).status_code == 303
    wait_batch_final(app, failed)
    assert {a["status"] for a in articles_state(app, failed)} == {"succeeded"}

    fake.latency, fake.chunks = 10.0, 50
    running = [_batch(client, app, f"Running {n}", [f"Slow {n}"], wait=False) for n in range(2)]
    page = _preview(client, csrf, ids=running + [failed], action="cancel").get_data(as_text=True)
    assert _question(page) == "Cancel 2 batches?"
    assert "1 batch has already finished and will be skipped." in page
    assert _run(client, csrf, _token(page)).status_code == 303
    for batch_id in running:
        assert wait_batch_final(app, batch_id, timeout=30)["status"] == "cancelled"
    article_id = articles_state(app, running[0])[0]["id"]
    assert "Its batch was cancelled in bulk by" in html.unescape(
        client.get(f"/articles/{article_id}").get_data(as_text=True))
    (entry,) = _audits(app, "bulk_cancelled")
    assert "2 batches are being cancelled." in entry.detail

    page = _preview(client, csrf, ids=[failed, running[0]], action="export", fmt="zip") \
        .get_data(as_text=True)
    download = _run(client, csrf, _token(page))
    assert download.mimetype == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(download.get_data())).namelist()
    assert len(names) == 3
    assert {name.split("/")[0] for name in names} == {f"{failed}-Failing",
                                                      f"{running[0]}-Running-0"}


def test_bad_input_is_refused_and_nothing_is_stored(app, client):
    batch_id = _batch(client, app, "Bad input", ["Bad input a"])
    csrf = page_csrf(client, "/")
    audits_before = _audit_count(app)
    cases = [
        ({"ids": []}, "ids", "Pick at least one row"),
        ({"ids": [batch_id], "action": "delete"}, "action", "Choose what to do"),
        ({"ids": [batch_id], "action": "reject"}, "reason", "Say why the articles are rejected."),
        ({"ids": [batch_id], "action": "export", "fmt": "pdf"}, "fmt", "Export as CSV or"),
        ({"ids": ["12x"]}, "ids", "The selection is not valid"),
        ({"ids": [batch_id], "scope": "users"}, "scope", "The selection is not valid"),
    ]
    for fields, field, message in cases:
        answer = _preview(client, csrf, **fields)
        page = html.unescape(answer.get_data(as_text=True))
        assert answer.status_code == 400, (fields, answer.status_code)
        assert f'data-field="{field}"' in page and message in page, fields
        assert 'name="confirm"' not in page
        # htmx gets the same message in the panel (200, so that htmx swaps it in).
        panel = _preview(client, csrf, htmx=True, **fields)
        assert panel.status_code == 200 and message in html.unescape(
            panel.get_data(as_text=True))
    # A confirmation that was changed, or is someone else's, is refused too.
    token = _token(_preview(client, csrf, ids=[batch_id]).get_data(as_text=True))
    for forged in (token[:-2] + ("AA" if not token.endswith("AA") else "BB"), "", "garbage"):
        answer = _run(client, csrf, forged)
        assert answer.status_code == 400
        assert "This confirmation has expired or is not valid" in html.unescape(
            answer.get_data(as_text=True))
    assert _reviews(app, batch_id) == ["needs_review"]
    assert _bulk_rows(app) == (0, 0) and _audit_count(app) == audits_before


def test_another_persons_confirmation_is_refused(app, client, admin_client):
    batch_id = _batch(client, app, "Not yours to confirm", ["Confirm a"])
    token = _token(_preview(client, page_csrf(client, "/"), ids=[batch_id])
                   .get_data(as_text=True))
    answer = _run(admin_client, page_csrf(admin_client, "/"), token)
    assert answer.status_code == 400
    assert _reviews(app, batch_id) == ["needs_review"] and _bulk_rows(app) == (0, 0)


# -- the review queue -------------------------------------------------------------------------

def test_review_queue_rows_and_all_matching(app, client):
    """On /review a row is an article: picked articles are approved; "all matching" takes
    the queue's own filter; articles already decided are skipped and counted."""
    first = _batch(client, app, "Queue one", ["Queue one a", "Queue one b", "Queue one c"])
    second = _batch(client, app, "Queue two", ["Queue two a"])
    ids = [a["id"] for a in articles_state(app, first)]
    queue = client.get("/review").get_data(as_text=True)
    for article_id in ids:
        assert f'id="pick-article-{article_id}"' in queue
    csrf = csrf_from(queue)

    page = _preview(client, csrf, scope="articles", ids=ids[:2]).get_data(as_text=True)
    assert _question(page) == "Approve 2 articles awaiting review?"
    assert _run(client, csrf, _token(page)).status_code == 303
    assert _reviews(app, first) == ["approved", "approved", "needs_review"]
    assert "2 articles approved." in client.get("/review").get_data(as_text=True)

    # Picked again with the third: two no longer await review.
    page = _preview(client, csrf, scope="articles", ids=ids, action="reject",
                    reason="Off topic").get_data(as_text=True)
    assert _question(page) == "Reject 1 article awaiting review?"
    assert "2 articles are not awaiting review and will be skipped." in page
    assert _run(client, csrf, _token(page)).status_code == 303
    assert [a["review_reason"] for a in articles_state(app, first)][2] == "Off topic"
    assert "because: Off topic" in html.unescape(
        client.get(f"/articles/{ids[2]}").get_data(as_text=True))

    page = _preview(client, csrf, scope="articles", select="all",
                    filter_query=f"batch={second}").get_data(as_text=True)
    assert _question(page) == "Approve 1 article awaiting review?"
    assert f"Selection: all articles awaiting review matching batch={second}" in page
    assert _run(client, csrf, _token(page)).status_code == 303
    assert _reviews(app, second) == ["approved"]


def test_a_large_selection_with_the_queue_down_does_nothing_and_says_so(app, client,
                                                                        make_app):
    batch_id = _batch(client, app, "Queue down", [f"Down {n}" for n in range(4)])
    down = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", BULK_SYNC_LIMIT=2)
    browser = down.test_client()
    login(browser, *ACCOUNTS["editor"])
    csrf = page_csrf(browser, "/")
    page = _preview(browser, csrf, ids=[batch_id]).get_data(as_text=True)
    assert _question(page) == "Approve 4 articles awaiting review?"
    answer = _run(browser, csrf, _token(page))
    assert answer.status_code == 303
    shown = html.unescape(browser.get(answer.headers["Location"]).get_data(as_text=True))
    assert "The queue could not be reached, so nothing was done." in shown
    assert "hx-get" not in shown.split('id="bulk-panel"')[1]  # nothing to poll for
    activate_celery(app)
    assert _reviews(app, batch_id) == ["needs_review"] * 4
    assert not _audits(app, "bulk_approved")
