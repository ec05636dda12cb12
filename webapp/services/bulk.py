"""Bulk actions: approve, reject, regenerate, retry, cancel, export or publish many rows at once, on
the dashboard (a row is a batch: the action applies to its articles) or the review queue
(a row is an article). This module is what a selection is; acting on a confirmed one is
bulk_actions.py's.

`plan`: the selection (rows picked, or every row matching the page's filter, found here
from the filter and never from a count the browser sent) becomes the exact list of items
to act on, with what will be skipped and why. The list is signed into the confirmation
(this app's key; it expires) and `confirmed` reads it back, so the count confirmed is the
count acted on.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import parse_qsl

from flask import current_app
from flask_babel import gettext as _, ngettext
from itsdangerous import BadData, URLSafeTimedSerializer
from sqlalchemy import and_, select, true
from werkzeug.datastructures import MultiDict

from ..extensions import db
from ..labels import label
from ..models import (Article, ArticleStatus as A, Batch, BatchStatus as B,
                      ReviewStatus as R, User)
from . import exports, publishing, review
from .control import can_manage
from .errors import Invalid, NotAllowed
from .listing import BatchFilter
from .review_queue import AWAITING, QueueFilter
from .validation import MAX_ID, id_chunks

BATCHES, ARTICLES = "batches", "articles"
APPROVE, REJECT, REGENERATE, RETRY, CANCEL, EXPORT, PUBLISH = (
    "approve", "reject", "regenerate", "retry", "cancel", "export", "publish")
# What each page offers: the review queue lists written articles awaiting a decision, so
# nothing there has failed, can be cancelled or is approved (only approved articles are
# ever published).
ACTIONS = {BATCHES: (APPROVE, REJECT, REGENERATE, RETRY, CANCEL, EXPORT, PUBLISH),
           ARTICLES: (APPROVE, REJECT, REGENERATE, EXPORT)}
MAX_REASON = 2000
# A confirmation older than this is refused: what it counted may have changed a lot.
CONFIRM_MAX_AGE = 3600

# An item's outcome: done, or why it was skipped (also the keys of skipped_detail).
DONE = "done"
NOT_YOURS_BATCHES = "not_yours_batches"
NOT_YOURS_ARTICLES = "not_yours_articles"
FINISHED_BATCHES = "finished_batches"
NOT_AWAITING = "not_awaiting"
NOT_FINISHED = "not_finished"
NOT_APPROVED = publishing.NOT_APPROVED  # publish: no longer approved when it ran
IN_FLIGHT = publishing.IN_FLIGHT        # publish: already being sent to that destination
NOT_SENT = "not_sent"          # publish: the destination stopped or went, or the date passed
REFUSED_BATCHES = "refused_batches"
REFUSED_ARTICLES = "refused_articles"
GONE = "gone"


# -- what is said -----------------------------------------------------------------------

def question(action: str, count: int, fmt: str = "", options: Optional[dict] = None) -> str:
    """The confirmation's question, with the exact count."""
    if action == PUBLISH:
        return ngettext("Publish %(num)s approved article to %(destination)s?",
                        "Publish %(num)s approved articles to %(destination)s?", count,
                        destination=(options or {}).get("destination", ""))
    if action == APPROVE:
        return ngettext("Approve %(num)s article awaiting review?",
                        "Approve %(num)s articles awaiting review?", count)
    if action == REJECT:
        return ngettext("Reject %(num)s article awaiting review?",
                        "Reject %(num)s articles awaiting review?", count)
    if action == REGENERATE:
        return ngettext("Write %(num)s article again?", "Write %(num)s articles again?", count)
    if action == RETRY:
        return ngettext("Write %(num)s failed article again?",
                        "Write %(num)s failed articles again?", count)
    if action == CANCEL:
        return ngettext("Cancel %(num)s batch?", "Cancel %(num)s batches?", count)
    if fmt == "zip":
        return ngettext("Export %(num)s article as a zip of Markdown files?",
                        "Export %(num)s articles as a zip of Markdown files?", count)
    return ngettext("Export %(num)s article as CSV?", "Export %(num)s articles as CSV?", count)


def consequence(action: str, options: Optional[dict] = None) -> str:
    """What will happen, said before anything runs."""
    if action == PUBLISH:
        return publish_consequence(options or {})
    return {
        APPROVE: _("Each is marked approved by you, and its history says it was done in "
                   "bulk."),
        REJECT: _("Each is marked rejected by you with the reason below, and its history "
                  "says it was done in bulk."),
        REGENERATE: _("Each is written again from scratch (this costs tokens); its current "
                      "text stays available as a version."),
        RETRY: _("Each is sent to be written again (this costs tokens)."),
        CANCEL: _("Queued articles will not be written and running ones stop within a "
                  "second; articles already written are kept."),
        EXPORT: _("The download starts when you confirm; nothing is changed."),
    }[action]


def publish_consequence(options: dict) -> str:
    """What publishing a selection does, with the post status (and date) asked for."""
    if options.get("status") == "future":
        return _("Each goes to the site once, scheduled for %(when)s UTC; an article already "
                 "there is updated, never posted twice. Articles not approved are never sent.",
                 when=options.get("publish_at", "").replace("T", " ").rstrip("Z"))
    return _("Each goes to the site once, as %(status)s; an article already there is "
             "updated, never posted twice. Articles not approved are never sent.",
             status=label("remote", options.get("status", "draft")))


def skip_line(why: str, count: int, future: bool) -> str:
    """Why some items are (future) or were skipped, with how many."""
    if why == NOT_YOURS_BATCHES:
        return (ngettext("%(num)s batch belongs to someone else and will be skipped.",
                         "%(num)s batches belong to someone else and will be skipped.", count)
                if future else
                ngettext("%(num)s batch belongs to someone else and was skipped.",
                         "%(num)s batches belong to someone else and were skipped.", count))
    if why == NOT_YOURS_ARTICLES:
        return (ngettext("%(num)s article is in someone else's batch and will be skipped.",
                         "%(num)s articles are in someone else's batches and will be skipped.",
                         count)
                if future else
                ngettext("%(num)s article is in someone else's batch and was skipped.",
                         "%(num)s articles are in someone else's batches and were skipped.",
                         count))
    if why == FINISHED_BATCHES:
        return (ngettext("%(num)s batch has already finished and will be skipped.",
                         "%(num)s batches have already finished and will be skipped.", count)
                if future else
                ngettext("%(num)s batch had already finished and was skipped.",
                         "%(num)s batches had already finished and were skipped.", count))
    if why == NOT_AWAITING:
        return (ngettext("%(num)s article is not awaiting review and will be skipped.",
                         "%(num)s articles are not awaiting review and will be skipped.", count)
                if future else
                ngettext("%(num)s article was no longer awaiting review and was skipped.",
                         "%(num)s articles were no longer awaiting review and were skipped.",
                         count))
    if why == NOT_FINISHED:
        return (ngettext("%(num)s article is still being written and will be skipped.",
                         "%(num)s articles are still being written and will be skipped.", count)
                if future else
                ngettext("%(num)s article was being written and was skipped.",
                         "%(num)s articles were being written and were skipped.", count))
    if why == NOT_APPROVED:
        return ngettext("%(num)s article was no longer approved and was not sent.",
                        "%(num)s articles were no longer approved and were not sent.", count)
    if why == IN_FLIGHT:
        return ngettext("%(num)s article was being sent already and was skipped.",
                        "%(num)s articles were being sent already and were skipped.", count)
    if why == NOT_SENT:
        return ngettext("%(num)s article could not be sent (the destination was stopped or "
                        "removed, or the scheduled time had passed) and was skipped.",
                        "%(num)s articles could not be sent (the destination was stopped or "
                        "removed, or the scheduled time had passed) and were skipped.", count)
    if why == REFUSED_BATCHES:
        return ngettext("%(num)s batch could not be changed and was skipped.",
                        "%(num)s batches could not be changed and were skipped.", count)
    if why == REFUSED_ARTICLES:
        return ngettext("%(num)s article could not be changed (it changed meanwhile, or its "
                        "batch is being cancelled) and was skipped.",
                        "%(num)s articles could not be changed (they changed meanwhile, or "
                        "their batch is being cancelled) and were skipped.", count)
    return (ngettext("%(num)s selected row no longer exists and will be skipped.",
                     "%(num)s selected rows no longer exist and will be skipped.", count)
            if future else
            ngettext("%(num)s selected row no longer existed and was skipped.",
                     "%(num)s selected rows no longer existed and were skipped.", count))


def skip_lines(skipped: dict[str, int], future: bool) -> list[str]:
    """Every reason in `skipped` that counted something, one line each."""
    return [skip_line(why, count, future) for why, count in sorted(skipped.items()) if count]


# -- the selection ----------------------------------------------------------------------

@dataclass
class Selection:
    """A bulk form as sent: which page, which action, which rows."""
    scope: str
    action: str
    everything: bool  # every row matching the page's filter, not the rows picked
    ids: list[int]
    filter_query: str  # the page's filter, as its URL's query string
    reason: str = ""
    fmt: str = ""
    options: dict = field(default_factory=dict)  # publish: destination, status, date, terms


def _max_items() -> int:
    return current_app.config["BULK_MAX_ITEMS"]


def parse(form) -> Selection:
    """The bulk form, checked; Invalid names each field at fault, and nothing is stored."""
    errors: dict[str, str] = {}
    scope = form.get("scope", "")
    action = form.get("action", "")
    if scope not in ACTIONS:
        errors["scope"] = _("The selection is not valid; pick the rows again.")
    elif action not in ACTIONS[scope]:
        errors["action"] = _("Choose what to do with the selected rows.")
    everything = form.get("select") == "all"
    ids: list[int] = []
    if not everything:
        raw = [value.strip() for value in form.getlist("ids")]
        if not raw:
            errors["ids"] = _("Pick at least one row, or choose every row matching the filter.")
        elif not all(value.isdigit() and 0 < int(value) <= MAX_ID for value in raw):
            errors["ids"] = _("The selection is not valid; pick the rows again.")
        else:
            ids = sorted({int(value) for value in raw})
            if len(ids) > _max_items():
                errors["ids"] = _too_many()
    reason = (form.get("reason") or "").strip() if action == REJECT else ""
    if action == REJECT and not reason:
        errors["reason"] = _("Say why the articles are rejected.")
    elif len(reason) > MAX_REASON:
        errors["reason"] = _("The reason may be at most 2,000 characters.")
    fmt = (form.get("fmt") or "csv") if action == EXPORT else ""
    if action == EXPORT and fmt not in exports.SELECTION_FORMATS:
        errors["fmt"] = _("Export as CSV or as a zip of Markdown files.")
    options: dict = {}
    if action == PUBLISH and scope in ACTIONS:
        try:
            options = publishing.request_options(
                {key: form.get(key, "") for key in PUBLISH_FIELDS})
        except Invalid as exc:
            errors.update(exc.fields)
    if errors:
        raise Invalid(errors)
    return Selection(scope, action, everything, ids, (form.get("filter") or "")[:2000],
                     reason, fmt, options)


# The publish fields of the bulk form, named as the batch page's publish form names them.
PUBLISH_FIELDS = ("destination", "status", "publish_at", "categories", "tags")


def _too_many() -> str:
    return _("At most %(most)s items can be changed at once; narrow the filter.",
             most=format(_max_items(), ","))


def page_filter(scope: str, query: str) -> dict:
    """The page's filter from its query string, as the page itself reads it (normalised:
    only the filter's own terms)."""
    args = MultiDict(parse_qsl(query))
    found = (BatchFilter.from_args(args) if scope == BATCHES
             else QueueFilter.from_args(args)[0]).args()
    return {key: str(value) for key, value in found.items()}


# -- planning ---------------------------------------------------------------------------

@dataclass
class Plan:
    """A selection resolved on the server: the items to act on, and what is skipped."""
    user_id: int
    scope: str
    action: str
    reason: str
    fmt: str
    filter_text: str  # the selection as text, in English (a record, like the audit log)
    page_args: dict   # the page's filter, to go back to it
    items: list[int]  # article ids; batch ids for cancel
    batches: int      # batches the items are in
    skipped: dict[str, int] = field(default_factory=dict)
    background: bool = False
    token: str = ""
    options: dict = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.items)

    @property
    def question(self) -> str:
        return question(self.action, self.count, self.fmt, self.options)

    @property
    def consequence(self) -> str:
        return consequence(self.action, self.options)

    @property
    def span(self) -> Optional[str]:
        if self.action == CANCEL or not self.items:
            return None
        return ngettext("They are in %(num)s batch.", "They are in %(num)s batches.",
                        self.batches)

    @property
    def skip_lines(self) -> list[str]:
        return skip_lines(self.skipped, future=True)


def plan(user: User, sel: Selection) -> Plan:
    """What `sel` means now, for `user`: the exact items, and the confirmation to sign."""
    if not review.can_review(user):
        raise NotAllowed(_("Viewers cannot change articles."))
    page_args = page_filter(sel.scope, sel.filter_query)
    if sel.scope == BATCHES:
        items, batches, skipped, text = _plan_batches(user, sel, page_args)
    else:
        items, batches, skipped, text = _plan_articles(user, sel, page_args)
    if len(items) > _max_items():
        raise Invalid({"ids": _too_many()})
    found = Plan(user.id, sel.scope, sel.action, sel.reason, sel.fmt, text, page_args, items,
                 batches, {k: v for k, v in skipped.items() if v},
                 background=sel.action != EXPORT
                 and len(items) > current_app.config["BULK_SYNC_LIMIT"],
                 options=sel.options)
    if found.items:
        found.token = _signer().dumps(
            {"u": user.id, "s": found.scope, "a": found.action, "r": found.reason,
             "x": found.fmt, "f": found.filter_text, "p": found.page_args,
             "n": found.batches, "k": found.skipped, "i": pack(found.items),
             "o": found.options})
    return found


def _describe(sel: Selection, page_args: dict) -> str:
    """The selection in words for the record: the filter's terms, or the rows picked."""
    if not sel.everything:
        shown = ", ".join(str(i) for i in sel.ids[:20])
        more = f" and {len(sel.ids) - 20} more" if len(sel.ids) > 20 else ""
        return f"picked {sel.scope} {shown}{more}"
    what = "batches" if sel.scope == BATCHES else "articles awaiting review"
    terms = ", ".join(f"{key}={value}" for key, value in page_args.items())
    return f"all {what} matching {terms}" if terms else f"all {what}"


def _plan_batches(user: User, sel: Selection, page_args: dict):
    if sel.everything:
        conds = BatchFilter.from_args(MultiDict(page_args)).conditions()
        ids = db.session.scalars(select(Batch.id).where(*conds).order_by(Batch.id)
                                 .limit(_max_items() + 1)).all()
        if len(ids) > _max_items():
            raise Invalid({"ids": _too_many()})
    else:
        ids = sel.ids
    rows = [row for chunk in id_chunks(list(ids)) for row in db.session.execute(
        select(Batch.id, Batch.user_id, Batch.status).where(Batch.id.in_(chunk))).all()]
    skipped = Counter({GONE: len(ids) - len(rows)})
    text = _describe(sel, page_args)
    if sel.action in (REGENERATE, RETRY, CANCEL, EXPORT, PUBLISH):  # the author's or an admin's
        allowed = [row for row in rows if can_manage(user, row)]
        skipped[NOT_YOURS_BATCHES] = len(rows) - len(allowed)
    else:  # approve and reject: any editor reviews any article
        allowed = rows
    if sel.action == CANCEL:
        open_ids = [row.id for row in allowed if row.status not in B.FINAL]
        skipped[FINISHED_BATCHES] = len(allowed) - len(open_ids)
        return open_ids, len(open_ids), skipped, text
    which = {APPROVE: AWAITING, REJECT: AWAITING, REGENERATE: Article.status.in_(A.FINAL),
             RETRY: Article.status == A.FAILED, EXPORT: true(),
             PUBLISH: and_(Article.status == A.SUCCEEDED,
                           Article.review_status == R.APPROVED)}[sel.action]
    pairs = []
    for chunk in id_chunks([row.id for row in allowed]):
        pairs += db.session.execute(select(Article.id, Article.batch_id)
                                    .where(Article.batch_id.in_(chunk), which)
                                    .order_by(Article.id).limit(_max_items() + 1)).all()
        if len(pairs) > _max_items():
            raise Invalid({"ids": _too_many()})
    return sorted(a for a, _b in pairs), len({b for _a, b in pairs}), skipped, text


def is_awaiting(status: str, review_status: Optional[str]) -> bool:
    """One article's review_queue.AWAITING: written, and not yet approved or rejected."""
    return status == A.SUCCEEDED and review_status in (None, R.NEEDS_REVIEW)


def _plan_articles(user: User, sel: Selection, page_args: dict):
    columns = select(Article.id, Article.batch_id, Article.status, Article.review_status,
                     Batch.user_id).join(Batch, Batch.id == Article.batch_id)
    if sel.everything:
        flt = QueueFilter.from_args(MultiDict(page_args))[0]
        rows = db.session.execute(columns.where(*flt.conditions()).order_by(Article.id)
                                  .limit(_max_items() + 1)).all()
        if len(rows) > _max_items():
            raise Invalid({"ids": _too_many()})
    else:
        rows = [row for chunk in id_chunks(sel.ids)
                for row in db.session.execute(columns.where(Article.id.in_(chunk))).all()]
    skipped = Counter({GONE: 0 if sel.everything else len(sel.ids) - len(rows)})
    chosen = []
    for row in rows:
        if sel.action in (APPROVE, REJECT):
            why = None if is_awaiting(row.status, row.review_status) else NOT_AWAITING
        elif not can_manage(user, row):
            why = NOT_YOURS_ARTICLES
        elif sel.action == REGENERATE and row.status not in A.FINAL:
            why = NOT_FINISHED
        else:
            why = None
        if why:
            skipped[why] += 1
        else:
            chosen.append(row)
    text = _describe(sel, page_args)
    return (sorted(row.id for row in chosen), len({row.batch_id for row in chosen}), skipped,
            text)


# -- the confirmation -------------------------------------------------------------------

def _signer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt="pressroom.bulk.confirm")


def pack(ids: list[int]) -> list[list[int]]:
    """Sorted ids as [first, last] runs: a batch's articles have consecutive ids, so the
    confirmation of thousands of them stays small."""
    runs: list[list[int]] = []
    for i in sorted(set(ids)):
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return runs


def unpack(runs) -> list[int]:
    ids: list[int] = []
    for first, last in runs:
        ids.extend(range(int(first), int(last) + 1))
    return ids


def confirmed(user: User, token: str) -> Plan:
    """The plan a confirmation was signed for; Invalid when it is not this user's, was
    changed, or is too old."""
    expired = Invalid({"confirm": _("This confirmation has expired or is not valid; choose "
                                    "the rows and the action again.")})
    try:
        data = _signer().loads(token or "", max_age=CONFIRM_MAX_AGE)
    except BadData:
        raise expired from None
    if not isinstance(data, dict) or data.get("u") != user.id:
        raise expired
    items = unpack(data["i"])
    return Plan(user.id, data["s"], data["a"], data["r"], data["x"], data["f"], data["p"],
                items, data["n"], data["k"],
                background=data["a"] != EXPORT
                and len(items) > current_app.config["BULK_SYNC_LIMIT"], token=token,
                options=data.get("o") or {})
