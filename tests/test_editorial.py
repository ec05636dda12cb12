"""Editorial work on the real pages with the real worker: CSV/JSON import with a pre-flight,
prompt templates in a sandbox, review and versions, regeneration, copies, exports, dashboard
filters and the signed webhook (sent by a worker that has WEBHOOK_SECRET).
"""
from __future__ import annotations

import csv
import hashlib
import hmac
import html
import io
import json
import re
import uuid
import zipfile
from datetime import datetime, timedelta, timezone

import pytest
import redis
from sqlalchemy import func, select, update

from tests.support import ACCOUNTS
from tests.dedicated import Dedicated, redis_db_url
from tests.fakeai import Fault
from tests.helpers import (FINISH_TIMEOUT, articles_state, batch_id_from_location, batch_state,
                           csrf_from, login, page_csrf, row_counts, submit_form,
                           template_count, template_id_of, wait_batch_final, wait_until)
from tests.receivers import Receiver
from webapp.extensions import db
from webapp.models import (Article, ArticleVersion, Batch, User,
                           WebhookDelivery)

FORM = {"model": "gpt-4o-mini", "target_words": "200", "tone": "neutral",
        "language": "English", "instructions": ""}


# -- helpers ----------------------------------------------------------------------------------

def _user_id(app, role: str) -> int:
    with app.app_context():
        return db.session.scalar(select(User.id).where(User.email == ACCOUNTS[role][0]))


def _versions(app, article_id: int) -> list[dict]:
    with app.app_context():
        rows = db.session.scalars(select(ArticleVersion)
                                  .where(ArticleVersion.article_id == article_id)
                                  .order_by(ArticleVersion.number)).all()
        return [{c.name: getattr(v, c.name) for c in ArticleVersion.__table__.columns}
                for v in rows]


def _user_prompt(record) -> str:
    (user,) = [m for m in record.messages if m["role"] == "user"]
    return user["content"]


def _post(client, path: str, csrf_page: str = "/", **data):
    """A plain form POST, with the CSRF token of a page the user has open."""
    return client.post(path, data={"csrf_token": page_csrf(client, csrf_page), **data})


def _flashes(client, path: str) -> str:
    return client.get(path).get_data(as_text=True)


def _upload(client, filename: str, content: bytes, name: str = "Imported", **fields):
    """The new-batch form with a file, as the browser sends it (multipart)."""
    data = {"name": name, **FORM, "csrf_token": page_csrf(client), **fields,
            "import_file": (io.BytesIO(content), filename)}
    return client.post("/batches/new", data=data, content_type="multipart/form-data")


_IMPORT_TEXT = re.compile(r'<textarea name="import_text" hidden>(.*?)</textarea>', re.S)
_IMPORT_NAME = re.compile(r'<input[^>]*name="import_name"[^>]*value="([^"]*)"')


def _confirm(client, preflight_page: str, name: str = "Imported", **fields):
    """Confirm a checked import the way the page does: its textarea and hidden name go back."""
    text = _IMPORT_TEXT.search(preflight_page)
    assert text, "no import_text in the pre-flight page"
    import_name = _IMPORT_NAME.search(preflight_page)
    data = {"name": name, **FORM, **fields, "csrf_token": csrf_from(preflight_page),
            "import_text": html.unescape(text.group(1)),
            "import_name": html.unescape(import_name.group(1)) if import_name else ""}
    return client.post("/batches/new", data=data)


def _one_alert(page: str) -> str:
    alerts = re.findall(r'<p class="flash flash-error" role="alert">(.*?)</p>', page, re.S)
    assert len(alerts) == 1, alerts
    return html.unescape(alerts[0])


# -- import -----------------------------------------------------------------------------------

IMPORT_CSV = (
    "title,keywords,tone,words,language,notes\n"
    "Harbour reopens after storm,\"harbour, boats\",playful,300,French,Quote the harbour master\n"
    "Night trains return,,,,,\n"
    "Market hall turns 100,history,formal,,,\n"
).encode()


def test_csv_import_checks_first_then_creates_with_row_settings(app, client, fake):
    response = _upload(client, "autumn.csv", IMPORT_CSV)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert 'id="preflight"' in page and "autumn.csv" in page
    assert "<strong>3</strong> articles ready" in page
    assert "Estimate:" in page
    for title in ("Harbour reopens after storm", "Night trains return", "Market hall turns 100"):
        assert f"<td>{title}</td>" in page
    assert "Create batch with 3 articles" in page
    assert row_counts(app) == (0, 0)  # checked, not stored
    assert fake.request_count() == 0

    response = _confirm(client, page, name="Autumn import", tone="neutral", target_words="200")
    batch_id = batch_id_from_location(response)
    assert wait_batch_final(app, batch_id)["status"] == "succeeded"
    articles = {a["title"]: a for a in articles_state(app, batch_id)}
    harbour = articles["Harbour reopens after storm"]
    assert (harbour["keywords"], harbour["tone"], harbour["target_words"], harbour["language"],
            harbour["notes"]) == ("harbour, boats", "playful", 300, "French",
                                  "Quote the harbour master")
    night = articles["Night trains return"]
    assert (night["keywords"], night["tone"], night["target_words"]) == (None, None, None)
    assert articles["Market hall turns 100"]["tone"] == "formal"

    # The prompts carry each row's values, and the batch's where the row has none.
    prompts = {r.title: _user_prompt(r) for r in fake.requests}
    harbour_prompt = prompts["Harbour reopens after storm"]
    for text in ("about 300 words", "Tone: playful", "Language: French",
                 "Keywords to work in naturally: harbour, boats",
                 "Notes from the editor: Quote the harbour master"):
        assert text in harbour_prompt, (text, harbour_prompt)
    night_prompt = prompts["Night trains return"]
    for text in ("about 200 words", "Tone: neutral", "Language: English"):
        assert text in night_prompt, (text, night_prompt)
    assert "Keywords" not in night_prompt and "Notes" not in night_prompt
    assert "Tone: formal" in prompts["Market hall turns 100"]
    assert "Keywords to work in naturally: history" in prompts["Market hall turns 100"]


def test_import_reports_missing_columns(app, client):
    response = _upload(client, "titles.csv", b"title,keywords\nOne,a\nTwo,b\n")
    assert response.status_code == 200
    page = html.unescape(response.get_data(as_text=True))
    assert "Columns not in the file (the batch settings apply): tone, words, language, notes." \
        in page
    assert row_counts(app) == (0, 0)


def test_import_row_errors_name_their_rows_and_store_nothing(app, client):
    content = (
        "title,tone,words\n"
        "Good row,friendly,300\n"
        ",neutral,200\n"
        "good ROW,formal,300\n"
        "Bad tone,angry,300\n"
        "Bad words,neutral,abc\n"
        "Too long,neutral,99999\n"
    ).encode()
    response = _upload(client, "bad.csv", content)
    assert response.status_code == 400
    page = html.unescape(response.get_data(as_text=True))
    assert "Nothing was stored" in page
    for message in ("Row 3: title is empty",
                    "Row 4: duplicate title (same as row 2)",
                    "Row 5: tone “angry” is not one of",
                    "Row 6: words “abc” is not a whole number",
                    "Row 7: words must be between 50 and 5000"):
        assert message in page, message
    assert "Create batch" not in page and 'name="import_text"' not in page
    assert row_counts(app) == (0, 0)

    # JSON rows are numbered from 1; an item that is not an object is an error too.
    rows = [{"title": "Fine"}, "not an object", {"title": "fine"}]
    response = _upload(client, "bad.json", json.dumps(rows).encode())
    assert response.status_code == 400
    page = html.unescape(response.get_data(as_text=True))
    assert "Row 2: is not an object with a title" in page
    assert "Row 3: duplicate title (same as row 1)" in page
    assert row_counts(app) == (0, 0)


@pytest.mark.parametrize("case", ["too_large", "not_utf8", "binary", "too_many_rows"])
def test_import_file_errors_are_one_clear_message(app, client, monkeypatch, case):
    if case == "too_large":
        monkeypatch.setitem(app.config, "IMPORT_MAX_BYTES", 1000)
        content, expected = b"title\n" + b"A title that repeats\n" * 100, \
            "The file is larger than the limit of 1,000 bytes."
    elif case == "not_utf8":
        content, expected = "title\nCafé society\n".encode("latin-1"), \
            ("The file is not UTF-8, UTF-16, GB18030 or Big5 text: byte 10 (line 2) is not "
             "UTF-8. Save it as “CSV UTF-8” and try again.")
    elif case == "binary":
        content, expected = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", \
            "This is a binary file, not CSV or JSON text."
    else:
        monkeypatch.setitem(app.config, "IMPORT_MAX_ROWS", 5)
        content = ("title\n" + "".join(f"Row title {i}\n" for i in range(6))).encode()
        expected = "The file has 6 rows; a batch takes at most 5."
    response = _upload(client, "upload.csv", content)
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert _one_alert(page) == f"{expected} Nothing was stored."
    assert "row-errors" not in page
    assert row_counts(app) == (0, 0)


def test_json_import(app, client, fake):
    rows = [{"title": "Ferry timetable changes", "keywords": ["ferry", "timetable"],
             "tone": "friendly", "words": 250},
            {"title": "New bike lanes", "notes": "Mention the map"}]
    response = _upload(client, "rows.json", json.dumps(rows).encode())
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "<strong>2</strong> articles ready" in page
    assert "<td>ferry, timetable</td>" in page
    assert row_counts(app) == (0, 0)

    batch_id = batch_id_from_location(_confirm(client, page, name="JSON import"))
    assert wait_batch_final(app, batch_id)["status"] == "succeeded"
    ferry = next(a for a in articles_state(app, batch_id) if a["title"] == rows[0]["title"])
    assert (ferry["keywords"], ferry["tone"], ferry["target_words"]) == \
        ("ferry, timetable", "friendly", 250)
    prompt = _user_prompt(fake.requests_for("New bike lanes")[0])
    assert "Notes from the editor: Mention the map" in prompt


def test_ten_thousand_row_import(app, make_app, redis_url, api_headers, fake):
    # An app whose queue no worker reads (its own Redis database): the import is stored and
    # handed to the queue as usual, but 10,000 articles are never written, and no worker is
    # kept busy discarding 10,000 cancelled tasks after the test.
    unread = redis_db_url(redis_url, 5)
    quiet = make_app(REDIS_URL=unread)
    browser = quiet.test_client()
    login(browser, *ACCOUNTS["editor"])
    rows = 10_000
    content = ("title,keywords\n" + "".join(f"Bulk article number {i:05d},kw{i % 7}\n"
                                            for i in range(1, rows + 1))).encode()
    try:
        response = _upload(browser, "bulk.csv", content, name="Ten thousand")
        assert response.status_code == 200
        page = response.get_data(as_text=True)
        assert f"<strong>{rows}</strong> articles ready" in page
        assert f"and {rows - 20} more rows" in page
        assert row_counts(app) == (0, 0)

        batch_id = batch_id_from_location(_confirm(browser, page, name="Ten thousand"))
        assert batch_state(app, batch_id)["total"] == rows
        with app.app_context():
            stored = db.session.scalar(select(func.count()).select_from(Article)
                                       .where(Article.batch_id == batch_id))
            distinct = db.session.scalar(select(func.count(func.distinct(Article.title)))
                                         .where(Article.batch_id == batch_id))
            sample = db.session.scalar(select(Article.keywords).where(
                Article.batch_id == batch_id, Article.title == "Bulk article number 09999"))
        assert stored == distinct == rows
        assert sample == f"kw{9999 % 7}"
        response = browser.post(f"/api/v1/batches/{batch_id}/cancel", headers=api_headers)
        assert response.status_code == 202
        assert wait_batch_final(app, batch_id)["status"] == "cancelled"
        assert fake.request_count() == 0
    finally:
        redis.Redis.from_url(unread).flushdb()


# -- prompt templates -------------------------------------------------------------------------

def test_templates_are_checked_sandboxed_previewed_and_kept_per_batch(app, client, fake):
    before = template_count(app)
    name = f"House style {uuid.uuid4().hex[:8]}"

    response = _post(client, "/templates/new", "/templates/new", name=name,
                     body="Title: {{ title }}\nCover {{ topic }}.")
    assert response.status_code == 400
    page = html.unescape(response.get_data(as_text=True))
    assert "does not render" in page and "'topic' is undefined" in page
    response = _post(client, "/templates/new", "/templates/new", name=name,
                     body="Title: {{ title.__class__.__mro__ }}")
    assert response.status_code == 400
    assert "is unsafe" in html.unescape(response.get_data(as_text=True))
    preview = _post(client, "/templates/preview", "/templates/new",
                    body="{{ title.__class__ }}").get_data(as_text=True)
    assert "is unsafe" in html.unescape(preview) and "<pre" not in preview
    assert template_count(app) == before

    body = ("Title: {{ title }}\nHouse style marker HSM-7.\n"
            "Write {{ words }} words in a {{ tone }} tone{% if keywords %} about {{ keywords }}"
            "{% endif %}.")
    preview = _post(client, "/templates/preview", "/templates/new", body=body,
                    sample_title="Sample headline", sample_words="450", sample_tone="playful",
                    sample_keywords="tides").get_data(as_text=True)
    assert html.unescape(preview).count(
        "Title: Sample headline\nHouse style marker HSM-7.\n"
        "Write 450 words in a playful tone about tides.") == 1

    response = _post(client, "/templates/new", "/templates/new", name=name, body=body)
    assert response.status_code == 303
    template_id = template_id_of(app, name)
    assert template_id is not None
    form = client.get("/batches/new").get_data(as_text=True)
    assert f'<option value="{template_id}">{name}</option>' in form

    titles = ["Tide tables explained", "The lighthouse at night"]
    batch_id = batch_id_from_location(submit_form(client, "Templated", titles,
                                                  template_id=template_id, tone="formal"))
    assert wait_batch_final(app, batch_id)["status"] == "succeeded"
    for title in titles:
        (record,) = fake.requests_for(title)
        assert _user_prompt(record) == (f"Title: {title}\nHouse style marker HSM-7.\n"
                                        "Write 200 words in a formal tone.")
    assert batch_state(app, batch_id)["template_text"] == body

    # Editing the template later does not change what the batch was written with.
    response = _post(client, f"/templates/{template_id}", f"/templates/{template_id}",
                     name=name, body="Title: {{ title }}\nA different text.")
    assert response.status_code == 303
    assert batch_state(app, batch_id)["template_text"] == body

    # Archived: gone from the new-batch list, refused if posted anyway.
    response = _post(client, f"/templates/{template_id}/archive", "/templates")
    assert response.status_code == 303
    form = client.get("/batches/new").get_data(as_text=True)
    assert f'<option value="{template_id}"' not in form and f">{name}</option>" not in form
    response = submit_form(client, "Archived template", ["Never sent"], template_id=template_id)
    assert response.status_code == 400
    assert "does not exist or is archived" in response.get_data(as_text=True)


# -- review, versions, regeneration, copies --------------------------------------------------------

def test_review_edit_restore_and_regenerate(app, client, fake):
    titles = ["Approve me", "Reject me", "Edit me", "Write me again"]
    batch_id = batch_id_from_location(submit_form(client, "Review", titles))
    assert wait_batch_final(app, batch_id)["status"] == "succeeded"
    ids = {a["title"]: a["id"] for a in articles_state(app, batch_id)}
    originals = {a["title"]: a["body"] for a in articles_state(app, batch_id)}
    editor_id = _user_id(app, "editor")

    def article(title):
        return next(a for a in articles_state(app, batch_id) if a["title"] == title)

    # The article page's last poll brings the review panel along once (out of band), so an
    # article that finishes while it is open can be reviewed without a reload; while the
    # article was being written the page had no such panel.
    last = client.get(f"/articles/{ids['Approve me']}/live")
    assert last.status_code == 286
    page = last.get_data(as_text=True)
    assert 'id="article-tools" hx-swap-oob="true"' in page and ">Approve<" in page

    # Approve.
    path = f"/articles/{ids['Approve me']}"
    response = _post(client, f"{path}/review", path, decision="approved")
    assert response.status_code == 303
    approved = article("Approve me")
    assert approved["review_status"] == "approved" and approved["reviewed_by"] == editor_id
    assert approved["reviewed_at"] is not None

    # Reject: a reason is required.
    path = f"/articles/{ids['Reject me']}"
    response = _post(client, f"{path}/review", path, decision="rejected", reason="  ")
    assert response.status_code == 303
    assert "Say why the article is rejected." in _flashes(client, path)
    assert article("Reject me")["review_status"] == "needs_review"
    response = _post(client, f"{path}/review", path, decision="rejected", reason="Too vague")
    assert response.status_code == 303
    rejected = article("Reject me")
    assert (rejected["review_status"], rejected["review_reason"]) == ("rejected", "Too vague")

    # Edit: a new version with who and when; the generated text stays as version 1.
    path = f"/articles/{ids['Edit me']}"
    edit_page = client.get(f"{path}/edit").get_data(as_text=True)
    assert html.escape(originals["Edit me"].splitlines()[0]) in edit_page
    edited = "# Edit me\n\nRewritten by the desk, in four words."
    response = client.post(f"{path}/edit", data={"body": edited,
                                                 "csrf_token": csrf_from(edit_page)})
    assert response.status_code == 303
    assert article("Edit me")["body"] == edited
    versions = _versions(app, ids["Edit me"])
    assert [(v["number"], v["source"], v["created_by"]) for v in versions] == \
        [(1, "generated", None), (2, "edited", editor_id)]
    assert versions[0]["body"] == originals["Edit me"] and versions[1]["body"] == edited
    assert versions[1]["created_at"] is not None
    page = client.get(path).get_data(as_text=True)
    # The time as the page's locale writes it (English: "12/6/26, 9:05 PM").
    assert re.search(r"v2</a>\s*· edited · \d{1,2}/\d{1,2}/\d\d, \d{1,2}:\d\d\s[AP]M UTC · "
                     r"editor@example.test", page), "the version list does not say who edited when"

    # Restore the generated version: it becomes the text again, as version 3.
    response = _post(client, f"{path}/versions/{versions[0]['id']}/restore", path)
    assert response.status_code == 303
    assert article("Edit me")["body"] == originals["Edit me"]
    assert [v["source"] for v in _versions(app, ids["Edit me"])] == \
        ["generated", "edited", "restored v1"]

    # Regenerate one article with extra instructions (a longer answer, to tell them apart).
    fake.words = 60
    path = f"/articles/{ids['Write me again']}"
    response = _post(client, f"{path}/regenerate", path,
                     instructions="Mention the harbour master.")
    assert response.status_code == 303
    wait_until(lambda: article("Write me again")["status"] == "succeeded"
               and article("Write me again")["body"] != originals["Write me again"],
               FINISH_TIMEOUT, "the article to be written again")
    assert wait_batch_final(app, batch_id)["status"] == "succeeded"
    first, second = fake.requests_for("Write me again")
    assert "Instructions for this version" not in _user_prompt(first)
    assert "Instructions for this version: Mention the harbour master." in _user_prompt(second)
    bodies = [v["body"] for v in _versions(app, ids["Write me again"])]
    assert bodies == [originals["Write me again"], article("Write me again")["body"]]

    # Regenerate all rejected: only the rejected article is written again.
    response = _post(client, f"/batches/{batch_id}/regenerate", f"/batches/{batch_id}",
                     which="rejected")
    assert response.status_code == 303
    wait_until(lambda: len(fake.requests_for("Reject me")) == 2, FINISH_TIMEOUT,
               "the rejected article to be sent again")
    assert wait_batch_final(app, batch_id)["status"] == "succeeded"
    again = article("Reject me")
    assert again["review_status"] == "needs_review" and again["review_reason"] is None
    assert len(_versions(app, ids["Reject me"])) == 2
    assert {t: len(fake.requests_for(t)) for t in titles} == \
        {"Approve me": 1, "Reject me": 2, "Edit me": 1, "Write me again": 2}


def test_regenerate_all_failed(app, client, fake):
    titles = ["Fails first", "Fails too", "Fails as well"]
    fake.set_default_fault(Fault.bad_request("The prompt is too long."))
    batch_id = batch_id_from_location(submit_form(client, "Failing", titles))
    assert wait_batch_final(app, batch_id)["status"] == "failed"
    assert all("too long" in a["error"] for a in articles_state(app, batch_id))

    fake.set_default_fault(None)
    response = _post(client, f"/batches/{batch_id}/regenerate", f"/batches/{batch_id}",
                     which="failed")
    assert response.status_code == 303
    assert "Writing 3 failed articles again." in _flashes(client, f"/batches/{batch_id}")
    wait_until(lambda: fake.request_count() == 6, FINISH_TIMEOUT, "the failed articles to be sent")
    assert wait_batch_final(app, batch_id)["status"] == "succeeded"
    for article in articles_state(app, batch_id):
        assert article["status"] == "succeeded" and article["error"] is None
        assert [r.status for r in fake.requests_for(article["title"])] == [400, 200]


def test_regenerating_after_a_cancel_is_not_cancelled_again(app, client, api_headers, fake):
    # A cancel leaves flags in Redis for a day; writing an article again must not meet them.
    fake.latency = 30.0
    titles = ["Cancelled then wanted", "Cancelled too"]
    batch_id = batch_id_from_location(submit_form(client, "Changed our minds", titles))
    wait_until(lambda: fake.in_flight == 2, FINISH_TIMEOUT, "both articles to be running")
    assert client.post(f"/api/v1/batches/{batch_id}/cancel",
                       headers=api_headers).status_code == 202
    assert wait_batch_final(app, batch_id)["status"] == "cancelled"
    fake.reset(restore_settings=True)
    wanted = next(a for a in articles_state(app, batch_id) if a["title"] == titles[0])

    response = _post(client, f"/articles/{wanted['id']}/regenerate",
                     f"/articles/{wanted['id']}")
    assert response.status_code == 303
    assert wait_batch_final(app, batch_id)["status"] == "succeeded"
    states = {a["title"]: a["status"] for a in articles_state(app, batch_id)}
    assert states == {titles[0]: "succeeded", titles[1]: "cancelled"}
    assert len(fake.requests_for(titles[0])) == 1  # the new attempt reached the provider


def test_duplicate_keeps_titles_settings_and_template_text(app, client, api_headers, fake):
    name = f"Copy style {uuid.uuid4().hex[:8]}"
    body = "Title: {{ title }}\nCopy marker CM-3, tone {{ tone }}, {{ words }} words."
    assert _post(client, "/templates/new", "/templates/new", name=name,
                 body=body).status_code == 303
    template_id = template_id_of(app, name)
    response = client.post("/api/v1/batches", headers=api_headers, json={
        "name": "Original", "model": "gpt-4o-mini", "target_words": 400, "tone": "formal",
        "language": "German", "instructions": "Use short sentences.",
        "template_id": template_id,
        "rows": [{"title": "First original", "tone": "playful", "words": 120,
                  "keywords": "alpha"},
                 {"title": "Second original", "notes": "A note"}]})
    assert response.status_code == 201, response.get_json()
    original_id = response.get_json()["id"]
    assert wait_batch_final(app, original_id)["status"] == "succeeded"
    # The template changes after the original was written: the copy keeps the original's text.
    assert _post(client, f"/templates/{template_id}", f"/templates/{template_id}", name=name,
                 body="Title: {{ title }}\nEdited later.").status_code == 303
    original_prompts = {r.title: _user_prompt(r) for r in fake.requests}
    fake.reset()

    response = _post(client, f"/batches/{original_id}/duplicate", f"/batches/{original_id}")
    copy_id = batch_id_from_location(response)
    assert copy_id != original_id
    assert wait_batch_final(app, copy_id)["status"] == "succeeded"
    original, copy = batch_state(app, original_id), batch_state(app, copy_id)
    assert copy["name"] == "Original (copy)"
    for key in ("model", "target_words", "tone", "language", "instructions", "template_id",
                "template_text", "total", "provider"):
        assert copy[key] == original[key], key
    assert copy["template_text"] == body
    row_keys = ("position", "title", "keywords", "tone", "target_words", "language", "notes")
    assert [{k: a[k] for k in row_keys} for a in articles_state(app, copy_id)] == \
        [{k: a[k] for k in row_keys} for a in articles_state(app, original_id)]
    # The same prompts went out again, word for word.
    assert {r.title: _user_prompt(r) for r in fake.requests} == original_prompts
    assert "Copy marker CM-3, tone playful, 120 words." in original_prompts["First original"]


# -- exports ------------------------------------------------------------------------------------

FORMULA_TITLES = ['=HYPERLINK("x")', "+1", "-2", "@SUM(A1)", "Plain title"]


def _parse_front_matter(text: str) -> tuple[dict, str]:
    """YAML front matter written as `key: <JSON value>` lines, then the body."""
    lines = text.split("\n")
    assert lines[0] == "---", text[:100]
    end = lines.index("---", 1)
    fields = {}
    for line in lines[1:end]:
        key, sep, value = line.partition(": ")
        assert sep, line
        fields[key] = json.loads(value)
    return fields, "\n".join(lines[end + 1:])


def test_exports_escape_formulas_and_stream(app, client, fake):
    batch_id = batch_id_from_location(submit_form(client, "Exports", FORMULA_TITLES))
    assert wait_batch_final(app, batch_id)["status"] == "succeeded"
    ids = {a["title"]: a["id"] for a in articles_state(app, batch_id)}
    for title in ('=HYPERLINK("x")', "Plain title"):
        path = f"/articles/{ids[title]}"
        assert _post(client, f"{path}/review", path, decision="approved").status_code == 303
    # A body that starts with a tab, which a spreadsheet would also treat specially.
    path = f"/articles/{ids['+1']}"
    response = client.post(f"{path}/edit", data={"body": "\tTabbed body text",
                                                 "csrf_token": page_csrf(client, f"{path}/edit")})
    assert response.status_code == 303
    articles = {a["title"]: a for a in articles_state(app, batch_id)}

    def export(fmt, everything=False):
        response = client.get(f"/batches/{batch_id}/export.{fmt}"
                              + ("?all=1" if everything else ""))
        assert response.status_code == 200
        assert response.is_streamed  # a generator, not a body built in memory
        assert response.headers["Content-Disposition"].startswith("attachment;")
        return response.get_data()

    # CSV: approved only by default; every cell a spreadsheet would run is quoted.
    # The CSV starts with a byte-order mark, for Excel.
    rows = list(csv.DictReader(io.StringIO(export("csv").decode("utf-8-sig"))))
    assert [r["title"] for r in rows] == ["'=HYPERLINK(\"x\")", "Plain title"]
    rows = list(csv.DictReader(io.StringIO(export("csv", everything=True).decode("utf-8-sig"))))
    assert [r["title"] for r in rows] == ["'=HYPERLINK(\"x\")", "'+1", "'-2", "'@SUM(A1)",
                                          "Plain title"]
    by_id = {int(r["id"]): r for r in rows}
    assert by_id[ids["+1"]]["body"] == "'\tTabbed body text"
    assert by_id[ids["Plain title"]]["body"] == articles["Plain title"]["body"]
    assert by_id[ids["Plain title"]]["review_status"] == "approved"
    assert float(by_id[ids["-2"]]["cost_usd"]) == pytest.approx(articles["-2"]["cost_usd"],
                                                                abs=1e-6)

    # JSON.
    data = json.loads(export("json"))
    assert data["batch"]["id"] == batch_id
    assert [a["title"] for a in data["articles"]] == ['=HYPERLINK("x")', "Plain title"]
    data = json.loads(export("json", everything=True))
    assert [a["title"] for a in data["articles"]] == FORMULA_TITLES
    assert data["articles"][1]["body"] == "\tTabbed body text"

    # Zip of Markdown files with front matter.
    with zipfile.ZipFile(io.BytesIO(export("zip"))) as archive:
        assert len(archive.namelist()) == 2
    with zipfile.ZipFile(io.BytesIO(export("zip", everything=True))) as archive:
        names = sorted(archive.namelist())
        assert len(names) == len(FORMULA_TITLES) and all(n.endswith(".md") for n in names)
        for name in names:
            fields, body = _parse_front_matter(archive.read(name).decode("utf-8"))
            article = articles[fields["title"]]
            assert body == article["body"]
            assert fields["status"] == article["review_status"]
            assert fields["model"] == "gpt-4o-mini"
            assert fields["prompt_tokens"] == article["prompt_tokens"]
            assert fields["completion_tokens"] == article["completion_tokens"]
            assert fields["cost_usd"] == pytest.approx(article["cost_usd"], abs=1e-6)
            assert datetime.fromisoformat(fields["created"].rstrip("Z"))
            assert name.startswith(f"{article['position']:05d}-")


# -- dashboard filters -----------------------------------------------------------------------------

_ROW_IDS = re.compile(r'id="batch-row-(\d+)"')


def _listed(client, query: str) -> list[int]:
    response = client.get("/" + query)
    assert response.status_code == 200
    return [int(i) for i in _ROW_IDS.findall(response.get_data(as_text=True))]


def test_dashboard_filters_and_pagination(app, client, admin_client, fake, monkeypatch):
    alpha = batch_id_from_location(submit_form(client, "Alpha harbour news",
                                               ["Lighthouse keeper retires"]))
    beta = batch_id_from_location(submit_form(admin_client, "Beta sports", ["Derby day"]))
    old = batch_id_from_location(submit_form(client, "Delta archive", ["Old news"]))
    for batch_id in (alpha, beta, old):
        assert wait_batch_final(app, batch_id)["status"] == "succeeded"
    fake.set_default_fault(Fault.bad_request())
    failed = batch_id_from_location(submit_form(client, "Gamma trouble", ["Will fail"]))
    assert wait_batch_final(app, failed)["status"] == "failed"
    with app.app_context():  # as if it had been submitted in January 2020
        db.session.execute(update(Batch).where(Batch.id == old)
                           .values(created_at=datetime(2020, 1, 15, 12, 0)))
        db.session.commit()

    assert _listed(client, "?status=failed") == [failed]
    assert _listed(client, "?author=admin") == [beta]
    assert sorted(_listed(client, "?author=editor")) == sorted([alpha, old, failed])
    assert _listed(client, "?q=LIGHTHOUSE") == [alpha]  # an article's title
    assert _listed(client, "?q=beta") == [beta]  # the batch's name
    assert _listed(client, "?q=nothing-like-this") == []
    assert _listed(client, "?since=2020-01-01&until=2020-01-31") == [old]
    today = datetime.now(timezone.utc).date().isoformat()  # created_at is UTC
    assert sorted(_listed(client, f"?since={today}")) == sorted([alpha, beta, failed])
    assert _listed(client, "?author=editor&status=succeeded&since=2020-01-15&until=2020-01-15") \
        == [old]
    page = client.get("/?status=failed&q=gamma").get_data(as_text=True)
    assert 'value="gamma"' in page and '<option value="failed" selected>' in page

    # Pagination keeps the filters in its links.
    monkeypatch.setitem(app.config, "BATCHES_PER_PAGE", 1)
    seen = []
    query = "?author=editor&q=a"
    while query is not None:
        page = client.get("/" + query).get_data(as_text=True)
        seen += [int(i) for i in _ROW_IDS.findall(page)]
        older = re.search(r'<a href="/\?([^"]+)">Older →</a>', page)
        if older is None:
            query = None
            continue
        args = dict(p.split("=", 1) for p in html.unescape(older.group(1)).split("&"))
        assert args["author"] == "editor" and args["q"] == "a", args
        query = "?" + html.unescape(older.group(1))
    assert sorted(seen) == sorted([alpha, old, failed])
    assert len(seen) == 3  # one a page, none twice
    newer = re.search(r'<a href="/\?([^"]+)">← Newer</a>', page)
    assert newer and "author=editor" in html.unescape(newer.group(1))


# -- webhook ---------------------------------------------------------------------------------------

WEBHOOK_SECRET = "whsec-pressroom-test-4f2a"


@pytest.fixture(scope="module")
def hooked_worker(_app, database_url, redis_url, fake_server, artifacts, worker):
    # The receivers listen on 127.0.0.1, on a new port each test: allowed by host alone.
    dedicated = Dedicated("webhook", _app, database_url, redis_url, fake_server, artifacts,
                          db_index=4, webhooks=True,
                          settings={"WEBHOOK_SECRET": WEBHOOK_SECRET,
                                    "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"})
    yield dedicated
    dedicated.stop()


@pytest.fixture
def hooked(app, hooked_worker):
    with hooked_worker.in_use() as dedicated:
        yield dedicated


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def _check_signature(post: dict) -> dict:
    header = post["headers"].get("X-Pressroom-Signature", "")
    expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), post["body"],
                                    hashlib.sha256).hexdigest()
    assert hmac.compare_digest(header, expected), (header, expected)
    assert post["headers"]["Content-Type"] == "application/json"
    return json.loads(post["body"])


def _deliveries(app, batch_id: int) -> list[dict]:
    with app.app_context():
        rows = db.session.scalars(select(WebhookDelivery)
                                  .where(WebhookDelivery.batch_id == batch_id)
                                  .order_by(WebhookDelivery.id)).all()
        return [{c.name: getattr(d, c.name) for c in WebhookDelivery.__table__.columns}
                for d in rows]


def test_webhook_is_signed_and_sent_once(app, hooked, receiver, fake):
    from webapp.generation import reconciler, webhooks

    browser = hooked.client()
    batch_id = batch_id_from_location(submit_form(
        browser, "Hooked", ["Hook one", "Hook two"], webhook_url=receiver.url))
    assert wait_batch_final(app, batch_id)["status"] == "succeeded"
    wait_until(lambda: receiver.count() == 1, FINISH_TIMEOUT, "the webhook POST")
    payload = _check_signature(receiver.posts[0])
    assert receiver.posts[0]["path"] == "/hooks/pressroom"
    assert payload["event"] == "batch.finished"
    batch = payload["batch"]
    assert (batch["id"], batch["name"], batch["status"], batch["total"]) == \
        (batch_id, "Hooked", "succeeded", 2)
    assert batch["counts"]["succeeded"] == 2 and batch["counts"]["failed"] == 0
    assert batch["prompt_tokens"] > 0 and batch["cost_usd"] > 0

    wait_until(lambda: batch_state(app, batch_id)["webhook_done_at"] is not None,
               FINISH_TIMEOUT, "the delivery to be recorded")
    hooked.wait_idle()
    # Later reconciler passes and stray deliveries send nothing more.
    with hooked.app.app_context():
        assert reconciler.reconcile()["webhooks_scheduled"] == 0
        assert webhooks.deliver(batch_id) == {"skipped": "nothing to deliver"}
    hooked.wait_idle()
    assert receiver.count() == 1
    (delivery,) = _deliveries(app, batch_id)
    assert delivery["ok"] and delivery["status_code"] == 200 and delivery["attempt"] == 1
    page = browser.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert receiver.url in page and "delivered (HTTP 200)" in page


def test_failed_webhook_is_retried_with_backoff(app, hooked, receiver, fake):
    from webapp.generation import reconciler, webhooks

    receiver.statuses = [500]
    browser = hooked.client()
    batch_id = batch_id_from_location(submit_form(
        browser, "Hooked retry", ["Retry hook"], webhook_url=receiver.url))
    assert wait_batch_final(app, batch_id)["status"] == "succeeded"
    wait_until(lambda: len(_deliveries(app, batch_id)) == 1, FINISH_TIMEOUT,
               "the first delivery to be recorded")
    (first,) = _deliveries(app, batch_id)
    assert not first["ok"] and first["status_code"] == 500 and first["error"] == "HTTP 500"
    assert batch_state(app, batch_id)["webhook_done_at"] is None
    _check_signature(receiver.posts[0])

    # Backoff: the next attempt is not due yet (5 s after the first).
    hooked.wait_idle()  # the worker's delivery has let go of its lock
    with hooked.app.app_context():
        assert webhooks.deliver(batch_id) == {"skipped": "not due"}
    assert receiver.count() == 1

    # Five seconds later (moved back in time rather than waited for), the reconciler's pass
    # schedules the delivery and the worker sends it, signed again.
    with app.app_context():
        db.session.execute(update(WebhookDelivery).where(WebhookDelivery.id == first["id"])
                           .values(created_at=first["created_at"] - timedelta(seconds=6)))
        db.session.commit()
    with hooked.app.app_context():
        assert reconciler.reconcile()["webhooks_scheduled"] == 1
    wait_until(lambda: receiver.count() == 2, FINISH_TIMEOUT, "the retried webhook POST")
    payload = _check_signature(receiver.posts[1])
    assert payload["batch"]["id"] == batch_id and payload["batch"]["status"] == "succeeded"
    wait_until(lambda: batch_state(app, batch_id)["webhook_done_at"] is not None,
               FINISH_TIMEOUT, "the retry to be recorded")
    deliveries = _deliveries(app, batch_id)
    assert [(d["attempt"], d["ok"], d["status_code"]) for d in deliveries] == \
        [(1, False, 500), (2, True, 200)]

    page = browser.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert "failed (HTTP 500)" in page and "delivered (HTTP 200)" in page
    assert page.index("failed (HTTP 500)") < page.index("delivered (HTTP 200)")
