"""Editorial pages: prompt templates, article review and versions, exports, copies."""
from __future__ import annotations

from flask import (Blueprint, Response, abort, current_app, flash, make_response, redirect,
                   render_template, request, stream_with_context, url_for)
from flask_login import current_user, login_required

from ..extensions import db, limiter
from ..models import Article, Batch, Role
from ..services import exports, review, templates, users
from ..services.batches import Conflict, NotAllowed
from .access import roles_required

bp = Blueprint("editorial", __name__)


@bp.before_request
@login_required
def require_login():
    """Every editorial page needs a signed-in user."""


# --- templates -----------------------------------------------------------------------------

@bp.get("/templates")
def template_list():
    """Prompt templates, the shipped default first."""
    rows = templates.all_templates()
    return render_template("templates_list.html", templates=rows,
                           default_text=templates.prompts.DEFAULT_TEMPLATE,
                           changeable={t.id for t in rows if templates.can_change(current_user, t)},
                           authors=users.emails_of({t.created_by for t in rows}),
                           budget=templates.prompts.output_budget())


def _template_form(tpl=None, name="", body="", errors=None, status=200):
    text = body or (tpl.body if tpl else templates.prompts.DEFAULT_TEMPLATE)
    return render_template("template_form.html", tpl=tpl, name=name or (tpl.name if tpl else ""),
                           body=text, errors=errors or {},
                           can_change=tpl is None or templates.can_change(current_user, tpl),
                           variables=templates.prompts.VARIABLES,
                           filters=templates.prompts.FILTERS, methods=templates.prompts.METHODS,
                           budget=templates.prompts.output_budget(),
                           sample=templates.prompts.SAMPLE_ROW), status


@bp.route("/templates/new", methods=["GET", "POST"])
@roles_required(Role.ADMIN, Role.EDITOR)
def template_new():
    """Create a prompt template (?copy=<id> starts from a copy of another one)."""
    if request.method == "GET":
        copy_id = request.args.get("copy", type=int)
        if copy_id is None:
            return _template_form()
        try:
            name, body = templates.copy_of(copy_id)
        except LookupError:
            abort(404)
        return _template_form(None, name, body)
    name, body = request.form.get("name", ""), request.form.get("body", "")
    try:
        tpl = templates.save(current_user, name, body)
    except templates.TemplateError as exc:
        return _template_form(None, name, body, exc.fields, 400)
    flash(f"Template “{tpl.name}” saved.", "success")
    return redirect(url_for("editorial.template_list"), code=303)


@bp.route("/templates/<int:template_id>", methods=["GET", "POST"])
@roles_required(Role.ADMIN, Role.EDITOR)
def template_edit(template_id: int):
    """Edit a prompt template (its author or an admin; others see it read-only and may copy
    it); batches already submitted keep the text they used."""
    tpl = db.get_or_404(templates.PromptTemplate, template_id)
    if request.method == "GET":
        return _template_form(tpl)
    name, body = request.form.get("name", ""), request.form.get("body", "")
    try:
        templates.save(current_user, name, body, template_id)
    except NotAllowed as exc:
        abort(403, str(exc))
    except templates.TemplateError as exc:
        return _template_form(tpl, name, body, exc.fields, 400)
    flash(f"Template “{name.strip()}” saved.", "success")
    return redirect(url_for("editorial.template_list"), code=303)


@bp.post("/templates/<int:template_id>/archive")
@roles_required(Role.ADMIN, Role.EDITOR)
def template_archive(template_id: int):
    """Archive (or restore) a template: it leaves (or rejoins) the new-batch list."""
    restore = request.form.get("restore") == "1"
    try:
        tpl = templates.archive(current_user, template_id, archived=not restore)
    except NotAllowed as exc:
        abort(403, str(exc))
    except LookupError:
        abort(404)
    flash(f"Template “{tpl.name}” {'restored' if restore else 'archived'}.", "success")
    return redirect(url_for("editorial.template_list"), code=303)


TOO_MANY_PREVIEWS = ("Too many previews in a short time; the preview resumes in a minute. "
                     "Your text is not lost.")


def _preview_limited(request_limit):
    """Over the preview limit: the partial says so (200: htmx swaps only 2xx answers)."""
    return make_response(render_template("_partials/_template_preview.html", rendered=None,
                                         error=TOO_MANY_PREVIEWS))


@bp.post("/templates/preview")
@roles_required(Role.ADMIN, Role.EDITOR)
@limiter.limit(lambda: current_app.config["TEMPLATE_PREVIEW_LIMIT"],
               key_func=lambda: f"template-preview:{current_user.id}",
               on_breach=_preview_limited)
def template_preview():
    """The prompt a template makes for a sample row."""
    row = {name: request.form.get(f"sample_{name}", "") for name in templates.prompts.VARIABLES}
    rendered, error = templates.preview(request.form.get("body", ""), row)
    return render_template("_partials/_template_preview.html", rendered=rendered, error=error)


# --- review ----------------------------------------------------------------------------------

def _article(article_id: int) -> Article:
    return db.get_or_404(Article, article_id)


def _back(article: Article):
    return redirect(url_for("web.article_detail", article_id=article.id), code=303)


def _run(article: Article, action, done: str):
    try:
        result = action()
    except NotAllowed as exc:
        abort(403, str(exc))
    except Conflict as exc:
        flash(str(exc), "error")
        return _back(article)
    except LookupError:
        abort(404)
    flash(done if not isinstance(result, str) else (result or done),
          "error" if isinstance(result, str) and result else "success")
    return _back(article)


@bp.post("/articles/<int:article_id>/review")
def article_review(article_id: int):
    """Approve or reject an article (a rejection needs a reason)."""
    article = _article(article_id)
    decision = request.form.get("decision", "")
    return _run(article, lambda: review.decide(current_user, article, decision,
                                               request.form.get("reason", "")),
                f"Article {decision or 'reviewed'}.")


@bp.route("/articles/<int:article_id>/edit", methods=["GET", "POST"])
def article_edit(article_id: int):
    """Edit an article's Markdown; the previous text is kept as a version."""
    article = _article(article_id)
    if request.method == "GET":
        if not review.can_review(current_user):
            abort(403)
        return render_template("article_edit.html", article=article, batch=article.batch,
                               body=article.body or "", error=None)
    body = request.form.get("body", "")
    try:
        number = review.edit(current_user, article, body)
    except NotAllowed as exc:
        abort(403, str(exc))
    except Conflict as exc:
        return render_template("article_edit.html", article=article, batch=article.batch,
                               body=body, error=str(exc)), 400
    flash(f"Saved as version {number}." if number else "No changes to save.", "success")
    return _back(article)


@bp.post("/articles/<int:article_id>/regenerate")
def article_regenerate(article_id: int):
    """Write one article again, optionally with extra instructions."""
    article = _article(article_id)
    return _run(article, lambda: review.regenerate(current_user, article,
                                                   request.form.get("instructions", "")),
                "The article is being written again; earlier versions are kept.")


@bp.post("/articles/<int:article_id>/versions/<int:version_id>/restore")
def version_restore(article_id: int, version_id: int):
    """Make an earlier version the current text again."""
    article = _article(article_id)
    return _run(article, lambda: review.restore(current_user, article, version_id) and None,
                "Version restored.")


@bp.get("/articles/<int:article_id>/versions/<int:version_id>")
def version_show(article_id: int, version_id: int):
    """One earlier version of an article."""
    article = _article(article_id)
    version = db.get_or_404(review.ArticleVersion, version_id)
    if version.article_id != article.id:
        abort(404)
    return render_template("version.html", article=article, version=version, batch=article.batch)


# --- batches -------------------------------------------------------------------------------

def _batch(batch_id: int) -> Batch:
    return db.get_or_404(Batch, batch_id)


@bp.post("/batches/<int:batch_id>/regenerate")
def batch_regenerate(batch_id: int):
    """Write again every failed, or every rejected, article of a batch."""
    batch = _batch(batch_id)
    which = request.form.get("which", "")
    try:
        count, error = review.regenerate_many(current_user, batch, which)
    except NotAllowed as exc:
        abort(403, str(exc))
    except Conflict as exc:
        count, error = 0, str(exc)
    if error:
        flash(error, "error")
    else:
        flash(f"Writing {count} {which} article{'s' if count != 1 else ''} again." if count
              else f"There are no {which} articles.", "success" if count else "info")
    return redirect(url_for("web.batch_detail", batch_id=batch_id), code=303)


@bp.post("/batches/<int:batch_id>/duplicate")
def batch_duplicate(batch_id: int):
    """Submit a copy of the batch: same titles and settings."""
    try:
        copy = review.duplicate(current_user, _batch(batch_id))
    except NotAllowed as exc:
        abort(403, str(exc))
    flash(f"Copied as “{copy.name}”.", "success")
    return redirect(url_for("web.batch_detail", batch_id=copy.id), code=303)


@bp.get("/batches/<int:batch_id>/export.<fmt>")
def batch_export(batch_id: int, fmt: str):
    """Download the batch as CSV, JSON or a zip of Markdown files (approved articles
    unless ?all=1)."""
    if fmt not in exports.FORMATS:
        abort(404)
    batch = _batch(batch_id)
    include_all = request.args.get("all") == "1"
    try:
        body = exports.stream(current_user, batch, fmt, include_all)
    except NotAllowed as exc:
        abort(403, str(exc))
    filename = f"batch-{batch.id}{'-all' if include_all else ''}.{fmt}"
    return Response(stream_with_context(body), mimetype=exports.FORMATS[fmt],
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})
