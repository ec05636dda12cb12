"""How pages answer the services' errors, in one place (the JSON API answers them in api.py).

A form that shows its own field errors catches Invalid itself, to render the form again;
everything else reaches these handlers.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request
from flask_babel import gettext as _

from ..extensions import db
from ..services.errors import Conflict, Invalid, NotAllowed, NotFound
from .auth import safe_next

bp = Blueprint("errors", __name__)


def _page(code: int, message: str):
    db.session.rollback()
    return render_template("error.html", code=code, message=message), code


@bp.app_errorhandler(NotAllowed)
def not_allowed(exc: NotAllowed):
    return _page(403, exc.message or _("You do not have permission to do that."))


@bp.app_errorhandler(NotFound)
def not_found(exc: NotFound):
    return _page(404, exc.message or _("There is nothing here."))


@bp.app_errorhandler(Conflict)
@bp.app_errorhandler(Invalid)
def refused(exc: Conflict | Invalid):
    """Said on the page the request came from."""
    db.session.rollback()
    flash(exc.message, "error")
    if request.headers.get("HX-Request") == "true":
        # A swapped widget has no room for a flash: the page reloads, and shows it.
        return "", 204, {"HX-Refresh": "true"}
    return redirect(back_url(), code=303)


def back_url() -> str:
    """The page the request came from, if it is one of ours; else the dashboard."""
    referrer = urlsplit(request.referrer or "")
    if referrer.netloc and (referrer.netloc != request.host
                            or referrer.scheme not in ("http", "https")):
        return safe_next(None)
    path = referrer.path + (f"?{referrer.query}" if referrer.query else "")
    return safe_next(path)
