"""Publishing approved articles to a destination, and taking them back (unpublish).

A request names a destination, the post's status (draft by default, pending, future with a
date and time, or publish) and optional categories and tags; it applies to a batch's
approved articles, or to one article. Articles that are not approved are never sent.

Each article gets one publication row per destination (created queued, or asked again:
publishing_states.request), all in one transaction with one audit entry for the request;
after the commit each is sent to the `publishing` queue (generation/publishing.py does the
work, exactly once). The batch page, the article's JSON and the CLI read the rows back.
"""
from __future__ import annotations

import json
import secrets
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Optional

from flask_babel import gettext as _, lazy_gettext as _l, ngettext
from sqlalchemy import func, select

from ..extensions import db
from ..generation import publishing, publishing_states as states
from ..labels import english
from ..models import (Article, ArticleStatus as A, Batch, Destination, Publication,
                      PublicationAction, PublicationStatus as P, ReviewStatus as R, User,
                      utcnow)
from . import audit, destinations
from .control import can_manage
from .errors import Conflict, Invalid, NotAllowed
from .validation import MAX_ID, id_chunks

STATUSES = ("draft", "pending", "future", "publish")
UNPUBLISH_TO = ("draft", "trash")
MAX_TERMS, TERM_MAX = 20, 100
# Articles one API request may pick out of a batch (a batch has at most 10,000 per request).
MAX_SELECTED = 10_000

# An article of the request that was queued, or why it was not (counted, said on the page
# and the API).
QUEUED = "queued"
NOT_APPROVED = "not_approved"
IN_FLIGHT = "in_flight"
NOT_PUBLISHED = "not_published"


@dataclass(frozen=True)
class Asked:
    destination: Destination
    status: str
    publish_at: Optional[datetime]
    categories: list[str]
    tags: list[str]


@dataclass
class Requested:
    """What a request queued: publication ids (sent after the commit) and what it skipped."""
    destination: str
    status: str
    publish_at: Optional[datetime]
    queued: list[int] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    send_error: Optional[str] = None
    # Each article of the request: QUEUED, or why it was skipped (a bulk action's items).
    articles: dict[int, str] = field(default_factory=dict)

    @property
    def message(self) -> str:
        done = ngettext("%(num)s article is being sent to %(destination)s.",
                        "%(num)s articles are being sent to %(destination)s.",
                        len(self.queued), destination=self.destination)
        return done + "".join(" " + skipped_line(why, n) for why, n in sorted(self.skipped.items()))

    def as_json(self) -> dict:
        return {"destination": self.destination, "status": self.status,
                "publish_at": _iso(self.publish_at), "queued": len(self.queued),
                "publications": self.queued, "skipped": dict(self.skipped),
                "queue_error": self.send_error}


def skipped_line(why: str, count: int) -> str:
    if why == NOT_APPROVED:
        return ngettext("%(num)s article is not approved and is not sent.",
                        "%(num)s articles are not approved and are not sent.", count)
    if why == IN_FLIGHT:
        return ngettext("%(num)s article is being sent already.",
                        "%(num)s articles are being sent already.", count)
    return ngettext("%(num)s article is not published there.",
                    "%(num)s articles are not published there.", count)


def _iso(moment: Optional[datetime]) -> Optional[str]:
    return moment.isoformat() + "Z" if moment else None


# -- reading the request ------------------------------------------------------------------

def parse_when(value: Any) -> datetime:
    """An ISO 8601 date and time: with Z or an offset, or without (read as UTC). Naive
    UTC, as every stored time. ValueError when it is not one."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        moment = datetime.fromisoformat(text)
    else:
        raise ValueError("empty")
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.replace(microsecond=0)


def parse_names(value: Any, field_name: str) -> list[str]:
    """Category or tag names: a list of strings, or one string with commas."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = value
    else:
        raise Invalid({field_name: _("Give names as a list of strings, or one string with "
                                     "commas.")})
    names = list(dict.fromkeys(n.strip() for n in items if n.strip()))
    if len(names) > MAX_TERMS:
        raise Invalid({field_name: _("At most %(max)s names.", max=MAX_TERMS)})
    if any(len(n) > TERM_MAX for n in names):
        raise Invalid({field_name: _("A name may be at most %(max)s characters.",
                                     max=TERM_MAX)})
    return names


def read_request(data: dict) -> Asked:
    """The destination, status, date and terms of a publish request (a form or JSON), or
    Invalid naming each field at fault."""
    errors: dict = {}
    name = data.get("destination")
    destination = destinations.by_name(name) if isinstance(name, str) and name.strip() else None
    if destination is None:
        errors["destination"] = (_("No destination is named “%(name)s”.", name=name)
                                 if isinstance(name, str) and name.strip()
                                 else _("Choose a destination."))
    status = data.get("status") or "draft"
    if status not in STATUSES:
        errors["status"] = _("The status is one of: draft, pending, future (scheduled), "
                             "publish.")
    raw_when = data.get("publish_at")
    publish_at = None
    if status == "future":
        try:
            publish_at = parse_when(raw_when)
        except (ValueError, TypeError, OverflowError):
            errors["publish_at"] = _("A scheduled post needs a date and time, e.g. "
                                     "2030-05-01T09:00:00Z (UTC, or with an offset).")
        else:
            if publish_at <= utcnow():
                errors["publish_at"] = _("The date and time must be in the future.")
    elif raw_when not in (None, ""):
        errors["publish_at"] = _("A date and time is only for a scheduled post (status "
                                 "future).")
    terms = {}
    for key in ("categories", "tags"):
        try:
            terms[key] = parse_names(data.get(key), key)
        except Invalid as exc:
            errors.update(exc.fields)
    if errors:
        raise Invalid(errors)
    return Asked(destination, status, publish_at, terms["categories"], terms["tags"])


# -- publish and unpublish ---------------------------------------------------------------

def selected_articles(batch: Batch, value: Any) -> Optional[list[int]]:
    """The API's `articles`: a selection of the batch's articles by id (None: all of
    them). Invalid when it is not a list of ids, or names articles of other batches."""
    if value is None:
        return None
    if (not isinstance(value, list) or not value or len(value) > MAX_SELECTED
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_ID
                       for v in value)):
        raise Invalid({"articles": _("Give the articles as a list of 1 to %(max)s article "
                                     "ids.", max=format(MAX_SELECTED, ","))})
    wanted = sorted(set(value))
    found = set()
    for chunk in id_chunks(wanted):
        found.update(db.session.scalars(select(Article.id).where(
            Article.batch_id == batch.id, Article.id.in_(chunk))))
    strangers = [i for i in wanted if i not in found]
    if strangers:
        raise Invalid({"articles": _("Not articles of this batch: %(ids)s.",
                                     ids=", ".join(map(str, strangers[:10]))
                                     + (" …" if len(strangers) > 10 else ""))})
    return wanted



def _may_publish(user: User, batch: Batch) -> None:
    if not can_manage(user, batch):
        raise NotAllowed(_("Only the batch's author or an admin can publish its articles."))


def _stopped(destination: Destination) -> str:
    return _("%(name)s is stopped: its credentials were rejected. An admin fixes them on the "
             "Destinations page (a new password, then Test connection).", name=destination.name)


def _usable(destination: Destination) -> None:
    if destination.needs_credentials:
        raise Conflict(_stopped(destination))


def request_options(data: dict) -> dict:
    """A publish request checked now, as the plain values a bulk action keeps in its
    confirmation and hands to `publish` when it runs (checked again then). Invalid names
    each field at fault, a stopped destination included."""
    asked = read_request(data)
    if asked.destination.needs_credentials:
        raise Invalid({"destination": _stopped(asked.destination)})
    return {"destination": asked.destination.name, "status": asked.status,
            "publish_at": _iso(asked.publish_at) or "", "categories": asked.categories,
            "tags": asked.tags}


def publish(user: User, batch: Batch, data: dict,
            article_ids: Optional[Iterable[int]] = None, *, record: bool = True,
            strict: bool = True) -> Requested:
    """Queue the batch's approved articles (or those of `article_ids`) for the destination;
    others are skipped and counted. One audit entry (unless `record` is False: a bulk
    action writes its own); the tasks go after the commit. With `strict`, a request that
    queues nothing is a Conflict; without (a bulk action's step), it just says so."""
    _may_publish(user, batch)
    asked = read_request(data)
    _usable(asked.destination)
    article_ids = None if article_ids is None else sorted(set(article_ids))
    where = [Article.batch_id == batch.id]
    if article_ids is not None:
        where.append(Article.id.in_(article_ids))
    articles = db.session.execute(
        select(Article.id, Article.status, Article.review_status, Publication.id.label("pub"),
               Publication.status.label("pub_status"))
        .outerjoin(Publication, (Publication.article_id == Article.id)
                   & (Publication.destination_id == asked.destination.id))
        .where(*where).order_by(Article.position)).all()
    result = Requested(asked.destination.name, asked.status, asked.publish_at)
    values = {"action": PublicationAction.PUBLISH, "wanted": asked.status,
              "publish_at": asked.publish_at, "categories": json.dumps(asked.categories),
              "tags": json.dumps(asked.tags), "requested_by": user.id}
    fresh = []
    for row in articles:
        outcome = QUEUED
        if row.status != A.SUCCEEDED or row.review_status != R.APPROVED:
            outcome = NOT_APPROVED
        elif row.pub is None:
            publication = Publication(article_id=row.id, destination_id=asked.destination.id,
                                      token=secrets.token_hex(16), status=P.QUEUED, **values)
            db.session.add(publication)
            fresh.append(publication)
        elif states.request(row.pub, commit=False, **values):
            result.queued.append(row.pub)
        else:
            outcome = IN_FLIGHT
        result.articles[row.id] = outcome
        if outcome != QUEUED:
            result.skipped[outcome] += 1
    if not fresh and not result.queued:
        if not strict:
            return result
        db.session.rollback()
        if result.skipped[IN_FLIGHT]:
            raise Conflict(_("Every approved article is being sent already."))
        raise Conflict(_("There is no approved article to publish: approve articles first "
                         "(only approved articles are ever sent)."))
    db.session.flush()
    result.queued.extend(p.id for p in fresh)
    if record:
        when = f" at {_iso(asked.publish_at)}" if asked.publish_at else ""
        audit.record("articles_published", user=user,
                     target=f"batch:{batch.id}" if article_ids is None
                     else f"article:{','.join(map(str, article_ids))}"[:100],
                     detail=f"{len(result.queued)} as {asked.status}{when} to "
                            f"{asked.destination.name} ({asked.destination.url}); skipped "
                            f"{dict(result.skipped) or 'none'}", commit=False)
    db.session.commit()
    result.send_error = _send(result.queued)
    return result


def unpublish(user: User, batch: Batch, data: dict,
              article_ids: Optional[Iterable[int]] = None) -> Requested:
    """Move the published posts of the batch (or of `article_ids`) on the destination back
    to draft, or to the trash (`to`: draft or trash). One audit entry."""
    _may_publish(user, batch)
    errors: dict = {}
    name = data.get("destination")
    destination = destinations.by_name(name) if isinstance(name, str) else None
    if destination is None:
        errors["destination"] = _("Choose a destination.")
    to = data.get("to") or "draft"
    if to not in UNPUBLISH_TO:
        errors["to"] = _("Unpublish moves posts to draft or to the trash.")
    if errors:
        raise Invalid(errors)
    _usable(destination)
    article_ids = None if article_ids is None else sorted(set(article_ids))
    where = [Article.batch_id == batch.id, Publication.destination_id == destination.id]
    if article_ids is not None:
        where.append(Article.id.in_(article_ids))
    rows = db.session.execute(select(Publication.id, Publication.status, Publication.remote_id)
                              .join(Article, Article.id == Publication.article_id)
                              .where(*where)).all()
    result = Requested(destination.name, to, None)
    for row in rows:
        if row.remote_id is None or row.status not in (P.PUBLISHED, P.FAILED, P.UNPUBLISHED):
            why = IN_FLIGHT if row.status in P.OPEN else NOT_PUBLISHED
            result.skipped[why] += 1
        elif states.request(row.id, commit=False, action=PublicationAction.UNPUBLISH,
                            wanted=to, requested_by=user.id):
            result.queued.append(row.id)
    if not result.queued:
        db.session.rollback()
        raise Conflict(_("Nothing is published on %(name)s to take back.", name=destination.name))
    audit.record("articles_unpublished", user=user,
                 target=f"batch:{batch.id}" if article_ids is None
                 else f"article:{','.join(map(str, article_ids))}"[:100],
                 detail=f"{len(result.queued)} to {to} on {destination.name} "
                        f"({destination.url})", commit=False)
    db.session.commit()
    result.send_error = _send(result.queued)
    return result


QUEUE_DOWN = _l("The queue (Redis) could not be reached: the publications are stored and are "
                "sent when it is back.")


def _send(publication_ids: list[int]) -> Optional[str]:
    """None, or why the publications wait (in English, as the API says it; pages translate
    it with `stored`). The reconciler sends them when the queue is back."""
    try:
        publishing.send(publication_ids)
    except Exception:  # kombu and redis raise several types for an unreachable broker
        return english(QUEUE_DOWN)
    return None


# -- reading publications back ---------------------------------------------------------------

@dataclass(frozen=True)
class PublicationView:
    id: int
    article_id: int
    destination: str
    status: str
    remote_status: Optional[str]
    remote_id: Optional[int]
    url: Optional[str]
    error: Optional[str]
    note: Optional[str]
    published_at: Optional[datetime]
    action: str
    wanted: str

    def as_json(self) -> dict:
        return {"destination": self.destination, "remote_id": self.remote_id, "url": self.url,
                "status": self.status, "remote_status": self.remote_status,
                "error": self.error, "published_at": _iso(self.published_at)}


_VIEW_COLUMNS = (Publication.id, Publication.article_id, Destination.name, Publication.status,
                 Publication.remote_status, Publication.remote_id, Publication.url,
                 Publication.error, Publication.note, Publication.published_at,
                 Publication.action, Publication.wanted)


def _views(stmt) -> list[PublicationView]:
    return [PublicationView(*row) for row in db.session.execute(
        stmt.join(Destination, Destination.id == Publication.destination_id)
        .order_by(Publication.article_id, Destination.name)).all()]


def of_articles(article_ids: list[int]) -> dict[int, list[PublicationView]]:
    """Publications per article (the API's articles)."""
    out: dict[int, list[PublicationView]] = {}
    if not article_ids:
        return out
    for view in _views(select(*_VIEW_COLUMNS).where(Publication.article_id.in_(article_ids))):
        out.setdefault(view.article_id, []).append(view)
    return out


def of_positions(batch_id: int, first: int, last: int) -> dict[int, list[PublicationView]]:
    """Publications of a batch's articles at positions first..last (a page, an API chunk)."""
    out: dict[int, list[PublicationView]] = {}
    stmt = (select(*_VIEW_COLUMNS).join(Article, Article.id == Publication.article_id)
            .where(Article.batch_id == batch_id, Article.position.between(first, last)))
    for view in _views(stmt):
        out.setdefault(view.article_id, []).append(view)
    return out


def destination_choices() -> list[Destination]:
    """The destinations a publish form offers, by name."""
    return list(db.session.scalars(select(Destination).order_by(Destination.name)))


@dataclass
class BatchPublications:
    """The batch page's publishing area: the form's choices and each article's state."""
    batch_id: int
    can_publish: bool
    destinations: list[Destination]
    approved: int
    counts: dict
    rows: list  # (article id, position, title, [PublicationView]) of the page's articles
    first: int
    last: int

    @property
    def open(self) -> bool:
        return bool(self.counts.get(P.QUEUED) or self.counts.get(P.PUBLISHING))

    @property
    def any(self) -> bool:
        return bool(sum(self.counts.values()))


def batch_publications(user: User, batch: Batch, first: int, last: int) -> BatchPublications:
    approved = db.session.scalar(select(func.count()).where(
        Article.batch_id == batch.id, Article.status == A.SUCCEEDED,
        Article.review_status == R.APPROVED)) or 0
    counts = dict(db.session.execute(
        select(Publication.status, func.count()).join(Article, Article.id == Publication.article_id)
        .where(Article.batch_id == batch.id).group_by(Publication.status)).all())
    views = of_positions(batch.id, first, last)
    rows = []
    if views:
        titles = db.session.execute(select(Article.id, Article.position, Article.title)
                                     .where(Article.id.in_(list(views)))
                                     .order_by(Article.position)).all()
        rows = [(a.id, a.position, a.title, views[a.id]) for a in titles]
    manage = can_manage(user, batch)
    return BatchPublications(batch.id, manage, destination_choices() if manage else [],
                             approved, counts, rows, first, last)


@dataclass
class ArticlePublications:
    """The article page's publishing section: where it is, and the form to send it."""
    article_id: int
    can_publish: bool
    approved: bool
    destinations: list[Destination]
    views: list[PublicationView]


def article_publications(user: User, article: Article) -> ArticlePublications:
    manage = can_manage(user, article.batch)
    return ArticlePublications(
        article.id, manage,
        article.status == A.SUCCEEDED and article.review_status == R.APPROVED,
        destination_choices() if manage else [],
        of_articles([article.id]).get(article.id, []))
