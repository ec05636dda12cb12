"""A user's own account: API tokens."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from ..services import users
from ..services.errors import Invalid

bp = Blueprint("account", __name__, url_prefix="/account")


@bp.before_request
@login_required
def require_login():
    """Every account page needs a signed-in user."""


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
