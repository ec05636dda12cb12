"""The one writer of a publication's and a destination's status (lifecycle.py's sibling).

Each transition is an `UPDATE ... WHERE status IN (its start states)` (for a publication a
worker holds, also the owner's claim token) that says whether it happened; one that loses
a race changes nothing. Each commits at once unless commit=False makes it part of the
caller's transaction. Rows are created (queued, ok) by services/publishing.py and
services/destinations.py; after that nothing else writes `status`
(tests/unit/test_lifecycle.py checks the source tree).

Publications
------------
from                              to           transition            by
--------------------------------  -----------  --------------------  --------------------------
published, failed, unpublished,   queued       request               services.publishing (publish
queued                                                               or unpublish asked again)
queued                            publishing   claim                 the task (the delivery that
publishing, lease lapsed          publishing   claim                 takes it; a new delivery
                                                                     takes over a dead worker's)
publishing (owner)                publishing   renew, note_create,   the task (lease; a create
                                               adopt, forget_remote  about to be sent; the post a
                                                                     lost create made; a post
                                                                     deleted on the site)
publishing (owner)                published    record_sent           the task: the site's answer
                                                                     and its post id, in one step
publishing (owner)                unpublished  record_unpublished    the task
publishing (owner)                queued       release_for_retry     the task (429, 5xx, timeout)
publishing (owner)                failed       fail                  the task
queued                            failed       fail_unclaimed        the task (not approved, the
                                                                     destination stopped)
queued (of a destination)         failed       stop_destination      the task, on 401/403: the
                                                                     rest fail without a request
publishing, lease lapsed          queued       release_lost          the reconciler (the worker
                                                                     died; sent again)
publishing, lease lapsed          failed       fail_lost             the reconciler (too many
                                                                     attempts)

Destinations
------------
ok                                needs_       mark_needs_           the task (401/403, password
                                  credentials  credentials           unreadable), Test connection
needs_credentials, ok             ok           mark_ok               Test connection passed (also
                                                                     after a new password)
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Optional

from sqlalchemy import or_, update

from ..extensions import db
from ..models import (Destination, DestinationStatus as D, Publication,
                      PublicationStatus as P, utcnow)


def _run(stmt, commit: bool) -> int:
    result = db.session.execute(stmt, execution_options={"synchronize_session": False})
    if commit:
        db.session.commit()
    return result.rowcount


def _apply(stmt, commit: bool = True) -> bool:
    return _run(stmt, commit) == 1


_ASKABLE = (P.QUEUED, P.PUBLISHED, P.FAILED, P.UNPUBLISHED)


def request(publication_id: int, *, commit: bool = True, **asked) -> bool:
    """Ask for a publication's work again (publish, or unpublish) with `asked` (action,
    wanted, publish_at, categories, tags, requested_by): back to queued, unless a worker
    holds it now. The remote post id stays: the next publish updates that post."""
    now = utcnow()
    return _apply(update(Publication)
                  .where(Publication.id == publication_id, Publication.status.in_(_ASKABLE))
                  .values(status=P.QUEUED, error=None, note=None, claim_token=None,
                          lease_expires_at=None, attempts=0, requested_at=now, updated_at=now,
                          **asked), commit)


def claim(publication_id: int, token: str, lease_seconds: float) -> bool:
    """Take a queued publication, or one whose worker stopped renewing its lease."""
    now = utcnow()
    return _apply(update(Publication)
                  .where(Publication.id == publication_id,
                         or_(Publication.status == P.QUEUED,
                             (Publication.status == P.PUBLISHING)
                             & (Publication.lease_expires_at < now)))
                  .values(status=P.PUBLISHING, claim_token=token,
                          attempts=Publication.attempts + 1,
                          lease_expires_at=now + timedelta(seconds=lease_seconds), note=None,
                          updated_at=now))


def _owned(publication_id: int, token: str):
    return (Publication.id == publication_id, Publication.claim_token == token,
            Publication.status == P.PUBLISHING)


def renew(publication_id: int, token: str, lease_seconds: float) -> bool:
    """Extend the claim before a request; False when another delivery took it over."""
    return _apply(update(Publication).where(*_owned(publication_id, token))
                  .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds)))


def adopt(publication_id: int, token: str, remote_id: int, url: Optional[str]) -> bool:
    """Keep the id of the post an earlier, lost create made (found by its marker), before
    anything else is sent: a worker that dies now leaves a row that updates that post."""
    return _apply(update(Publication)
                  .where(*_owned(publication_id, token), Publication.remote_id.is_(None))
                  .values(remote_id=remote_id, url=url, updated_at=utcnow()))


def note_create(publication_id: int, token: str) -> bool:
    """A create is about to be sent for a publication with no post id (see
    Publication.create_sent_at)."""
    return _apply(update(Publication)
                  .where(*_owned(publication_id, token), Publication.remote_id.is_(None))
                  .values(create_sent_at=utcnow(), updated_at=utcnow()))


def forget_remote(publication_id: int, token: str) -> bool:
    """The site no longer has the post (deleted for good): the next step creates one."""
    return _apply(update(Publication).where(*_owned(publication_id, token))
                  .values(remote_id=None, url=None, remote_status=None, create_sent_at=None,
                          updated_at=utcnow()))


def record_sent(publication_id: int, token: str, *, remote_id: int, url: Optional[str],
                remote_status: Optional[str]) -> bool:
    """The site's answer to a create or an update: the post's id, address and status are
    stored in the same statement that ends the work, so an answer received is never lost
    between two writes."""
    now = utcnow()
    return _apply(update(Publication).where(*_owned(publication_id, token))
                  .values(status=P.PUBLISHED, remote_id=remote_id, url=url,
                          remote_status=remote_status, published_at=now, error=None,
                          note=None, lease_expires_at=None, updated_at=now))


def record_unpublished(publication_id: int, token: str, *, remote_status: Optional[str],
                       url: Optional[str] = None, gone: bool = False) -> bool:
    """The post is back in draft, or in the trash (or was gone from the site already)."""
    values = {"status": P.UNPUBLISHED, "remote_status": remote_status, "error": None,
              "note": None, "lease_expires_at": None, "updated_at": utcnow()}
    if url:
        values["url"] = url
    if gone:
        values.update(remote_id=None, url=None, create_sent_at=None)
    return _apply(update(Publication).where(*_owned(publication_id, token)).values(**values))


def release_for_retry(publication_id: int, token: str, note: str) -> bool:
    """Back to queued while a retry waits (the same task is sent again with a delay)."""
    return _apply(update(Publication).where(*_owned(publication_id, token))
                  .values(status=P.QUEUED, claim_token=None, lease_expires_at=None,
                          note=note[:300], updated_at=utcnow()))


def _failed(error: str) -> dict:
    return {"status": P.FAILED, "error": error[:2000], "note": None, "lease_expires_at": None,
            "updated_at": utcnow()}


def fail(publication_id: int, token: str, error: str) -> bool:
    return _apply(update(Publication).where(*_owned(publication_id, token))
                  .values(**_failed(error)))


def fail_unclaimed(publication_id: int, error: str) -> bool:
    """Fail a queued publication without sending anything for it."""
    return _apply(update(Publication)
                  .where(Publication.id == publication_id, Publication.status == P.QUEUED)
                  .values(**_failed(error)))


def stop_destination(destination_id: int, error: str) -> int:
    """Every queued publication of the destination fails at once with `error`: after a
    401 or 403 none of them would get further, so none of them is sent. How many."""
    return _run(update(Publication)
                .where(Publication.destination_id == destination_id,
                       Publication.status == P.QUEUED)
                .values(**_failed(error)), True)


def release_lost(publication_id: int, note: str,
                 lapsed_before: Optional[datetime] = None) -> bool:
    """A publication whose worker stopped renewing its lease goes back to the queue; its
    attempts count on, and `create_sent_at` stays, so the next attempt looks for the post
    the dead worker may have made before it creates one."""
    return _apply(update(Publication)
                  .where(Publication.id == publication_id, Publication.status == P.PUBLISHING,
                         Publication.lease_expires_at < (lapsed_before or utcnow()))
                  .values(status=P.QUEUED, claim_token=None, lease_expires_at=None,
                          note=note[:300], updated_at=utcnow()))


def fail_lost(publication_id: int, error: str, lapsed_before: Optional[datetime] = None) -> bool:
    """A publication whose worker died once too often."""
    return _apply(update(Publication)
                  .where(Publication.id == publication_id, Publication.status == P.PUBLISHING,
                         Publication.lease_expires_at < (lapsed_before or utcnow()))
                  .values(**_failed(error)))


# -- destinations --------------------------------------------------------------------------

def mark_needs_credentials(destination_id: int, error: str) -> bool:
    """Stop the destination until someone fixes its credentials. The first reason stays
    (the rest of a batch would say the same). True when this call stopped it."""
    return _apply(update(Destination)
                  .where(Destination.id == destination_id, Destination.status == D.OK)
                  .values(status=D.NEEDS_CREDENTIALS, last_error=error[:2000],
                          checked_at=utcnow()))


def mark_ok(destination_id: int) -> bool:
    """The credentials work (Test connection passed): publishing may go on."""
    return _apply(update(Destination).where(Destination.id == destination_id)
                  .values(status=D.OK, last_error=None, checked_at=utcnow()))
