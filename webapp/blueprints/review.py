"""The review queue (/review): every article awaiting review across batches, a reading pane,
and decisions by keyboard (static/js/review.js) through htmx, without a reload."""
from __future__ import annotations

from flask import (Blueprint, current_app, flash, redirect, render_template, request,
                   url_for)
from flask_login import current_user, login_required

from ..extensions import db
from ..models import Article
from ..services import review_queue
from ..services.errors import Invalid
from .access import int_arg
from .htmx import is_htmx

bp = Blueprint("review", __name__, url_prefix="/review")

# Far past any real page of the queue; PAGE × REVIEW_PER_PAGE must fit an OFFSET.
MAX_PAGE = 1_000_000


@bp.before_request
@login_required
def require_login():
    """The queue is for signed-in people; viewers read it, editors decide."""


@bp.app_context_processor
def review_nav():
    # Counted only when a full page shows the nav (partials never touch it).
    return {"review_nav": review_queue.NavCount()}


def _per_page() -> int:
    return max(1, current_app.config["REVIEW_PER_PAGE"])


def _page() -> int:
    return int_arg("page", 1, MAX_PAGE)


@bp.get("")
def queue():
    """Articles awaiting review, flagged first, with the current one in the reading pane."""
    queue = review_queue.for_page(current_user, request.args, _page(), _per_page(),
                                  request.args.get("article", type=int))
    return render_template("review_queue.html", queue=queue), (400 if queue.errors else 200)


@bp.get("/list")
def queue_list():
    """The list of one page of the queue (the keyboard went past the end of a page)."""
    queue = review_queue.for_list(current_user, request.args, _page(), _per_page())
    return render_template("_partials/_review_list.html", queue=queue)


@bp.get("/articles/<int:article_id>")
def pane(article_id: int):
    """The reading pane: one article, and its decisions for those who may decide."""
    flt, _errors = review_queue.QueueFilter.from_args(request.args)
    queue = review_queue.pane(current_user, db.get_or_404(Article, article_id), flt, _page())
    return render_template("_partials/_review_pane.html", queue=queue)


@bp.post("/articles/<int:article_id>/decision")
def decide(article_id: int):
    """Approve or reject an article; answers with the queue as it is now, the next
    article in the pane (htmx), or goes back to the queue showing it."""
    article = db.get_or_404(Article, article_id)
    flt, _errors = review_queue.QueueFilter.from_args(request.args)
    reason = request.form.get("reason", "")
    try:
        queue = review_queue.decide(current_user, article, request.form.get("decision", ""),
                                    reason, flt, _page(), _per_page())
    except Invalid as exc:  # the pane again, saying what is missing, with what was typed
        db.session.rollback()
        queue = review_queue.pane(current_user, article, flt, _page())
        queue.reason_error, queue.reason = exc.message, reason
        if is_htmx():
            html = render_template("_partials/_review_pane.html", queue=queue)
            return html, 200, {"HX-Retarget": "#review-pane", "HX-Reswap": "outerHTML"}
        page = review_queue.for_page(current_user, request.args, _page(), _per_page(),
                                     article.id)
        page.reason_error, page.reason = exc.message, reason
        return render_template("review_queue.html", queue=page), 400
    here = url_for("review.queue", page=queue.page, article=queue.selected_id, **flt.args())
    if not is_htmx():
        flash(queue.done, "success")
        return redirect(here, code=303)
    html = (render_template("_partials/_review_list.html", queue=queue)
            + render_template("_partials/_review_pane.html", queue=queue, oob=True)
            + render_template("_partials/_review_nav.html", awaiting=queue.awaiting_all,
                              oob=True))
    return html, 200, {"HX-Replace-Url": here}
