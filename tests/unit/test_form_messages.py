"""WTForms' own messages go through our catalog (webapp/forms.py `Form`): English by
default, the page's language when the catalog has it, and WTForms still fills in its
numbers."""
from __future__ import annotations

import io

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.support import Translations
from flask_babel import Domain, get_locale

from webapp.forms import WTFORMS_MESSAGES, LoginForm

from .test_catalogs import extracted

TOO_LONG = ("Field cannot be longer than %(max)d character.",
            "Field cannot be longer than %(max)d characters.")


def _login(app, query: str = ""):
    data = {"email": "x" * 300, "password": ""}
    with app.test_request_context(f"/login{query}", method="POST", data=data):
        form = LoginForm(meta={"csrf": False})
        form.validate()
        return form.errors


def test_in_english_the_messages_are_wtforms_own(db_app):
    assert _login(db_app) == {"email": ["Field cannot be longer than 255 characters."],
                              "password": ["This field is required."]}


def test_a_chinese_page_gets_them_from_our_catalog(db_app, monkeypatch):
    catalog = Catalog(locale="zh_Hant")
    catalog.add("This field is required.", "此欄位為必填。")
    catalog.add(TOO_LONG, ("不可超過 %(max)d 個字元。",))
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    chinese, real = Translations(buffer), Domain.get_translations
    monkeypatch.setattr(Domain, "get_translations",
                        lambda self: chinese if str(get_locale()) == "zh_Hant" else real(self))
    assert _login(db_app, "?lang=zh-Hant") == {"email": ["不可超過 255 個字元。"],
                                               "password": ["此欄位為必填。"]}


def test_the_messages_are_extracted_for_our_catalog():
    msgids = set(extracted())
    assert {"This field is required.", TOO_LONG[0], "Not a valid choice."} <= msgids
    assert len(WTFORMS_MESSAGES) >= 3
