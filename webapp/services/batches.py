"""Submitting, dispatching and cancelling batches."""
from __future__ import annotations

import io
import logging
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from time import monotonic
from typing import Optional

import redis
from flask import current_app
from sqlalchemy import Integer, func, insert, or_, select, text
from sqlalchemy.orm import joinedload

from ..generation import lifecycle, live, pricing, ratelimit, webhooks
from ..extensions import db, get_redis
from ..models import Article, ArticleStatus as A, Batch, BatchStatus as B, Role, User, utcnow
from ..generation.prompts import ROWS_RENDER_SECONDS, RowRefused, TemplateRefused, build_prompt
from ..generation.provider import provider_label
from ..generation import dispatch as publish
from ..generation.reconciler import dispatch_batch
from . import audit, imports, templates
from .errors import Conflict, Invalid, NotAllowed
from .outcomes import Outcome
from .validation import BatchInput, Errors, Row, validate_batch

log = logging.getLogger(__name__)


@dataclass
class Submission:
    """A stored batch; `dispatch_error` (as the batch records it) says why it is not sent yet."""
    batch: Batch
    dispatch_error: Optional[str] = None

    @property
    def outcome(self) -> Outcome:
        return Outcome.sent(f"Batch “{self.batch.name}” submitted: {self.batch.total} articles.",
                            self.dispatch_error)


def allowed_models() -> list[str]:
    raw = current_app.config.get("OPENAI_MODELS") or ""
    return [m.strip() for m in raw.split(",") if m.strip()]


def current_provider() -> str:
    """The provider a batch submitted now would use (shown on the form)."""
    return provider_label(current_app.config)


def _validate_fields(data: dict, rows: Optional[list] = None):
    """Check a submission's fields. `rows` come from a checked import; the API may send
    "rows" too."""
    cfg = current_app.config
    extra = Errors()
    if rows is None and isinstance(data.get("rows"), list):
        if len(data["rows"]) > cfg["IMPORT_MAX_ROWS"]:
            extra.add("rows", f"{len(data['rows']):,} rows given; a batch takes at most "
                              f"{cfg['IMPORT_MAX_ROWS']:,}.")
            rows = []
        else:
            rows, row_errors = imports.check_records(data["rows"], 1, cfg["MAX_TITLE_LENGTH"])
            for number, message in row_errors[:50]:
                extra.add("rows", f"Row {number}: {message}.")
    clean, errors = validate_batch(data, default_model=cfg["OPENAI_MODEL"],
                                   allowed_models=allowed_models(), max_titles=cfg["MAX_TITLES"],
                                   max_title_length=cfg["MAX_TITLE_LENGTH"], rows=rows,
                                   webhook_allowed_hosts=cfg["WEBHOOK_ALLOWED_HOSTS"])
    for name, messages in extra.fields.items():
        for message in messages:
            errors.add(name, message)
    if clean is not None and clean.template_id is not None and \
            templates.usable(clean.template_id) is None:
        errors.add("template_id", "That template does not exist or is archived.")
    if errors:
        return None, errors
    return clean, errors


class RowsRefused(TemplateRefused):
    """The batch's template cannot make a prompt for some of its rows (over its budget)."""

    def __init__(self, rows: list[tuple[int, str]], label: str):
        first_number, first_why = rows[0]
        more = f" (and {len(rows) - 1:,} more)" if len(rows) > 1 else ""
        super().__init__(f"{label} {first_number}: {first_why}{more}")
        self.rows, self.label = rows, label


def _prompts(clean: BatchInput, label: str) -> list:
    """Every row's prompt, as the workers will make them, or why the template refuses.

    All rows share one render deadline, so a template that is slow on every row cannot hold
    the request for long whatever the number of rows. Raises TemplateRefused for the
    template itself, RowsRefused (rows named with `label`) for the rows it cannot render.
    """
    template = templates.text_for(clean.template_id)
    deadline = monotonic() + ROWS_RENDER_SECONDS
    built, refused = [], []
    for r in clean.rows:
        try:
            built.append(build_prompt(
                template, title=r.title, words=r.words or clean.target_words,
                tone=r.tone or clean.tone, language=r.language or clean.language,
                keywords=r.keywords, notes=r.notes, instructions=clean.instructions,
                deadline=deadline))
        except RowRefused as exc:  # a TemplateRefused for the template itself goes up
            refused.append((r.number, str(exc)))
            if monotonic() > deadline:
                break
    if refused:
        raise RowsRefused(refused, label)
    return built


def _row_label(data: dict, rows: Optional[list]) -> str:
    """How a person names one entry: titles typed in the form, or rows of a file or the API."""
    return "Title" if rows is None and not isinstance(data.get("rows"), list) else "Row"


def validate(data: dict, rows: Optional[list] = None) -> BatchInput:
    """Check a submission, including the prompt the template makes for every row; Invalid
    names every field at fault."""
    clean, errors = _validate_fields(data, rows)
    if clean is None:
        raise Invalid(errors.fields, "The batch was not created; see fields.")
    label = _row_label(data, rows)
    try:
        _prompts(clean, label)
    except RowsRefused as exc:
        field = "template_id" if label == "Title" else "rows"
        for number, why in exc.rows[:20]:
            errors.add(field, f"{label} {number}: {why}")
        if len(exc.rows) > 20:
            errors.add(field, f"… and {len(exc.rows) - 20:,} more.")
    except TemplateRefused as exc:
        errors.add("template_id", str(exc))
    if errors:
        raise Invalid(errors.fields, "The batch was not created; see fields.")
    return clean


def submit(user: User, data: dict, rows: Optional[list] = None) -> Submission:
    """Validate, store the batch and its articles in one transaction, then dispatch."""
    if user.role == Role.VIEWER:
        raise NotAllowed("Viewers cannot submit batches.")
    clean = validate(data, rows)
    batch = _create(user, clean)
    audit.record("batch_submitted", user=user, target=f"batch:{batch.id}",
                 detail=f"{batch.name} ({batch.total} articles, {batch.provider}, {batch.model})")
    return Submission(batch, dispatch(batch.id))


def _create(user: User, clean: BatchInput, template_text: Optional[str] = None) -> Batch:
    now = utcnow()
    batch = Batch(user_id=user.id, name=clean.name, provider=provider_label(current_app.config),
                  model=clean.model, target_words=clean.target_words, tone=clean.tone,
                  language=clean.language, instructions=clean.instructions,
                  budget_usd=(clean.budget_usd if clean.budget_usd is not None
                              else current_app.config.get("DEFAULT_BUDGET_USD")),
                  template_id=clean.template_id,
                  template_text=(template_text if template_text is not None
                                 else templates.text_for(clean.template_id)),
                  webhook_url=clean.webhook_url,
                  total=len(clean.rows), status=B.QUEUED, created_at=now)
    db.session.add(batch)
    db.session.flush()
    # One multi-row INSERT; each article gets its Celery task id before it is enqueued.
    db.session.execute(insert(Article), [
        {"batch_id": batch.id, "position": i, "title": row.title, "status": A.QUEUED,
         "task_id": str(uuid.uuid4()), "created_at": now, "updated_at": now,
         "keywords": row.keywords or None, "notes": row.notes or None,
         "tone": row.tone or None, "language": row.language or None,
         "target_words": row.words}
        for i, row in enumerate(clean.rows, 1)
    ])
    db.session.commit()
    return batch


def dispatch(batch_id: int) -> Optional[str]:
    """Send the batch's queued articles, after the commit; returns an error or None.

    Small batches are published here; a large one is handed to a worker in one message,
    so the request returns at once whatever the size.
    """
    total = db.session.scalar(select(Batch.total).where(Batch.id == batch_id)) or 0
    if total <= current_app.config["DISPATCH_INLINE_MAX"]:
        return publish.publish_batch(batch_id)
    return publish.send(batch_id, lambda: dispatch_batch.apply_async((batch_id,)))


def create_copy(user: User, batch: Batch) -> Batch:
    """Store and send a copy of a batch: same titles, per-row settings, template text.

    The webhook URL is kept only for those who may see it (the author, an admin): it may
    carry a receiver's secret, and a copy by anyone else would also send them the payload."""
    articles = db.session.scalars(select(Article).where(Article.batch_id == batch.id)
                                  .order_by(Article.position)).all()
    rows = [Row(number=a.position, title=a.title, keywords=a.keywords or "", tone=a.tone or "",
                words=a.target_words, language=a.language or "", notes=a.notes or "")
            for a in articles]
    clean = BatchInput(name=f"{batch.name} (copy)"[:200], rows=rows, model=batch.model,
                       target_words=batch.target_words, tone=batch.tone,
                       language=batch.language, instructions=batch.instructions,
                       budget_usd=batch.budget_usd, template_id=batch.template_id,
                       webhook_url=batch.webhook_url if can_manage(user, batch) else None)
    copy = _create(user, clean, template_text=batch.template_text)
    dispatch(copy.id)
    return copy


def redispatch(user: User, batch: Batch) -> Outcome:
    """Send a batch's queued articles again (after the queue was unreachable)."""
    if not can_manage(user, batch):
        raise NotAllowed("Only the batch's author or an admin can dispatch it.")
    if batch.is_final:
        raise Conflict("This batch has already finished.")
    audit.record("batch_dispatched", user=user, target=f"batch:{batch.id}")
    return Outcome.sent("The batch was sent to the queue.", dispatch(batch.id), "info")


def pause_batch(user: User, batch: Batch) -> None:
    """Stop sending the batch's articles; running ones finish, queued ones wait."""
    if not can_manage(user, batch):
        raise NotAllowed("Only the batch's author or an admin can pause it.")
    if batch.is_final:
        raise Conflict("This batch has already finished.")
    if batch.status == B.CANCELLING:
        raise Conflict("This batch is being cancelled.")
    if lifecycle.pause_batch(batch.id, f"Paused by {user.email}.", by="user"):
        audit.record("batch_paused", user=user, target=f"batch:{batch.id}")


def resume_batch(user: User, batch: Batch) -> Outcome:
    """Continue a paused batch where it stopped."""
    if not can_manage(user, batch):
        raise NotAllowed("Only the batch's author or an admin can resume it.")
    if batch.status != B.PAUSED:
        raise Conflict("This batch is not paused.")
    if batch.paused_by == "provider" and user.role != Role.ADMIN:
        raise NotAllowed("The provider circuit breaker paused this batch; an admin resumes it "
                         "once the key or quota problem is fixed.")
    by_breaker = batch.paused_by == "provider"
    resumed = lifecycle.resume_batch(batch.id, commit=False)
    if resumed and by_breaker:
        # The articles the breaker failed failed for the key or quota an admin has now
        # fixed: they are sent again with the rest, under new task ids (the old ids'
        # results say SUCCESS, which must not leak into the progress).
        tripped = db.session.scalars(select(Article.id).where(
            Article.batch_id == batch.id, Article.status == A.FAILED,
            Article.note == lifecycle.BREAKER_NOTE)).all()
        lifecycle.requeue_many(tripped, "Sent again when the batch was resumed.",
                               from_states=(A.FAILED,), commit=False)
    db.session.commit()
    if not resumed:
        return Outcome("The batch is resumed.", "info")
    audit.record("batch_resumed", user=user, target=f"batch:{batch.id}")
    try:
        ratelimit.probe_reset(get_redis(), batch.id)  # probe the provider afresh
    except redis.RedisError as exc:
        log.warning("could not reset the provider probe: %s", exc)
    # Queued articles whose messages were consumed while paused need new ones; sending an
    # article twice is harmless.
    error = dispatch(batch.id)
    lifecycle.finalize_batch(batch.id)
    return Outcome.sent("The batch is resumed.", error, "info")


def requeue(user: User, batch: Batch, include_failed: bool = False) -> int:
    """Send the batch's queued articles again; optionally give failed ones another try."""
    if not can_manage(user, batch):
        raise NotAllowed("Only the batch's author or an admin can requeue it.")
    if include_failed:
        failed = db.session.scalars(select(Article.id).where(
            Article.batch_id == batch.id, Article.status == A.FAILED)).all()
        if lifecycle.requeue_many(failed, "Re-queued by an operator.", from_states=(A.FAILED,),
                                  commit=False):
            lifecycle.reopen_batch(batch.id, keep_stop=True, commit=False)
        db.session.commit()
    count = db.session.scalar(select(func.count()).where(Article.batch_id == batch.id,
                                                         Article.status == A.QUEUED))
    audit.record("batch_dispatched", user=user, target=f"batch:{batch.id}",
                 detail=f"requeued {count} articles")
    error = publish.publish_batch(batch.id)
    if error:
        raise Conflict(error)
    return count


@dataclass
class ImportCheck:
    """A checked import, as the form shows it, with the estimate of what it would cost.

    Nothing is stored: `text` (the decoded file) and `filename` travel back with the
    confirming post, where the file is checked again."""
    filename: str
    rows: list[Row]
    file_error: Optional[str]
    row_errors: list[tuple[int, str]]
    missing_columns: list[str]
    ignored_columns: list[str]
    text: str
    estimate: Optional[pricing.Estimate] = None
    # The person confirmed a checked file, and it still passes: store it.
    confirmed: bool = False

    @property
    def ok(self) -> bool:
        return self.file_error is None and not self.row_errors and bool(self.rows)


def preflight_upload(filename: str, stream, data: dict) -> ImportCheck:
    """Check an uploaded file; reads at most one byte past the limit."""
    limit = current_app.config["IMPORT_MAX_BYTES"]
    raw = stream.read(limit + 1)
    pre = imports.parse_file(filename, raw, max_bytes=limit,
                             max_rows=current_app.config["IMPORT_MAX_ROWS"],
                             max_title_length=current_app.config["MAX_TITLE_LENGTH"])
    return _with_estimate(filename, pre, data)


def preflight_text(filename: str, text: str, data: dict) -> ImportCheck:
    """Check an import again when it is confirmed: nothing from the page is trusted."""
    check = preflight_upload(filename or "import.csv", io.BytesIO(text.encode("utf-8")), data)
    check.confirmed = check.ok
    return check


def check_import(data: dict, upload=None) -> Optional[ImportCheck]:
    """The import the new-batch form carries, checked; None when it has typed titles.

    A new file is only checked and shown, nothing is stored; a confirmed one (its text came
    back with the form) is checked again, and `confirmed` if it still passes."""
    if upload is not None and upload.filename:
        return preflight_upload(upload.filename, upload.stream, data)
    if data.get("import_text"):
        return preflight_text(data.get("import_name", ""), data["import_text"], data)
    return None


def _with_estimate(filename: str, pre: imports.Preflight, data: dict) -> ImportCheck:
    estimate = None
    if pre.ok:
        try:
            estimate = _estimate(dict(data, name=data.get("name") or "import"), pre.rows)
        except RowsRefused as exc:
            # A row whose values take the template over its budget is a problem of that row.
            pre.row_errors.extend(exc.rows)
        except TemplateRefused as exc:
            pre.file_error = str(exc)
    return ImportCheck(filename=filename, rows=pre.rows, file_error=pre.file_error,
                       row_errors=pre.row_errors, missing_columns=pre.missing_columns,
                       ignored_columns=pre.ignored_columns, text=pre.text, estimate=estimate)


def estimate_for(data: dict, rows: Optional[list] = None) -> Optional[pricing.Estimate]:
    """Tokens and cost of what the new-batch form holds now, or None if it is not complete.

    The estimate renders every row, as the workers will: Invalid (on template_id) says
    why the chosen template cannot make the prompts."""
    try:
        return _estimate(data, rows)
    except TemplateRefused as exc:
        raise Invalid({"template_id": str(exc)}) from exc


def _estimate(data: dict, rows: Optional[list] = None) -> Optional[pricing.Estimate]:
    """As estimate_for; raises TemplateRefused, or RowsRefused naming the rows."""
    clean, _ = _validate_fields(data, rows)
    if clean is None:
        return None
    prompts = _prompts(clean, _row_label(data, rows))
    return pricing.estimate(current_app.config, current_provider(), clean.model, prompts)


def webhook_deliveries(batch_id: int):
    return webhooks.deliveries(batch_id)


def can_manage(user: User, batch: Batch) -> bool:
    return user.role == Role.ADMIN or (user.role == Role.EDITOR and batch.user_id == user.id)


def cancel_batch(user: User, batch: Batch) -> None:
    """Stop a batch: queued articles never start, running ones stop within a second."""
    if not can_manage(user, batch):
        raise NotAllowed("Only the batch's author or an admin can cancel it.")
    if batch.is_final:
        return
    # The flag goes first: a task that claims an article after this looks at it before
    # sending anything to the provider.
    _flag(lambda client: live.flag_batch_cancelled(client, batch.id))
    lifecycle.request_cancel_batch(batch.id, commit=False)
    queued_ids = db.session.scalars(
        select(Article.task_id).where(Article.batch_id == batch.id, Article.status == A.QUEUED)
    ).all()
    lifecycle.cancel_queued(batch.id, commit=False)
    lifecycle.request_cancel_running(batch.id, commit=False)
    audit.record("batch_cancelled", user=user, target=f"batch:{batch.id}",
                 detail=f"{len(queued_ids)} queued articles cancelled", commit=False)
    db.session.commit()
    _revoke(queued_ids)
    lifecycle.finalize_batch(batch.id)


def cancel_article(user: User, article: Article) -> None:
    batch = article.batch
    if not can_manage(user, batch):
        raise NotAllowed("Only the batch's author or an admin can cancel its articles.")
    if article.is_final:
        return
    _flag(lambda client: live.flag_articles_cancelled(client, [article.id]))
    audit.record("article_cancelled", user=user, target=f"article:{article.id}",
                 detail=article.title[:200])
    if article.status == A.QUEUED:
        lifecycle.mark_cancelled(article.id)
        _revoke([article.task_id])
    else:
        lifecycle.request_cancel_article(article.id)
    lifecycle.finalize_batch(batch.id)


def _flag(write) -> None:
    """Set a cancel flag; with Redis down the database status still stops the work
    (a task sees it when it starts or renews its lease), only more slowly."""
    try:
        write(get_redis())
    except redis.RedisError as exc:
        log.warning("could not set a cancel flag in Redis: %s", exc)


def _revoke(task_ids: list[str]) -> None:
    """A courtesy to workers: the task checks the database and the flag anyway."""
    if not task_ids:
        return
    try:
        current_app.extensions["celery"].control.revoke(task_ids)
    except Exception as exc:
        log.info("revoke failed (harmless, tasks check the cancel flag): %s", exc)


@dataclass
class BatchFilter:
    """The dashboard's filters; they live in the URL so a view can be bookmarked."""
    status: str = ""
    author: str = ""
    since: Optional[date] = None
    until: Optional[date] = None
    q: str = ""

    @classmethod
    def from_args(cls, args) -> "BatchFilter":
        def day(name):
            try:
                return date.fromisoformat(args.get(name, ""))
            except ValueError:
                return None
        status = args.get("status", "")
        return cls(status=status if status in B.FINAL + (B.QUEUED, B.RUNNING, B.PAUSED,
                                                         B.CANCELLING) else "",
                   author=args.get("author", "").strip()[:255], since=day("since"),
                   until=day("until"), q=args.get("q", "").strip()[:200])

    def args(self) -> dict:
        out = {"status": self.status, "author": self.author, "q": self.q,
               "since": self.since.isoformat() if self.since else "",
               "until": self.until.isoformat() if self.until else ""}
        return {k: v for k, v in out.items() if v}

    def conditions(self) -> list:
        conds = []
        if self.status:
            conds.append(Batch.status == self.status)
        if self.author:
            conds.append(Batch.user_id.in_(select(User.id).where(
                func.lower(User.email).contains(self.author.lower(), autoescape=True))))
        if self.since:
            conds.append(Batch.created_at >= datetime.combine(self.since, time.min))
        if self.until and self.until < date.max:  # the day after date.max does not exist
            conds.append(Batch.created_at < datetime.combine(self.until, time.min) + timedelta(days=1))
        if self.q:
            needle = self.q.lower()
            conds.append(or_(func.lower(Batch.name).contains(needle, autoescape=True),
                             Batch.id.in_(_batches_with_title(needle))))
        return conds


def _batches_with_title(needle: str):
    """Ids of batches with an article whose title contains `needle` (lower case).

    Both databases answer from an index (revision 0007): SQLite's trigram FTS5 table
    serves LIKE for three characters or more; PostgreSQL's pg_trgm index on lower(title).
    """
    if db.engine.dialect.name == "sqlite" and len(needle) >= 3 and not any(
            c in needle for c in "%_\\"):
        # No ESCAPE clause here: with one, FTS5 would not use its index.
        matching = (text("SELECT rowid FROM article_titles_fts WHERE title LIKE :pattern")
                    .bindparams(pattern=f"%{needle}%").columns(rowid=Integer))
        return select(Article.batch_id).where(Article.id.in_(matching.subquery().select()))
    return select(Article.batch_id).where(
        func.lower(Article.title).contains(needle, autoescape=True))


def page_of_batches(page: int, per_page: int, flt: Optional[BatchFilter] = None):
    """Newest first, with done counts per batch in the same query."""
    conds = (flt or BatchFilter()).conditions()
    done = (select(func.count()).where(Article.batch_id == Batch.id,
                                       Article.status.in_(A.FINAL))
            .correlate(Batch).scalar_subquery())
    total = db.session.scalar(select(func.count()).select_from(Batch).where(*conds))
    # The author comes in the same statement: the polled table shows each batch's.
    rows = db.session.execute(
        select(Batch, done).options(joinedload(Batch.user)).where(*conds)
        .order_by(Batch.created_at.desc(), Batch.id.desc())
        .limit(per_page).offset((page - 1) * per_page)).all()
    return rows, total
