"""A batch page's poll: the progress partial rendered once a tick and shared by every
viewer through Redis (pollcache), with what each viewer may do checked per request.

A poll that renders costs what reading the batch's progress costs (services/progress.py);
the other polls of the tick cost at most one Redis round trip and no SQL.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Callable, Optional

import redis
from flask_babel import gettext as _

from ..models import BatchStatus as B, User
from . import pollcache
from .control import can_manage
from .errors import NotFound
from .progress import ARTICLES_PER_PAGE, BatchActions, BatchFacts, BatchView, actions, batch_view


# Renders the progress partial of a BatchView for every viewer alike: (summary, updates).
Render = Callable[[BatchView, int, int], tuple[str, str]]


@dataclass(frozen=True)
class BatchPoll:
    """A poll's answer: a render shared by every viewer, and what this user may do."""
    shared: Optional[pollcache.Shared]
    # The viewer has `shared` already, or something newer (then `shared` is None).
    unchanged: bool = False
    can_manage: bool = False
    facts: Optional[BatchFacts] = None
    actions: Optional[BatchActions] = None  # only when the status is no longer `seen`
    # For the page's polite live region: said once, by the poll that first sees the batch
    # finished, failed, cancelled or paused (the next poll's `seen` is that status).
    announcement: Optional[str] = None

    @property
    def is_final(self) -> bool:
        return self.facts is not None and self.facts.is_final


def batch_poll(user: User, batch_id: int, since: Optional[datetime], first: int, last: int,
               seen_status: str, render: Render) -> BatchPoll:
    """A poll of a batch's page: the summary and the article rows that changed since
    `since`, from this tick's shared render when there is one; nothing when the viewer
    already has it; the buttons again only when the status is no longer `seen_status`."""
    last = min(last, first + ARTICLES_PER_PAGE)
    if since is None:  # not what a page sends (a first look): read for this poll alone
        return _answer(user, _render(batch_id, None, first, last, render), seen_status)
    w = pollcache.window(since)
    try:
        shared, claimed, previous = pollcache.lookup(batch_id, first, last, w)
    except redis.RedisError:
        # As before there was a cache: counts from the database, no live words.
        return _answer(user, _render(batch_id, w.start, first, last, render, with_live=False),
                       seen_status)
    if claimed:
        shared = _render(batch_id, w.start, first, last, render)
        pollcache.store(batch_id, first, last, w, shared)
    elif shared is None:
        # Another poll is making this tick's render: the previous tick's will do if it is
        # newer than what this viewer has; else nothing is new for it until the next tick.
        shared = previous
    if shared is None:
        return BatchPoll(None, unchanged=True)
    # A viewer who has this render (or a newer one) is told nothing is new; a finished
    # batch is always sent whole, so that its 286 stops the polling.
    if since >= shared.read_at and shared.facts["status"] not in B.FINAL:
        return BatchPoll(shared if since == shared.read_at else None, unchanged=True)
    return _answer(user, shared, seen_status)


def _render(batch_id: int, since: Optional[datetime], first: int, last: int, render: Render,
            with_live: bool = True) -> pollcache.Shared:
    view = batch_view(batch_id, since, with_rows=True, first=first, last=last,
                      with_live=with_live)
    if view is None:
        raise NotFound(_("No batch %(id)s.", id=batch_id))
    summary, updates = render(view, first, last)
    return pollcache.Shared(datetime.fromisoformat(view.rendered_at),
                            asdict(BatchFacts.of(view.batch)), summary, updates)


def _answer(user: User, shared: pollcache.Shared, seen_status: str) -> BatchPoll:
    """Checked for this user on every poll, never kept: the buttons they may use."""
    facts = BatchFacts(**shared.facts)
    changed = seen_status != facts.status
    return BatchPoll(shared, can_manage=can_manage(user, facts), facts=facts,
                     actions=actions(user, facts) if changed else None,
                     announcement=announcement(facts) if changed and seen_status else None)


def announcement(facts: BatchFacts) -> Optional[str]:
    """What a screen reader is told when a batch reaches this status, or None."""
    if facts.status == B.SUCCEEDED:
        return _("Batch “%(name)s” finished: every article was written.", name=facts.name)
    if facts.status == B.FAILED:
        return _("Batch “%(name)s” finished, but some articles failed.", name=facts.name)
    if facts.status == B.CANCELLED:
        return _("Batch “%(name)s” was cancelled.", name=facts.name)
    if facts.status == B.PAUSED:
        return _("Batch “%(name)s” is paused.", name=facts.name)
    return None
