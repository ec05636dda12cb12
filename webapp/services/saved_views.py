"""Saved views: a person's named filters of the dashboard or the review queue, picked again
from the nav. A view is private: nobody else (not even an admin) sees, follows or deletes it.

What is kept is the filter the page applied, not the text that was sent: only the page's own
filter keys, in a fixed order, each as the page reads it. Keys that pages put in their
addresses without being filters (`page`, `lang`, `csrf_token`; the queue's selected
`article`) and empty values are dropped; any other key, or a value the page would not apply,
is refused with a message naming it, so that a view always shows what its name promises.

A name already used on the same page is refused, not replaced: replacing would lose the other
filter without a word, and a person who wants it gone deletes it first.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping
from urllib.parse import parse_qsl, urlencode

from flask_babel import gettext as _
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from werkzeug.datastructures import MultiDict

from ..extensions import db
from ..models import SavedView, User
from .errors import Conflict, Invalid, NotFound
from .listing import BatchFilter
from .review_queue import QueueFilter

# Saved views per person (all pages together); the nav menu stays short enough to read.
LIMIT = 50
NAME_MAX = 80
# Far past any real filter (the longest fields take 200 and 255 characters), refused before
# it is parsed.
QUERY_MAX = 4000
# In a page's address without being a filter: never saved, never refused.
NOT_FILTERS = frozenset({"page", "lang", "csrf_token"})


@dataclass(frozen=True)
class Page:
    """A page whose filters can be saved: its filter keys in the order they are saved, what
    the page makes of its arguments (the filters it applies, as query arguments, and its own
    messages for values it could not understand, by key), and the other keys of its address
    that are no filter."""
    keys: tuple[str, ...]
    applied: Callable[[Mapping], tuple[dict, dict]]
    not_filters: frozenset = NOT_FILTERS


def _queue_filters(args) -> tuple[dict, dict]:
    flt, errors = QueueFilter.from_args(args)
    return {key: str(value) for key, value in flt.args().items()}, errors


PAGES: dict[str, Page] = {
    "dashboard": Page(("q", "status", "author", "since", "until"),
                      lambda args: (BatchFilter.from_args(args).args(), {})),
    "review": Page(("batch", "author", "flag", "language", "since", "until"), _queue_filters,
                   NOT_FILTERS | {"article"}),
}


def _clean_name(name: str) -> str:
    # Runs of spaces (and line breaks) inside are one space: two names that look the same
    # in the menu are the same name.
    name = " ".join((name or "").split())
    if not name:
        raise Invalid({"name": _("Give the view a name.")})
    if len(name) > NAME_MAX:
        raise Invalid({"name": _("The view's name has %(length)s characters; it can have at "
                                 "most %(max)s.", length=len(name), max=NAME_MAX)})
    return name


def _page(page: str) -> Page:
    found = PAGES.get(page or "")
    if found is None:
        raise Invalid({"page": _("Views can be saved for the batches dashboard and the review "
                                 "queue, not for “%(page)s”.", page=(page or "")[:40])})
    return found


def normalise(page: str, query: str) -> str:
    """The filters of `query` that the page applies, as the query string to keep."""
    spec = _page(page)
    query = (query or "").lstrip("?")
    if len(query) > QUERY_MAX:
        raise Invalid({"query": _("The filter is too long to be saved (at most %(max)s "
                                  "characters).", max=QUERY_MAX)})
    args = MultiDict()
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in spec.not_filters:
            continue
        if key not in spec.keys:
            raise Invalid({"query": _("“%(key)s” is not a filter of this page, so it cannot be "
                                      "saved in a view.", key=key[:40])})
        if value.strip():
            args.add(key, value)
    if not args:
        raise Invalid({"query": _("There is no filter to save: filter the list first, then "
                                  "save it as a view.")})
    applied, errors = spec.applied(args)
    if errors:  # the page's own words for what it could not understand
        raise Invalid(errors)
    for key in args:
        if key not in applied:  # a value the page ignores (an unknown status, a bad date)
            raise Invalid({key: _("The filter “%(key)s” has a value this page does not "
                                  "accept: “%(value)s”.", key=key, value=args[key][:40])})
    return urlencode([(key, applied[key]) for key in spec.keys if key in applied])


def _duplicate(name: str) -> Invalid:
    return Invalid({"name": _("You already have a view named “%(name)s” on this page: choose "
                              "another name, or delete that view first.", name=name)})


def save(user: User, page: str, name: str, query: str) -> SavedView:
    """Keep the page's filter `query` as `user`'s view called `name`; nothing is stored if
    any of it is refused."""
    name = _clean_name(name)
    query = normalise(page, query)
    if db.session.scalar(select(SavedView.id).where(
            SavedView.user_id == user.id, SavedView.page == page, SavedView.name == name)):
        raise _duplicate(name)
    count = db.session.scalar(select(func.count()).select_from(SavedView)
                              .where(SavedView.user_id == user.id))
    if count >= LIMIT:
        raise Conflict(_("You have %(count)s saved views, the most one person can keep: delete "
                         "one to save another.", count=LIMIT))
    view = SavedView(user_id=user.id, page=page, name=name, query=query)
    db.session.add(view)
    try:
        db.session.commit()
    except IntegrityError:  # the same name saved at the same moment from another tab
        db.session.rollback()
        raise _duplicate(name) from None
    return view


def views_of(user: User) -> list[SavedView]:
    """`user`'s saved views, by page and name (one query)."""
    return list(db.session.scalars(select(SavedView).where(SavedView.user_id == user.id)
                                   .order_by(SavedView.page, SavedView.name)))


def delete(user: User, view_id: int) -> str:
    """Delete one of `user`'s own views; its name. Anyone else's is not found, for admins
    too: views are private."""
    view = db.session.get(SavedView, view_id)
    if view is None or view.user_id != user.id:
        raise NotFound()
    name = view.name
    db.session.delete(view)
    db.session.commit()
    return name
