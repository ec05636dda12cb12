"""Prompt templates with budgets (issue item 3) and template ownership (item 6), on the real
pages with the real worker.

A template is refused, saying why and within a second, wherever it is rendered: the preview,
the save check, the new-batch estimate and submission, the import pre-flight, and the worker
(which fails that article and goes on). Previews and estimates are rate-limited per user.
Only a template's author or an admin may change it; anyone who writes batches may use it
and copy it.
"""
from __future__ import annotations

import html
import io
import re
import time
import uuid

import pytest
from sqlalchemy import select

from tests.support import ACCOUNTS
from tests.helpers import (articles_state, batch_id_from_location, page_csrf, row_counts,
                           submit_form, template_count, template_id_of, wait_batch_final)
from tests.sec_support import make_account, signed_in
from webapp.extensions import db
from webapp.models import PromptTemplate, Role, User

# A refusal takes milliseconds; two seconds only guards against a render that hangs.
HANG_GUARD = 2.0

BOMBS = {
    "repeat": ("{{ title * 200000000 }}", "the operator '*' is not allowed"),
    "nested range": ("{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}"
                     "{% endfor %}", "loops may only go over the row's values"),
    "format": ("{{ '{:>300000000}'.format(title) }}", "calling '.format()' is not allowed"),
    "center": ("{{ title|center(300000000) }}", "the filter 'center' is not allowed"),
    "percent": ('{{ "%300000000s" % title }}', "the operator '%' is not allowed"),
}
# Fine for the sample row (a 36-character title): title² characters, 40,000 for a
# 200-character title, twice the budget.
LONG_TITLE_BOMB = "Title: {{ title }}\n{% for c in title %}{{ title }}{% endfor %}"
LONG_TITLE = "Long " + "t" * 195
# Fine for the sample row; 20 keywords × 1,500 characters of notes for a long real row.
LONG_ROW_BOMB = "Title: {{ title }}\n{% for k in keywords.split(',') %}{{ notes }}{% endfor %}"
OVER_BUDGET = "The template makes more than 20,000 characters (its output budget) for this row."

FORM = {"model": "gpt-4o-mini", "target_words": "200", "tone": "neutral",
        "language": "English", "instructions": ""}


# -- helpers ----------------------------------------------------------------------------------

def _timed(call):
    start = time.monotonic()
    response = call()
    elapsed = time.monotonic() - start
    assert elapsed < HANG_GUARD, f"took {elapsed:.2f} s"
    return response


def _text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def _post(client, path: str, csrf_page: str, **data):
    return client.post(path, data={"csrf_token": page_csrf(client, csrf_page), **data})


def _preview(client, body: str, **samples):
    data = {f"sample_{k}": v for k, v in samples.items()}
    return _timed(lambda: _post(client, "/templates/preview", "/templates/new", body=body,
                                **data))


def _estimate(client, titles, **fields):
    data = {"name": "Estimate", "titles": "\n".join(titles), **FORM, **fields,
            "csrf_token": page_csrf(client)}
    return _timed(lambda: client.post("/batches/estimate", data=data,
                                      headers={"HX-Request": "true"}))


def _upload(client, rows: list[dict], **fields):
    columns = ["title", "keywords", "notes"]
    lines = [",".join(columns)] + [",".join(f'"{r.get(c, "")}"' for c in columns) for r in rows]
    data = {"name": "Imported", **FORM, "csrf_token": page_csrf(client), **fields,
            "import_file": (io.BytesIO("\n".join(lines).encode()), "rows.csv")}
    return _timed(lambda: client.post("/batches/new", data=data,
                                      content_type="multipart/form-data"))


def _save(client, name: str, body: str):
    return _timed(lambda: _post(client, "/templates/new", "/templates/new", name=name,
                                body=body))


def _template(app, template_id: int) -> dict:
    with app.app_context():
        tpl = db.session.get(PromptTemplate, template_id)
        return {c.name: getattr(tpl, c.name) for c in PromptTemplate.__table__.columns}


def _saved(app, client, body: str) -> int:
    name = f"Budget {uuid.uuid4().hex[:8]}"
    response = _save(client, name, body)
    assert response.status_code == 303, _text(response)[:800]
    return template_id_of(app, name)


def _legacy(app, body: str, author: str | None = "editor") -> int:
    """A template stored before the subset and the budget existed (or by an old version):
    put in the table directly, as the save check would refuse it now."""
    with app.app_context():
        author_id = (db.session.scalar(select(User.id).where(User.email == ACCOUNTS[author][0]))
                     if author else None)
        tpl = PromptTemplate(name=f"Legacy {uuid.uuid4().hex[:8]}", body=body,
                             created_by=author_id)
        db.session.add(tpl)
        db.session.commit()
        return tpl.id


def _user_prompt(record) -> str:
    (user,) = [m for m in record.messages if m["role"] == "user"]
    return user["content"]


@pytest.fixture
def other_editor(app):
    """A second editor, signed in: not the author of the `client` editor's templates."""
    account = make_account(app, Role.EDITOR, "templates-b")
    return account, signed_in(app, account)


# -- the bombs --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(BOMBS))
def test_a_bomb_is_refused_at_preview_and_at_save_saying_why(app, client, name):
    body, why = BOMBS[name]
    before = template_count(app)

    preview = _preview(client, body)
    assert preview.status_code == 200
    assert why in _text(preview) and "<pre" not in preview.get_data(as_text=True)

    response = _save(client, f"Bomb {uuid.uuid4().hex[:8]}", body)
    assert response.status_code == 400
    page = _text(response)
    assert re.search(r'<p class="field-error">[^<]*' + re.escape(why), page), page[-3000:]
    assert template_count(app) == before


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_a_stored_bomb_is_refused_by_the_estimate_the_submission_and_the_import(app, client,
                                                                               fake, name):
    body, why = BOMBS[name]
    template_id = _legacy(app, body)
    before = row_counts(app)

    estimate = _estimate(client, ["One title"], template_id=template_id)
    assert estimate.status_code == 200
    assert why in _text(estimate) and "Estimate:" not in _text(estimate)

    response = _timed(lambda: submit_form(client, "Bomb batch", ["One title"],
                                          template_id=template_id))
    assert response.status_code == 400
    assert why in _text(response)

    response = _upload(client, [{"title": "Imported title"}], template_id=template_id)
    assert response.status_code == 400
    page = _text(response)
    assert why in page and "Nothing was stored." in page

    assert row_counts(app) == before
    assert fake.request_count() == 0


def test_a_template_fine_on_the_sample_is_refused_where_real_rows_take_it_over_budget(
        app, client, fake):
    before = row_counts(app)
    long_title = _saved(app, client, LONG_TITLE_BOMB)  # the sample row renders: it is saved
    long_row = _saved(app, client, LONG_ROW_BOMB)

    # The preview with long sample values.
    preview = _preview(client, LONG_TITLE_BOMB, title=LONG_TITLE)
    assert OVER_BUDGET in _text(preview)
    preview = _preview(client, LONG_ROW_BOMB, keywords=",".join(["k"] * 20), notes="n" * 1500)
    assert OVER_BUDGET in _text(preview)

    # The estimate and the submission of typed titles name the title.
    estimate = _estimate(client, ["A short one", LONG_TITLE], template_id=long_title)
    assert f"Title 2: {OVER_BUDGET}" in _text(estimate)
    response = _timed(lambda: submit_form(client, "Over budget", ["A short one", LONG_TITLE],
                                          template_id=long_title))
    assert response.status_code == 400
    assert f"Title 2: {OVER_BUDGET}" in _text(response)

    # The import pre-flight makes it a problem of that row, with its number.
    response = _upload(client, [
        {"title": "Fine row", "keywords": "a,b", "notes": "short"},
        {"title": "Heavy row", "keywords": ",".join(["k"] * 20), "notes": "n" * 1500},
    ], template_id=long_row)
    assert response.status_code == 400
    page = _text(response)
    assert f"<li>Row 3: {OVER_BUDGET}</li>" in page
    assert "Row 2:" not in page

    assert row_counts(app) == before
    assert fake.request_count() == 0


def test_the_worker_fails_an_article_over_budget_and_lives(app, client, worker, fake):
    """The web and the worker can disagree (a batch queued before the budget was lowered,
    or before the budget existed): the web here allows a million characters, the worker
    the default 20,000. The worker refuses the render at once, fails that article with the
    reason, and writes the rest; a normal batch afterwards is written as usual."""
    template_id = _saved(app, client, LONG_TITLE_BOMB)
    saved = app.config["TEMPLATE_OUTPUT_BUDGET"]
    app.config["TEMPLATE_OUTPUT_BUDGET"] = 1_000_000
    try:
        response = submit_form(client, "Worker budget", ["Short title", LONG_TITLE],
                               template_id=template_id)
    finally:
        app.config["TEMPLATE_OUTPUT_BUDGET"] = saved
    batch_id = batch_id_from_location(response)

    assert wait_batch_final(app, batch_id)["status"] == "failed"
    short, heavy = articles_state(app, batch_id)
    assert short["status"] == "succeeded"
    assert heavy["status"] == "failed"
    assert heavy["error"] == ("The prompt template cannot be used for this article. "
                              + OVER_BUDGET)
    assert fake.requests_for(LONG_TITLE) == []  # nothing was sent for it
    page = _text(client.get(f"/batches/{batch_id}"))
    assert "output budget" in page

    worker.check_alive()
    after = batch_id_from_location(submit_form(client, "After the bomb", ["Still writing"]))
    assert wait_batch_final(app, after)["status"] == "succeeded"


# -- what is allowed ----------------------------------------------------------------------------

ALLOWED = """Title: {{ title }}
{% if tone == 'formal' %}Write formally.{% elif tone == 'playful' %}Have fun.{% else %}\
Write plainly.{% endif %}
Length: {{ words }} words, in {{ language|upper }}.
{% for k in keywords.split(',') %}{% if k|trim %}- keyword {{ loop.index }}: {{ k|trim|capitalize }}
{% endif %}{% endfor %}{{ notes|default('No notes.', true)|truncate(40) }}"""


def test_the_allowed_subset_previews_saves_and_writes(app, client, fake):
    preview = _preview(client, ALLOWED, title="Tide pools", tone="playful", words="300",
                       language="German", keywords="crabs, anemones", notes="")
    assert _text(preview).count(
        "Title: Tide pools\nHave fun.\nLength: 300 words, in GERMAN.\n"
        "- keyword 1: Crabs\n- keyword 2: Anemones\nNo notes.") == 1
    template_id = _saved(app, client, ALLOWED)

    response = _upload(client, [
        {"title": "Rock pools at dawn", "keywords": "limpets, barnacles", "notes": ""},
        {"title": "Kelp forests", "keywords": "", "notes": "Mention the otters."},
    ], template_id=template_id, tone="formal")
    assert response.status_code == 200, _text(response)[-2000:]
    page = response.get_data(as_text=True)
    text = html.unescape(re.search(r'<textarea name="import_text" hidden>(.*?)</textarea>',
                                   page, re.S).group(1))
    response = client.post("/batches/new", data={
        "name": "Allowed subset", **FORM, "tone": "formal", "template_id": template_id,
        "import_text": text, "import_name": "rows.csv", "csrf_token": page_csrf(client)})
    batch_id = batch_id_from_location(response)
    assert wait_batch_final(app, batch_id)["status"] == "succeeded"
    (first,) = fake.requests_for("Rock pools at dawn")
    assert _user_prompt(first) == ("Title: Rock pools at dawn\nWrite formally.\n"
                                   "Length: 200 words, in ENGLISH.\n"
                                   "- keyword 1: Limpets\n- keyword 2: Barnacles\nNo notes.")
    (second,) = fake.requests_for("Kelp forests")
    assert _user_prompt(second).endswith("ENGLISH.\nMention the otters.")


# -- rate limits ----------------------------------------------------------------------------

def test_previews_and_estimates_are_limited_per_user(app):
    account = make_account(app, Role.EDITOR, "templates-limit")
    client, other = signed_in(app, account), signed_in(app, make_account(app, Role.EDITOR))
    saved = app.config["TEMPLATE_PREVIEW_LIMIT"]
    app.config["TEMPLATE_PREVIEW_LIMIT"] = "3 per minute"
    try:
        body = "Title: {{ title }}"
        for _ in range(3):
            assert "Title: Limited" in _text(_preview(client, body, title="Limited"))
        refused = _preview(client, body, title="Limited")
        assert refused.status_code == 200  # htmx swaps only 2xx answers into the page
        assert "Too many previews" in _text(refused) and "<pre" not in _text(refused)
        # Another user has a limit of their own.
        assert "Title: Limited" in _text(_preview(other, body, title="Limited"))

        for _ in range(3):
            assert "Estimate:" in _text(_estimate(client, ["One"]))
        refused = _estimate(client, ["One"])
        assert refused.status_code == 200
        assert "Too many estimates" in _text(refused) and "Estimate:" not in _text(refused)
    finally:
        app.config["TEMPLATE_PREVIEW_LIMIT"] = saved


# -- ownership --------------------------------------------------------------------------------

def _row(page: str, template_id: int) -> str:
    match = re.search(rf'<tr id="template-{template_id}">(.*?)</tr>', page, re.S)
    assert match, f"template {template_id} is not listed"
    return match.group(1)


def test_only_the_author_or_an_admin_changes_a_template_others_use_and_copy_it(
        app, client, admin_client, other_editor, fake):
    account_b, editor_b = other_editor
    body = "Title: {{ title }}\nOwned template marker OTM-1."
    template_id = _saved(app, client, body)
    original = _template(app, template_id)

    # The author sees Archive; another editor sees only Copy, and a read-only form.
    assert "Archive" in _row(client.get("/templates").get_data(as_text=True), template_id)
    row = _row(editor_b.get("/templates").get_data(as_text=True), template_id)
    assert "Archive" not in row and f"/templates/new?copy={template_id}" in row
    form = _text(editor_b.get(f"/templates/{template_id}"))
    assert "Only this template's author or an admin can change it" in form
    assert "Save template" not in form and "/archive" not in form

    # Editing and archiving are refused on the server, and change nothing.
    response = _post(editor_b, f"/templates/{template_id}", f"/templates/{template_id}",
                     name="Taken over", body="Title: {{ title }}\nChanged.")
    assert response.status_code == 403
    assert "Only the template's author or an admin can edit it" in _text(response)
    response = _post(editor_b, f"/templates/{template_id}/archive", "/templates")
    assert response.status_code == 403
    assert _template(app, template_id) == original

    # B may use it in a batch, and copy it.
    batch_id = batch_id_from_location(submit_form(editor_b, "B uses A's template", ["B's title"],
                                                  template_id=template_id))
    assert wait_batch_final(app, batch_id)["status"] == "succeeded"
    assert "OTM-1" in _user_prompt(fake.requests_for("B's title")[0])
    copy_form = _text(editor_b.get(f"/templates/new?copy={template_id}"))
    copy_name = f"Copy of {original['name']}"
    assert f'value="{copy_name}"' in copy_form and body in copy_form
    response = _post(editor_b, "/templates/new", "/templates/new", name=copy_name, body=body)
    assert response.status_code == 303
    copy = _template(app, template_id_of(app, copy_name))
    assert copy["created_by"] == account_b.id and copy["body"] == body
    # A second copy gets a name of its own.
    assert f'value="{copy_name} (2)"' in _text(editor_b.get(f"/templates/new?copy={template_id}"))

    # An admin may edit and archive anyone's template.
    response = _post(admin_client, f"/templates/{template_id}", f"/templates/{template_id}",
                     name=original["name"], body="Title: {{ title }}\nEdited by an admin.")
    assert response.status_code == 303
    assert _template(app, template_id)["body"] == "Title: {{ title }}\nEdited by an admin."
    assert _post(admin_client, f"/templates/{template_id}/archive",
                 "/templates").status_code == 303
    assert _template(app, template_id)["archived_at"] is not None


def test_a_template_without_an_author_is_the_admins(app, client, admin_client):
    template_id = _legacy(app, "Title: {{ title }}\nNo author.", author=None)
    assert "Archive" not in _row(client.get("/templates").get_data(as_text=True), template_id)
    response = _post(client, f"/templates/{template_id}", f"/templates/{template_id}",
                     name="Mine now", body="Title: {{ title }}")
    assert response.status_code == 403
    assert _post(client, f"/templates/{template_id}/archive", "/templates").status_code == 403
    assert _template(app, template_id)["archived_at"] is None
    assert _post(admin_client, f"/templates/{template_id}/archive",
                 "/templates").status_code == 303
