"""Which language a page speaks: English, 简体中文 or 繁體中文.

The choice, strongest first: a `lang` query parameter (what the header's switcher links to;
it is remembered), the signed-in user's profile, the browser's cookie (so the sign-in page
keeps it too), the browser's Accept-Language, English. The JSON API always speaks English:
scripts parse its messages and logs should read the same for everyone.

Locales are Babel's identifiers (`zh_Hans`); pages and cookies use the BCP 47 tags
(`zh-Hans`) that `<html lang>` and people expect.
"""
from __future__ import annotations

import os
from typing import Optional

from flask import g, request

DEFAULT = "en"
# Babel identifier → (BCP 47 tag, the language's name in itself, for the switcher).
LANGUAGES = {
    "en": ("en", "English"),
    "zh_Hans": ("zh-Hans", "简体中文"),
    "zh_Hant": ("zh-Hant", "繁體中文"),
}
COOKIE = "pressroom_lang"
COOKIE_MAX_AGE = 365 * 24 * 3600
TRANSLATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "translations")

# Regions that write Traditional characters; every other Chinese is Simplified.
_TRADITIONAL_REGIONS = {"tw", "hk", "mo"}


def from_tag(tag: Optional[str]) -> Optional[str]:
    """The locale a language tag asks for, or None when it is none of ours.

    `zh-CN`, `zh-SG`, `zh-Hans(-…)` and a bare `zh` → zh_Hans; `zh-TW`, `zh-HK`, `zh-MO`,
    `zh-Hant(-…)` → zh_Hant; `en(-…)` → en. Case and `_` for `-` are forgiven.
    """
    if not tag:
        return None
    parts = tag.strip().replace("_", "-").lower().split("-")
    if parts[0] == "en":
        return "en"
    if parts[0] != "zh":
        return None
    rest = parts[1:]
    if "hant" in rest:
        return "zh_Hant"
    if "hans" in rest:
        return "zh_Hans"
    if any(p in _TRADITIONAL_REGIONS for p in rest):
        return "zh_Hant"
    return "zh_Hans"


def from_accept_language(header: str) -> Optional[str]:
    """The best of our locales for an Accept-Language header (by its q-values), or None."""
    ranked = []
    for position, item in enumerate(header.split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranked.append((-quality, position, tag))
    for _, _, tag in sorted(ranked):
        locale = from_tag(tag)
        if locale:
            return locale
    return None


def tag_of(locale) -> str:
    """`<html lang>` for a locale: en, zh-Hans or zh-Hant."""
    return LANGUAGES.get(str(locale), LANGUAGES[DEFAULT])[0]


def language_url(tag: str) -> str:
    """This page again in another language: its own query (filters, page) kept."""
    from urllib.parse import urlencode
    args = [(k, v) for k, v in request.args.items(multi=True) if k != "lang"]
    return request.path + "?" + urlencode(args + [("lang", tag)])


def select_locale() -> str:
    """Flask-Babel's locale selector (see the module's docstring for the order)."""
    if not request:
        return DEFAULT  # the CLI, workers, beat: English
    if request.path.startswith("/api/"):
        return DEFAULT
    asked = from_tag(request.args.get("lang"))
    if asked:
        g.language_chosen = asked  # remembered by remember_choice, after the view
        return asked
    from flask_login import current_user
    profile = getattr(current_user, "ui_language", None) if current_user else None
    if profile in LANGUAGES:
        return profile
    cookie = from_tag(request.cookies.get(COOKIE))
    if cookie:
        return cookie
    return from_accept_language(request.headers.get("Accept-Language", "")) or DEFAULT


# Jinja filters: numbers, money, dates and durations in the page's locale. Polled partials
# use them too, so a figure reads the same on first render and after every swap.

def number(value, digits: Optional[int] = None) -> str:
    from flask_babel import format_decimal
    if value is None:
        return "—"
    if digits is None:
        return format_decimal(value)
    return format_decimal(value, format="#,##0." + "0" * digits if digits else "#,##0")


def money(value) -> str:
    """US dollars; small amounts to four places (a single article costs fractions of a cent)."""
    from flask_babel import format_currency
    value = value or 0
    if value < 1:
        return format_currency(value, "USD", "¤#,##0.0000", currency_digits=False)
    return format_currency(value, "USD")


def when(moment, width: str = "short") -> str:
    """A UTC timestamp, as the locale writes it (`short`: minutes, `medium`: seconds)."""
    from flask_babel import format_datetime
    if moment is None:
        return "—"
    return format_datetime(moment, width)


def day(moment) -> str:
    from flask_babel import format_date
    if moment is None:
        return "—"
    return format_date(moment, "medium")


def duration(seconds) -> str:
    """Elapsed time to the second, in the locale's words for the units."""
    from flask_babel import gettext as _
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return _("%(s)d s", s=seconds)
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return _("%(m)d min %(s)02d s", m=minutes, s=seconds)
    hours, minutes = divmod(minutes, 60)
    return _("%(h)d h %(m)02d min", h=hours, m=minutes)
