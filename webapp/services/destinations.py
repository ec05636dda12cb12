"""Destinations: the WordPress sites approved articles are published to (admins only).

An admin adds a site (its address, a user and an application password) on the
Destinations page or with `flask destinations add`. The password is encrypted at once
(webapp/crypto.py, a key derived from SECRET_KEY) and never shown again; the page says
"set", or that it can no longer be read (SECRET_KEY changed) and must be entered again.

The address rules of webhooks apply at save time too: an address that is private or local
(by its spelling, or by what its name resolves to) is refused unless PUBLISH_ALLOWED_HOSTS
names it, and plain http only for such named hosts (the password would travel in clear).

*Test connection* asks the site who the user is (`/wp-json/wp/v2/users/me`) and says what
is wrong in words; passing it clears a destination stopped for its credentials.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

from flask import current_app
from flask_babel import gettext as _, lazy_gettext as _l
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from .. import crypto, netguard
from ..extensions import db, get_redis
from ..generation import publishing, publishing_states as states, wordpress
from ..labels import english
from ..models import (Destination, DestinationStatus, Provenance, Publication,
                      PublicationStatus as P, Role, User)
from . import audit
from .errors import Conflict, Invalid, NotAllowed, NotFound

NAME_MAX, URL_MAX, USER_MAX, PASSWORD_MAX = 80, 500, 200, 200


def _admin(user: User) -> None:
    if getattr(user, "role", None) != Role.ADMIN:
        raise NotAllowed(_("Only admins manage destinations."))


@dataclass(frozen=True)
class DestinationView:
    """A destination as the page shows it; never its password."""
    destination: Destination
    readable: bool      # the stored password can be decrypted with this SECRET_KEY
    open_count: int     # publications queued or being sent

    @property
    def needs_credentials(self) -> bool:
        return self.destination.needs_credentials or not self.readable

    @property
    def problem(self) -> Optional[str]:
        """Why it needs credentials, in English as stored (the page translates it)."""
        if not self.readable:
            return publishing.UNREADABLE
        return self.destination.last_error if self.destination.needs_credentials else None


def all_destinations() -> list[DestinationView]:
    rows = db.session.scalars(select(Destination).order_by(Destination.name)).all()
    open_counts = dict(db.session.execute(
        select(Publication.destination_id, func.count())
        .where(Publication.status.in_(P.OPEN)).group_by(Publication.destination_id)).all())
    key = current_app.config["SECRET_KEY"]
    return [DestinationView(d, _readable(d, key), open_counts.get(d.id, 0)) for d in rows]


def _readable(destination: Destination, key: str) -> bool:
    try:
        crypto.decrypt(destination.password_encrypted, key)
    except crypto.Unreadable:
        return False
    return True


def names() -> list[str]:
    return db.session.scalars(select(Destination.name).order_by(Destination.name)).all()


def get(destination_id: int) -> Destination:
    destination = db.session.get(Destination, destination_id)
    if destination is None:
        raise NotFound(_("No destination %(id)s.", id=destination_id))
    return destination


def by_name(name: str) -> Optional[Destination]:
    return db.session.scalar(select(Destination).where(Destination.name == (name or "").strip()))


# -- checking what an admin typed ----------------------------------------------------------

def check_address(raw: str) -> str:
    """The site's address, normalised and allowed by the address rules; Invalid naming
    `url` otherwise. Resolves a host name once (a name may lead inside)."""
    config = current_app.config
    allowed = config["PUBLISH_ALLOWED_HOSTS"]
    if len(raw or "") > URL_MAX:
        raise Invalid({"url": _("The site address is longer than %(max)s characters.",
                                max=URL_MAX)})
    try:
        url = wordpress.normalize_site_url(raw)
    except ValueError:
        raise Invalid({"url": _("Enter the site's address, e.g. https://example.com (the "
                                "address of the WordPress site, not of its admin pages).")})
    try:
        local = netguard.static_refusal(url, allowed)
    except netguard.Refused:
        raise Invalid({"url": _("Enter the site's address, e.g. https://example.com.")})
    if local:
        raise Invalid({"url": _private(local)})
    parts = urlsplit(url)
    port = parts.port or netguard.DEFAULT_PORTS[parts.scheme]
    named = netguard.is_allowed(netguard.normalize_host(parts.hostname or ""), port, allowed)
    if parts.scheme == "http" and not named:
        raise Invalid({"url": _("Use https://: over plain http the application password "
                                "would travel in clear text (plain http is accepted only "
                                "for hosts named in PUBLISH_ALLOWED_HOSTS).")})
    try:
        netguard.check_url(url + "/", allowed, timeout=config["PUBLISH_TIMEOUT"])
    except netguard.Refused as exc:
        raise Invalid({"url": _private(exc.reason)})
    except (OSError, TimeoutError):
        raise Invalid({"url": _("The host of this address could not be found (DNS). Check "
                                "the address.")})
    return url


def _private(why: str) -> str:
    return _("The address is private or local (%(why)s). Publishing cannot reach inside "
             "Pressroom's own network unless PUBLISH_ALLOWED_HOSTS names the host.", why=why)


def _clean(name: str, username: str, password: Optional[str], provenance: str) -> dict:
    errors: dict = {}
    name = (name or "").strip()
    if not name or len(name) > NAME_MAX:
        errors["name"] = _("Give the destination a name of 1 to %(max)s characters.",
                           max=NAME_MAX)
    username = (username or "").strip()
    if not username or len(username) > USER_MAX:
        errors["username"] = _("Enter the WordPress user name (at most %(max)s characters).",
                               max=USER_MAX)
    if password is not None:
        password = password.strip()
        if not password or len(password) > PASSWORD_MAX:
            errors["password"] = _("Enter the application password WordPress showed (24 "
                                   "letters and digits, spaces allowed).")
    if provenance not in Provenance.ALL:
        errors["provenance"] = _("Choose where the provenance note goes: nowhere, a footer "
                                 "or post meta.")
    if errors:
        raise Invalid(errors)
    return {"name": name, "username": username, "password": password,
            "provenance": provenance}


# -- changes ----------------------------------------------------------------------------------

def add(user: User, *, name: str, url: str, username: str, password: str,
        allow_new_terms: bool = False, provenance: str = Provenance.NONE) -> Destination:
    """Store a new destination, its password encrypted; nothing is stored on any error."""
    _admin(user)
    errors: dict = {}
    try:
        clean = _clean(name, username, password, provenance)
    except Invalid as exc:
        errors.update(exc.fields)
        clean = None
    try:
        site = check_address(url)
    except Invalid as exc:
        errors.update(exc.fields)
    if clean and by_name(clean["name"]) is not None:
        errors["name"] = _("A destination named “%(name)s” exists already.", name=clean["name"])
    if errors:
        raise Invalid(errors)
    destination = Destination(
        name=clean["name"], url=site, username=clean["username"],
        password_encrypted=crypto.encrypt(clean["password"], current_app.config["SECRET_KEY"]),
        allow_new_terms=bool(allow_new_terms), provenance=clean["provenance"],
        status=DestinationStatus.OK, created_by=getattr(user, "id", None))
    db.session.add(destination)
    try:
        db.session.flush()
    except IntegrityError:  # the same name added by someone else a moment ago
        db.session.rollback()
        raise Invalid({"name": _("A destination named “%(name)s” exists already.",
                                 name=clean["name"])})
    audit.record("destination_added", user=_who(user), target=f"destination:{destination.id}",
                 detail=f"{destination.name}: {destination.url} as {destination.username}",
                 commit=False)
    db.session.commit()
    return destination


def update(user: User, destination_id: int, *, password: Optional[str] = None,
           allow_new_terms: Optional[bool] = None,
           provenance: Optional[str] = None) -> tuple[Destination, Optional["Check"]]:
    """Change the password (when one is given) and the options. A new password is tested
    at once: the destination goes on only when the site accepts it."""
    _admin(user)
    destination = get(destination_id)
    password = (password or "").strip() or None
    clean = _clean(destination.name, destination.username, password,
                   provenance if provenance is not None else destination.provenance)
    changed = []
    if password:
        destination.password_encrypted = crypto.encrypt(clean["password"],
                                                        current_app.config["SECRET_KEY"])
        changed.append("password")
    if allow_new_terms is not None and bool(allow_new_terms) != destination.allow_new_terms:
        destination.allow_new_terms = bool(allow_new_terms)
        changed.append(f"allow_new_terms={destination.allow_new_terms}")
    if provenance is not None and clean["provenance"] != destination.provenance:
        destination.provenance = clean["provenance"]
        changed.append(f"provenance={destination.provenance}")
    if not changed:
        return destination, None
    audit.record("destination_changed", user=_who(user), target=f"destination:{destination.id}",
                 detail=f"{destination.name}: {', '.join(changed)}", commit=False)
    db.session.commit()
    publishing.forget_destination(get_redis(), destination.id)
    return destination, (test_connection(user, destination.id) if password else None)


def remove(user: User, destination_id: int) -> str:
    """Forget a destination and its publications (the posts stay on the site). Refused
    while a publication is queued or being sent. Returns its name."""
    _admin(user)
    destination = get(destination_id)
    busy = db.session.scalar(select(func.count()).where(
        Publication.destination_id == destination.id, Publication.status.in_(P.OPEN)))
    if busy:
        raise Conflict(_("%(name)s has publications queued or being sent; wait until they "
                         "finish, then remove it.", name=destination.name))
    name = destination.name
    db.session.execute(db.delete(Publication).where(Publication.destination_id == destination.id))
    db.session.delete(destination)
    audit.record("destination_removed", user=_who(user), target=f"destination:{destination_id}",
                 detail=f"{name}: {destination.url}", commit=False)
    db.session.commit()
    publishing.forget_destination(get_redis(), destination_id)
    return name


def _who(user) -> Optional[User]:
    # The CLI's actor is no account: audit.record then names "cli".
    return user if isinstance(user, User) else None


# -- Test connection ------------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    ok: bool
    message: str  # in the page's language (English on the command line)


def test_connection(user: User, destination_id: int) -> Check:
    """Ask the site who the user is; say what is wrong in words. Passing clears a stop for
    credentials; a refused password or a user who may not publish sets one."""
    _admin(user)
    destination = get(destination_id)
    config = current_app.config
    db.session.rollback()  # nothing held open while the site answers
    try:
        password = crypto.decrypt(destination.password_encrypted, config["SECRET_KEY"])
    except crypto.Unreadable:
        states.mark_needs_credentials(destination.id, publishing.UNREADABLE)
        return Check(False, _("The stored application password can no longer be read (the "
                              "SECRET_KEY changed?). Enter it again."))
    client = wordpress.Client(destination.url, destination.username, password,
                              allowed_hosts=config["PUBLISH_ALLOWED_HOSTS"],
                              timeout=config["PUBLISH_TIMEOUT"])
    try:
        me = client.me()
    except wordpress.WPError as err:
        if err.kind in wordpress.CREDENTIALS:
            states.mark_needs_credentials(destination.id, err.message)
        return Check(False, explain(err, config["PUBLISH_TIMEOUT"]))
    who = str(me.get("name") or me.get("slug") or destination.username)[:100]
    capabilities = me.get("capabilities")
    if isinstance(capabilities, dict) and not capabilities.get("publish_posts"):
        problem = english(_l("The user %(name)s may not publish posts (no publish_posts "
                             "capability).", name=who))
        states.mark_needs_credentials(destination.id, problem)
        return Check(False, _("Connected as %(name)s, but this user may not publish posts "
                              "(a role of Author or above is needed).", name=who))
    states.mark_ok(destination.id)
    get_redis().set(publishing.probe_key(destination.id), "ok", ex=publishing.PROBE_TTL)
    return Check(True, _("Connected as %(name)s; this user may publish posts.", name=who))


def explain(err: wordpress.WPError, timeout: float) -> str:
    """What a failed request means, in words for the person who asked."""
    site = err.site_message
    if err.kind == wordpress.AUTH:
        return (_("The application password was rejected (HTTP 401). The site said: "
                  "“%(message)s”", message=site) if site else
                _("The application password was rejected (HTTP 401)."))
    if err.kind == wordpress.FORBIDDEN:
        return (_("This user may not publish posts (HTTP 403). The site said: “%(message)s”",
                  message=site) if site else _("This user may not publish posts (HTTP 403)."))
    if err.kind == wordpress.NOT_FOUND or (err.kind == wordpress.BAD_RESPONSE
                                           and err.code == "not_json"):
        return _("There is no WordPress REST API at this address (/wp-json/ was not found). "
                 "Check the address, and that the REST API is not switched off.")
    if err.kind == wordpress.TIMEOUT:
        return _("The site did not answer in %(seconds)s s.", seconds="{:g}".format(timeout))
    if err.kind == wordpress.REFUSED:
        return _("The address is private or local; Pressroom does not connect to it unless "
                 "PUBLISH_ALLOWED_HOSTS names the host.")
    if err.kind == wordpress.REDIRECT:
        return _("The site redirects (HTTP %(status)s) to %(location)s; enter that address "
                 "instead.", status=err.status, location=err.location[:200] or "?")
    if err.kind == wordpress.TLS:
        return _("The secure connection failed (the site's certificate is not valid for "
                 "this name?).")
    if err.kind == wordpress.CONNECT:
        return _("Could not connect to the site.")
    if err.kind == wordpress.RATE_LIMIT:
        return _("The site asked to slow down (HTTP 429); try again in a moment.")
    if err.kind == wordpress.SERVER:
        return _("The site had an error (HTTP %(status)s); try again later.", status=err.status)
    if err.status:
        return (_("The site refused the request (HTTP %(status)s): “%(message)s”",
                  status=err.status, message=site) if site else
                _("The site refused the request (HTTP %(status)s).", status=err.status))
    return _("The site's answer could not be read.")
