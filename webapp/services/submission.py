"""Submitting batches: validate, store in one transaction, then dispatch; estimates and
import pre-flight checks (nothing is stored until the editor confirms)."""
from __future__ import annotations

import io
import logging
import uuid
from dataclasses import dataclass
from time import monotonic
from typing import Optional

from flask import current_app
from flask_babel import gettext as _, lazy_gettext as _l, ngettext
from sqlalchemy import func, insert, select, update

from ..generation import economy_requests, lengths, lifecycle, pricing
from ..extensions import db
from ..labels import english, stored
from ..models import (Article, ArticleStatus as A, Batch, BatchMode, BatchStatus as B, Role, User,
                      utcnow)
from ..generation.prompts import ROWS_RENDER_SECONDS, RowRefused, TemplateRefused, build_prompt
from ..generation.provider import provider_label
from . import audit, imports, templates
from .errors import Conflict, Invalid, NotAllowed, Unavailable
from .outcomes import Outcome
from .validation import BatchInput, Errors, Row, title_key, validate_batch
from .control import can_manage, dispatch

log = logging.getLogger(__name__)


@dataclass
class Submission:
    """A stored batch; `dispatch_error` (as the batch records it) says why it is not sent yet."""
    batch: Batch
    dispatch_error: Optional[str] = None

    @property
    def outcome(self) -> Outcome:
        return Outcome.sent(ngettext("Batch “%(name)s” submitted: %(num)d article.",
                                     "Batch “%(name)s” submitted: %(num)d articles.",
                                     self.batch.total, name=self.batch.name),
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
            count, most = format(len(data["rows"]), ","), format(cfg["IMPORT_MAX_ROWS"], ",")
            extra.add("rows", _("%(count)s rows given; a batch takes at most %(most)s.",
                                count=count, most=most))
            rows = []
        else:
            rows, row_errors = imports.check_records(data["rows"], 1, cfg["MAX_TITLE_LENGTH"])
            for number, message in row_errors[:50]:
                extra.add("rows", _("Row %(number)s: %(why)s.", number=number, why=message))
    clean, errors = validate_batch(data, default_model=cfg["OPENAI_MODEL"],
                                   allowed_models=allowed_models(), max_titles=cfg["MAX_TITLES"],
                                   max_title_length=cfg["MAX_TITLE_LENGTH"], rows=rows,
                                   webhook_allowed_hosts=cfg["WEBHOOK_ALLOWED_HOSTS"])
    for name, messages in extra.fields.items():
        for message in messages:
            errors.add(name, message)
    if clean is not None and clean.template_id is not None and \
            templates.usable(clean.template_id) is None:
        errors.add("template_id", _("That template does not exist or is archived."))
    if errors:
        return None, errors
    return clean, errors


class RowsRefused(TemplateRefused):
    """The batch's template cannot make a prompt for some of its rows (over its budget)."""

    def __init__(self, rows: list[tuple[int, str]], label: str):
        first = _named(label, *rows[0])
        more = format(len(rows) - 1, ",")
        super().__init__(_("%(first)s (and %(count)s more)", first=first, count=more)
                         if len(rows) > 1 else first)
        self.rows, self.label = rows, label


def _named(label: str, number: int, why: str) -> str:
    """One entry's problem, named as _row_label names it: “Title 3: …” or “Row 3: …”."""
    if label == "Title":
        return _("Title %(number)s: %(why)s", number=number, why=why)
    return _("Row %(number)s: %(why)s", number=number, why=why)


def _prompts(clean: BatchInput, label: str, template: Optional[str] = None) -> list:
    """Every row's prompt, as the workers will make them, or why the template refuses.

    All rows share one render deadline, so a template that is slow on every row cannot hold
    the request for long whatever the number of rows. Raises TemplateRefused for the
    template itself, RowsRefused (rows named with `label`) for the rows it cannot render.
    `template` is a stored batch's own text; by default, that of the chosen template.
    """
    if template is None:
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
        raise Invalid(errors.fields, _("The batch was not created; see fields."))
    if clean.mode == BatchMode.ECONOMY:
        available, why = economy_requests.availability(current_app.config,
                                              provider_label(current_app.config))
        if not available:
            why = stored(why)
            raise Unavailable({"mode": [why]}, why)
    label = _row_label(data, rows)
    try:
        _prompts(clean, label)
    except RowsRefused as exc:
        field = "template_id" if label == "Title" else "rows"
        for number, why in exc.rows[:20]:
            errors.add(field, _named(label, number, why))
        if len(exc.rows) > 20:
            more = format(len(exc.rows) - 20, ",")
            errors.add(field, _("… and %(count)s more.", count=more))
    except TemplateRefused as exc:
        errors.add("template_id", str(exc))
    if errors:
        raise Invalid(errors.fields, _("The batch was not created; see fields."))
    return clean


# A held batch's pause reason (stored in English).
HELD = _l("Held when it was submitted: nothing is sent until it is resumed.")


def submit(user: User, data: dict, rows: Optional[list] = None, *,
           hold: bool = False) -> Submission:
    """Validate, store the batch and its articles in one transaction, then dispatch.

    A held batch is stored paused and not sent: more rows may be added to it
    (append_rows) until it is resumed, which sends them all."""
    if user.role == Role.VIEWER:
        raise NotAllowed(_("Viewers cannot submit batches."))
    clean = validate(data, rows)
    batch = _create(user, clean)
    audit.record("batch_submitted", user=user, target=f"batch:{batch.id}",
                 detail=f"{batch.name} ({batch.total} articles, {batch.provider}, {batch.model})"
                        + (", held" if hold else ""))
    if hold:
        lifecycle.pause_batch(batch.id, english(HELD), by="user")
        return Submission(batch)
    return Submission(batch, dispatch(batch.id))


@dataclass
class Appended:
    """Rows added to a held batch: their positions, first to last."""
    batch: Batch
    first: int
    last: int


def append_rows(user: User, batch: Batch, records) -> Appended:
    """Add rows to a batch that has not started (held, or paused before any article ran),
    all or none: every row is checked as a new batch's would be, titles against the
    batch's too, and stored in one transaction. They are sent when the batch is resumed."""
    if not can_manage(user, batch):
        raise NotAllowed(_("Only the batch's author or an admin can add rows to it."))
    _check_open_for_rows(batch)
    cfg = current_app.config
    most = cfg["IMPORT_MAX_ROWS"]
    cap = cfg["BATCH_MAX_ARTICLES"]  # what the pieces of IMPORT_MAX_ROWS may add up to
    if not isinstance(records, list) or not records:
        raise Invalid({"rows": [_("Send “rows”: a list of at least one object with a title.")]})
    if len(records) > most:
        count, most = format(len(records), ","), format(most, ",")
        raise Invalid({"rows": [_("%(count)s rows given; one request adds at most %(most)s.",
                                  count=count, most=most)]})
    # Items that are not objects are named as such, as in an imported JSON file.
    rows, problems = imports.check_records(
        [r if isinstance(r, dict) else {"__invalid__": True} for r in records], 1,
        cfg["MAX_TITLE_LENGTH"])
    if problems:
        raise Invalid({"rows": [_("Row %(number)s: %(why)s.", number=n, why=why)
                                for n, why in problems[:50]]},
                      _("No rows were added; see fields."))
    clean = BatchInput(name=batch.name, rows=rows, model=batch.model,
                       target_words=batch.target_words, tone=batch.tone,
                       language=batch.language, instructions=batch.instructions)
    try:
        _prompts(clean, "Row", template=batch.template_text)
    except RowsRefused as exc:
        raise Invalid({"rows": [_named("Row", n, why) for n, why in exc.rows[:20]]},
                      _("No rows were added; see fields.")) from exc
    except TemplateRefused as exc:  # the batch's stored template: no row could be added
        raise Conflict(_("The batch's template cannot make prompts: %(why)s", why=exc)) from exc
    batch_id, added = batch.id, len(rows)
    # The guarded UPDATE comes first: it takes the write lock (SQLite) or the batch's row
    # lock (PostgreSQL), so a resume or another append waits for this one, and what is
    # read below cannot change before the commit.
    grown = db.session.execute(
        update(Batch).where(Batch.id == batch_id, Batch.status == B.PAUSED,
                            Batch.started_at.is_(None), Batch.total + added <= cap)
        .values(total=Batch.total + added)).rowcount
    if grown != 1:
        db.session.rollback()
        db.session.refresh(batch)
        _check_open_for_rows(batch)
        total, more, most = (format(n, ",") for n in (batch.total, added, cap))
        raise Invalid({"rows": [_("The batch has %(total)s articles; with %(added)s more it "
                                  "would pass the most a batch takes, %(most)s.",
                                  total=total, added=more, most=most)]})
    try:
        _refuse_known_titles(batch_id, rows)
    except Invalid:
        db.session.rollback()
        raise
    first = (db.session.scalar(select(func.max(Article.position))
                               .where(Article.batch_id == batch_id)) or 0) + 1
    _insert_articles(batch_id, rows, first, language=clean.language)
    audit.record("batch_submitted", user=user, target=f"batch:{batch_id}",
                 detail=f"{added:,} rows added (positions {first:,}–{first + added - 1:,})",
                 commit=False)
    db.session.commit()
    return Appended(db.session.get(Batch, batch_id), first, first + added - 1)


def _check_open_for_rows(batch: Batch) -> None:
    if batch.status != B.PAUSED or batch.started_at is not None:
        raise Conflict(_("Rows can be added only to a batch that has not started: submit it "
                         "held (“paused”: true), add the rows, then resume it."))


def _refuse_known_titles(batch_id: int, rows: list[Row]) -> None:
    """A title already in the batch is a duplicate, as it is within one submission; the
    batch's titles are read in pieces, so memory does not grow with the batch."""
    new = {title_key(row.title): row.number for row in rows}
    clashes = []
    titles = db.session.execute(select(Article.position, Article.title)
                                .where(Article.batch_id == batch_id)
                                .execution_options(yield_per=2000))
    for position, title in titles:
        number = new.get(title_key(title))
        if number is not None:
            clashes.append((number, position))
    if clashes:
        clashes.sort()
        raise Invalid({"rows": [_("Row %(number)s: duplicate title (same as article "
                                  "%(position)s of the batch).", number=n,
                                  position=format(p, ",")) for n, p in clashes[:50]]},
                      _("No rows were added; see fields."))


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
                  webhook_url=clean.webhook_url, mode=clean.mode,
                  total=len(clean.rows), status=B.QUEUED, created_at=now)
    db.session.add(batch)
    db.session.flush()
    _insert_articles(batch.id, clean.rows, 1, now, language=clean.language)
    db.session.commit()
    return batch


def _insert_articles(batch_id: int, rows: list[Row], first: int, now=None, *,
                     language: str) -> None:
    """One multi-row INSERT; each article gets its Celery task id before it is enqueued,
    and the unit its length will be counted in (its row's language, else the batch's
    `language`), so that its live length shows the right unit from the first word."""
    now = now or utcnow()
    db.session.execute(insert(Article), [
        {"batch_id": batch_id, "position": i, "title": row.title, "status": A.QUEUED,
         "task_id": str(uuid.uuid4()), "created_at": now, "updated_at": now,
         "keywords": row.keywords or None, "notes": row.notes or None,
         "tone": row.tone or None, "language": row.language or None,
         "target_words": row.words,
         "length_unit": lengths.unit_for_language(row.language or language)}
        for i, row in enumerate(rows, first)
    ])


def create_copy(user: User, batch: Batch) -> Batch:
    """Store and send a copy of a batch: same titles, per-row settings, template text.

    The webhook URL is kept only for those who may see it (the author, an admin): it may
    carry a receiver's secret, and a copy by anyone else would also send them the payload."""
    articles = db.session.scalars(select(Article).where(Article.batch_id == batch.id)
                                  .order_by(Article.position)).all()
    rows = [Row(number=a.position, title=a.title, keywords=a.keywords or "", tone=a.tone or "",
                words=a.target_words, language=a.language or "", notes=a.notes or "")
            for a in articles]
    clean = BatchInput(name=_("%(name)s (copy)", name=batch.name)[:200], rows=rows,
                       model=batch.model,
                       target_words=batch.target_words, tone=batch.tone,
                       language=batch.language, instructions=batch.instructions,
                       budget_usd=batch.budget_usd, template_id=batch.template_id,
                       webhook_url=batch.webhook_url if can_manage(user, batch) else None,
                       mode=batch.mode)
    copy = _create(user, clean, template_text=batch.template_text)
    dispatch(copy.id)
    return copy


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
    # How the file was read, and whether the encoding was a guess to check (see imports).
    read_as: str = ""
    unsure: bool = False

    @property
    def ok(self) -> bool:
        return self.file_error is None and not self.row_errors and bool(self.rows)


def preflight_upload(filename: str, stream, data: dict, encoding: str = "") -> ImportCheck:
    """Check an uploaded file, read in `encoding` ("" detects it); reads at most one byte
    past the limit."""
    limit = current_app.config["IMPORT_MAX_BYTES"]
    raw = stream.read(limit + 1)
    pre = imports.parse_file(filename, raw, max_bytes=limit,
                             max_rows=current_app.config["IMPORT_MAX_ROWS"],
                             max_title_length=current_app.config["MAX_TITLE_LENGTH"],
                             encoding=encoding)
    return _with_estimate(filename, pre, data)


def preflight_text(filename: str, text: str, data: dict) -> ImportCheck:
    """Check an import again when it is confirmed: nothing from the page is trusted."""
    check = preflight_upload(filename or "import.csv", io.BytesIO(text.encode("utf-8")), data,
                             "utf-8")
    # The page sent back text, not the file: how the file was read was said before.
    check.read_as, check.unsure = "", False
    check.confirmed = check.ok
    return check


def check_import(data: dict, upload=None) -> Optional[ImportCheck]:
    """The import the new-batch form carries, checked; None when it has typed titles.

    A new file is only checked and shown, nothing is stored; a confirmed one (its text came
    back with the form) is checked again, and `confirmed` if it still passes."""
    if upload is not None and upload.filename:
        return preflight_upload(upload.filename, upload.stream, data,
                                data.get("import_encoding") or "")
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
                       ignored_columns=pre.ignored_columns, text=pre.text, estimate=estimate,
                       read_as=pre.read_as, unsure=pre.unsure)


def economy_availability() -> tuple[bool, str]:
    """Whether the new-batch form may offer economy mode, and why not."""
    return economy_requests.availability(current_app.config, current_provider())


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
    clean = _validate_fields(data, rows)[0]
    if clean is None:
        return None
    prompts = _prompts(clean, _row_label(data, rows))
    return pricing.estimate(current_app.config, current_provider(), clean.model, prompts)
