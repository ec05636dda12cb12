"""Which colour theme a page is drawn in: light, dark, or the system's.

The choice, strongest first: the signed-in user's profile, the browser's cookie (so the
sign-in page keeps it too), none. With a choice, `<html data-theme="…">` names it and the CSS
uses it; without one, the CSS follows the browser's `prefers-color-scheme`.
"""
from __future__ import annotations

from typing import Optional

from flask import request

from . import i18n
from .services.users import THEMES

COOKIE = "pressroom_theme"
COOKIE_MAX_AGE = i18n.COOKIE_MAX_AGE  # kept as long as the language choice


def page_theme() -> Optional[str]:
    """`<html data-theme>` for this request: "light", "dark", or None (follow the system)."""
    from flask_login import current_user
    profile = getattr(current_user, "theme", None) if current_user else None
    if profile in THEMES:
        return profile
    cookie = request.cookies.get(COOKIE) if request else None
    return cookie if cookie in THEMES else None


def switch_state() -> str:
    """Which button of the header's switch is pressed: light, dark or system."""
    return page_theme() or "system"
