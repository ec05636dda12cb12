"""The interface in English, 简体中文 and 繁體中文 (issue 14, items 1–4 and 8).

Every main page is rendered in each language, signed in as an admin, with a batch of
Chinese titles written by the fake provider: the page must say which language it speaks
(`<html lang>`), show the nav in that language, and — for the Chinese pages — carry no
English phrase outside what is the same in every language (names, codes, the product).
"""
from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from flask_babel import force_locale
from flask_babel import gettext as babel_gettext
from sqlalchemy import select

from tests.helpers import (batch_id_from_location, csrf_from, login, poll_url_of, submit_form,
                           wait_batch_final)
from webapp.extensions import db
from webapp.models import Article, ArticleVersion, PromptTemplate, User

LANGS = {"en": "en", "zh-Hans": "zh_Hans", "zh-Hant": "zh_Hant"}

# English that may stand on a Chinese page: product and format names, units, what people
# typed (emails, model names) and the languages' own names in the switcher.
ALLOWED = re.compile(
    r"\b(Pressroom|API|CSV|JSON|Markdown|HTML|URL|UTC|ZIP|OpenAI|HTTP|Redis|Celery|SQLite|"
    r"PostgreSQL|English|Webhook|webhook|token|tokens|Token|Tokens|Jinja|tiktoken|US|"
    r"Bearer|Flower|offline|min|ms|KB|MB|s|h|p50|p95)\b")
# Two English words in a row: a phrase someone forgot to wrap.
PHRASE = re.compile(r"[A-Za-z][a-z]+(?:[ ,'’-]+[A-Za-z][a-z]+)+")


class _Reader(HTMLParser):
    """The text a reader of the page's language reads: not scripts, code, form values, the
    articles themselves (`.prose`: the model's words) or anything marked as another
    language (`lang="en"` on a record kept in English, such as an audit entry's detail)."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
            "source", "track", "wbr"}
    SKIP = {"script", "style", "code", "pre", "textarea", "option"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self._stack: list[tuple[str, bool]] = []  # open elements: (tag, hides its content)

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            return
        attrs = dict(attrs)
        hides = (tag in self.SKIP or "prose" in (attrs.get("class") or "").split()
                 or (tag != "html" and attrs.get("lang") not in (None, self.page_lang)))
        self._stack.append((tag, hides))

    def handle_endtag(self, tag):
        # Up to the element it closes (a <p> or <li> may have been left open).
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                del self._stack[i:]
                break

    def handle_data(self, data):
        if not any(hides for _, hides in self._stack):
            self.text.append(data)


def visible_text(page: str) -> str:
    reader = _Reader()
    found = re.search(r'<html lang="([^"]+)"', page)
    reader.page_lang = found.group(1) if found else "en"
    reader.feed(page)
    text = " ".join(reader.text)
    text = re.sub(r"\S+@\S+", " ", text)             # email addresses
    text = re.sub(r"\b[\w.-]*\d[\w.-]*\b", " ", text)  # model names, ids, versions
    return text


def english_phrases(page: str) -> list[str]:
    text = ALLOWED.sub(" ", visible_text(page))
    return sorted({m.group(0) for m in PHRASE.finditer(text)})


def in_locale(app, locale: str, message: str) -> str:
    with app.test_request_context(), force_locale(locale):
        return babel_gettext(message)


@pytest.fixture
def chinese_batch(app, admin_client):
    """A finished batch of Traditional Chinese titles, with a second version of an article.

    What people typed is Chinese here (templates other tests left behind are renamed), so
    English on a Chinese page can only be the interface's."""
    with app.app_context():
        templates = db.session.scalars(select(PromptTemplate).order_by(PromptTemplate.id))
        for number, template in enumerate(templates, 1):
            template.name = f"範本{number}"
        db.session.commit()
    response = submit_form(admin_client, "臺北的書店", ["臺北十家安靜的書店", "在城市裡散步"],
                           language="繁體中文")
    batch_id = batch_id_from_location(response)
    wait_batch_final(app, batch_id)
    with app.app_context():
        article = db.session.scalars(select(Article).where(Article.batch_id == batch_id)
                                     .order_by(Article.id)).first()
        version = db.session.scalars(select(ArticleVersion)
                                     .where(ArticleVersion.article_id == article.id)).first()
        template = db.session.scalars(select(PromptTemplate)).first()
        user = db.session.scalars(select(User).order_by(User.id)).first()
        return {"batch": batch_id, "article": article.id,
                "version": version.id if version else None,
                "template": template.id if template else None, "user": user.id}


def main_pages(ids) -> list[str]:
    pages = ["/", "/batches/new", f"/batches/{ids['batch']}", f"/articles/{ids['article']}",
             f"/articles/{ids['article']}/edit", "/templates", "/templates/new", "/account/tokens",
             "/admin/users", "/admin/audit", "/admin/system"]
    if ids["version"]:
        pages.append(f"/articles/{ids['article']}/versions/{ids['version']}")
    if ids["template"]:
        pages.append(f"/templates/{ids['template']}")
    return pages


@pytest.mark.parametrize("tag", list(LANGS))
def test_every_main_page_speaks_the_chosen_language(app, admin_client, chinese_batch, tag):
    locale = LANGS[tag]
    assert admin_client.get(f"/?lang={tag}").status_code == 200
    nav = in_locale(app, locale, "Batches")
    assert (nav == "Batches") == (locale == "en")
    failures = []
    for path in main_pages(chinese_batch):
        response = admin_client.get(path)
        page = response.get_data(as_text=True)
        if response.status_code != 200:
            failures.append(f"{path}: HTTP {response.status_code}")
            continue
        if f'<html lang="{tag}">' not in page:
            failures.append(f"{path}: not <html lang=\"{tag}\">")
        if f">{nav}</a>" not in page:
            failures.append(f"{path}: the nav is not in {tag}")
        if locale != "en":
            phrases = english_phrases(page)
            if phrases:
                failures.append(f"{path}: English on a {tag} page: {phrases[:8]}")
    # Pages that answer errors and the sign-in page, too.
    missing = admin_client.get("/batches/999999")
    assert missing.status_code == 404 and f'<html lang="{tag}">' in missing.get_data(as_text=True)
    if locale != "en":
        assert not english_phrases(missing.get_data(as_text=True))
    assert not failures, "\n".join(failures)


def test_the_sign_in_page_follows_the_browser_and_then_the_choice(app, anon_client):
    page = anon_client.get("/login", headers={"Accept-Language": "zh-HK,en;q=0.5"})
    text = page.get_data(as_text=True)
    assert '<html lang="zh-Hant">' in text
    assert in_locale(app, "zh_Hant", "Sign in") in text and not english_phrases(text)
    # The switcher's link keeps the choice in a cookie, which then beats the browser's wish.
    chosen = anon_client.get("/login?lang=zh-Hans", headers={"Accept-Language": "zh-HK"})
    assert "pressroom_lang=zh-Hans" in chosen.headers["Set-Cookie"]
    again = anon_client.get("/login", headers={"Accept-Language": "en"})
    assert '<html lang="zh-Hans">' in again.get_data(as_text=True)
    # No cookie, no wish we speak: English.
    fresh = app.test_client().get("/login", headers={"Accept-Language": "fr-FR, de"})
    assert '<html lang="en">' in fresh.get_data(as_text=True)


def test_the_choice_is_kept_in_the_profile_for_every_device(app, accounts, client):
    assert client.get("/?lang=zh-Hant").status_code == 200
    with app.app_context():
        user = db.session.scalars(select(User).where(User.email == accounts["editor"][0])).one()
        assert user.ui_language == "zh_Hant"
    # Another browser, which asks for English: once signed in, the profile decides.
    other = app.test_client()
    login(other, *accounts["editor"])
    page = other.get("/", headers={"Accept-Language": "en-US"}).get_data(as_text=True)
    assert '<html lang="zh-Hant">' in page
    # A tag we do not speak changes nothing.
    client.get("/?lang=fr")
    with app.app_context():
        assert db.session.get(User, user.id).ui_language == "zh_Hant"


def test_the_api_speaks_english_whatever_the_browser_asks(app, api_headers, client):
    client.get("/?lang=zh-Hans")  # the same person chose Chinese for the pages
    response = client.get("/api/v1/batches/999999",
                          headers={**api_headers, "Accept-Language": "zh-CN"})
    assert response.status_code == 404
    body = response.get_json()
    assert body and not re.search(r"[\u4e00-\u9fff]", str(body))
    bad = client.post("/api/v1/batches", json={"titles": []},
                      headers={**api_headers, "Accept-Language": "zh-TW"})
    assert bad.status_code in (400, 422)
    assert not re.search(r"[\u4e00-\u9fff]", bad.get_data(as_text=True))


def test_a_form_error_is_in_the_page_language(app, client):
    client.get("/batches/new?lang=zh-Hant")
    response = submit_form(client, "空的", [])
    page = response.get_data(as_text=True)
    assert response.status_code == 200 or response.status_code == 400
    assert in_locale(app, "zh_Hant", "Enter at least one title.") in page
    assert "Enter at least one title." not in page


def test_polled_partials_are_rendered_per_language(app, fake, accounts):
    """Shared poll renders must not hand one viewer's language to another."""
    fake.latency = 0.5
    english, chinese = app.test_client(), app.test_client()
    login(english, *accounts["editor"])
    login(chinese, *accounts["admin"])
    english.get("/?lang=en")
    chinese.get("/?lang=zh-Hans")
    batch_id = batch_id_from_location(submit_form(english, "Poll in two languages",
                                                  [f"Title {i}" for i in range(6)]))
    polls = {}
    for who, c in (("en", english), ("zh", chinese)):
        page = c.get(f"/batches/{batch_id}").get_data(as_text=True)
        polls[who] = c.get(poll_url_of(page), headers={"HX-Request": "true"})
    zh_page = polls["zh"].get_data(as_text=True)
    en_page = polls["en"].get_data(as_text=True)
    assert polls["zh"].status_code in (200, 286) and polls["en"].status_code in (200, 286)
    done_zh = in_locale(app, "zh_Hans", "succeeded")
    assert done_zh != "succeeded"
    # Each poll's words are its own reader's: statuses as labels in their language.
    assert re.search(r"[\u4e00-\u9fff]", zh_page)
    assert not re.search(r"[\u4e00-\u9fff]", en_page.replace("简体中文", "").replace(
        "繁體中文", ""))
    wait_batch_final(app, batch_id)


def test_numbers_money_and_dates_follow_the_locale(app):
    from datetime import datetime

    from webapp import i18n
    moment = datetime(2026, 12, 6, 21, 5)
    with app.test_request_context(), force_locale("en"):
        assert i18n.when(moment) == "12/6/26, 9:05\u202fPM"
        assert i18n.money(0.0123) == "$0.0123" and i18n.money(1234.5) == "$1,234.50"
        assert i18n.duration(125) == "2 min 05 s"
    with app.test_request_context(), force_locale("zh_Hans"):
        assert i18n.when(moment) == "2026/12/6 21:05" and "年" in i18n.day(moment)
        assert i18n.money(1234.5) == "US$1,234.50"
        assert i18n.duration(125) != "2 min 05 s"
    with app.test_request_context(), force_locale("zh_Hant"):
        assert "2026/12/6" in i18n.when(moment)
        assert i18n.number(1234567) == "1,234,567"


def test_csrf_page_after_language_change_keeps_the_form(app, client):
    """Switching language is a GET link: it must not lose the CSRF token of the page."""
    page = client.get("/batches/new?lang=zh-Hans").get_data(as_text=True)
    assert csrf_from(page)
