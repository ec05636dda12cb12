"""Model output is untrusted Markdown: what reaches the page is sanitised."""
from __future__ import annotations

import pytest
from sqlalchemy import update

from tests.helpers import (articles_state, batch_id_from_location, prose_of, submit_form,
                           wait_batch_final)
from webapp.extensions import db
from webapp.models import Article
from webapp.rendering import render_markdown

HOSTILE = """# Title

<script>alert(1)</script>

[x](javascript:alert(1)) and [y](JaVaScRiPt:alert(2)) and [ok](https://example.com/)

<img src="x" onerror="alert(3)"> <a href="https://example.com" onclick="alert(4)">z</a>

<iframe src="https://evil.example"></iframe><style>body{display:none}</style>
"""


def _assert_safe(html: str) -> None:
    lowered = html.lower()
    for bad in ("<script", "alert(1)", "javascript:", "onerror", "onclick", "<iframe", "<style",
                "<img"):
        assert bad not in lowered, f"{bad!r} survived sanitising: {html}"


def test_render_markdown_strips_scripts_and_js_links():
    html = str(render_markdown(HOSTILE))
    _assert_safe(html)
    # Ordinary Markdown still works, and safe links keep their target.
    assert "<h1>Title</h1>" in html
    assert 'href="https://example.com/"' in html
    assert 'rel="noopener noreferrer nofollow"' in html


@pytest.mark.parametrize("text", ["", None])
def test_render_markdown_of_nothing(text):
    assert str(render_markdown(text)) == ""


def test_article_page_of_a_stored_hostile_body(app, client, fake):
    batch_id = batch_id_from_location(submit_form(client, "Hostile", ["Innocent title"]))
    wait_batch_final(app, batch_id)
    (article,) = articles_state(app, batch_id)
    # As if the model had written it.
    with app.app_context():
        db.session.execute(update(Article).where(Article.id == article["id"])
                           .values(body="<script>alert(1)</script>\n\n[x](javascript:alert(1))\n\n"
                                        "Plain **bold** text."))
        db.session.commit()
    page = client.get(f"/articles/{article['id']}").get_data(as_text=True)
    assert "<script>alert(1)" not in page
    assert "javascript:" not in page
    assert "<strong>bold</strong>" in prose_of(page)
    # The Content-Security-Policy is a second line of defence.
    csp = client.get(f"/articles/{article['id']}").headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp


def test_hostile_output_from_the_provider_is_sanitised(app, client, fake):
    # FakeAI starts each article with "# <title>", so a hostile title makes hostile output.
    titles = ["<script>alert(1)</script> Breaking", "Click [here](javascript:alert(1))"]
    batch_id = batch_id_from_location(submit_form(client, "Hostile model", titles))
    assert wait_batch_final(app, batch_id)["status"] == "succeeded"
    for article in articles_state(app, batch_id):
        # The provider really did write the hostile Markdown...
        assert article["body"].startswith(f"# {article['title']}")
        page = client.get(f"/articles/{article['id']}").get_data(as_text=True)
        # ...and none of it is live on the page (the title is shown as escaped text).
        _assert_safe(prose_of(page))
        assert "<script>alert(1)" not in page
        assert 'href="javascript:' not in page.lower()
