"""Batches (/ and /batches/...): the dashboard, the new-batch form, a batch's page and its
live progress, and what can be done to a batch."""
from __future__ import annotations

import re
from datetime import datetime, timezone

from flask import (Blueprint, Response, current_app, flash, redirect,
                   render_template, request, stream_with_context, url_for)
from flask_babel import gettext as _, lazy_gettext as _l
from flask_login import current_user, login_required
from flask_wtf.csrf import generate_csrf
from markupsafe import Markup
from wtforms.fields.choices import SelectChoice

from ..extensions import db
from ..forms import NewBatchForm
from ..models import Batch, Role
from ..services import (activity, control, exports, pollcache, polls, progress, publishing,
                        review, submission, templates, users)
from ..services.errors import Invalid
from ..services.outcomes import Outcome
from .access import int_arg, limited_per_user, roles_required
from .htmx import STOP_POLLING, is_htmx
from .publish_form import flash_requested, publish_form, to_publications

bp = Blueprint("batches", __name__)

# Far past any real page of batches; PAGE × BATCHES_PER_PAGE must fit an OFFSET.
MAX_PAGE = 1_000_000
# The charts change slowly: polled every 5 progress ticks (as the hx-trigger of
# _batch_charts.html says).
CHART_POLL_TICKS = 5


@bp.before_request
@login_required
def require_login():
    """Every page and partial needs a signed-in user."""


def _since() -> datetime | None:
    try:
        since = datetime.fromisoformat(request.args.get("since", ""))
        if since.tzinfo is not None:  # stored times are naive UTC
            since = since.astimezone(timezone.utc).replace(tzinfo=None)
    except (ValueError, OverflowError):
        return None
    # Year 1 means "everything" too, but leaves no room to subtract the poll's overlap.
    return max(since, datetime(2000, 1, 1))


def _dashboard() -> progress.Dashboard:
    return progress.dashboard(request.args, int_arg("page", 1, MAX_PAGE),
                              current_app.config["BATCHES_PER_PAGE"])


@bp.route("/")
def dashboard():
    """Batches, newest first, each with a live bar."""
    may_write = users.permissions(current_user).can_write
    # The bulk bar offers publishing when there is somewhere to publish to.
    return render_template("dashboard.html", table=_dashboard(),
                           destinations=publishing.destination_choices() if may_write else [],
                           remote_statuses=publishing.STATUSES)


@bp.route("/batches/rows")
def batch_table():
    """The dashboard's table of batches, polled while any of them is unfinished."""
    table = _dashboard()
    html = render_template("_partials/_batch_table.html", table=table)
    return html, (200 if table.live else STOP_POLLING)


def _new_batch_form() -> NewBatchForm:
    form = NewBatchForm()
    form.template_id.choices = [SelectChoice("", _("Default template"))] + [
        SelectChoice(str(t.id), t.name) for t in templates.active()]
    form.model.data = form.model.data or current_app.config["OPENAI_MODEL"]
    return form


def _new_batch_page(form: NewBatchForm, errors: dict | None = None, check=None):
    refused = bool(errors) or (check is not None and not check.ok)
    return render_template("new_batch.html", form=form, errors=errors or {}, preflight=check,
                           models=submission.allowed_models(),
                           provider=submission.current_provider(),
                           economy=submission.economy_availability()), (400 if refused else 200)


@bp.route("/batches/new", methods=["GET", "POST"])
@roles_required(Role.ADMIN, Role.EDITOR)
def new_batch():
    """The new-batch form: typed titles, or an imported file checked before anything is stored."""
    form = _new_batch_form()
    if request.method == "GET":
        return _new_batch_page(form)
    if not form.validate_on_submit():  # only CSRF is checked by WTForms
        return _new_batch_page(form, {"form": [_("The form expired; please submit it again.")]})
    data = form.raw_data()
    check = submission.check_import(data, request.files.get("import_file"))
    if check is not None and not check.confirmed:  # shown to be checked; nothing is stored
        return _new_batch_page(form, check=check)
    try:
        done = submission.submit(current_user, data, rows=check.rows if check else None)
    except Invalid as exc:  # the form again, with what was typed and the fields at fault
        return _new_batch_page(form, exc.fields, check)
    flash(done.outcome.message, done.outcome.level)
    return redirect(url_for("batches.batch_detail", batch_id=done.batch.id), code=303)


@bp.route("/batches/<int:batch_id>")
def batch_detail(batch_id: int):
    """A batch: its overall bar, its charts, and a row per article."""
    page = progress.batch_page(current_user, batch_id, int_arg("page", 1))
    return render_template("batch.html", **page,
                           activity=activity.batch_activity(page["batch"]),
                           pubs=publishing.batch_publications(current_user, page["batch"],
                                                              page["first"], page["last"]),
                           remote_statuses=publishing.STATUSES,
                           unpublish_to=publishing.UNPUBLISH_TO)


@bp.route("/batches/<int:batch_id>/charts")
def batch_charts(batch_id: int):
    """A batch's articles finished and spend over time, polled until it is final; rendered
    once per polling slice and shared by everyone watching (the same for all of them)."""
    batch = db.get_or_404(Batch, batch_id)

    def render() -> str:
        return render_template("_partials/_batch_charts.html", batch=batch,
                               activity=activity.batch_activity(batch))

    if batch.is_final:
        return render(), STOP_POLLING  # each viewer's last poll: nothing to share
    slice_s = current_app.config["POLL_INTERVAL"] * CHART_POLL_TICKS
    return pollcache.render_once(f"charts:{batch_id}", slice_s, render), 200


@bp.route("/batches/<int:batch_id>/progress")
def batch_progress(batch_id: int):
    """The polled progress of a batch: this tick's render, shared by all its viewers, with
    this user's buttons; or nothing, to a viewer who has it already."""
    poll = polls.batch_poll(current_user, batch_id, _since(), int_arg("first", 1),
                               int_arg("last", progress.ARTICLES_PER_PAGE),
                               request.args.get("seen", ""), render=_shared_progress)
    if poll.unchanged:
        # htmx swaps nothing and polls again after the usual delay (the partial's
        # hx-trigger listens for this event); the body, when there is one, is the summary
        # the viewer already has, for clients that read answers without htmx.
        headers = {"HX-Reswap": "none", "HX-Trigger": NOTHING_NEW}
        return (poll.shared.summary, 200, headers) if poll.shared else ("", 204, headers)
    html = poll.shared.summary + _for_user(poll.shared.updates, poll.can_manage)
    if poll.actions is not None:
        html += render_template("_partials/_batch_actions.html", batch=poll.facts,
                                actions=poll.actions, oob=True)
    if poll.announcement:
        html += render_template("_partials/_batch_announcement.html",
                                message=poll.announcement)
    return html, (STOP_POLLING if poll.is_final else 200)


# The event a "nothing new" answer triggers on the polling element.
NOTHING_NEW = "pressroom:unchanged"
# A shared render is the same for everyone: the rows' Cancel buttons (for those who manage
# the batch) sit between these marks, with this in place of the CSRF token. Text in the
# page is escaped, so neither can come from a title or a note.
_MANAGED = re.compile(r"<!--manage-->.*?<!--/manage-->", re.S)
_CSRF_SLOT = Markup("<!--csrf-->")


def _shared_progress(view: progress.BatchView, first: int, last: int) -> tuple[str, str]:
    """The progress partial as any viewer may be sent it: (the polled summary, the
    out-of-band rows and word counts)."""
    html = render_template("_partials/_batch_progress.html", view=view, batch=view.batch,
                           first=first, last=last, shared=True, can_manage=True,
                           csrf_token=lambda: _CSRF_SLOT)
    summary, end, updates = html.partition("</section>")
    return summary + end, updates


def _for_user(updates: str, manager: bool) -> str:
    """A shared render's rows as this user may see them: Cancel buttons for a manager,
    with their own CSRF token; none for anyone else."""
    if _CSRF_SLOT not in updates:  # no Cancel button in this render
        return updates
    if not manager:
        return _MANAGED.sub("", updates)
    return updates.replace(_CSRF_SLOT, generate_csrf())


def _after_action(batch_id: int, outcome: Outcome):
    """htmx swaps the batch's buttons; a plain form goes back to the batch with a flash."""
    if is_htmx():
        return render_template("_partials/_batch_actions.html",
                               **progress.batch_buttons(current_user, batch_id))
    flash(outcome.message, outcome.level)
    return redirect(url_for("batches.batch_detail", batch_id=batch_id), code=303)


@bp.post("/batches/<int:batch_id>/cancel")
def cancel_batch(batch_id: int):
    """Cancel a whole batch."""
    control.cancel_batch(current_user, db.get_or_404(Batch, batch_id))
    return _after_action(batch_id, Outcome(_("Cancelling the batch."), "info"))


@bp.post("/batches/<int:batch_id>/pause")
def pause_batch(batch_id: int):
    """Pause a batch: nothing new is sent until it is resumed."""
    control.pause_batch(current_user, db.get_or_404(Batch, batch_id))
    return _after_action(batch_id, Outcome(_("The batch is paused."), "info"))


@bp.post("/batches/<int:batch_id>/resume")
def resume_batch(batch_id: int):
    """Resume a paused batch where it stopped."""
    return _after_action(batch_id, control.resume_batch(current_user,
                                                        db.get_or_404(Batch, batch_id)))


@bp.post("/batches/<int:batch_id>/dispatch")
def retry_dispatch(batch_id: int):
    """Send a batch whose dispatch failed to the queue again."""
    return _after_action(batch_id, control.redispatch(current_user,
                                                      db.get_or_404(Batch, batch_id)))


TOO_MANY_ESTIMATES = _l("Too many estimates in a short time; the estimate resumes in a "
                        "minute.")


@bp.post("/batches/estimate")
@roles_required(Role.ADMIN, Role.EDITOR)
@limited_per_user("estimate", "_partials/_estimate.html", TOO_MANY_ESTIMATES, estimate=None)
def estimate():
    """Tokens and cost of the new-batch form as it stands, before anything is stored."""
    try:
        result, error = submission.estimate_for(NewBatchForm().raw_data()), None
    except Invalid as exc:  # the chosen template cannot make these prompts: the partial says why
        result, error = None, exc.message
    return render_template("_partials/_estimate.html", estimate=result, error=error)


@bp.post("/batches/<int:batch_id>/regenerate")
def batch_regenerate(batch_id: int):
    """Write again every failed, or every rejected, article of a batch."""
    outcome = review.regenerate_many(current_user, db.get_or_404(Batch, batch_id),
                                     request.form.get("which", ""), request.form.get("mode", ""))
    flash(outcome.message, outcome.level)
    return redirect(url_for("batches.batch_detail", batch_id=batch_id), code=303)


@bp.post("/batches/<int:batch_id>/duplicate")
def batch_duplicate(batch_id: int):
    """Submit a copy of the batch: same titles and settings."""
    copy = review.duplicate(current_user, db.get_or_404(Batch, batch_id))
    flash(_("Copied as “%(name)s”.", name=copy.name), "success")
    return redirect(url_for("batches.batch_detail", batch_id=copy.id), code=303)


@bp.get("/batches/<int:batch_id>/export.<fmt>")
def batch_export(batch_id: int, fmt: str):
    """Download the batch as CSV, JSON or a zip of Markdown files (approved articles
    unless ?all=1)."""
    download = exports.download(current_user, db.get_or_404(Batch, batch_id), fmt,
                                include_all=request.args.get("all") == "1")
    return Response(stream_with_context(download.body), mimetype=download.mimetype,
                    headers={"Content-Disposition": download.content_disposition})


# -- publishing to WordPress ---------------------------------------------------------------

@bp.post("/batches/<int:batch_id>/publish")
def batch_publish(batch_id: int):
    """Send the batch's approved articles to a destination (draft, pending, scheduled or
    published); the others are never sent."""
    flash_requested(publishing.publish(current_user, db.get_or_404(Batch, batch_id),
                                       publish_form()))
    return to_publications(batch_id)


@bp.post("/batches/<int:batch_id>/unpublish")
def batch_unpublish(batch_id: int):
    """Move the batch's posts on a destination back to draft, or to the trash."""
    flash_requested(publishing.unpublish(current_user, db.get_or_404(Batch, batch_id),
                                         publish_form()))
    return to_publications(batch_id)


@bp.get("/batches/<int:batch_id>/publications")
def batch_publications(batch_id: int):
    """Each article's publication state on the batch page (polled while any is open)."""
    pubs = publishing.batch_publications(
        current_user, db.get_or_404(Batch, batch_id), int_arg("first", 1),
        int_arg("last", progress.ARTICLES_PER_PAGE))
    html = render_template("_partials/_publications.html", pubs=pubs,
                           unpublish_to=publishing.UNPUBLISH_TO)
    return html, (200 if pubs.open else STOP_POLLING)
