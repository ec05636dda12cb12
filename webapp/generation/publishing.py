"""Publishing approved articles to WordPress: one Celery task per publication, on the
`publishing` queue, exactly once per article and destination.

Exactly once:
- a publication row (services/publishing.py) is unique per article and destination and
  keeps the remote post's id; once it has one, every later publish updates that post;
- before a create is sent, the row records that one is under way (`create_sent_at`); a
  later attempt that finds it set with no post id (the answer was lost: a timeout, a 5xx
  after the site stored the post, the worker killed between the two) looks the post up by
  the marker in its content (`<!-- pressroom:publication:<token> -->`, found through its
  slug, then the site's search) and adopts it instead of creating another;
- the create's answer and the post id are stored by one guarded transition
  (publishing_states.record_sent); the task takes a publication id, acknowledges late, and
  its claim (with a lease renewed before each request) lets only one delivery work on it.

Manners, per destination:
- at most PUBLISH_CONCURRENCY requests in flight across every worker (a leased set in
  Redis, as a batch's places are), and one until a request has succeeded since the
  credentials last changed (the probe): a wrong password costs one request;
- 401 and 403 fail the article with the site's message, stop the destination
  (needs_credentials) and fail its queued publications without a request;
- 429, 5xx, timeouts and lost connections are retried with backoff honouring Retry-After
  (at most PUBLISH_RETRY_MAX s, PUBLISH_MAX_ATTEMPTS attempts); a 429 holds every
  publication of the destination off for that long;
- every request has a deadline (PUBLISH_TIMEOUT) and goes to a checked address
  (wordpress.py, netguard.py).
"""
from __future__ import annotations

import html
import json
import logging
import random
import re
import unicodedata
import uuid
from typing import Optional

from celery import shared_task
from flask import current_app
from sqlalchemy import select

from .. import crypto, installation, metrics
from ..extensions import db, get_redis
from ..models import (Article, ArticleStatus as A, Batch, Destination, Provenance, Publication,
                      PublicationAction, PublicationStatus as P, ReviewStatus as R, User, utcnow)
from ..rendering import render_markdown
from . import publishing_states as states, ratelimit
from .wordpress import CREDENTIALS, NOT_FOUND, RATE_LIMIT, Client, WPError, utc_iso

log = logging.getLogger(__name__)

# A claim's lease outlives one request's deadline by as much again (at least 5 s): it is
# renewed before each request, and the writes after a request fall inside it too, so a live
# worker is never taken over mid-request, and a dead one's publication is sent again soon.
MIN_LEASE_MARGIN = 5.0
PROBE_TTL = 24 * 3600
TERMS_TTL = 600
SLUG_TITLE_CHARS = 60

# Stored in English on the publication (pages translate them: labels.STORED).
STOPPED = ("Stopped: the destination's credentials were rejected; fix them on the "
           "Destinations page, then publish again.")
UNREADABLE = ("The stored application password can no longer be read (SECRET_KEY changed?); "
              "an admin enters it again on the Destinations page.")
NOT_APPROVED = "The article is not approved (any more); nothing was sent."
SCHEDULE_PASSED = ("The scheduled time passed before the post could be sent; publish it "
                   "again with a new time.")
RETRY_LABELS = {"rate_limit": "Rate limited by the site", "server": "The site had an error",
                "timeout": "The site did not answer in time",
                "connect": "Could not connect to the site"}


class _LostClaim(Exception):
    """Another delivery took the publication over (this one was too slow)."""


class TermMissing(Exception):
    def __init__(self, taxonomy: str, name: str):
        kind = "category" if taxonomy == "categories" else "tag"
        super().__init__(f"The {kind} “{name}” does not exist on the site, and this "
                         "destination does not create new categories and tags.")
        self.message = str(self)


# -- what a post is made of (pure) ----------------------------------------------------------

def slugify(text: str) -> str:
    """ASCII letters and digits joined by hyphens (WordPress keeps such a slug as it is)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def post_slug(title: str, article_id: int) -> str:
    """Deterministic for an article: its title's words and its id. WordPress stores a
    draft's slug as given but makes a published or scheduled post's unique ("-2"), so the
    slug alone cannot find a post: the marker in the content does."""
    words = slugify(title)[:SLUG_TITLE_CHARS].strip("-")
    return f"{words}-{article_id}" if words else f"pressroom-{article_id}"


def marker(token: str) -> str:
    # No "--" inside: WordPress's filter (kses) would shorten it and the look-up miss it.
    return f"<!-- pressroom:publication:{token} -->"


_TITLE_LINE = re.compile(r"\A\s*#\s+(?P<title>[^\n]*)\n")


def without_title(body: str, title: str) -> str:
    """The body without its first heading when that heading is the title: WordPress shows
    the title above the content already."""
    found = _TITLE_LINE.match(body or "")
    if found and found["title"].strip().rstrip("#").strip() == title.strip():
        return body[found.end():]
    return body or ""


def provenance_line(model: str, reviewer: Optional[str]) -> str:
    line = f"Written with {model} in Pressroom"
    return line + (f"; reviewed by {reviewer}." if reviewer else ".")


def post_content(body: str, title: str, token: str, *, provenance: str, model: str,
                 reviewer: Optional[str]) -> str:
    """The post's HTML: the article's Markdown rendered and sanitised as the pages show it,
    the provenance footer when the destination wants one, and the marker."""
    content = str(render_markdown(without_title(body, title)))
    if provenance == Provenance.FOOTER:
        content += ('\n<p class="pressroom-provenance"><em>'
                    f"{html.escape(provenance_line(model, reviewer))}</em></p>")
    return content + "\n" + marker(token)


def has_marker(post: dict, token: str) -> bool:
    content = post.get("content")
    texts = [content.get("raw"), content.get("rendered")] if isinstance(content, dict) \
        else [content]
    needle = f"pressroom:publication:{token}"
    return any(isinstance(text, str) and needle in text for text in texts)


def backoff_delay(attempt: int, retry_after: Optional[float], base: float,
                  cap: float) -> float:
    """The site's Retry-After when it gave one (at most `cap`, plus a little jitter so that
    workers do not return in step); otherwise exponential backoff with jitter."""
    if retry_after is not None:
        wait = min(cap, retry_after)
        return round(wait + random.uniform(0, min(1.0, 0.1 + wait * 0.1)), 2)
    delay = min(cap, base * (2 ** (attempt - 1)))
    return round(delay * (0.5 + random.random() / 2), 2)


def term_matches(term: dict, name: str) -> bool:
    wanted = name.strip().casefold()
    found = html.unescape(str(term.get("name", ""))).strip().casefold()
    return found == wanted or (bool(slugify(name)) and term.get("slug") == slugify(name))


def lease_seconds(timeout: float) -> float:
    return timeout + max(MIN_LEASE_MARGIN, timeout)


# -- Redis: places, probe, hold-off, term ids ---------------------------------------------

def _key(kind: str, destination_id: int) -> str:
    return f"{installation.prefix()}publish:{kind}:{destination_id}"


def places_key(destination_id: int) -> str:
    return _key("places", destination_id)


def probe_key(destination_id: int) -> str:
    return _key("probe", destination_id)


def holdoff_key(destination_id: int) -> str:
    return _key("holdoff", destination_id)


def terms_key(destination_id: int, taxonomy: str) -> str:
    return _key(f"terms:{taxonomy}", destination_id)


def forget_destination(redis, destination_id: int) -> None:
    """New credentials or settings: probe again, look terms up again."""
    redis.delete(probe_key(destination_id), terms_key(destination_id, "categories"),
                 terms_key(destination_id, "tags"))


# -- the task ---------------------------------------------------------------------------------

_TO_PUBLISH = (
    select(Publication.status, Publication.action, Publication.wanted, Publication.publish_at,
           Publication.categories, Publication.tags, Publication.remote_id,
           Publication.create_sent_at, Publication.token, Publication.attempts,
           Publication.destination_id, Publication.lease_expires_at,
           Article.id.label("article_id"), Article.title, Article.body,
           Article.status.label("article_status"), Article.review_status,
           Batch.model, User.email.label("reviewer"))
    .join(Article, Article.id == Publication.article_id)
    .join(Batch, Batch.id == Article.batch_id)
    .outerjoin(User, User.id == Article.reviewed_by))


@shared_task(bind=True, name="webapp.publishing.run", max_retries=None, ignore_result=True)
def run(self, publication_id: int) -> dict:
    """Publish (or unpublish) one article on one destination; safe to deliver twice."""
    row = db.session.execute(_TO_PUBLISH.where(Publication.id == publication_id)).one_or_none()
    db.session.rollback()  # no transaction held open while waiting on the site
    if row is None:
        return {"status": "missing"}
    if row.status not in P.OPEN:
        return {"status": row.status}
    if row.status == P.PUBLISHING and row.lease_expires_at and row.lease_expires_at > utcnow():
        return {"status": "skipped"}  # a live delivery holds it
    cfg = current_app.config
    redis = get_redis()
    wait = redis.pttl(holdoff_key(row.destination_id))
    if wait and wait > 0:
        # The site asked every request to wait (429): come back when it said.
        raise self.retry(countdown=wait / 1000 + random.uniform(0, 0.5), max_retries=None)
    lease = lease_seconds(cfg["PUBLISH_TIMEOUT"])
    cap = cfg["PUBLISH_CONCURRENCY"] if redis.get(probe_key(row.destination_id)) else 1
    verdict = ratelimit.acquire_place(redis, places_key(row.destination_id), publication_id,
                                      max(1, cap), lease)
    if not verdict:
        raise self.retry(countdown=random.uniform(0.5, 2.0), max_retries=None)
    # A place already held (2) is another delivery's of this publication: given back only
    # by whoever holds the claim, or it would free a place still in use.
    owner = {"place": verdict == 1}
    try:
        return _with_place(self, publication_id, row, redis, lease, owner)
    finally:
        if owner["place"]:
            redis.zrem(places_key(row.destination_id), publication_id)


def _with_place(task, publication_id: int, row, redis, lease: float, owner: dict) -> dict:
    token = str(uuid.uuid4())
    if not states.claim(publication_id, token, lease):
        return {"status": "skipped"}
    owner["place"] = True
    destination = db.session.get(Destination, row.destination_id)
    db.session.rollback()
    if destination is None or destination.needs_credentials:
        # Read after the place was taken: the request that was refused held it, so its
        # verdict is in; nothing is sent for the rest.
        states.fail(publication_id, token, STOPPED)
        return {"status": P.FAILED, "error": STOPPED}
    if row.action == PublicationAction.PUBLISH and not (
            row.article_status == A.SUCCEEDED and row.review_status == R.APPROVED):
        states.fail(publication_id, token, NOT_APPROVED)
        return {"status": P.FAILED, "error": NOT_APPROVED}
    try:
        password = crypto.decrypt(destination.password_encrypted,
                                  current_app.config["SECRET_KEY"])
    except crypto.Unreadable:
        # The destination is stopped before this publication fails: whoever sees the
        # failure (a page, the API, a test) sees the stop too.
        _stop(destination.id, UNREADABLE)
        states.fail(publication_id, token, UNREADABLE)
        return {"status": P.FAILED, "error": UNREADABLE}
    cfg = current_app.config
    client = _GuardedClient(destination.url, destination.username, password,
                            allowed_hosts=cfg["PUBLISH_ALLOWED_HOSTS"],
                            timeout=cfg["PUBLISH_TIMEOUT"], publication_id=publication_id,
                            token=token, lease=lease, redis=redis,
                            destination_id=destination.id)
    attempt = row.attempts + 1
    try:
        if row.action == PublicationAction.UNPUBLISH:
            result = _unpublish(client, publication_id, token, row)
        else:
            result = _publish(client, publication_id, token, row, destination, redis)
    except _LostClaim:
        return {"status": "skipped"}
    except TermMissing as missing:
        states.fail(publication_id, token, missing.message)
        return {"status": P.FAILED, "error": missing.message}
    except WPError as err:
        return _handle_error(task, err, publication_id, token, destination.id, attempt, redis)
    redis.set(probe_key(destination.id), "ok", ex=PROBE_TTL)
    metrics.count("publications_total", outcome=result["status"])
    return result


class _GuardedClient(Client):
    """A client whose every request first renews the publication's claim (and its place
    in the destination's set): a delivery that lost its claim sends nothing more."""

    def __init__(self, *args, publication_id: int, token: str, lease: float, redis,
                 destination_id: int, **kwargs):
        super().__init__(*args, **kwargs)
        self._claim = (publication_id, token, lease)
        self._redis, self._destination_id = redis, destination_id

    def request(self, method, route, **kwargs):
        publication_id, token, lease = self._claim
        if not states.renew(publication_id, token, lease):
            raise _LostClaim()
        ratelimit.acquire_place(self._redis, places_key(self._destination_id), publication_id,
                                1, lease)  # held already: renews its lease
        return super().request(method, route, **kwargs)


def _publish(client: Client, publication_id: int, token: str, row, destination,
             redis) -> dict:
    if row.wanted == "future" and (row.publish_at is None or row.publish_at <= utcnow()):
        states.fail(publication_id, token, SCHEDULE_PASSED)
        return {"status": P.FAILED, "error": SCHEDULE_PASSED}
    fields = {
        "title": row.title,
        "content": post_content(row.body or "", row.title, row.token,
                                provenance=destination.provenance, model=row.model,
                                reviewer=row.reviewer),
        "status": row.wanted,
    }
    if row.wanted == "future":
        fields["date_gmt"] = utc_iso(row.publish_at)
    if destination.provenance == Provenance.META:
        fields["meta"] = {"pressroom_model": row.model, "pressroom_reviewer": row.reviewer or ""}
    for taxonomy, names in (("categories", row.categories), ("tags", row.tags)):
        wanted = _names(names)
        if wanted:
            fields[taxonomy] = _term_ids(client, redis, destination, taxonomy, wanted)

    remote_id = row.remote_id
    if remote_id is None and row.create_sent_at is not None:
        # An earlier create may have worked without us hearing of it: find that post.
        found = find_existing(client, row.token, post_slug(row.title, row.article_id))
        if found is not None:
            states.adopt(publication_id, token, found["id"], found.get("link"))
            remote_id = found["id"]
            log.info("publication %s: adopted post %s made by a create whose answer was lost",
                     publication_id, remote_id)
    if remote_id is not None:
        try:
            post = client.update_post(remote_id, fields)
        except WPError as err:
            if err.kind != NOT_FOUND:
                raise
            # Deleted for good on the site: this publish makes a new post.
            states.forget_remote(publication_id, token)
            remote_id = None
    if remote_id is None:
        states.note_create(publication_id, token)
        post = client.create_post({**fields, "slug": post_slug(row.title, row.article_id)})
    states.record_sent(publication_id, token, remote_id=post["id"], url=_link(post),
                       remote_status=_status(post))
    return {"status": P.PUBLISHED, "remote_id": post["id"]}


def _unpublish(client: Client, publication_id: int, token: str, row) -> dict:
    if row.remote_id is None:
        states.record_unpublished(publication_id, token, remote_status=None, gone=True)
        return {"status": P.UNPUBLISHED}
    try:
        if row.wanted == "trash":
            post = client.trash_post(row.remote_id)
        else:
            post = client.update_post(row.remote_id, {"status": "draft"})
    except WPError as err:
        if err.kind == NOT_FOUND:
            states.record_unpublished(publication_id, token, remote_status=None, gone=True)
            return {"status": P.UNPUBLISHED, "gone": True}
        if err.code == "rest_already_trashed":
            states.record_unpublished(publication_id, token, remote_status="trash")
            return {"status": P.UNPUBLISHED}
        raise
    states.record_unpublished(publication_id, token, remote_status=_status(post) or row.wanted,
                              url=_link(post))
    return {"status": P.UNPUBLISHED}


def _link(post: dict) -> Optional[str]:
    link = post.get("link")
    return link[:1000] if isinstance(link, str) and link.startswith(("http://", "https://")) \
        else None


def _status(post: dict) -> Optional[str]:
    status = post.get("status")
    return status[:16] if isinstance(status, str) else None


def _names(stored_list: str) -> list[str]:
    try:
        names = json.loads(stored_list or "[]")
    except ValueError:
        return []
    return [n for n in names if isinstance(n, str) and n.strip()]


def find_existing(client: Client, token: str, slug: str) -> Optional[dict]:
    """The post a lost create made, by its marker: among the posts with its slug (a
    draft keeps it as given), else among those the site's search finds for the token."""
    for params in ({"slug": slug}, {"search": token}):
        matches = [p for p in client.find_posts(**params) if has_marker(p, token)]
        if matches:
            return min(matches, key=lambda p: p["id"])
    return None


def _term_ids(client: Client, redis, destination, taxonomy: str, names: list[str]) -> list[int]:
    """The ids of the named terms, looked up (and kept for the run in Redis), created when
    the destination allows it."""
    key = terms_key(destination.id, taxonomy)
    ids = []
    for name in names:
        known = redis.hget(key, name.casefold())
        if known is not None:
            ids.append(int(known))
            continue
        found = _matching_term(client.find_terms(taxonomy, name), name)
        if found is None and slugify(name):
            # WordPress stores "A & B" as "A &amp; B", which its search for "A & B" does not
            # find; the slug ("a-b") does.
            found = _matching_term(client.find_terms(taxonomy, slug=slugify(name)), name)
        if found is None:
            if not destination.allow_new_terms:
                raise TermMissing(taxonomy, name)
            found = client.create_term(taxonomy, name)
        redis.hset(key, name.casefold(), found)
        redis.expire(key, TERMS_TTL)
        ids.append(found)
    return ids


def _matching_term(terms: list[dict], name: str) -> Optional[int]:
    return next((t["id"] for t in terms
                 if isinstance(t.get("id"), int) and term_matches(t, name)), None)


def _stop(destination_id: int, error: str) -> int:
    """The destination needs its credentials fixed: stop it, and fail what waits for it."""
    states.mark_needs_credentials(destination_id, error)
    stopped = states.stop_destination(destination_id, STOPPED)
    get_redis().delete(probe_key(destination_id))
    return stopped


def _handle_error(task, err: WPError, publication_id: int, token: str, destination_id: int,
                  attempt: int, redis) -> dict:
    cfg = current_app.config
    metrics.count("publish_errors_total", kind=err.kind)
    if err.kind in CREDENTIALS:
        stopped = _stop(destination_id, err.message)  # first, as for an unreadable password
        states.fail(publication_id, token, err.message)
        log.warning("publication %s failed and destination %s stopped (%d queued failed "
                    "without a request): %s", publication_id, destination_id, stopped,
                    err.detail)
        return {"status": P.FAILED, "error": err.message}
    max_attempts = cfg["PUBLISH_MAX_ATTEMPTS"]
    if err.retryable and attempt < max_attempts:
        delay = backoff_delay(attempt, err.retry_after, cfg["PUBLISH_RETRY_BASE"],
                              cfg["PUBLISH_RETRY_MAX"])
        if err.kind == RATE_LIMIT:
            # Every publication of this destination waits, not only this one.
            redis.set(holdoff_key(destination_id), "1", px=max(1, int(delay * 1000)))
        note = f"{RETRY_LABELS.get(err.kind, err.kind)} — retry {attempt + 1} of " \
               f"{max_attempts} in {delay:.0f} s"
        if states.release_for_retry(publication_id, token, note):
            raise task.retry(countdown=delay, max_retries=None)
        return {"status": "lost-claim"}
    message = err.message
    if err.retryable:
        message = f"{err.message} Gave up after {attempt} attempts."
    states.fail(publication_id, token, message)
    log.warning("publication %s failed: %s", publication_id, err.detail)
    return {"status": P.FAILED, "error": message}


def send(publication_ids) -> int:
    """Send publications to the `publishing` queue (after the commit); how many."""
    celery = current_app.extensions["celery"]
    sent = 0
    with celery.producer_or_acquire() as producer:
        for publication_id in publication_ids:
            run.apply_async((publication_id,), queue="publishing", producer=producer)
            sent += 1
    return sent
