"""Articles (/articles/...): an article's page and its live text, cancel, review, edit,
regenerate, and its earlier versions."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from ..extensions import db
from ..models import Article, ReviewStatus as R, Role
from ..services import article_page, control, progress, publishing, review
from ..services.errors import Invalid
from .access import roles_required
from .publish_form import flash_requested, publish_form, to_publications
from .htmx import STOP_POLLING, is_htmx

bp = Blueprint("articles", __name__)


@bp.before_request
@login_required
def require_login():
    """Every article page needs a signed-in user."""


def _to_article(article_id: int):
    return redirect(url_for("articles.article_detail", article_id=article_id), code=303)


@bp.get("/articles/<int:article_id>")
def article_detail(article_id: int):
    """One article, rendered from Markdown; live while it is being written."""
    article = db.get_or_404(Article, article_id)
    return render_template("article.html", **article_page.article_page(current_user, article),
                           pubs=publishing.article_publications(current_user, article),
                           remote_statuses=publishing.STATUSES,
                           unpublish_to=publishing.UNPUBLISH_TO)


@bp.get("/articles/<int:article_id>/live")
def article_live(article_id: int):
    """The polled body of an article that is being written; when it finishes, the review
    panel comes along once."""
    poll = article_page.article_poll(current_user, db.get_or_404(Article, article_id))
    html = render_template("_partials/_article_live.html", polled=True, **poll)
    return html, (STOP_POLLING if poll["article"].is_final else 200)


@bp.post("/articles/<int:article_id>/cancel")
def cancel_article(article_id: int):
    """Cancel one article."""
    article = db.get_or_404(Article, article_id)
    control.cancel_article(current_user, article)
    if is_htmx():
        return render_template("_partials/_article_row.html", row=progress.article_row(article_id),
                               can_manage=True, live_words={})
    flash(_("Cancelling the article."), "info")
    return redirect(url_for("batches.batch_detail", batch_id=article.batch_id), code=303)


@bp.post("/articles/<int:article_id>/review")
def article_review(article_id: int):
    """Approve or reject an article (a rejection needs a reason)."""
    decision = request.form.get("decision", "")
    review.decide(current_user, db.get_or_404(Article, article_id), decision,
                  request.form.get("reason", ""))
    flash(_("Article approved.") if decision == R.APPROVED else _("Article rejected."),
          "success")
    return _to_article(article_id)


@bp.route("/articles/<int:article_id>/edit", methods=["GET", "POST"])
@roles_required(Role.ADMIN, Role.EDITOR)
def article_edit(article_id: int):
    """Edit an article's Markdown; the previous text is kept as a version."""
    article = db.get_or_404(Article, article_id)
    if request.method == "GET":
        return render_template("article_edit.html", article=article, body=article.body or "",
                               error=None)
    body = request.form.get("body", "")
    try:
        number = review.edit(current_user, article, body)
    except Invalid as exc:  # the form again, with what was typed
        return render_template("article_edit.html", article=article, body=body,
                               error=exc.message), 400
    flash(_("Saved as version %(number)s.", number=number) if number
          else _("No changes to save."), "success")
    return _to_article(article_id)


@bp.post("/articles/<int:article_id>/regenerate")
def article_regenerate(article_id: int):
    """Write one article again, optionally with extra instructions."""
    outcome = review.regenerate(current_user, db.get_or_404(Article, article_id),
                                request.form.get("instructions", ""))
    flash(outcome.message, outcome.level)
    return _to_article(article_id)


@bp.post("/articles/<int:article_id>/versions/<int:version_id>/restore")
def version_restore(article_id: int, version_id: int):
    """Make an earlier version the current text again."""
    review.restore(current_user, db.get_or_404(Article, article_id), version_id)
    flash(_("Version restored."), "success")
    return _to_article(article_id)


@bp.get("/articles/<int:article_id>/versions/<int:version_id>")
def version_show(article_id: int, version_id: int):
    """One earlier version of an article."""
    article = db.get_or_404(Article, article_id)
    return render_template("version.html", article=article,
                           version=review.version_of(article, version_id))


@bp.post("/articles/<int:article_id>/publish")
def article_publish(article_id: int):
    """Send one approved article to a destination."""
    article = db.get_or_404(Article, article_id)
    flash_requested(publishing.publish(current_user, article.batch, publish_form(),
                                       article_ids=[article.id]))
    return _to_article(article_id)


@bp.post("/articles/<int:article_id>/unpublish")
def article_unpublish(article_id: int):
    """Move one article's post on a destination back to draft, or to the trash."""
    article = db.get_or_404(Article, article_id)
    flash_requested(publishing.unpublish(current_user, article.batch, publish_form(),
                                         article_ids=[article.id]))
    if request.form.get("back") == "batch":
        return to_publications(article.batch_id)
    return _to_article(article_id)
