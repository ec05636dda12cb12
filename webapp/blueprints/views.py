"""Saved views (/views/...): keep the current filter of the dashboard or the review queue
under a name, or delete one. Pages list them through `saved_views()` (the nav's menu, and
each page's own list with its save form, templates/_saved_views.html)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Blueprint, flash, g, redirect, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from sqlalchemy.exc import SQLAlchemyError

from ..extensions import db
from ..services import saved_views as service
from .errors import back_url

bp = Blueprint("views", __name__, url_prefix="/views")
log = logging.getLogger(__name__)

# Where each page of services/saved_views.PAGES lives.
PAGE_ENDPOINTS = {"dashboard": "batches.dashboard", "review": "review.queue"}


@dataclass(frozen=True)
class ViewLink:
    id: int
    name: str
    page: str
    url: str


def _link(view) -> ViewLink:
    return ViewLink(view.id, view.name, view.page,
                    f"{url_for(PAGE_ENDPOINTS[view.page])}?{view.query}")


@bp.app_template_global("saved_views")
def saved_views() -> list[ViewLink]:
    """The signed-in person's saved views: asked for by full pages only (polled partials
    never call it), and read once per request however many places show them."""
    if not current_user.is_authenticated:
        return []
    if "saved_views" not in g:
        try:
            views = service.views_of(current_user)
        except SQLAlchemyError:
            # The error page of a database failure must still render: without the menu.
            log.exception("saved views could not be read")
            db.session.rollback()
            views = []
        g.saved_views = [_link(view) for view in views if view.page in PAGE_ENDPOINTS]
    return g.saved_views


@bp.before_request
@login_required
def require_login():
    """Saving and deleting need a signed-in user (viewers too: a view only reads)."""


@bp.post("")
def save_view():
    """Save a page's current filter as a view of one's own, then show it."""
    view = service.save(current_user, request.form.get("page", ""),
                        request.form.get("name", ""), request.form.get("query", ""))
    flash(_("The view “%(name)s” is saved: pick it from “Saved views” at the top of any page.",
            name=view.name), "success")
    return redirect(_link(view).url, code=303)


@bp.post("/<int:view_id>/delete")
def delete_view(view_id: int):
    """Delete one of one's own views."""
    name = service.delete(current_user, view_id)
    flash(_("The view “%(name)s” is deleted.", name=name), "success")
    return redirect(back_url(), code=303)
