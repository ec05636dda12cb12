"""Bulk actions (/bulk/...): the confirmation of an action on many rows of the dashboard or
the review queue, running it (or downloading an export), and the progress of one that runs
on a worker. The selection, resolved and signed, is services/bulk.py's; acting on it, with
the counts and the permissions, is services/bulk_actions.py's."""
from __future__ import annotations

from flask import (Blueprint, Response, flash, redirect, render_template, request,
                   stream_with_context, url_for)
from flask_login import current_user, login_required

from ..models import BulkActionState, Role
from ..services import bulk, bulk_actions
from ..services.errors import Invalid
from .access import roles_required
from .htmx import STOP_POLLING, is_htmx

bp = Blueprint("bulk", __name__)


@bp.before_request
@login_required
def require_login():
    """Bulk actions are for signed-in people; the services check each item."""


def _back(scope: str, args: dict | None = None) -> str:
    """The page the rows were picked on, with its filter."""
    if scope == bulk.ARTICLES:
        return url_for("review.queue", **(args or {}))
    return url_for("batches.dashboard", **(args or {}))


def _form_back() -> str:
    """The page a bulk form came from, from the form itself (its filter, normalised)."""
    scope = request.form.get("scope", "")
    scope = scope if scope in bulk.ACTIONS else bulk.BATCHES
    return _back(scope, bulk.page_filter(scope, request.form.get("filter", "")))


def _confirmation(plan, errors: dict, back: str):
    """The confirmation (or why there is none): the panel for htmx, else its page."""
    if is_htmx():
        # 200 even for bad input: htmx swaps only 2xx answers, and the panel says why.
        return render_template("_partials/_bulk_confirm.html", plan=plan, errors=errors,
                               back=back)
    return render_template("bulk_confirm.html", plan=plan, errors=errors, back=back), (
        400 if errors else 200)


@bp.post("/bulk/preview")
@roles_required(Role.ADMIN, Role.EDITOR)
def bulk_preview():
    """What a bulk action would do: the exact count and what will happen; nothing runs."""
    try:
        plan = bulk.plan(current_user, bulk.parse(request.form))
    except Invalid as exc:  # said in the panel, naming each field; nothing is stored
        return _confirmation(None, exc.fields, _form_back())
    return _confirmation(plan, {}, _back(plan.scope, plan.page_args))


@bp.post("/bulk/run")
@roles_required(Role.ADMIN, Role.EDITOR)
def bulk_run():
    """Do a confirmed bulk action: at once when it is small, else on a worker (its
    progress is shown); a confirmed export is downloaded."""
    try:
        plan = bulk.confirmed(current_user, request.form.get("confirm", ""))
    except Invalid as exc:
        return _confirmation(None, exc.fields, url_for("batches.dashboard"))
    back = _back(plan.scope, plan.page_args)
    if plan.action == bulk.EXPORT:
        download = bulk_actions.export(current_user, plan)
        return Response(stream_with_context(download.body), mimetype=download.mimetype,
                        headers={"Content-Disposition": download.content_disposition})
    action = bulk_actions.start(current_user, plan)
    report = bulk_actions.report(current_user, action.id)
    if plan.background:  # on a worker (however far it got by now): its progress bar
        if is_htmx():
            return render_template("_partials/_bulk_progress.html", report=report, back=back)
        return redirect(url_for("bulk.bulk_show", bulk_id=action.id), code=303)
    flash(report.summary,
          "error" if action.state == BulkActionState.FAILED else "success")
    for line in report.skip_lines:
        flash(line, "info")
    if is_htmx():  # the page again, showing what changed and what was said
        return "", 204, {"HX-Refresh": "true"}
    return redirect(back, code=303)


@bp.get("/bulk/<int:bulk_id>")
def bulk_show(bulk_id: int):
    """A bulk action: its progress while it runs, then what was done and skipped."""
    report = bulk_actions.report(current_user, bulk_id)
    return render_template("bulk_action.html", report=report, back=_back(report.bulk.scope))


@bp.get("/bulk/<int:bulk_id>/progress")
def bulk_progress(bulk_id: int):
    """The polled progress of a bulk action; HTTP 286 once it is over, so polling stops."""
    report = bulk_actions.report(current_user, bulk_id)
    html = render_template("_partials/_bulk_progress.html", report=report,
                           back=_back(report.bulk.scope))
    return html, (STOP_POLLING if report.bulk.is_over else 200)
