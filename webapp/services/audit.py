"""The audit log: who did what, when, from where. Entries are only ever added."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional

from flask import has_request_context, request
from flask_login import current_user
from sqlalchemy import func, select

from ..extensions import db
from ..models import AuditEvent, User

ACTIONS = ("sign_in", "sign_in_failed", "sign_out", "batch_submitted", "batch_cancelled",
           "article_cancelled", "batch_dispatched", "batch_paused", "batch_resumed",
           "user_created", "user_role_changed", "user_disabled", "user_enabled", "password_reset",
           "token_created", "token_revoked", "template_created", "template_edited",
           "template_archived", "template_restored", "article_reviewed", "article_edited",
           "article_regenerated", "version_restored", "batch_duplicated", "batch_exported",
           "bulk_approved", "bulk_rejected", "bulk_regenerated", "bulk_retried",
           "bulk_cancelled", "bulk_exported", "articles_published", "articles_unpublished",
           "destination_added", "destination_changed", "destination_removed")


def record(action: str, *, user: Optional[User] = None, actor: str = "", target: str = "",
           detail: str = "", commit: bool = True) -> None:
    """Add an entry. The acting user defaults to the signed-in one (or the API caller)."""
    if user is None and has_request_context():
        from flask import g
        user = getattr(g, "api_user", None) or (
            current_user if current_user and current_user.is_authenticated else None)
    ip = ""
    if has_request_context():
        ip = request.remote_addr or ""
    elif not actor:
        actor = "cli"
    db.session.add(AuditEvent(user_id=user.id if user else None,
                              actor=actor or (user.email if user else ""), action=action,
                              target=target[:100], detail=detail[:2000], ip=ip[:64]))
    if commit:
        db.session.commit()


@dataclass
class AuditFilter:
    action: str = ""
    actor: str = ""
    since: Optional[datetime] = None
    until: Optional[datetime] = None


def search(flt: AuditFilter, page: int, per_page: int = 50):
    stmt = select(AuditEvent)
    if flt.action:
        stmt = stmt.where(AuditEvent.action == flt.action)
    if flt.actor:
        stmt = stmt.where(AuditEvent.actor.contains(flt.actor.strip().lower(), autoescape=True))
    if flt.since:
        stmt = stmt.where(AuditEvent.at >= flt.since)
    if flt.until and flt.until.date() < datetime.max.date():  # no day after the last one
        stmt = stmt.where(AuditEvent.at < flt.until + timedelta(days=1))
    total = db.session.scalar(select(func.count()).select_from(stmt.subquery()))
    events = db.session.scalars(stmt.order_by(AuditEvent.id.desc()).limit(per_page)
                                .offset((page - 1) * per_page)).all()
    return events, total
