"""Pages and the htmx partials that keep them live."""
from __future__ import annotations

from datetime import datetime, timezone

from flask import (Blueprint, abort, current_app, flash, make_response, redirect,
                   render_template, request, url_for)
from flask_login import current_user, login_required
from wtforms.fields.choices import SelectChoice

from ..extensions import db, limiter
from ..forms import NewBatchForm
from ..models import Article, Batch, Role
from ..generation.prompts import TemplateRefused
from ..services import batches, progress, review, templates, users
from ..services.batches import Conflict, NotAllowed
from .access import int_arg, roles_required

bp = Blueprint("web", __name__)

# htmx stops an `every` poll on this status; our load-polling stops because the final
# partial carries no trigger, and 286 tells any other client the same.
STOP_POLLING = 286
# Far past any real page of batches; PAGE × BATCHES_PER_PAGE must fit an OFFSET.
MAX_PAGE = 1_000_000


@bp.before_request
@login_required
def require_login():
    """Every page and partial needs a signed-in user."""


def _is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def _since() -> datetime | None:
    try:
        since = datetime.fromisoformat(request.args.get("since", ""))
        if since.tzinfo is not None:  # stored times are naive UTC
            since = since.astimezone(timezone.utc).replace(tzinfo=None)
    except (ValueError, OverflowError):
        return None
    # Year 1 means "everything" too, but leaves no room to subtract the poll's overlap.
    return max(since, datetime(2000, 1, 1))


def _batch_page() -> dict:
    """One page of the dashboard's batches, with the filters from the URL."""
    page = int_arg("page", 1, MAX_PAGE)
    per_page = current_app.config["BATCHES_PER_PAGE"]
    flt = batches.BatchFilter.from_args(request.args)
    rows, total = batches.page_of_batches(page, per_page, flt)
    return {"rows": rows, "total": total, "page": page, "per_page": per_page, "flt": flt}


@bp.route("/")
def dashboard():
    """Batches, newest first, each with a live bar."""
    return render_template("dashboard.html", **_batch_page())


@bp.route("/batches/rows")
def batch_table():
    """The dashboard's table of batches, polled while any of them is unfinished."""
    context = _batch_page()
    html = render_template("_partials/_batch_table.html", **context)
    live = any(not row[0].is_final for row in context["rows"])
    return html, (200 if live else STOP_POLLING)


@bp.route("/batches/new", methods=["GET", "POST"])
@roles_required(Role.ADMIN, Role.EDITOR)
def new_batch():
    """The new-batch form: typed titles, or an imported file checked before anything is stored."""
    form = NewBatchForm()
    form.template_id.choices = [SelectChoice("", "Default template")] + [
        SelectChoice(str(t.id), t.name) for t in templates.active()]
    if not form.model.data:
        form.model.data = current_app.config["OPENAI_MODEL"]
    errors: dict = {}
    preflight = None
    if request.method == "POST":
        if not form.validate_on_submit():  # only CSRF is checked by WTForms
            errors = {"form": ["The form expired; please submit it again."]}
        else:
            data = form.raw_data()
            upload = request.files.get("import_file")
            rows = None
            if upload is not None and upload.filename:
                preflight = batches.preflight_upload(upload.filename, upload.stream, data)
            elif data.get("import_text"):
                preflight = batches.preflight_text(data.get("import_name", ""), data["import_text"], data)
                rows = preflight.rows if preflight.ok else None
            if preflight is not None and rows is None:
                # A new file is only checked and shown; nothing is stored yet.
                form.import_text.data = preflight.text if preflight.ok else ""
                form.import_name.data = upload.filename if upload and upload.filename else ""
                return render_template("new_batch.html", form=form, errors={},
                                       preflight=preflight, models=batches.allowed_models(),
                                       provider=batches.current_provider()), \
                    (200 if preflight.ok else 400)
            try:
                result = batches.submit(current_user, data, rows=rows)
            except NotAllowed as exc:
                abort(403, str(exc))
            if result.batch is not None:
                if result.dispatch_error:
                    flash(result.dispatch_error, "error")
                else:
                    flash(f"Batch “{result.batch.name}” submitted: {result.batch.total} articles.",
                          "success")
                return redirect(url_for("web.batch_detail", batch_id=result.batch.id), code=303)
            errors = result.errors.fields
    status = 400 if errors else 200
    return render_template("new_batch.html", form=form, errors=errors, preflight=preflight,
                           models=batches.allowed_models(),
                           provider=batches.current_provider()), status


@bp.route("/batches/<int:batch_id>")
def batch_detail(batch_id: int):
    """A batch: its overall bar, and a row per article."""
    view = progress.batch_view(batch_id, with_rows=False)
    if view is None:
        abort(404)
    page, pages, first, last = progress.page_range(view.batch.total,
                                                   int_arg("page", 1))
    return render_template("batch.html", view=view, batch=view.batch,
                           rows=progress.article_rows(batch_id, first, last),
                           page=page, pages=pages, first=first, last=last,
                           deliveries=batches.webhook_deliveries(batch_id),
                           can_manage=batches.can_manage(current_user, view.batch))


@bp.route("/batches/<int:batch_id>/progress")
def batch_progress(batch_id: int):
    """The polled progress of a batch, with only the article rows that changed."""
    first = int_arg("first", 1)
    last = int_arg("last", progress.ARTICLES_PER_PAGE)
    view = progress.batch_view(batch_id, _since(), with_rows=True, first=first,
                               last=min(last, first + progress.ARTICLES_PER_PAGE))
    if view is None:
        abort(404)
    html = render_template("_partials/_batch_progress.html", view=view, batch=view.batch,
                           can_manage=batches.can_manage(current_user, view.batch), polled=True,
                           seen_status=request.args.get("seen", ""), first=first, last=last)
    return html, (STOP_POLLING if view.is_final else 200)


@bp.route("/batches/<int:batch_id>/cancel", methods=["POST"])
def cancel_batch(batch_id: int):
    """Cancel a whole batch."""
    return _batch_action(batch_id, batches.cancel_batch, "Cancelling the batch.")


def _batch_action(batch_id: int, action, done_message: str):
    batch = db.get_or_404(Batch, batch_id)
    try:
        error = action(current_user, batch)
    except NotAllowed as exc:
        abort(403, str(exc))
    except Conflict as exc:
        error = str(exc)
    db.session.expire_all()
    if _is_htmx():
        view = progress.batch_view(batch_id, with_rows=False)
        return render_template("_partials/_batch_actions.html", batch=view.batch,
                               can_manage=True, action_error=error)
    flash(error or done_message, "error" if error else "info")
    return redirect(url_for("web.batch_detail", batch_id=batch_id), code=303)


@bp.route("/batches/<int:batch_id>/pause", methods=["POST"])
def pause_batch(batch_id: int):
    """Pause a batch: nothing new is sent until it is resumed."""
    return _batch_action(batch_id, batches.pause_batch, "The batch is paused.")


@bp.route("/batches/<int:batch_id>/resume", methods=["POST"])
def resume_batch(batch_id: int):
    """Resume a paused batch where it stopped."""
    return _batch_action(batch_id, batches.resume_batch, "The batch is resumed.")


TOO_MANY_ESTIMATES = "Too many estimates in a short time; the estimate resumes in a minute."


def _estimate_limited(request_limit):
    """Over the estimate limit: the partial says so (200: htmx swaps only 2xx answers)."""
    return make_response(render_template("_partials/_estimate.html", estimate=None,
                                         error=TOO_MANY_ESTIMATES))


@bp.route("/batches/estimate", methods=["POST"])
@roles_required(Role.ADMIN, Role.EDITOR)
@limiter.limit(lambda: current_app.config["TEMPLATE_PREVIEW_LIMIT"],
               key_func=lambda: f"estimate:{current_user.id}", on_breach=_estimate_limited)
def estimate():
    """Tokens and cost of the new-batch form as it stands, before anything is stored."""
    form = NewBatchForm()
    try:
        result, error = batches.estimate_for(form.raw_data()), None
    except TemplateRefused as exc:  # the chosen template cannot make these prompts
        result, error = None, str(exc)
    return render_template("_partials/_estimate.html", estimate=result, error=error)


@bp.route("/batches/<int:batch_id>/dispatch", methods=["POST"])
def retry_dispatch(batch_id: int):
    """Send a batch whose dispatch failed to the queue again."""
    return _batch_action(batch_id, batches.redispatch, "The batch was sent to the queue.")


@bp.route("/articles/<int:article_id>/cancel", methods=["POST"])
def cancel_article(article_id: int):
    """Cancel one article."""
    article = db.get_or_404(Article, article_id)
    try:
        batches.cancel_article(current_user, article)
    except NotAllowed as exc:
        abort(403, str(exc))
    db.session.expire_all()
    if _is_htmx():
        row = progress.article_row(article_id)
        return render_template("_partials/_article_row.html", row=row, can_manage=True,
                               live_words={})
    flash("Cancelling the article.", "info")
    return redirect(url_for("web.batch_detail", batch_id=article.batch_id), code=303)


@bp.route("/articles/<int:article_id>")
def article_detail(article_id: int):
    """One article, rendered from Markdown; live while it is being written."""
    article = db.get_or_404(Article, article_id)
    return render_template("article.html", live=progress.article_live(article),
                           article=article, batch=article.batch, **_tools(article))


def _tools(article: Article) -> dict:
    """What the review, regenerate and versions panel shows."""
    versions = review.versions(article.id)
    return {"versions": versions, "authors": users.emails_of({v.created_by for v in versions}),
            "can_review": review.can_review(current_user),
            "reading_minutes": review.reading_minutes(article.words)}


@bp.route("/articles/<int:article_id>/live")
def article_live(article_id: int):
    """The polled body of an article that is being written; when it finishes, the review
    panel comes along once."""
    article = db.get_or_404(Article, article_id)
    extra = _tools(article) if article.is_final else {}
    html = render_template("_partials/_article_live.html", live=progress.article_live(article),
                           article=article, batch=article.batch, polled=True, **extra)
    return html, (STOP_POLLING if article.is_final else 200)
