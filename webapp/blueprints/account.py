"""A user's own account: API tokens, the colour theme."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from .. import theme
from ..services import users
from ..services.errors import Invalid
from .errors import back_url

bp = Blueprint("account", __name__, url_prefix="/account")

# The sign-in page offers the theme switch too: signed out, the choice lives in a cookie.
OPEN_TO_ALL = frozenset({"account.set_theme"})


@bp.before_request
def require_login():
    """Every account page needs a signed-in user, but for the theme switch."""
    if request.endpoint in OPEN_TO_ALL or current_user.is_authenticated:
        return None
    return current_app.login_manager.unauthorized()


@bp.get("/tokens")
def tokens():
    """Your API tokens: name, created, last used; create and revoke."""
    return render_template("tokens.html", tokens=users.tokens_of(current_user), error=None)


@bp.post("/tokens")
def create_token():
    """Create a named token; it is shown once."""
    try:
        token = users.create_token(current_user, request.form.get("name", ""))
    except Invalid as exc:  # the form again, saying why
        return render_template("tokens.html", tokens=users.tokens_of(current_user),
                               error=exc.message), 400
    return render_template("secret_once.html", title=_("New API token"),
                           secrets=[(_("API token"), token)], back=url_for("account.tokens"))


@bp.post("/tokens/<int:token_id>/revoke")
def revoke_token(token_id: int):
    """Revoke one of your tokens; it stops working at once."""
    users.revoke_token(current_user, token_id)
    flash(_("The token is revoked."), "success")
    return redirect(url_for("account.tokens"), code=303)


@bp.post("/theme")
def set_theme():
    """Light, dark or the system's theme: kept on the profile and in a cookie; back to the
    page the switch was on."""
    user = current_user if current_user.is_authenticated else None
    chosen = users.choose_theme(user, request.form.get("theme", ""))
    response = redirect(back_url(), code=303)
    if chosen:
        response.set_cookie(theme.COOKIE, chosen, max_age=theme.COOKIE_MAX_AGE, httponly=True,
                            samesite="Lax")
    else:
        response.delete_cookie(theme.COOKIE, httponly=True, samesite="Lax")
    return response
