"""Admin pages: users and the audit log."""
from __future__ import annotations

from datetime import datetime

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from ..models import Role
from ..services import audit, system, users
from .access import int_arg, roles_required

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
@login_required
@roles_required(Role.ADMIN)
def require_admin():
    """Only admins get past this point."""


@bp.get("/users")
def user_list():
    """Every account, with forms to create, change role, disable and reset."""
    return render_template("admin_users.html", users=users.all_users(), roles=Role.ALL,
                           form_email="", form_role=Role.EDITOR, error=None)


@bp.post("/users")
def create_user():
    """Create an account; its password and token are shown once."""
    email, role = request.form.get("email", ""), request.form.get("role", Role.EDITOR)
    try:
        user, password, token = users.create_user(email, role)
    except users.UserError as exc:
        return render_template("admin_users.html", users=users.all_users(), roles=Role.ALL,
                               form_email=email, form_role=role, error=str(exc)), 400
    return render_template("secret_once.html", title=f"Account created: {user.email}",
                           secrets=[("Password", password), ("API token", token)],
                           back=url_for("admin.user_list"))


def _act(fn, *args):
    try:
        return fn(current_user, *args)
    except LookupError:
        abort(404)
    except users.UserError as exc:
        flash(str(exc), "error")
        return None


def _change(fn, user_id: int, *args, said: str):
    """Run a user change, say what it did (`said` names the user's new state), go back."""
    user = _act(fn, user_id, *args)
    if user:
        flash(said.format(email=user.email, role=user.role), "success")
    return redirect(url_for("admin.user_list"), code=303)


@bp.post("/users/<int:user_id>/role")
def change_role(user_id: int):
    """Give a user another role."""
    return _change(users.set_role, user_id, request.form.get("role", ""),
                   said="{email} is now {role}.")


@bp.post("/users/<int:user_id>/disable")
def disable(user_id: int):
    """Disable an account: its sessions and tokens stop working at once."""
    return _change(users.set_disabled, user_id, True, said="{email} is disabled.")


@bp.post("/users/<int:user_id>/enable")
def enable(user_id: int):
    """Enable a disabled account again."""
    return _change(users.set_disabled, user_id, False, said="{email} is enabled.")


@bp.post("/users/<int:user_id>/password")
def reset_password(user_id: int):
    """Set a new random password (shown once); the user's sessions end, tokens are revoked."""
    result = _act(users.reset_password, user_id)
    if not result:
        return redirect(url_for("admin.user_list"), code=303)
    user, password = result
    return render_template("secret_once.html", title=f"New password for {user.email}",
                           secrets=[("Password", password)], back=url_for("admin.user_list"))


@bp.post("/users/<int:user_id>/tokens/revoke")
def revoke_tokens(user_id: int):
    """Revoke every API token of a user: scripts using them get 401 at once."""
    user, count = _act(users.revoke_all_tokens, user_id)
    flash(f"{count} API token{'' if count == 1 else 's'} of {user.email} revoked.", "success")
    return redirect(url_for("admin.user_list"), code=303)


def _date(name: str) -> datetime | None:
    try:
        return datetime.strptime(request.args.get(name, ""), "%Y-%m-%d")
    except ValueError:
        return None


@bp.get("/audit")
def audit_log():
    """The audit log, filtered by action, person and dates (filters live in the URL)."""
    flt = audit.AuditFilter(action=request.args.get("action", "") if request.args.get("action") in audit.ACTIONS else "",
                            actor=request.args.get("actor", "")[:255],
                            since=_date("since"), until=_date("until"))
    page = int_arg("page", 1, high=1_000_000)  # × 50 per page must fit an OFFSET
    events, total = audit.search(flt, page)
    return render_template("admin_audit.html", events=events, total=total, page=page,
                           flt=flt, actions=audit.ACTIONS, per_page=50)


@bp.get("/system")
def system_page():
    """Workers, queues, health and recent failures, kept live."""
    return render_template("admin_system.html", view=system.system_view())


@bp.get("/system/panel")
def system_panel():
    """The system page's live panel (polled)."""
    return render_template("_partials/_system_panel.html", view=system.system_view())
