"""Prompt templates (/templates/...): list, create, copy, edit, archive, preview."""
from __future__ import annotations

from flask import (Blueprint, flash, redirect, render_template,
                   request, url_for)
from flask_babel import gettext as _, lazy_gettext as _l
from flask_login import current_user, login_required

from ..models import Role
from ..services import templates as template_service
from ..services.errors import Invalid
from .access import limited_per_user, roles_required

bp = Blueprint("templates", __name__)


@bp.before_request
@login_required
def require_login():
    """Every template page needs a signed-in user."""


@bp.get("/templates")
def template_list():
    """Prompt templates, the shipped default first."""
    return render_template("templates_list.html", **template_service.list_view(current_user))


def _form(tpl=None, name: str = "", body: str = "", errors: dict | None = None):
    return render_template("template_form.html", errors=errors or {},
                           **template_service.form_view(current_user, tpl, name, body)), \
        (400 if errors else 200)


def _saved(name: str):
    flash(_("Template “%(name)s” saved.", name=name.strip()), "success")
    return redirect(url_for("templates.template_list"), code=303)


@bp.route("/templates/new", methods=["GET", "POST"])
@roles_required(Role.ADMIN, Role.EDITOR)
def template_new():
    """Create a prompt template (?copy=<id> starts from a copy of another one)."""
    if request.method == "GET":
        copy_id = request.args.get("copy", type=int)
        return _form(None, *template_service.copy_of(copy_id)) if copy_id is not None else _form()
    name, body = request.form.get("name", ""), request.form.get("body", "")
    try:
        template_service.save(current_user, name, body)
    except Invalid as exc:  # the form again, with what was typed and the fields at fault
        return _form(None, name, body, exc.fields)
    return _saved(name)


@bp.route("/templates/<int:template_id>", methods=["GET", "POST"])
@roles_required(Role.ADMIN, Role.EDITOR)
def template_edit(template_id: int):
    """Edit a prompt template (its author or an admin; others see it read-only and may copy
    it); batches already submitted keep the text they used."""
    tpl = template_service.get(template_id)
    if request.method == "GET":
        return _form(tpl)
    name, body = request.form.get("name", ""), request.form.get("body", "")
    try:
        template_service.save(current_user, name, body, template_id)
    except Invalid as exc:  # the form again, with what was typed and the fields at fault
        return _form(tpl, name, body, exc.fields)
    return _saved(name)


@bp.post("/templates/<int:template_id>/archive")
@roles_required(Role.ADMIN, Role.EDITOR)
def template_archive(template_id: int):
    """Archive (or restore) a template: it leaves (or rejoins) the new-batch list."""
    restore = request.form.get("restore") == "1"
    tpl = template_service.archive(current_user, template_id, archived=not restore)
    flash(_("Template “%(name)s” restored.", name=tpl.name) if restore
          else _("Template “%(name)s” archived.", name=tpl.name), "success")
    return redirect(url_for("templates.template_list"), code=303)


TOO_MANY_PREVIEWS = _l("Too many previews in a short time; the preview resumes in a minute. "
                       "Your text is not lost.")


@bp.post("/templates/preview")
@roles_required(Role.ADMIN, Role.EDITOR)
@limited_per_user("template-preview", "_partials/_template_preview.html", TOO_MANY_PREVIEWS,
                  rendered=None)
def template_preview():
    """The prompt a template makes for a sample row."""
    row = {name: request.form.get(f"sample_{name}", "") for name in template_service.VARIABLES}
    try:
        rendered, error = template_service.preview(request.form.get("body", ""), row), None
    except Invalid as exc:  # the partial says why the template does not render
        rendered, error = None, exc.message
    return render_template("_partials/_template_preview.html", rendered=rendered, error=error)
