"""What a page calls the codes it shows: statuses, roles, modes, review flags, audit actions.

The database, the API and the logs keep the codes (`succeeded`, `content_filter`); a page
shows these words, in its own language. A code without a label is shown as it is.
"""
from __future__ import annotations

from flask_babel import lazy_gettext as _l

STATUS = {
    "queued": _l("queued"),
    "running": _l("running"),
    "paused": _l("paused"),
    "cancelling": _l("cancelling"),
    "succeeded": _l("succeeded"),
    "failed": _l("failed"),
    "cancelled": _l("cancelled"),
    # A provider batch's own states (economy mode).
    "preparing": _l("preparing"),
    "validating": _l("validating"),
    "in_progress": _l("in progress"),
    "finalizing": _l("finalizing"),
    "completed": _l("completed"),
    "expired": _l("expired"),
}

ROLE = {
    "admin": _l("admin"),
    "editor": _l("editor"),
    "viewer": _l("viewer"),
}

MODE = {
    "standard": _l("Standard"),
    "economy": _l("Economy"),
}

FLAG = {
    "refused": _l("refused"),
    "length": _l("cut off at the length limit"),
    "content_filter": _l("stopped by the content filter"),
    "empty": _l("empty"),
    "short": _l("short"),
}

REVIEW = {
    "pending": _l("awaiting review"),
    "approved": _l("approved"),
    "rejected": _l("rejected"),
}

AUDIT = {
    "article_cancelled": _l("article cancelled"),
    "article_edited": _l("article edited"),
    "article_regenerated": _l("article regenerated"),
    "article_reviewed": _l("article reviewed"),
    "batch_cancelled": _l("batch cancelled"),
    "batch_dispatched": _l("batch dispatched"),
    "batch_duplicated": _l("batch duplicated"),
    "batch_exported": _l("batch exported"),
    "batch_paused": _l("batch paused"),
    "batch_resumed": _l("batch resumed"),
    "batch_submitted": _l("batch submitted"),
    "password_reset": _l("password reset"),
    "sign_in": _l("signed in"),
    "sign_in_failed": _l("sign-in failed"),
    "sign_out": _l("signed out"),
    "template_archived": _l("template archived"),
    "template_created": _l("template created"),
    "template_edited": _l("template edited"),
    "token_created": _l("API token created"),
    "token_revoked": _l("API token revoked"),
    "user_created": _l("user created"),
    "user_disabled": _l("user disabled"),
    "user_enabled": _l("user enabled"),
    "user_role_changed": _l("role changed"),
    "version_restored": _l("version restored"),
}

KINDS = {"status": STATUS, "role": ROLE, "mode": MODE, "flag": FLAG, "review": REVIEW,
         "audit": AUDIT}


def label(kind: str, code) -> str:
    """The page's word for a code of the given kind (`status`, `role`, …)."""
    if code is None:
        return ""
    found = KINDS[kind].get(str(code))
    return str(found) if found is not None else str(code)
