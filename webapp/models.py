"""Typed SQLAlchemy 2 models: the database is the source of truth for every batch."""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Optional

from flask_login import UserMixin
from sqlalchemy import (DDL, BigInteger, ForeignKey, Index, String, Text, UniqueConstraint,
                        event, func, select)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from . import triggers
from .extensions import db


def utcnow() -> datetime:
    """Naive UTC: SQLite keeps no zone, so every timestamp is stored as naive UTC."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class ArticleStatus:
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    ALL = (QUEUED, RUNNING, CANCELLING, SUCCEEDED, FAILED, CANCELLED)
    FINAL = (SUCCEEDED, FAILED, CANCELLED)
    ACTIVE = (RUNNING, CANCELLING)


class BatchStatus:
    QUEUED = "queued"
    RUNNING = "running"
    # Nothing new is sent while paused (by a person, or by the provider circuit breaker).
    PAUSED = "paused"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    FINAL = (SUCCEEDED, FAILED, CANCELLED)


class BatchMode:
    STANDARD = "standard"  # written now, by the workers, through live requests
    ECONOMY = "economy"    # sent to the provider's Batch API: half price, within 24 h

    ALL = (STANDARD, ECONOMY)


class ProviderBatchStatus:
    """A provider batch's state: the provider's own words, and Pressroom's PREPARING for a
    row whose provider batch is not created yet."""
    PREPARING = "preparing"
    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    FAILED = "failed"

    ALL = (PREPARING, VALIDATING, IN_PROGRESS, FINALIZING, COMPLETED, EXPIRED, CANCELLING,
           CANCELLED, FAILED)
    ENDED = (COMPLETED, EXPIRED, CANCELLED, FAILED)


class Role:
    ADMIN = "admin"
    EDITOR = "editor"
    VIEWER = "viewer"

    ALL = (ADMIN, EDITOR, VIEWER)


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=Role.EDITOR)
    is_disabled: Mapped[bool] = mapped_column(default=False)
    # Raised to end every session of the user at once (on disable); the session names
    # it, so even a copied cookie stops working, and re-enabling does not revive it.
    session_version: Mapped[int] = mapped_column(default=0, server_default="0")
    # The interface language the person last chose (a Babel locale: en, zh_Hans, zh_Hant);
    # None: the browser's cookie or Accept-Language decides.
    ui_language: Mapped[Optional[str]] = mapped_column(String(16))
    # "light" or "dark" as the person chose in the header; None: the system's setting
    # (prefers-color-scheme) decides.
    theme: Mapped[Optional[str]] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    tokens: Mapped[list["ApiToken"]] = relationship(back_populates="user")

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    # The server-side session (UserSession) this object was signed in or loaded with, set
    # by services/users.start_session and user_for_session. Not annotated: not columns.
    session_secret = None
    session_row_id = None

    def get_id(self) -> str:
        # What Flask-Login keeps in the session and the remember-me cookie. It names the
        # server-side session, which sign-out ends, and the password and session version
        # too, so a password reset or a disable ends every session opened before it.
        return f"{self.id}.{self.session_secret}.{self.session_fingerprint()}"

    def session_fingerprint(self) -> str:
        seed = f"{self.password_hash}|{self.session_version}"
        return hashlib.sha256(seed.encode()).hexdigest()[:16]

    @property
    def is_active(self) -> bool:  # Flask-Login refuses inactive users
        return not self.is_disabled


class ApiToken(db.Model):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="default")
    # Only a SHA-256 of the token is kept; the token itself is shown once.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[Optional[datetime]]
    revoked_at: Mapped[Optional[datetime]]

    user: Mapped[User] = relationship(back_populates="tokens")


class UserSession(db.Model):
    """One signed-in browser. Its cookie names it, so signing out ends it on the server and a
    copy of the cookie (session or remember-me) taken before then signs nobody in."""
    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    # Only a SHA-256 of the session's secret is kept; the secret itself is in the cookie.
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Written at most once a minute, so that pages and polls stay read-only.
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[Optional[datetime]]
    user_agent: Mapped[str] = mapped_column(String(200), default="")
    ip: Mapped[str] = mapped_column(String(64), default="")


class BatchFlags:
    """What a batch's status and mode say of it, for the model and for the facts a shared
    progress render keeps (services/progress.BatchFacts); both have `status` and `mode`."""

    @property
    def is_final(self) -> bool:
        return self.status in BatchStatus.FINAL

    @property
    def is_economy(self) -> bool:
        return self.mode == BatchMode.ECONOMY


class Batch(BatchFlags, db.Model):
    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_status_created", "status", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=BatchStatus.QUEUED)
    provider: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(100))
    target_words: Mapped[int]
    tone: Mapped[str] = mapped_column(String(50))
    language: Mapped[str] = mapped_column(String(50))
    instructions: Mapped[str] = mapped_column(Text, default="")
    total: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[Optional[datetime]]
    finished_at: Mapped[Optional[datetime]]
    cancel_requested_at: Mapped[Optional[datetime]]
    # Set once every task message reached the broker; NULL with dispatch_error set means
    # the broker was unreachable and the batch waits to be dispatched again.
    dispatched_at: Mapped[Optional[datetime]]
    dispatch_error: Mapped[Optional[str]] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(default=0)
    completion_tokens: Mapped[int] = mapped_column(default=0)
    cost_usd: Mapped[float] = mapped_column(default=0.0)
    # Optional spending cap; when the spend reaches it, queued articles are cancelled.
    budget_usd: Mapped[Optional[float]]
    paused_reason: Mapped[Optional[str]] = mapped_column(Text)
    # "user" or "provider" (the circuit breaker); only an admin resumes the latter.
    paused_by: Mapped[Optional[str]] = mapped_column(String(16))
    # Why the batch stopped early, when it was not a person's cancel (e.g. budget reached).
    stop_reason: Mapped[Optional[str]] = mapped_column(Text)
    template_id: Mapped[Optional[int]] = mapped_column(ForeignKey("prompt_templates.id"))
    # The exact template text the batch was generated with, whatever happens to the template.
    template_text: Mapped[str] = mapped_column(Text, default="")
    webhook_url: Mapped[Optional[str]] = mapped_column(String(500))
    webhook_done_at: Mapped[Optional[datetime]]
    mode: Mapped[str] = mapped_column(String(16), default=BatchMode.STANDARD,
                                      server_default=BatchMode.STANDARD)

    user: Mapped[User] = relationship()
    articles: Mapped[list["Article"]] = relationship(
        back_populates="batch", order_by="Article.position"
    )


class ProviderBatch(db.Model):
    """One batch at the provider (its Batch API) holding some of a Pressroom batch's
    articles: those it claimed with `token`. The row is written before anything is sent,
    and each provider id as soon as it is known, so no provider batch is ever lost track
    of or made twice (see generation/economy.py)."""

    __tablename__ = "provider_batches"

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    # The claim token of its articles, and the tag in the provider batch's metadata.
    token: Mapped[str] = mapped_column(String(36), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=ProviderBatchStatus.PREPARING)
    provider_batch_id: Mapped[Optional[str]] = mapped_column(String(100))
    input_file_id: Mapped[Optional[str]] = mapped_column(String(100))
    output_file_id: Mapped[Optional[str]] = mapped_column(String(100))
    error_file_id: Mapped[Optional[str]] = mapped_column(String(100))
    requests: Mapped[int] = mapped_column(default=0)
    completed: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    expires_at: Mapped[Optional[datetime]]
    error: Mapped[Optional[str]] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    checked_at: Mapped[Optional[datetime]]
    # Checks without news back off (see economy.next_check_in).
    unchanged_checks: Mapped[int] = mapped_column(default=0)
    cancel_requested_at: Mapped[Optional[datetime]]
    imported_at: Mapped[Optional[datetime]]
    files_deleted_at: Mapped[Optional[datetime]]

    @property
    def is_ended(self) -> bool:
        return self.status in ProviderBatchStatus.ENDED


class Article(db.Model):
    __tablename__ = "articles"
    __table_args__ = (
        Index("ix_articles_batch_status", "batch_id", "status"),
        Index("ix_articles_batch_updated", "batch_id", "updated_at"),
        # Covers the progress poll's SUM(cost_usd) and COUNT(review_flag) per batch, which
        # would otherwise read every row of the batch on every poll.
        Index("ix_articles_batch_cost_flag", "batch_id", "cost_usd", "review_flag"),
        # The review queue and the nav's count of articles awaiting review: review_status
        # leads, so "needs_review OR NULL" is two seeks (services/review_queue.py).
        Index("ix_articles_review_queue", "review_status", "status", "review_flag",
              "finished_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    position: Mapped[int]
    title: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16), default=ArticleStatus.QUEUED)
    # Pre-assigned before commit so the Celery result key is known before dispatch.
    task_id: Mapped[str] = mapped_column(String(36), unique=True)
    body: Mapped[Optional[str]] = mapped_column(Text)
    # The body's length in `length_unit`: "words", or "characters" for Chinese and Japanese
    # (generation/lengths.py); the name stays from when every length was in words.
    words: Mapped[int] = mapped_column(default=0)
    length_unit: Mapped[Optional[str]] = mapped_column(String(10), server_default="words")
    error: Mapped[Optional[str]] = mapped_column(Text)
    note: Mapped[Optional[str]] = mapped_column(String(300))
    attempts: Mapped[int] = mapped_column(default=0)
    # The delivery that owns a running article, and until when; see generation/lifecycle.claim.
    claim_token: Mapped[Optional[str]] = mapped_column(String(36))
    lease_expires_at: Mapped[Optional[datetime]]
    prompt_tokens: Mapped[int] = mapped_column(default=0)
    completion_tokens: Mapped[int] = mapped_column(default=0)
    finish_reason: Mapped[Optional[str]] = mapped_column(String(32))
    cost_usd: Mapped[float] = mapped_column(default=0.0)
    # Set when the answer must not pass as a plain success: "length", "content_filter",
    # "empty", "refused" or "short" (under half its target length); the article is then
    # flagged for review with this reason.
    review_flag: Mapped[Optional[str]] = mapped_column(String(32))
    # Per-row settings from an import; None means the batch's setting.
    keywords: Mapped[Optional[str]] = mapped_column(String(500))
    notes: Mapped[Optional[str]] = mapped_column(Text)
    tone: Mapped[Optional[str]] = mapped_column(String(50))
    language: Mapped[Optional[str]] = mapped_column(String(50))
    target_words: Mapped[Optional[int]]
    # Extra instructions for a regeneration of this article only.
    extra_instructions: Mapped[Optional[str]] = mapped_column(Text)
    # Editorial review after generation: needs_review -> approved / rejected.
    review_status: Mapped[Optional[str]] = mapped_column(String(16))
    review_reason: Mapped[Optional[str]] = mapped_column(Text)
    reviewed_by: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))
    reviewed_at: Mapped[Optional[datetime]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[Optional[datetime]]
    finished_at: Mapped[Optional[datetime]]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    batch: Mapped[Batch] = relationship(back_populates="articles")

    @property
    def is_final(self) -> bool:
        return self.status in ArticleStatus.FINAL

    @property
    def duration_s(self) -> Optional[float]:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class AuditEvent(db.Model):
    """Who did what, when, from where. Rows are only ever inserted: the migration adds
    database triggers that refuse UPDATE and DELETE."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_action_at", "action", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"), index=True)
    # Kept as text too, so the entry still says who it was if the account changes.
    actor: Mapped[str] = mapped_column(String(255), default="")
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(100), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    ip: Mapped[str] = mapped_column(String(64), default="")


class ReviewStatus:
    NEEDS_REVIEW = "needs_review"
    APPROVED = "approved"
    REJECTED = "rejected"

    ALL = (NEEDS_REVIEW, APPROVED, REJECTED)


class PromptTemplate(db.Model):
    __tablename__ = "prompt_templates"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    body: Mapped[str] = mapped_column(Text)
    created_by: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    archived_at: Mapped[Optional[datetime]]


class ArticleVersion(db.Model):
    """Every body an article ever had: generated, edited, regenerated or restored."""

    __tablename__ = "article_versions"
    __table_args__ = (UniqueConstraint("article_id", "number",
                                       name="uq_article_versions_article_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id"), index=True)
    number: Mapped[int]
    body: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(32))
    created_by: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @staticmethod
    def keep(article_id: int, body: str, source: str, user_id: Optional[int]) -> int:
        """Keep a body as the article's next version; its number (the caller commits)."""
        number = (db.session.scalar(select(func.max(ArticleVersion.number))
                                    .where(ArticleVersion.article_id == article_id)) or 0) + 1
        db.session.add(ArticleVersion(article_id=article_id, number=number, body=body,
                                      source=source, created_by=user_id))
        db.session.flush()
        return number


# A schema made by create_all (the unit tests) gets the triggers the migrations make.
for _dialect, _statements in triggers.CREATE.items():
    for _sql in _statements:
        event.listen(ArticleVersion.__table__, "after_create",
                     DDL(_sql).execute_if(dialect=_dialect))


class WebhookDelivery(db.Model):
    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    attempt: Mapped[int]
    status_code: Mapped[Optional[int]]
    ok: Mapped[bool] = mapped_column(default=False)
    error: Mapped[Optional[str]] = mapped_column(Text)
    duration_ms: Mapped[Optional[float]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Installation(db.Model):
    """One row: this database's identity. Redis keys that name a batch or an article carry
    its key, so state in a shared Redis is never mistaken for another database's."""

    __tablename__ = "installation"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SavedView(db.Model):
    """A person's named filter of the dashboard or the review queue, linked from the nav.
    Private: only its user sees, follows or deletes it (services/saved_views.py)."""

    __tablename__ = "saved_views"
    # Also the index of the nav's one query per page (user_id leads).
    __table_args__ = (UniqueConstraint("user_id", "page", "name",
                                       name="uq_saved_views_user_page_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(80))
    # "dashboard" or "review": which page the filter belongs to.
    page: Mapped[str] = mapped_column(String(16))
    # The page's filters as a query string, normalised (only that page's filter keys, in a
    # fixed order): what follows the "?" of the page's address.
    query: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BulkActionState:
    """Where a bulk action is (named `state`: `status` is the articles' and batches')."""
    RUNNING = "running"
    FINISHED = "finished"
    # The queue could not take it: nothing was done (see BulkAction.error).
    FAILED = "failed"

    ALL = (RUNNING, FINISHED, FAILED)


class BulkAction(db.Model):
    """One action on many rows at once (planned by services/bulk.py, run by
    services/bulk_actions.py): what was confirmed, by whom, on which filter, and how far it
    got. Its items are the ids frozen when it was confirmed, so the count confirmed is the
    count acted on."""

    __tablename__ = "bulk_actions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    # Kept as text too, as in the audit log: the history still says who it was.
    actor: Mapped[str] = mapped_column(String(255), default="")
    # "batches" (the dashboard) or "articles" (the review queue): what a selected row is.
    scope: Mapped[str] = mapped_column(String(16))
    # approve, reject, regenerate, retry, cancel, publish (export is a download, not stored
    # here).
    action: Mapped[str] = mapped_column(String(16))
    # The selection as text, in English: the filter's terms, or the rows picked.
    filter_text: Mapped[str] = mapped_column(Text, default="")
    reason: Mapped[Optional[str]] = mapped_column(Text)
    # publish: JSON {destination, status, publish_at, categories, tags} as confirmed.
    options: Mapped[Optional[str]] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default=BulkActionState.RUNNING)
    # Items to act on, those done, those skipped when it ran; `skipped_detail` is JSON
    # {why: count}, with what was left out when it was confirmed (someone else's batches).
    total: Mapped[int] = mapped_column(default=0)
    done: Mapped[int] = mapped_column(default=0)
    skipped: Mapped[int] = mapped_column(default=0)
    skipped_detail: Mapped[str] = mapped_column(Text, default="{}")
    error: Mapped[Optional[str]] = mapped_column(Text)
    # A SHA-256 of the confirmation it came from: confirming twice (a double click, the
    # back button) shows the first run instead of starting a second.
    confirm_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[Optional[datetime]]

    @property
    def is_over(self) -> bool:
        return self.state != BulkActionState.RUNNING


class BulkActionItem(db.Model):
    """One frozen item of a bulk action: an article (with its batch), or a whole batch
    (article_id NULL, for cancel). `outcome` is NULL until it ran: "done", or why it was
    skipped; an article's history lists the bulk actions done to it or to its batch."""

    __tablename__ = "bulk_action_items"
    __table_args__ = (Index("ix_bulk_action_items_action_outcome", "bulk_action_id",
                            "outcome"),
                      Index("ix_bulk_action_items_batch", "batch_id", "article_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    bulk_action_id: Mapped[int] = mapped_column(ForeignKey("bulk_actions.id"))
    article_id: Mapped[Optional[int]] = mapped_column(ForeignKey("articles.id"), index=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    outcome: Mapped[Optional[str]] = mapped_column(String(32))


class DestinationStatus:
    OK = "ok"
    # The site refused the credentials (401/403), or the stored password cannot be read
    # (SECRET_KEY changed): nothing more is sent until an admin fixes them.
    NEEDS_CREDENTIALS = "needs_credentials"

    ALL = (OK, NEEDS_CREDENTIALS)


class Provenance:
    NONE = "none"
    FOOTER = "footer"  # a paragraph at the end of the post
    META = "meta"      # post meta fields (the site must register them for the REST API)

    ALL = (NONE, FOOTER, META)


class Destination(db.Model):
    """A WordPress site that approved articles are published to (services/destinations.py).
    Its application password is kept encrypted (webapp/crypto.py) and never shown again."""

    __tablename__ = "destinations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="wordpress")
    # Normalised: scheme and host in lower case, no query, no trailing slash, no /wp-json.
    url: Mapped[str] = mapped_column(String(500))
    username: Mapped[str] = mapped_column(String(200))
    # A Fernet token under a key derived from SECRET_KEY.
    password_encrypted: Mapped[str] = mapped_column(Text)
    # Create categories and tags the site does not have yet (else the article fails).
    allow_new_terms: Mapped[bool] = mapped_column(default=False)
    provenance: Mapped[str] = mapped_column(String(8), default=Provenance.NONE)
    status: Mapped[str] = mapped_column(String(24), default=DestinationStatus.OK)
    # Why it needs credentials, in English (pages translate it).
    last_error: Mapped[Optional[str]] = mapped_column(Text)
    checked_at: Mapped[Optional[datetime]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))

    @property
    def needs_credentials(self) -> bool:
        return self.status == DestinationStatus.NEEDS_CREDENTIALS


class PublicationStatus:
    QUEUED = "queued"
    PUBLISHING = "publishing"  # a worker holds it (its claim token and lease)
    # Sent: the post exists on the site; its own status there is `remote_status`
    # (draft, pending, future or publish).
    PUBLISHED = "published"
    FAILED = "failed"
    UNPUBLISHED = "unpublished"  # moved back to draft, or to the trash, on request

    ALL = (QUEUED, PUBLISHING, PUBLISHED, FAILED, UNPUBLISHED)
    OPEN = (QUEUED, PUBLISHING)


class PublicationAction:
    PUBLISH = "publish"
    UNPUBLISH = "unpublish"


class Publication(db.Model):
    """One article on one destination: the remote post's id once it exists, so the article
    is posted once and every later publish updates that post (generation/publishing.py)."""

    __tablename__ = "publications"
    __table_args__ = (
        UniqueConstraint("article_id", "destination_id",
                         name="uq_publications_article_destination"),
        # The reconciler's look for open work, and a destination's queue stopped at once.
        Index("ix_publications_destination_status", "destination_id", "status"),
        Index("ix_publications_status_updated", "status", "updated_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id"), index=True)
    destination_id: Mapped[int] = mapped_column(ForeignKey("destinations.id"))
    # Identifies the post on the site whatever its slug became (a marker in its content):
    # what a lost create's answer is looked up by.
    token: Mapped[str] = mapped_column(String(32), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=PublicationStatus.QUEUED)
    # What the open request asks: publish (with `wanted` the post's status: draft, pending,
    # future, publish) or unpublish (`wanted`: draft or trash).
    action: Mapped[str] = mapped_column(String(16), default=PublicationAction.PUBLISH)
    wanted: Mapped[str] = mapped_column(String(16), default="draft")
    # For `future`: when the site publishes it (naive UTC).
    publish_at: Mapped[Optional[datetime]]
    # JSON lists of names, as asked.
    categories: Mapped[str] = mapped_column(Text, default="[]")
    tags: Mapped[str] = mapped_column(Text, default="[]")
    # WordPress's post ids are BIGINT UNSIGNED.
    remote_id: Mapped[Optional[int]] = mapped_column(BigInteger)
    url: Mapped[Optional[str]] = mapped_column(String(1000))
    remote_status: Mapped[Optional[str]] = mapped_column(String(16))
    error: Mapped[Optional[str]] = mapped_column(Text)
    # While a retry waits: why (in English).
    note: Mapped[Optional[str]] = mapped_column(String(300))
    attempts: Mapped[int] = mapped_column(default=0)
    # Set just before a create is sent, while no post id is known: if its answer is lost
    # (a timeout, a 5xx after the site stored it, a worker killed), the next attempt looks
    # for the post by its marker before creating another.
    create_sent_at: Mapped[Optional[datetime]]
    claim_token: Mapped[Optional[str]] = mapped_column(String(36))
    lease_expires_at: Mapped[Optional[datetime]]
    requested_by: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    published_at: Mapped[Optional[datetime]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    destination: Mapped[Destination] = relationship()

    @property
    def is_open(self) -> bool:
        return self.status in PublicationStatus.OPEN
