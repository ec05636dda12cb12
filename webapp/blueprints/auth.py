"""Sign-in and sign-out."""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import (Blueprint, current_app, flash, redirect, render_template, request, session,
                   url_for)
from flask_babel import gettext as _
from flask_limiter.util import get_remote_address
from flask_login import current_user, login_required, login_user, logout_user

from ..extensions import limiter
from ..forms import LoginForm
from ..services import users
from ..services.errors import Invalid

bp = Blueprint("auth", __name__)

FAILED = 401


def safe_next(target: str | None) -> str:
    """Only a local path is a redirect target; anything else goes home."""
    fallback = url_for("batches.dashboard")
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return fallback
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(ord(c) < 32 or c.isspace() for c in target):
        return fallback
    return target


def _account_address_key() -> str:
    # The account *and* the address: a stranger's wrong guesses shut that stranger's address
    # out of the account, never its owner signing in from elsewhere. get_remote_address is
    # the client's address as ProxyFix fixed it (PROXY_FIX_HOPS), not the proxy's.
    email = (request.form.get("email") or "").strip().lower()[:255]
    return f"login-account-address:{email}|{get_remote_address()}"


def _failed(response) -> bool:
    return response.status_code == FAILED


def _too_many() -> str:
    return _("Too many failed sign-ins. Wait a few minutes before trying again.")


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LOGIN_LIMIT_IP"], methods=["POST"],
               deduct_when=_failed, error_message=_too_many)
@limiter.limit(lambda: current_app.config["LOGIN_LIMIT_ACCOUNT"], methods=["POST"],
               key_func=_account_address_key, deduct_when=_failed, error_message=_too_many)
def login():
    """Show the sign-in form and sign a user in."""
    if current_user.is_authenticated:
        return redirect(url_for("batches.dashboard"))
    form = LoginForm()
    if request.method == "GET":
        return render_template("login.html", form=form, error=None)
    if not form.validate_on_submit():
        return render_template("login.html", form=form,
                               error=_("Enter your email and password.")), FAILED
    try:
        user = users.sign_in(form.email.data, form.password.data)
    except Invalid as exc:  # the form again, with the one message for every failure
        return render_template("login.html", form=form, error=exc.message), FAILED
    session.clear()  # a fresh session at sign-in: no fixation
    users.start_session(user, request.user_agent.string, request.remote_addr)
    login_user(user, remember=form.remember.data)
    return redirect(safe_next(request.args.get("next")), code=303)


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    """Sign out: the session ends on the server too, so a copy of its cookies is worthless."""
    users.end_session(current_user)
    logout_user()
    session.clear()
    flash(_("You are signed out."), "info")
    return redirect(url_for("auth.login"), code=303)
