"""Admin pages: users, the audit log, the system page and the publishing destinations."""
from __future__ import annotations

from datetime import datetime

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _, ngettext
from flask_login import current_user, login_required

from ..labels import label
from ..models import Provenance, Role
from ..services import activity, audit, destinations, system, users
from ..services.errors import Invalid
from .access import int_arg, roles_required

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
@login_required
@roles_required(Role.ADMIN)
def require_admin():
    """Only admins get past this point."""


def _users_page(email: str = "", role: str = Role.EDITOR, error: str | None = None):
    return render_template("admin_users.html", users=users.all_users(), roles=Role.ALL,
                           form_email=email, form_role=role, error=error), (400 if error else 200)


def _back(message: str):
    flash(message, "success")
    return redirect(url_for("admin.user_list"), code=303)


@bp.get("/users")
def user_list():
    """Every account, with forms to create, change role, disable and reset."""
    return _users_page()


@bp.post("/users")
def create_user():
    """Create an account; its password and token are shown once."""
    email, role = request.form.get("email", ""), request.form.get("role", Role.EDITOR)
    try:
        user, password, token = users.create_user(email, role)
    except Invalid as exc:  # the form again, with what was typed
        return _users_page(email, role, exc.message)
    return render_template("secret_once.html",
                           title=_("Account created: %(email)s", email=user.email),
                           secrets=[(_("Password"), password), (_("API token"), token)],
                           back=url_for("admin.user_list"))


@bp.post("/users/<int:user_id>/role")
def change_role(user_id: int):
    """Give a user another role."""
    user = users.set_role(current_user, user_id, request.form.get("role", ""))
    return _back(_("%(email)s is now %(role)s.", email=user.email,
                   role=label("role", user.role)))


@bp.post("/users/<int:user_id>/disable")
def disable(user_id: int):
    """Disable an account: its sessions and tokens stop working at once."""
    user = users.set_disabled(current_user, user_id, True)
    return _back(_("%(email)s is disabled.", email=user.email))


@bp.post("/users/<int:user_id>/enable")
def enable(user_id: int):
    """Enable a disabled account again."""
    user = users.set_disabled(current_user, user_id, False)
    return _back(_("%(email)s is enabled.", email=user.email))


@bp.post("/users/<int:user_id>/password")
def reset_password(user_id: int):
    """Set a new random password (shown once); the user's sessions end, tokens are revoked."""
    user, password = users.reset_password(current_user, user_id)
    return render_template("secret_once.html",
                           title=_("New password for %(email)s", email=user.email),
                           secrets=[(_("Password"), password)], back=url_for("admin.user_list"))


@bp.post("/users/<int:user_id>/tokens/revoke")
def revoke_tokens(user_id: int):
    """Revoke every API token of a user: scripts using them get 401 at once."""
    user, count = users.revoke_all_tokens(current_user, user_id)
    return _back(ngettext("%(num)d API token of %(email)s revoked.",
                          "%(num)d API tokens of %(email)s revoked.", count, email=user.email))


def _date(name: str) -> datetime | None:
    try:
        return datetime.strptime(request.args.get(name, ""), "%Y-%m-%d")
    except ValueError:
        return None


@bp.get("/audit")
def audit_log():
    """The audit log, filtered by action, person and dates (filters live in the URL)."""
    flt = audit.AuditFilter(action=(request.args.get("action", "")
                                    if request.args.get("action") in audit.ACTIONS else ""),
                            actor=request.args.get("actor", "")[:255],
                            since=_date("since"), until=_date("until"))
    page = int_arg("page", 1, high=1_000_000)  # × 50 per page must fit an OFFSET
    events, total = audit.search(flt, page)
    return render_template("admin_audit.html", events=events, total=total, page=page,
                           flt=flt, actions=audit.ACTIONS, per_page=50)


@bp.get("/system")
def system_page():
    """Workers, queues, health and recent failures, kept live, and charts of the last hour
    and day."""
    return render_template("admin_system.html", view=system.system_view(),
                           windows=activity.system_activity())


@bp.get("/system/panel")
def system_panel():
    """The system page's live panel (polled)."""
    return render_template("_partials/_system_panel.html", view=system.system_view())


@bp.get("/system/charts")
def system_charts():
    """The system page's charts: throughput, provider latency and failures per model
    (polled, slower than the panel: their buckets are minutes long)."""
    return render_template("_partials/_system_charts.html",
                           windows=activity.system_activity())


# -- destinations: WordPress sites to publish to -------------------------------------------

def _destinations_page(form: dict | None = None, errors: dict | None = None):
    return render_template("admin_destinations.html",
                           destinations=destinations.all_destinations(),
                           provenances=Provenance.ALL, form=form or {}, errors=errors or {}), \
        (400 if errors else 200)


@bp.get("/destinations")
def destination_list():
    """Every destination (never its password), with forms to add, change, test and remove."""
    return _destinations_page()


@bp.post("/destinations")
def add_destination():
    """Add a WordPress site; its application password is encrypted and never shown again."""
    form = {k: request.form.get(k, "") for k in ("name", "url", "username", "provenance")}
    form["allow_new_terms"] = request.form.get("allow_new_terms") == "1"
    try:
        destination = destinations.add(current_user, password=request.form.get("password", ""),
                                       **{**form, "provenance": form["provenance"]
                                          or Provenance.NONE})
    except Invalid as exc:  # the form again, with what was typed (never the password)
        return _destinations_page(form, exc.fields)
    flash(_("%(name)s was added. Use Test connection to check its password.",
            name=destination.name), "success")
    return redirect(url_for("admin.destination_list"), code=303)


@bp.post("/destinations/<int:destination_id>")
def change_destination(destination_id: int):
    """A new application password (tested at once) and the destination's options."""
    destination, check = destinations.update(
        current_user, destination_id, password=request.form.get("password", ""),
        allow_new_terms=request.form.get("allow_new_terms") == "1",
        provenance=request.form.get("provenance") or None)
    if check is not None:
        flash(check.message, "success" if check.ok else "error")
    else:
        flash(_("%(name)s was saved.", name=destination.name), "success")
    return redirect(url_for("admin.destination_list"), code=303)


@bp.post("/destinations/<int:destination_id>/test")
def test_destination(destination_id: int):
    """Ask the site who the user is, and say what is wrong in words."""
    check = destinations.test_connection(current_user, destination_id)
    flash(check.message, "success" if check.ok else "error")
    return redirect(url_for("admin.destination_list"), code=303)


@bp.post("/destinations/<int:destination_id>/remove")
def remove_destination(destination_id: int):
    """Forget a destination and its publications (the posts stay on the site)."""
    name = destinations.remove(current_user, destination_id)
    flash(_("%(name)s was removed.", name=name), "success")
    return redirect(url_for("admin.destination_list"), code=303)
