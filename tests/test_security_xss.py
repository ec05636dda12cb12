"""Untrusted text is inert everywhere it is shown, and request bodies have a size limit
(issue 3, item 5).

Hostile strings go in through every door a person or the model has: the batch name, titles,
instructions, a template's name and text, an account's email, a token's name, a rejection
reason, an edited body, model output (the fake provider starts each article with "# <title>")
and bodies, errors and notes written straight into the database. Then every page that shows
them is read as HTML: nothing from them may become an element, an attribute, a script or a
request.
"""
from __future__ import annotations

import csv
import html
import io
import json
import re
import uuid
import zipfile

import pytest
from sqlalchemy import select, update

from tests.helpers import (batch_id_from_location, csrf_from, row_counts, submit_form,
                           wait_batch_final)
from tests.sec_support import (Account, active_content_problems, bearer,  # noqa: F401
                               clean_login_limits, csrf_of, elements_of, signed_in)
from webapp.extensions import db
from webapp.models import Article, ArticleVersion, Role

PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[x](javascript:alert(1))",
    '<a hx-get="/admin/users" hx-trigger="load">x</a>',
    '<div hx-post="/batches/1/cancel">',
]
ALL = " ".join(PAYLOADS)
# What must never appear raw in a page: each payload's live part.
RAW = ["<script>alert", "<img src=x", 'href="javascript:', 'hx-get="/admin/users"',
       '<div hx-post="/batches/1/cancel"', "onerror=alert(1)>"]
# Where htmx requests are legitimately declared: elements the templates give an id, and forms
# whose hx-post repeats their action.
HX_REQUESTS = ("hx-get", "hx-post", "hx-put", "hx-patch", "hx-delete")
# Spreadsheet formulas, which a CSV export must not hand to Excel as formulas.
FORMULAS = ['=HYPERLINK("http://evil.example","x")', "+1+1", "-1+1", "@SUM(1)"]


def _visible_text(page: str) -> str:
    """The page's text as a browser shows it (entities decoded, tags gone)."""
    return " ".join(el.text for el in elements_of(page))


def assert_inert(page: str, where: str, shown: list[str] = ()) -> None:
    problems = active_content_problems(page)
    for raw in RAW:
        if raw in page:
            problems.append(f"raw {raw!r}")
    for el in elements_of(page):
        requests = [a for a in HX_REQUESTS if a in el.attrs]
        for attr in requests:
            legit = "id" in el.attrs or (el.tag == "form"
                                         and el.attrs.get("action") == el.attrs[attr])
            if not legit:
                problems.append(f"<{el.tag} {attr}={el.attrs[attr]!r}> not made by a template")
        if el.attrs.get("hx-trigger", "").strip() == "load":
            problems.append(f"<{el.tag} hx-trigger=load>")
        if "prose" in el.attrs.get("class", "").split() and "hx-disable" not in el.attrs:
            problems.append("a rendered body outside hx-disable")
        if any("prose" in a.attrs.get("class", "").split() for a in el.ancestors):
            bad = [a for a in el.attrs if a.startswith(("hx-", "data-hx", "on", "style"))]
            if bad:
                problems.append(f"<{el.tag} {bad}> inside a rendered body")
    assert not problems, (where, problems)
    text = _visible_text(page)
    for payload in shown:
        # Proof that the hostile text reached the page (as text): the test is not vacuous.
        assert payload in text, (where, payload)


@pytest.fixture
def hostile(app, fake, clean_login_limits):
    """A batch full of hostile text by an author whose email is hostile too."""
    from webapp.services import users

    email = f"<script>alert(1)</script>-{uuid.uuid4().hex[:8]}@example.test"
    password = "hostile-author-password"
    with app.app_context():
        user, _, token = users.create_user(email, Role.ADMIN, password=password)
        author = Account(user.id, email, password, token, Role.ADMIN)
    client = signed_in(app, author)
    csrf = csrf_of(client)

    template_name = f"T{uuid.uuid4().hex[:6]} {PAYLOADS[3]}"
    response = client.post("/templates/new", data={
        "name": template_name, "csrf_token": csrf,
        # The "Title:" line is where the fake provider takes the title it writes about.
        "body": "Title: {{ title }}\nWrite about it. " + ALL})
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    template_id = int(re.search(r'/templates/(\d+)"[^>]*>T' + template_name[1:7],
                                client.get("/templates").get_data(as_text=True)).group(1))

    titles = [f"Title {i} {p}" for i, p in enumerate(PAYLOADS)] + FORMULAS + ["../../etc/passwd"]
    response = submit_form(client, f"Batch {ALL}", titles, instructions=ALL,
                           template_id=template_id)
    batch_id = batch_id_from_location(response)
    wait_batch_final(app, batch_id)

    with app.app_context():
        ids = db.session.scalars(select(Article.id).where(Article.batch_id == batch_id)
                                 .order_by(Article.position)).all()
        # As if the model had written the payloads, and a worker had reported them.
        db.session.execute(update(Article).where(Article.id == ids[1]).values(
            body="\n\n".join(PAYLOADS) + "\n\n<style>body{display:none}</style>"))
        db.session.execute(update(Article).where(Article.id == ids[2]).values(
            status="failed", error=f"Provider said: {ALL}", body=None))
        db.session.execute(update(Article).where(Article.id == ids[3]).values(note=ALL[:300]))
        db.session.commit()

    # A rejection reason, and an edited body kept as a version.
    assert client.post(f"/articles/{ids[0]}/review", data={
        "decision": "rejected", "reason": ALL, "csrf_token": csrf}).status_code == 303
    assert client.post(f"/articles/{ids[4]}/edit", data={
        "body": "Edited. " + ALL, "csrf_token": csrf}).status_code == 303
    response = client.post("/account/tokens", data={"name": PAYLOADS[1], "csrf_token": csrf})
    assert response.status_code == 200
    with app.app_context():
        version_id = db.session.scalar(select(ArticleVersion.id).where(
            ArticleVersion.article_id == ids[4]).order_by(ArticleVersion.number.desc()))
    return {"client": client, "author": author, "batch_id": batch_id, "articles": ids,
            "template_id": template_id, "version_id": version_id, "titles": titles}


def test_hostile_text_is_inert_on_every_page(app, hostile):
    client, batch_id, ids = hostile["client"], hostile["batch_id"], hostile["articles"]
    email = hostile["author"].email
    pages = {
        "/": [f"Batch {ALL}", email],
        "/batches/rows": [f"Batch {ALL}"],
        f"/batches/{batch_id}": [f"Batch {ALL}"] + hostile["titles"][:5],
        f"/batches/{batch_id}/progress?since=2000-01-01T00:00:00": hostile["titles"][:5],
        f"/articles/{ids[0]}": [hostile["titles"][0], ALL],        # title and rejection reason
        f"/articles/{ids[1]}": [hostile["titles"][1]],
        f"/articles/{ids[2]}": [f"Provider said: {ALL}"],
        f"/articles/{ids[3]}": [ALL[:300].strip()],
        f"/articles/{ids[2]}/live": [f"Provider said: {ALL}"],
        f"/articles/{ids[4]}/edit": ["Edited. " + ALL],
        f"/articles/{ids[4]}/versions/{hostile['version_id']}": [hostile["titles"][4]],
        "/templates": [PAYLOADS[3]],
        f"/templates/{hostile['template_id']}": [PAYLOADS[3], ALL],
        "/batches/new": [PAYLOADS[3]],
        "/account/tokens": [PAYLOADS[1]],
        "/admin/users": [email],
        "/admin/audit": [email, f"Batch {ALL}"[:150]],
    }
    for url, shown in pages.items():
        response = client.get(url)
        assert response.status_code in (200, 286), (url, response.status_code)
        assert_inert(response.get_data(as_text=True), url, shown)


def test_filters_echo_what_was_typed_as_text(app, hostile):
    """Reflected input: the filter boxes show the query string back, as a value, inertly."""
    client = hostile["client"]
    for path, params in (("/", {"q": PAYLOADS[0], "author": PAYLOADS[1]}),
                         ("/batches/rows", {"q": PAYLOADS[3]}),
                         ("/admin/audit", {"actor": PAYLOADS[0], "action": PAYLOADS[4]})):
        response = client.get(path, query_string=params)
        assert response.status_code in (200, 286), (path, response.status_code)
        page = response.get_data(as_text=True)
        assert_inert(page, path)
        values = {el.attrs.get("value") for el in elements_of(page) if el.tag == "input"}
        if path != "/batches/rows":
            assert params.get("q", params.get("actor")) in values, (path, values)


def test_model_output_is_sanitised_under_hx_disable(app, hostile):
    client, ids = hostile["client"], hostile["articles"]
    for article_id in ids[:5]:
        page = client.get(f"/articles/{article_id}").get_data(as_text=True)
        bodies = [el for el in elements_of(page) if "prose" in el.attrs.get("class", "").split()]
        if article_id != ids[2]:  # the failed one has no body
            assert bodies, article_id
        for body in bodies:
            assert "hx-disable" in body.attrs
    # What the model wrote (the fake provider echoes the title) really was hostile.
    with app.app_context():
        body = db.session.get(Article, ids[3]).body
    assert body.startswith(f"# {hostile['titles'][3]}")


def test_imported_rows_are_inert(app, hostile):
    """An import's titles, keywords, notes, column names and file name: in the pre-flight
    table, and on the article pages once it is confirmed."""
    client = hostile["client"]
    csrf = csrf_of(client, "/batches/new")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["title", "keywords", "notes", "language", "extra " + PAYLOADS[0]])
    titles = [f"Imported {i} {p}" for i, p in enumerate(PAYLOADS)]
    for title, payload in zip(titles, PAYLOADS):
        writer.writerow([title, payload, payload, "English", payload])
    filename = f"{PAYLOADS[1]}.csv"
    response = client.post("/batches/new", data={
        "name": f"Imported {PAYLOADS[1]}", "csrf_token": csrf, "tone": "neutral",
        "import_file": (io.BytesIO(buffer.getvalue().encode()), filename)},
        content_type="multipart/form-data")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert_inert(page, "import pre-flight", titles + PAYLOADS + ["extra " + PAYLOADS[0]])

    text = html.unescape(re.search(r'<textarea name="import_text" hidden>(.*?)</textarea>',
                                   page, re.S).group(1))
    response = client.post("/batches/new", data={
        "name": f"Imported {PAYLOADS[1]}", "csrf_token": csrf, "tone": "neutral",
        "import_text": text, "import_name": filename})
    batch_id = batch_id_from_location(response)
    wait_batch_final(app, batch_id)
    assert_inert(client.get(f"/batches/{batch_id}").get_data(as_text=True), "imported batch",
                 titles)
    with app.app_context():
        ids = db.session.scalars(select(Article.id).where(Article.batch_id == batch_id)
                                 .order_by(Article.position)).all()
    for article_id, payload in zip(ids, PAYLOADS):
        assert_inert(client.get(f"/articles/{article_id}").get_data(as_text=True),
                     f"imported article {article_id}", [payload])


def test_template_preview_is_inert(app, hostile):
    client = hostile["client"]
    response = client.post("/templates/preview", data={
        "body": "{{ title }} " + ALL, "sample_title": PAYLOADS[0], "csrf_token": csrf_of(client)})
    assert response.status_code == 200
    assert_inert(response.get_data(as_text=True), "template preview", [PAYLOADS[0], ALL])


def test_exports_are_downloads_and_keep_the_text_as_data(app, hostile):
    client, batch_id = hostile["client"], hostile["batch_id"]
    for fmt, mimetype in (("csv", "text/csv"), ("json", "application/json"),
                          ("zip", "application/zip")):
        response = client.get(f"/batches/{batch_id}/export.{fmt}?all=1")
        response.get_data()  # read it to the end, as a server does: that ends its context
        assert response.status_code == 200, fmt
        assert response.mimetype == mimetype
        assert response.headers["Content-Disposition"].startswith("attachment;")
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "html" not in response.headers["Content-Type"]

    data = json.loads(client.get(f"/batches/{batch_id}/export.json?all=1").get_data(as_text=True))
    assert data["batch"]["name"] == f"Batch {ALL}"
    assert [a["title"] for a in data["articles"]] == hostile["titles"]

    rows = list(csv.DictReader(io.StringIO(
        client.get(f"/batches/{batch_id}/export.csv?all=1").get_data(as_text=True))))
    titles = [row["title"] for row in rows]
    for formula in FORMULAS:
        # Shown as text by a spreadsheet: the cell starts with an apostrophe.
        assert "'" + formula in titles, (formula, titles)
    assert all(not t.startswith(("=", "+", "-", "@")) for t in titles)
    assert "Title 0 <script>alert(1)</script>" in titles  # data, not HTML: kept verbatim

    archive = zipfile.ZipFile(io.BytesIO(client.get(f"/batches/{batch_id}/export.zip?all=1").data))
    names = archive.namelist()
    assert len(names) == len(hostile["titles"])
    for name in names:
        # No path from a title: no directories, no "..", no markup in a file name.
        assert re.fullmatch(r"\d{5}-[a-z0-9-]+\.md", name), name
    first = archive.read(names[0]).decode()
    assert first.startswith("---\ntitle: " + json.dumps(hostile["titles"][0]) + "\n")


# -- body size -------------------------------------------------------------------------------------

def test_a_body_over_the_limit_gets_413_with_a_clear_page(app, make_app, clean_login_limits):
    from tests.sec_support import make_account

    small = make_app(MAX_CONTENT_LENGTH=64 * 1024)
    account = make_account(small, Role.EDITOR, "too-large")
    client = signed_in(small, account)
    before = row_counts(small)
    csrf = csrf_of(client, "/batches/new")
    response = client.post("/batches/new", data={
        "name": "Too large", "csrf_token": csrf,
        "titles": "\n".join(f"Title number {i}" for i in range(6000))})
    assert response.status_code == 413
    page = response.get_data(as_text=True)
    assert "too large" in page and "0.0625 MB" in page
    assert response.mimetype == "text/html"

    response = client.post("/batches/new", data={
        "name": "Too large file", "csrf_token": csrf,
        "import_file": (io.BytesIO(b"title\n" + b"x" * 100_000), "big.csv")},
        content_type="multipart/form-data")
    assert response.status_code == 413 and "too large" in response.get_data(as_text=True)

    response = small.test_client().post(
        "/api/v1/batches", headers=bearer(account.token),
        json={"name": "Too large", "titles": [f"Title {i}" for i in range(10_000)]})
    assert response.status_code == 413
    error = response.get_json()["error"]
    assert error["code"] == "request_entity_too_large" and "too large" in error["message"]
    assert row_counts(small) == before


def test_the_default_limit_applies_to_uploads(app, client):
    """The shipped MAX_CONTENT_LENGTH (4 MB) is in force: a 5 MB upload is refused whole."""
    before = row_counts(app)
    page = client.get("/batches/new").get_data(as_text=True)
    response = client.post("/batches/new", data={
        "name": "Huge", "csrf_token": csrf_from(page),
        "import_file": (io.BytesIO(b"title\n" + b"y" * (5 * 1024 * 1024)), "huge.csv")},
        content_type="multipart/form-data")
    assert response.status_code == 413
    assert "the limit is 4 MB" in response.get_data(as_text=True)
    assert row_counts(app) == before
