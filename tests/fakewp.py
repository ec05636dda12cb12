"""A local WordPress REST API for tests: posts, categories, tags, users/me, application passwords.

FakeWordPress stands in for a WordPress site (6.x, pretty permalinks) at ``fake.url``: the app
is given that URL as a destination and talks to ``/wp-json/...`` with HTTP Basic
authentication (a user and an application password), exactly as it would to a real site. The
behaviours below were taken from WordPress's own code (wp-includes/user.php, rest-api.php,
post.php, taxonomy.php, formatting.php and the REST posts, terms and meta-fields controllers),
so a client written against this fake also works against a real site.

Endpoints (also reachable as ``/?rest_route=/wp/v2/...``, as on every WordPress)::

    GET  /wp-json/                      index: name, url, namespaces, authentication
    GET  /wp-json/wp/v2/users/me        needs auth (401 rest_not_logged_in); ?context=edit
    GET  /wp-json/wp/v2/posts           slug, status (list or `any`), search, per_page, page,
                                        include, exclude, author, categories, tags, orderby,
                                        order, context, _fields
    POST /wp-json/wp/v2/posts           create (201 + Location)
    GET|POST|PUT|PATCH|DELETE /wp-json/wp/v2/posts/<id>     read, update, trash (?force=true)
    GET|POST /wp-json/wp/v2/categories  and /tags: search, slug, per_page, include; create
    GET|DELETE /wp-json/wp/v2/categories/<id>  and /tags/<id>

Authentication, as WordPress does it
  * Basic ``user:application-password``; the user may be the login or the e-mail address;
    every character but letters and digits is dropped from the password first, so it works
    with or without the spaces it is shown with ("abcd EFGH 1234 ijkl MNOP 5678").
  * A failed application password fails *every* REST request, the public index included,
    with 401: ``incorrect_password`` ("The provided password is an invalid application
    password."; also what an account's *login* password gets: it is no application
    password), ``invalid_username`` / ``invalid_email`` (unknown user),
    ``application_passwords_disabled_for_user``.
  * No credentials: public reads work; ``users/me`` is 401 ``rest_not_logged_in``, a create
    is 401 ``rest_cannot_create``. Logged in without the capability: the same codes with 403
    (``rest_authorization_required_code``): a subscriber gets 403 ``rest_cannot_create``, a
    contributor 403 ``rest_cannot_publish`` for publish/future/private, an author 403
    ``rest_cannot_create`` for a new *category* (tags need only edit_posts) and 403
    ``rest_cannot_edit`` on someone else's post.
  * Roles: administrator, editor, author, contributor, subscriber, with WordPress's
    capabilities for posts and terms. Default users (``DEFAULT_USERS``): admin, editor,
    author, contributor, subscriber, each with one application password
    (``fake.credentials(login)``) and a login password that the REST API refuses.

Posts, as WordPress stores them
  * Post ids increase and are never reused (not even across reset(); users and terms start
    again at 1: admin is user 1, Uncategorized term 1).
  * Slugs go through sanitize_title (lower case, accents removed, punctuation dropped,
    spaces to hyphens, other UTF-8 percent-encoded: "中文" -> "%e4%b8%ad%e6%96%87", which is
    also how the API returns it). wp_unique_post_slug makes a slug unique among all posts
    (any status but the trashed, whose slugs end in ``__trashed``) by appending -2, -3...;
    it skips drafts and pending posts, BUT the REST controller passes 'publish' for a draft
    or pending post that asks for a slug, so over the REST API a requested slug is made
    unique whatever the status. A draft or pending post without a slug keeps an empty
    slug ("") until it is published (then: from the title). A purely numeric slug clashes
    with date archives and gets -2.
  * status ``future`` whose date is less than a minute ahead is published at once;
    ``publish`` with a date a minute or more ahead becomes ``future``. Due future posts are
    published by "WP-Cron" on the next request (``fake.cron = False``: a site whose cron
    never runs, "Missed schedule"). ``fake.advance_clock(seconds)`` moves the site's clock.
  * date/date_gmt: naive ISO strings ("2024-05-01T10:00:00"). ``date`` is site-local
    (``timezone_offset`` hours), ``date_gmt`` UTC; a date with an offset or Z is converted.
    A draft without a date has a floating date (moves to "now" on every save; date_gmt is
    still shown, computed from date); ``date: null`` makes it floating again.
  * Responses: ``title``/``content``/``excerpt`` objects with ``rendered`` (texturized:
    "It's" -> "It&#8217;s", "Q&A" -> "Q&#038;A"; content through a small wpautop; an
    excerpt made from the content when there is none) and ``raw`` with context=edit (create,
    update and delete answer in context edit, as WordPress does). ``link``: /<slug>/ for
    published and private posts, /?p=<id> for drafts, pending and future ones.
  * A post without categories gets the default category, Uncategorized (id 1); unknown
    term ids are dropped silently; categories and tags share one id sequence.
  * ``meta``: only registered keys are stored and returned; unknown keys are dropped
    silently, as by WP_REST_Meta_Fields::update_value. Registered by default: ``footnotes``
    (WordPress 6.3+); more with ``fake.register_meta(key, type)``. A registered key with a
    value of the wrong type is a 400 *after* the post was stored (terms and meta are written
    after wp_insert_post), another way for a create to "fail" yet leave a post behind.
  * The REST API cannot look posts up by meta (``meta_key``/``meta_value`` are unknown
    parameters and ignored, like every unknown parameter): only slug, search, etc.
  * DELETE moves to the trash (status ``trash``, slug ``<slug>__trashed``; 410
    ``rest_already_trashed`` the second time); ``?force=true`` deletes ({"deleted": true,
    "previous": {...}}). ``fake.trash_enabled = False``: 501 ``rest_trash_not_supported``.
    ``status=any`` lists everything but the trash. An update that moves a post out of the
    trash gives it back its slug (made unique again if it is published).
  * Content from users without unfiltered_html (authors, contributors) loses <script>,
    <style>, <iframe> and on* attributes (a rough wp_kses_post).

Terms: a name is stored as WordPress stores it ("A & B" -> "A &amp; B", which the API
returns). Creating a name that exists (any case) is 400 ``term_exists`` with
``data.term_id`` (categories: "...already exists with this parent.", tags: "...in this
taxonomy."). ``search`` matches the stored name or slug (so "A & B" does not find
"A &amp; B": clients must handle term_exists). Slugs are made unique with -2, -3...

Site modes (attributes; reset() restores them)
  * ``site_mode``: "wordpress"; "plain_permalinks" (/wp-json/ is a 404 HTML page, only
    /?rest_route= works, as with WordPress's default permalinks); "not_wordpress" (404 HTML
    for /wp-json/, the home page ignores rest_route: "no WordPress REST API at this address").
  * ``rest_requires_auth``: a plugin that refuses anonymous REST requests (401
    rest_not_logged_in, even for the index).
  * ``auth_header_stripped``: the web server does not pass the Authorization header to PHP
    (Apache + CGI/FastCGI), so authenticated calls arrive anonymous.
  * ``app_passwords_available``: False for a site without HTTPS: WordPress ignores Basic
    credentials and the index has no application-passwords entry.

Faults: what a real site (or what is in front of it) can do instead of answering; queue them
with ``fake.script(fault, ..., on=CREATE_POST)`` (each used once, by the first request
matching ``on``), or make them the default for matching requests with
``fake.set_default_fault(fault, on=...)``. ``on`` is "METHOD /route" with shell wildcards
("POST /wp/v2/posts", "* /wp/v2/posts*", "*" for any request) or a callable(record).

  before anything is stored:
    rate_limit(retry_after, http_date=False, json_body=False)  429 + Retry-After (host, WAF)
    server_error(status=500)   500: WordPress's "critical error"; 502/503/504: the proxy's page
    maintenance()              503 + Retry-After: 600, "Briefly unavailable for scheduled..."
    blocked(status=403)        a firewall's HTML page (ModSecurity, Cloudflare...), not WP JSON
    redirect(location, 301)    e.g. http -> https or to www.
    html(status=200)           an HTML page where JSON was expected (a cache, "coming soon")
    error(status, code, message, data)   any WordPress-shaped JSON error
    drop()                     connection closed without an answer
    hang(seconds)              nothing sent for `seconds`, then closed
    latency(seconds)           slow, then applied and answered; applied even if the client
                               gave up meanwhile, as PHP carries on (a lost answer too)
  after the request is applied (the post IS stored; the answer is lost):
    stored_then_error(status=500)   e.g. a plugin's hook on the new post fatals
    stored_then_hang(seconds)       past the client's timeout, then closed
    stored_then_drop()
    php_notice()               201/200 with a PHP warning printed before the JSON

``hold(on=CREATE_POST)`` stops the next matching request after it is applied (or before,
``stored=False``) until ``release()``: kill a worker between the create and its record.

Records: ``fake.requests`` (every request: method, route, query, body, auth user, status,
fault, response), ``fake.posts`` (snapshots, trashed ones included), ``fake.duplicates()``
(the issue's key assertion: never two posts for one article), ``fake.categories``,
``fake.tags``, counters. ``reset()`` empties the site and restores settings. Thread-safe.

As a separate process (prints the site URL first)::

    python -m tests.fakewp --port 0

Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import email.utils
import fnmatch
import itertools
import json
import re
import select
import socket
import threading
import time
import unicodedata
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Optional, Union

from tests.fakeserver import (DISCONNECT_ERRORS, ClientGone, FakeHandler, FakeHTTPServer,
                              FakeServer, Stopping)

__all__ = [
    "FakeWordPress", "Fault", "Hold", "RequestRecord", "Post", "Term", "User",
    "DEFAULT_USERS", "ANY", "CREATE_POST", "UPDATE_POST", "DELETE_POST", "LIST_POSTS",
    "POST_WRITES", "ME", "CREATE_CATEGORY", "CREATE_TAG", "sanitize_title",
]

# -- request matchers ("METHOD /route", shell wildcards) -----------------------------------------

ANY = "*"
CREATE_POST = "POST /wp/v2/posts"
UPDATE_POST = "POST /wp/v2/posts/*"
DELETE_POST = "DELETE /wp/v2/posts/*"
LIST_POSTS = "GET /wp/v2/posts"
POST_WRITES = "POST /wp/v2/posts*"
ME = "GET /wp/v2/users/me"
CREATE_CATEGORY = "POST /wp/v2/categories"
CREATE_TAG = "POST /wp/v2/tags"

Matcher = Union[str, Callable[["RequestRecord"], bool]]

JSON_TYPE = "application/json; charset=UTF-8"
HTML_TYPE = "text/html; charset=UTF-8"

# -- users and capabilities --------------------------------------------------------------------

_POST_CAPS = {"read", "edit_posts", "delete_posts"}
_AUTHOR_CAPS = _POST_CAPS | {"publish_posts", "edit_published_posts", "delete_published_posts",
                             "upload_files"}
_EDITOR_CAPS = _AUTHOR_CAPS | {"edit_others_posts", "delete_others_posts", "edit_private_posts",
                               "delete_private_posts", "read_private_posts", "manage_categories",
                               "unfiltered_html", "moderate_comments"}
ROLE_CAPS: dict[str, frozenset[str]] = {
    "administrator": frozenset(_EDITOR_CAPS | {"manage_options", "list_users", "edit_users"}),
    "editor": frozenset(_EDITOR_CAPS),
    "author": frozenset(_AUTHOR_CAPS),
    "contributor": frozenset(_POST_CAPS),
    "subscriber": frozenset({"read"}),
}


@dataclass
class User:
    id: int
    login: str
    role: str
    email: str
    name: str
    app_passwords: list[str] = field(default_factory=list)  # as shown: "abcd EFGH ..."
    login_password: str = ""
    app_passwords_enabled: bool = True

    @property
    def caps(self) -> frozenset[str]:
        return ROLE_CAPS.get(self.role, frozenset())


# login, role, application password (24 letters and digits, shown in groups of four)
DEFAULT_USERS: tuple[tuple[str, str, str], ...] = (
    ("admin", "administrator", "AdmN 1pwD Fake WP24 Test Pass"),
    ("editor", "editor", "EdtR 2pwD Fake WP24 Test Pass"),
    ("author", "author", "AthR 3pwD Fake WP24 Test Pass"),
    ("contributor", "contributor", "CtbR 4pwD Fake WP24 Test Pass"),
    ("subscriber", "subscriber", "SubR 5pwD Fake WP24 Test Pass"),
)


def _normalise_app_password(password: str) -> str:
    # wp_authenticate_application_password: preg_replace( '/[^a-z\d]/i', '', $password )
    return re.sub(r"[^a-zA-Z0-9]", "", password)


# -- stored objects ------------------------------------------------------------------------------


@dataclass
class Post:
    """A post as stored. Snapshots (fake.posts, fake.post(id)) are copies with `link` set.

    The last fields are the fake's own bookkeeping, not WordPress's: what the creating request
    asked for, so a test can count posts per article even when WordPress changed the slug
    (-2) or dropped unregistered meta."""

    id: int
    author: int
    status: str
    slug: str  # post_name as stored (percent-encoded for non-ASCII)
    title: str
    content: str
    excerpt: str
    date: datetime  # site-local wall clock
    date_gmt: Optional[datetime]  # None: a draft's floating date
    modified: datetime
    modified_gmt: datetime
    categories: list[int] = field(default_factory=list)
    tags: list[int] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)  # registered keys only
    comment_status: str = "open"
    ping_status: str = "open"
    format: str = "standard"
    sticky: bool = False
    password: str = ""
    link: str = ""
    # -- bookkeeping --
    requested_slug: Optional[str] = None  # the slug the creating request sent
    meta_sent: dict[str, Any] = field(default_factory=dict)  # every meta key sent, kept or not
    trashed_status: Optional[str] = None  # _wp_trash_meta_status
    desired_slug: Optional[str] = None  # _wp_desired_post_slug
    created_by_request: Optional[int] = None  # index in fake.requests
    updates: int = 0


@dataclass
class Term:
    id: int
    taxonomy: str  # "category" or "post_tag"
    name: str  # as stored: "A &amp; B"
    slug: str
    description: str = ""
    parent: int = 0
    count: int = 0  # published posts, filled in snapshots


# -- faults --------------------------------------------------------------------------------------


@dataclass
class Fault:
    """Something a site (or what is in front of it) does instead of a normal answer.

    ``store`` says whether the request is applied first (the lost-answer faults). Use the
    constructors."""

    kind: str
    status: Optional[int] = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Optional[Any] = None  # dict: WordPress JSON error; str: an HTML/text page
    seconds: float = 0.0
    store: bool = False

    @classmethod
    def error(cls, status: int, code: str, message: str, data: Optional[dict] = None,
              headers: Optional[dict[str, str]] = None) -> Fault:
        """Any WordPress-shaped JSON error: {"code", "message", "data": {"status", ...}}."""
        payload = {"code": code, "message": message, "data": {"status": status, **(data or {})}}
        return cls("error", status, dict(headers or {}), payload)

    @classmethod
    def rate_limit(cls, retry_after: float = 1.0, *, http_date: bool = False,
                   json_body: bool = False) -> Fault:
        """429 with Retry-After in seconds (or, ``http_date``, as a date). WordPress itself never
        rate-limits: hosts and firewalls do, usually with an HTML page (``json`` for a plugin
        that answers in WordPress's style, ``json_body``)."""
        if http_date:
            when = email.utils.formatdate(time.time() + retry_after, usegmt=True)
        else:
            when = f"{retry_after:g}" if retry_after != int(retry_after) else str(int(retry_after))
        if json_body:
            body: Any = {"code": "too_many_requests",
                         "message": "Too many requests. Please try again later.",
                         "data": {"status": 429}}
        else:
            body = _page("429 Too Many Requests", "<h1>429 Too Many Requests</h1>"
                         "<p>You have sent too many requests in a given amount of time.</p>")
        return cls("rate_limit", 429, {"Retry-After": when}, body)

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        """Nothing stored. 500: WordPress's fatal-error handler; 502/503/504: the proxy's page."""
        return cls("server_error", status, {}, _server_error_body(status))

    @classmethod
    def maintenance(cls) -> Fault:
        """An update in progress (.maintenance): 503 with Retry-After: 600."""
        return cls("maintenance", 503, {"Retry-After": "600"}, "maintenance")

    @classmethod
    def blocked(cls, status: int = 403) -> Fault:
        """A web application firewall refuses the request with its own HTML page."""
        return cls("blocked", status, {}, _page(
            "Access Denied - Website Firewall",
            "<h1>Access Denied</h1><p>This request was blocked by the website firewall."
            " If you are the site owner, check the firewall log.</p>"))

    @classmethod
    def redirect(cls, location: Optional[str] = None, status: int = 301) -> Fault:
        """A redirect (to https://, to www.). ``location`` None: the same URL on https."""
        return cls("redirect", status, {"Location": location or ""}, _page(
            f"{status} Moved Permanently", "<h1>Moved</h1>"))

    @classmethod
    def html(cls, status: int = 200) -> Fault:
        """An HTML page where JSON was expected (a page cache, a "coming soon" plugin)."""
        return cls("html", status, {}, "home")

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without an answer; nothing stored."""
        return cls("drop")

    @classmethod
    def hang(cls, seconds: float = 30.0) -> Fault:
        """Send nothing for ``seconds`` (or until the client leaves), then close; nothing stored."""
        return cls("hang", seconds=seconds)

    @classmethod
    def latency(cls, seconds: float) -> Fault:
        """Wait ``seconds``, then apply the request and answer normally (the request is applied
        even if the client gave up meanwhile, as PHP carries on)."""
        return cls("latency", seconds=seconds)

    @classmethod
    def stored_then_error(cls, status: int = 500) -> Fault:
        """The request is applied (the post IS stored), then the answer is an error."""
        return cls("stored_then_error", status, {}, _server_error_body(status), store=True)

    @classmethod
    def stored_then_hang(cls, seconds: float = 30.0) -> Fault:
        """Applied, then nothing is sent for ``seconds`` (past the client's timeout), then
        the connection is closed."""
        return cls("stored_then_hang", seconds=seconds, store=True)

    @classmethod
    def stored_then_drop(cls) -> Fault:
        """Applied, then the connection is closed without an answer."""
        return cls("stored_then_drop", store=True)

    @classmethod
    def php_notice(cls) -> Fault:
        """Applied and answered with the usual status, but PHP printed a warning before the
        JSON (display_errors on): the body does not parse."""
        return cls("php_notice", store=True)


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"</head><body>{body}</body></html>\n")


_CRITICAL = ("<p>There has been a critical error on this website.</p><p><a href=\""
             "https://wordpress.org/documentation/article/faq-troubleshooting/\">Learn more "
             "about troubleshooting WordPress.</a></p>")
_PROXY_PAGES = {502: "502 Bad Gateway", 503: "503 Service Temporarily Unavailable",
                504: "504 Gateway Time-out"}


def _server_error_body(status: int) -> Any:
    if status in _PROXY_PAGES:
        title = _PROXY_PAGES[status]
        return (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}"
                "</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
    return "critical"  # WordPress's fatal error handler: JSON or HTML depending on the request


# -- hold ----------------------------------------------------------------------------------------


class Hold:
    """Stops one matching request until released. ``arrived`` is set when a request is held
    (its record in ``record``); ``release()`` lets it answer."""

    def __init__(self, matcher: Callable[["RequestRecord"], bool], stored: bool) -> None:
        self._matcher = matcher
        self.stored = stored
        self.arrived = threading.Event()
        self.released = threading.Event()
        self.record: Optional[RequestRecord] = None

    def wait_arrived(self, timeout: float = 10.0) -> RequestRecord:
        if not self.arrived.wait(timeout):
            raise TimeoutError(f"no matching request was held within {timeout}s")
        assert self.record is not None
        return self.record

    def release(self) -> None:
        self.released.set()


# -- request log ---------------------------------------------------------------------------------


@dataclass
class RequestRecord:
    """One HTTP request. Times are time.monotonic()."""

    start: float
    method: str  # after X-HTTP-Method-Override / _method
    path: str  # the URL path, without the query
    route: Optional[str]  # the REST route ("/wp/v2/posts/5"), None for a non-REST page
    query: dict[str, Any]
    body: Any  # parsed JSON or form fields; None when empty or unparsable
    headers: dict[str, str] = field(repr=False, default_factory=dict)
    raw_body: bytes = field(repr=False, default=b"")
    auth_sent: Optional[str] = None  # the user name of a Basic Authorization header
    auth_user: Optional[str] = None  # the login WordPress authenticated
    fault: Optional[str] = None
    held: bool = False
    status: Optional[int] = None  # None if no answer was sent (drop, hang)
    response: Any = field(repr=False, default=None)  # the JSON answer, decoded
    stored: bool = False  # the request changed the site
    post_id: Optional[int] = None  # the post it created, changed or deleted
    end: Optional[float] = None
    client_disconnected: bool = False

    @property
    def key(self) -> str:
        return f"{self.method} {self.route if self.route is not None else self.path}"

    @property
    def done(self) -> bool:
        return self.end is not None


def _matcher(on: Matcher) -> Callable[[RequestRecord], bool]:
    if callable(on):
        return on
    if on.strip() == "*":
        return lambda record: True
    method, _, pattern = on.strip().partition(" ")
    method, pattern = method.upper(), pattern.strip() or "*"

    def match(record: RequestRecord) -> bool:
        target = record.route if record.route is not None else record.path
        return (fnmatch.fnmatchcase(record.method, method)
                and fnmatch.fnmatchcase(target.lower(), pattern.lower()))
    return match


# -- WordPress's text functions (approximations, see the docstring) ------------------------------

_SPECIAL_LETTERS = {"ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe", "Œ": "OE",
                    "đ": "d", "Đ": "D", "ł": "l", "Ł": "L", "þ": "th", "Þ": "TH", "ð": "d",
                    "Ð": "D", "ı": "i"}
# sanitize_title_with_dashes, 'save' context: octets turned into hyphens, and dropped.
_HYPHEN_OCTETS = ["%c2%a0", "%e2%80%93", "%e2%80%94"] + [
    f"%e2%80%8{c}" for c in "0123456789a"] + ["%e2%80%a8", "%e2%80%a9", "%e2%80%af"]
_DROPPED_OCTETS = [
    "%c2%a1", "%c2%bf", "%c2%a2", "%c2%a3", "%c2%a4", "%c2%a5", "%c2%a6", "%c2%a7", "%c2%a8",
    "%c2%aa", "%c2%ab", "%c2%ac", "%c2%af", "%c2%b4", "%c2%b5", "%c2%b6", "%c2%b7", "%c2%b8",
    "%c2%ba", "%c2%bb", "%c2%a9", "%c2%ae", "%c2%b0", "%cb%8a", "%cc%81", "%cd%81", "%cc%80",
    "%cc%84", "%cc%8c", "%e2%80%98", "%e2%80%99", "%e2%80%9a", "%e2%80%9b", "%e2%80%9c",
    "%e2%80%9d", "%e2%80%9e", "%e2%80%9f", "%e2%80%a2", "%e2%80%a6", "%e2%84%a2", "%e2%80%b9",
    "%e2%80%ba", "%e2%80%8b", "%e2%80%8c", "%e2%80%8d", "%e2%80%8e", "%e2%80%8f", "%e2%80%aa",
    "%e2%80%ab", "%e2%80%ac", "%e2%80%ad", "%e2%80%ae", "%ef%bb%bf", "%ef%bf%bc"]
_TAGS = re.compile(r"<[^>]*>")


def _remove_accents(text: str) -> str:
    out = []
    for char in text:
        if ord(char) < 128:
            out.append(char)
        elif char in _SPECIAL_LETTERS:
            out.append(_SPECIAL_LETTERS[char])
        else:
            decomposed = unicodedata.normalize("NFD", char)
            base = decomposed[0]
            if ord(base) < 128 and all(unicodedata.combining(c) for c in decomposed[1:]):
                out.append(base)
            else:
                out.append(char)
    return "".join(out)


def _utf8_uri_encode(text: str, length: int = 0) -> str:
    out, used = [], 0
    for char in text:
        piece = char if ord(char) < 128 else "".join(f"%{b:02x}" for b in char.encode("utf-8"))
        if length and used + len(piece) > length:
            break
        out.append(piece)
        used += len(piece)
    return "".join(out)


def sanitize_title(title: str, fallback: str = "") -> str:
    """WordPress's sanitize_title() in the 'save' context (remove_accents, then
    sanitize_title_with_dashes), close enough for slugs of article titles."""
    text = _TAGS.sub("", str(title))
    text = _remove_accents(text)
    text = re.sub(r"%([a-fA-F0-9]{2})", r"---\1---", text)
    text = text.replace("%", "")
    text = re.sub(r"---([a-fA-F0-9]{2})---", r"%\1", text)
    text = _utf8_uri_encode(text.lower(), 200).lower()
    for octet in _HYPHEN_OCTETS:
        text = text.replace(octet, "-")
    for octet in _DROPPED_OCTETS:
        text = text.replace(octet, "")
    text = text.replace("%c3%97", "x")
    text = re.sub(r"&.+?;", "", text)
    text = text.replace(".", "-")
    text = re.sub(r"[^%a-z0-9 _-]", "", text)
    text = re.sub(r"\s+", "-", text)
    text = re.sub(r"-+", "-", text)
    text = text.strip("-")
    return text or fallback


def _truncate_slug(slug: str, length: int) -> str:
    if len(slug) > length:
        decoded = urllib.parse.unquote(slug)
        slug = slug[:length] if decoded == slug else _utf8_uri_encode(decoded, length)
    return slug.rstrip("-")


def _escape_term_name(name: str) -> str:
    # pre_term_name: sanitize_text_field, wp_filter_kses, then _wp_specialchars (no double
    # encoding): "A & B" is stored, and returned, as "A &amp; B".
    name = _TAGS.sub("", name)
    name = re.sub(r"[\r\n\t ]+", " ", name).strip()
    name = re.sub(r"&(?!#?[a-zA-Z0-9]+;)", "&amp;", name)
    return name.replace("<", "&lt;").replace(">", "&gt;")


def _texturize(text: str) -> str:
    """A little of wptexturize + convert_chars: curly quotes, dashes, ellipses, and a lone & as
    &#038;, on the text outside tags."""
    def fix(part: str) -> str:
        if part.startswith("<"):
            return part
        part = re.sub(r"&(?!#?[a-zA-Z0-9]+;)", "&#038;", part)
        part = part.replace("...", "&#8230;").replace(" -- ", " &#8212; ")
        part = part.replace(" - ", " &#8211; ")
        part = re.sub(r"(\w)'(\w)", "\\1&#8217;\\2", part)
        part = re.sub(r"(^|\s)'", "\\1&#8216;", part)
        part = part.replace("'", "&#8217;")
        part = re.sub(r'(^|\s|\()"', "\\1&#8220;", part)
        return part.replace('"', "&#8221;")
    return "".join(fix(piece) for piece in re.split(r"(<[^>]*>)", text))


_BLOCK = re.compile(r"<(p|div|h[1-6]|ul|ol|li|blockquote|pre|table|figure|hr|section)\b", re.I)


def _autop(text: str) -> str:
    """A small wpautop: plain paragraphs (blank-line separated) are wrapped in <p>, lines
    inside them end in <br />; text that already has block elements is left as it is."""
    text = text.replace("\r\n", "\n").strip()
    if not text:
        return ""
    if _BLOCK.search(text):
        return text + "\n"
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return "".join("<p>" + p.replace("\n", "<br />\n") + "</p>\n" for p in paragraphs)


def _kses_post(text: str) -> str:
    """What wp_kses_post removes for users without unfiltered_html, roughly."""
    text = re.sub(r"<(script|style|iframe)\b.*?</\1\s*>", "", text, flags=re.I | re.S)
    text = re.sub(r"<(script|style|iframe)\b[^>]*>", "", text, flags=re.I)
    text = re.sub(r"\s+on[a-z]+\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s>]+)", "", text, flags=re.I)
    return re.sub(r"(href|src)\s*=\s*([\"'])\s*javascript:[^\"']*\2", r"\1=\2\2", text,
                  flags=re.I)


def _excerpt_from(content: str, words: int = 55) -> str:
    text = _TAGS.sub("", content)
    parts = text.split()
    more = len(parts) > words
    text = " ".join(parts[:words])
    return text + (" [&hellip;]" if more else "")


# -- dates ---------------------------------------------------------------------------------------

_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?"
                   r"(Z|[+-]\d{2}(?::?\d{2})?)?$")


def _iso(value: Optional[datetime]) -> Optional[str]:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S")


def _parse_date(value: str) -> Optional[tuple[datetime, bool]]:
    """rest_parse_date: (naive datetime, had a timezone) with the offset applied (UTC), or
    None for an invalid date."""
    match = _DATE.match(value.strip()) if isinstance(value, str) else None
    if not match:
        return None
    try:
        moment = datetime(*(int(match.group(i)) for i in range(1, 7)))
    except ValueError:
        return None
    zone = match.group(7)
    if not zone:
        return moment, False
    if zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        moment -= sign * offset
    return moment, True


# -- the site ------------------------------------------------------------------------------------


class _Error(Exception):
    """A WordPress error answer: WP_Error converted by rest_convert_error_to_response."""

    def __init__(self, status: int, code: str, message: str, **data: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.data = status, code, message, data
        self.additional: list[Any] = data.pop("_additional", [])

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message,
                                "data": {"status": self.status, **self.data}}
        if self.additional:
            body["additional_data"] = self.additional
        return body


def _and_list(items: tuple[str, ...] | list[str]) -> str:
    # wp_sprintf's %l: "a, b, and c"
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + ", and " + items[-1]


def _invalid_params(problems: dict[str, tuple[str, str]]) -> _Error:
    """rest_invalid_param: one message per parameter, with the inner error in details."""
    return _Error(400, "rest_invalid_param",
                  "Invalid parameter(s): " + ", ".join(problems),
                  params={k: msg for k, (_, msg) in problems.items()},
                  details={k: {"code": code, "message": msg, "data": None}
                           for k, (code, msg) in problems.items()})


@dataclass
class _Response:
    status: int
    data: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    page: Optional[str] = None  # an HTML page instead of JSON


@dataclass
class _Request:
    method: str
    route: str
    params: dict[str, Any]  # the query string, overridden by the body
    present: set[str]
    user: Optional[User]
    bad_json: bool = False
    created_post: Optional[int] = None  # set once a create has stored its post


_POST_STATUSES = ("publish", "future", "draft", "pending", "private")
_ALL_STATUSES = _POST_STATUSES + ("trash", "auto-draft", "inherit", "request-pending",
                                  "request-confirmed", "request-failed", "request-completed")
_NAMESPACES = ["oembed/1.0", "wp/v2", "wp-site-health/v1", "wp-block-editor/v1"]


class _Site:
    """The WordPress part: users, posts, terms and the REST handlers. Called with the fake's
    lock held."""

    def __init__(self, fake: FakeWordPress) -> None:
        self.fake = fake
        self.users: dict[int, User] = {}
        self.posts: dict[int, Post] = {}
        self.deleted: list[Post] = []
        self.terms: dict[int, Term] = {}
        self.registered_meta: dict[str, tuple[str, Any]] = {"footnotes": ("string", "")}
        for login, role, password in DEFAULT_USERS:
            self.add_user(login, role, password)
        self.add_term("category", "Uncategorized", "uncategorized")

    # -- setup -----------------------------------------------------------------------------

    def add_user(self, login: str, role: str, app_password: Optional[str], email: str = "",
                 name: str = "") -> User:
        if role not in ROLE_CAPS:
            raise ValueError(f"unknown role {role!r}")
        user_id = next(self.fake._user_ids)
        user = User(user_id, login, role, email or f"{login}@example.test", name or login,
                    [app_password] if app_password else [], f"{login}-login-password")
        self.users[user_id] = user
        return user

    def add_term(self, taxonomy: str, name: str, slug: Optional[str] = None,
                 description: str = "", parent: int = 0) -> Term:
        stored = _escape_term_name(name)
        slug = self.unique_term_slug(sanitize_title(slug or stored) or sanitize_title(name),
                                     taxonomy)
        term = Term(next(self.fake._term_ids), taxonomy, stored, slug, description, parent)
        self.terms[term.id] = term
        return term

    def user_by_login(self, login: str) -> Optional[User]:
        for user in self.users.values():
            if user.login.lower() == login.lower():
                return user
        return None

    # -- clock -----------------------------------------------------------------------------

    def now_gmt(self) -> datetime:
        return (datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
                + timedelta(seconds=self.fake._clock_offset))

    def offset(self) -> timedelta:
        return timedelta(hours=self.fake.timezone_offset)

    def run_cron(self) -> list[int]:
        """Publish future posts whose time has come (wp_publish_post)."""
        now, published = self.now_gmt(), []
        for post in self.posts.values():
            if post.status == "future" and post.date_gmt is not None and post.date_gmt <= now:
                post.status = "publish"
                published.append(post.id)
        return published

    # -- capabilities (map_meta_cap for posts) ----------------------------------------------

    @staticmethod
    def can(user: Optional[User], cap: str) -> bool:
        return user is not None and cap in user.caps

    def can_post(self, user: Optional[User], action: str, post: Post) -> bool:
        if user is None:
            return action == "read" and post.status == "publish"
        if action == "read":
            if post.status == "publish" or post.author == user.id:
                return True
            if post.status == "private":
                return self.can(user, "read_private_posts")
            action = "edit"
        status = post.status
        if status == "trash":  # judged by the status it had (_wp_trash_meta_status)
            status = post.trashed_status or "draft"
        prefix = "edit" if action == "edit" else "delete"
        if post.author == user.id:
            caps = [f"{prefix}_published_posts" if status in ("publish", "future")
                    else f"{prefix}_posts"]
        else:
            caps = [f"{prefix}_others_posts"]
            if status in ("publish", "future"):
                caps.append(f"{prefix}_published_posts")
            elif status == "private":
                caps.append(f"{prefix}_private_posts")
        return all(self.can(user, cap) for cap in caps)

    @staticmethod
    def required_code(user: Optional[User]) -> int:
        # rest_authorization_required_code()
        return 403 if user is not None else 401

    # -- links -----------------------------------------------------------------------------

    def rest_url(self, route: str, **query: Any) -> str:
        if self.fake.site_mode == "plain_permalinks":
            url, joiner = f"{self.fake.url}/?rest_route={route}", "&"
        else:
            url, joiner = f"{self.fake.url}/wp-json{route}", "?"
        return url + (joiner + urllib.parse.urlencode(query) if query else "")

    def permalink(self, post: Post) -> str:
        home = self.fake.url
        structure = "" if self.fake.site_mode == "plain_permalinks" else self.fake.permalinks
        if not structure or post.status in ("draft", "pending", "auto-draft", "future") \
                or not post.slug:
            return f"{home}/?p={post.id}"
        path = (structure.replace("%postname%", post.slug)
                .replace("%year%", f"{post.date.year:04d}")
                .replace("%monthnum%", f"{post.date.month:02d}")
                .replace("%day%", f"{post.date.day:02d}")
                .replace("%post_id%", str(post.id)))
        return home + path

    def term_link(self, term: Term) -> str:
        base = "category" if term.taxonomy == "category" else "tag"
        if self.fake.site_mode == "plain_permalinks":
            key = "cat" if term.taxonomy == "category" else "tag"
            value = term.id if term.taxonomy == "category" else term.slug
            return f"{self.fake.url}/?{key}={value}"
        return f"{self.fake.url}/{base}/{term.slug}/"

    # -- slugs -----------------------------------------------------------------------------

    def unique_post_slug(self, slug: str, post_id: int, status: str) -> str:
        """wp_unique_post_slug for the 'post' type."""
        if status in ("draft", "pending", "auto-draft") or not slug:
            return slug
        taken = {p.slug for p in self.posts.values() if p.id != post_id}
        structure = [s for s in self.fake.permalinks.split("/") if s]
        if slug not in taken and not self._date_archive_clash(slug, structure):
            return slug
        suffix = 2
        while True:
            candidate = f"{_truncate_slug(slug, 200 - (len(str(suffix)) + 1))}-{suffix}"
            if candidate not in taken:
                return candidate
            suffix += 1

    @staticmethod
    def _date_archive_clash(slug: str, structure: list[str]) -> bool:
        if not slug.isdigit() or "%postname%" not in structure:
            return False
        index, number = structure.index("%postname%"), int(slug)
        return (index == 0
                or (structure[index - 1] == "%year%" and number < 13)
                or (structure[index - 1] == "%monthnum%" and number < 32))

    def unique_term_slug(self, slug: str, taxonomy: str) -> str:
        taken = {t.slug for t in self.terms.values() if t.taxonomy == taxonomy}
        if slug not in taken:
            return slug
        suffix = 2
        while f"{slug}-{suffix}" in taken:
            suffix += 1
        return f"{slug}-{suffix}"

    # -- dispatch --------------------------------------------------------------------------

    def dispatch(self, req: _Request) -> _Response:
        """WP_REST_Server: match the route (404 rest_no_route), then the JSON body (400
        rest_invalid_json), then the handler (which validates, then checks permissions)."""
        handler = self._route(req.method, req.route.rstrip("/").lower() or "/")
        if handler is None:
            raise _Error(404, "rest_no_route",
                         "No route was found matching the URL and request method.")
        if req.bad_json:
            raise _Error(400, "rest_invalid_json", "Invalid JSON body passed.",
                         json_error_code=4, json_error_message="Syntax error")
        return handler(req)

    def _route(self, method: str, route: str) -> Optional[Callable[[_Request], _Response]]:
        read = method in ("GET", "HEAD")
        if route == "/" and read:
            return lambda req: self.index()
        if route == "/wp/v2" and read:
            return lambda req: self.namespace_index()
        if route == "/wp/v2/users/me" and read:
            return self.users_me
        if route == "/wp/v2/posts":
            return self.list_posts if read else self.create_post if method == "POST" else None
        if (match := re.fullmatch(r"/wp/v2/posts/(\d+)", route)):
            post_id = int(match.group(1))
            if read:
                return lambda req: self.get_post(req, post_id)
            if method in ("POST", "PUT", "PATCH"):
                return lambda req: self.update_post(req, post_id)
            if method == "DELETE":
                return lambda req: self.delete_post(req, post_id)
            return None
        if (match := re.fullmatch(r"/wp/v2/(categories|tags)(?:/(\d+))?", route)):
            taxonomy = "category" if match.group(1) == "categories" else "post_tag"
            if match.group(2) is None:
                if read:
                    return lambda req: self.list_terms(req, taxonomy)
                return (lambda req: self.create_term(req, taxonomy)) if method == "POST" else None
            term_id = int(match.group(2))
            if read:
                return lambda req: self.get_term(req, taxonomy, term_id)
            if method == "DELETE":
                return lambda req: self.delete_term(req, taxonomy, term_id)
        return None

    # -- index and users -------------------------------------------------------------------

    def index(self) -> _Response:
        home = self.fake.url
        auth: Any = []  # PHP's empty array
        if self.fake.app_passwords_available:
            auth = {"application-passwords": {"endpoints": {
                "authorization": f"{home}/wp-admin/authorize-application.php"}}}
        routes = {}
        for route, methods in (("/wp/v2/posts", ["GET", "POST"]),
                               ("/wp/v2/posts/(?P<id>[\\d]+)",
                                ["GET", "POST", "PUT", "PATCH", "DELETE"]),
                               ("/wp/v2/categories", ["GET", "POST"]),
                               ("/wp/v2/tags", ["GET", "POST"]),
                               ("/wp/v2/users/me", ["GET", "POST", "PUT", "PATCH", "DELETE"])):
            routes[route] = {"namespace": "wp/v2", "methods": methods,
                             "endpoints": [{"methods": [m], "args": {}} for m in methods]}
        data = {
            "name": self.fake.site_name, "description": "Just another WordPress site",
            "url": home, "home": home, "gmt_offset": self.fake.timezone_offset,
            "timezone_string": "", "page_for_posts": 0, "page_on_front": 0,
            "show_on_front": "posts", "namespaces": list(_NAMESPACES),
            "authentication": auth, "routes": routes, "site_logo": 0, "site_icon": 0,
            "site_icon_url": "",
            "_links": {"help": [{"href": "https://developer.wordpress.org/rest-api/"}]},
        }
        return _Response(200, data)

    def namespace_index(self) -> _Response:
        data = self.index().data
        return _Response(200, {"namespace": "wp/v2", "routes": data["routes"],
                               "_links": {"up": [{"href": self.rest_url("/")}]}})

    def users_me(self, req: _Request) -> _Response:
        context = self._context(req)
        user = req.user
        if user is None:
            raise _Error(401, "rest_not_logged_in", "You are not currently logged in.")
        data: dict[str, Any] = {
            "id": user.id, "name": user.name, "url": "", "description": "",
            "link": f"{self.fake.url}/author/{user.login}/", "slug": user.login,
            "avatar_urls": {size: f"https://secure.gravatar.com/avatar/{user.id:032x}"
                            f"?s={size}&d=mm&r=g" for size in ("24", "48", "96")},
            "meta": [],
        }
        if context == "edit":
            data.update({
                "username": user.login, "first_name": "", "last_name": "",
                "email": user.email, "locale": "en_US", "nickname": user.login,
                "registered_date": "2024-01-01T00:00:00+00:00", "roles": [user.role],
                "capabilities": {cap: True for cap in sorted(user.caps)} | {user.role: True},
                "extra_capabilities": {user.role: True},
            })
        data["_links"] = {"self": [{"href": self.rest_url(f"/wp/v2/users/{user.id}")}],
                          "collection": [{"href": self.rest_url("/wp/v2/users")}]}
        return _Response(200, data)

    # -- parameters ------------------------------------------------------------------------

    @staticmethod
    def _context(req: _Request) -> str:
        context = req.params.get("context", "view")
        if context not in ("view", "embed", "edit"):
            raise _invalid_params({"context": ("rest_not_in_enum",
                                               "context is not one of view, embed, and edit.")})
        return context

    @staticmethod
    def _int(req: _Request, name: str, default: Optional[int] = None,
             low: Optional[int] = None, high: Optional[int] = None) -> Optional[int]:
        value = req.params.get(name)
        if value is None or value == "":
            return default
        try:
            number = int(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or (isinstance(value, float) and value != int(value)):
            raise _invalid_params({name: ("rest_invalid_type",
                                          f"{name} is not of type integer.")})
        if (low is not None and number < low) or (high is not None and number > high):
            raise _invalid_params({name: (
                "rest_out_of_bounds",
                f"{name} must be between {low} (inclusive) and {high} (inclusive)")})
        return number

    @staticmethod
    def _list(value: Any) -> list[Any]:
        # wp_parse_list: an array, or a string split on commas and spaces.
        if value is None:
            return []
        if isinstance(value, list):
            return value
        if isinstance(value, str):
            return [part for part in re.split(r"[\s,]+", value) if part]
        return [value]

    def _id_list(self, req: _Request, name: str) -> Optional[list[int]]:
        if name not in req.present:
            return None
        out = []
        for index, item in enumerate(self._list(req.params.get(name))):
            try:
                if isinstance(item, bool) or (isinstance(item, float) and item != int(item)):
                    raise ValueError
                out.append(int(item))
            except (TypeError, ValueError):
                raise _invalid_params({name: ("rest_invalid_type",
                                              f"{name}[{index}] is not of type integer.")})
        return out

    @staticmethod
    def _bool(value: Any) -> bool:
        if isinstance(value, str):
            return value.lower() in ("1", "true", "yes", "on")
        return bool(value)

    def _fields(self, req: _Request, data: dict[str, Any]) -> dict[str, Any]:
        wanted = self._list(req.params.get("_fields"))
        if not wanted:
            return data
        out: dict[str, Any] = {}
        for name in wanted:
            top, _, sub = str(name).partition(".")
            if top not in data:
                continue
            if sub and isinstance(data[top], dict):
                if sub in data[top]:
                    out.setdefault(top, {})[sub] = data[top][sub]
            else:
                out[top] = data[top]
        return out

    # -- posts: reading --------------------------------------------------------------------

    def _find_post(self, post_id: int) -> Post:
        post = self.posts.get(post_id)
        if post is None:
            raise _Error(404, "rest_post_invalid_id", "Invalid post ID.")
        return post

    def post_json(self, post: Post, context: str, user: Optional[User]) -> dict[str, Any]:
        date_gmt = post.date_gmt if post.date_gmt is not None else post.date - self.offset()
        content_rendered = _autop(_texturize(post.content)) if post.content else ""
        excerpt_source = post.excerpt if post.excerpt else _excerpt_from(content_rendered)
        data: dict[str, Any] = {
            "id": post.id,
            "date": _iso(post.date),
            "date_gmt": _iso(date_gmt),
            "guid": {"rendered": f"{self.fake.url}/?p={post.id}",
                     "raw": f"{self.fake.url}/?p={post.id}"},
            "modified": _iso(post.modified),
            "modified_gmt": _iso(post.modified_gmt),
            "password": post.password,
            "slug": post.slug,
            "status": post.status,
            "type": "post",
            "link": self.permalink(post),
            "title": {"raw": post.title, "rendered": _texturize(post.title)},
            "content": {"raw": post.content, "rendered": content_rendered, "protected": False,
                        "block_version": 1 if "<!-- wp:" in post.content else 0},
            "excerpt": {"raw": post.excerpt,
                        "rendered": _autop(_texturize(excerpt_source)) if excerpt_source else "",
                        "protected": False},
            "author": post.author,
            "featured_media": 0,
            "comment_status": post.comment_status,
            "ping_status": post.ping_status,
            "sticky": post.sticky,
            "template": "",
            "format": post.format,
            "meta": {key: post.meta.get(key, default)
                     for key, (_, default) in self.registered_meta.items()} or [],
            "categories": list(post.categories),
            "tags": list(post.tags),
            "class_list": [f"post-{post.id}", "post", "type-post", f"status-{post.status}",
                           f"format-{post.format}", "hentry"],
            "permalink_template": f"{self.fake.url}/%postname%/",
            "generated_slug": sanitize_title(post.title),
        }
        if context != "edit":
            for key in ("password", "permalink_template", "generated_slug"):
                del data[key]
            del data["guid"]["raw"], data["title"]["raw"], data["content"]["raw"]
            del data["content"]["block_version"], data["excerpt"]["raw"]
        self_href = self.rest_url(f"/wp/v2/posts/{post.id}")
        links: dict[str, Any] = {
            "self": [{"href": self_href, "targetHints": {"allow": ["GET"]}}],
            "collection": [{"href": self.rest_url("/wp/v2/posts")}],
            "about": [{"href": self.rest_url("/wp/v2/types/post")}],
            "author": [{"embeddable": True, "href": self.rest_url(f"/wp/v2/users/{post.author}")}],
            "replies": [{"embeddable": True,
                         "href": self.rest_url("/wp/v2/comments", post=post.id)}],
            "wp:term": [
                {"taxonomy": "category", "embeddable": True,
                 "href": self.rest_url("/wp/v2/categories", post=post.id)},
                {"taxonomy": "post_tag", "embeddable": True,
                 "href": self.rest_url("/wp/v2/tags", post=post.id)}],
            "curies": [{"name": "wp", "href": "https://api.w.org/{rel}", "templated": True}],
        }
        if context == "edit" and user is not None:
            if self.can(user, "publish_posts"):
                links["wp:action-publish"] = [{"href": self_href}]
            if self.can(user, "unfiltered_html"):
                links["wp:action-unfiltered-html"] = [{"href": self_href}]
        data["_links"] = links
        return data

    def list_posts(self, req: _Request) -> _Response:
        context = self._context(req)
        user = req.user
        per_page = self._int(req, "per_page", 10, 1, 100)
        page = self._int(req, "page", 1, 1, None)
        offset = self._int(req, "offset", None)
        statuses = ["publish"]
        if "status" in req.present:
            statuses = [sanitize_title(s) for s in self._list(req.params.get("status"))]
            for index, status in enumerate(statuses):
                if status != "publish" and not (
                        self.can(user, "edit_posts")
                        or (status == "private" and self.can(user, "read_private_posts"))):
                    raise _invalid_params({"status": ("rest_forbidden_status",
                                                      "Status is forbidden.")})
                if status not in _ALL_STATUSES + ("any",):
                    raise _invalid_params({"status": (
                        "rest_not_in_enum",
                        f"status[{index}] is not one of {_and_list(_ALL_STATUSES + ('any',))}.")})
        if context == "edit" and not self.can(user, "edit_posts"):
            raise _Error(self.required_code(user), "rest_forbidden_context",
                         "Sorry, you are not allowed to edit posts in this post type.")
        order = str(req.params.get("order", "desc")).lower()
        orderby = str(req.params.get("orderby", "date")).lower()
        if order not in ("asc", "desc"):
            raise _invalid_params({"order": ("rest_not_in_enum",
                                             "order is not one of asc and desc.")})
        slugs = None
        if "slug" in req.present:
            slugs = {sanitize_title(s) for s in self._list(req.params.get("slug"))}
        include = self._id_list(req, "include")
        exclude = self._id_list(req, "exclude") or []
        authors = self._id_list(req, "author")
        categories = self._id_list(req, "categories")
        tags = self._id_list(req, "tags")
        words = str(req.params.get("search") or "").split()

        def wanted(post: Post) -> bool:
            if "any" in statuses:
                if post.status in ("trash", "auto-draft"):
                    return False
            elif post.status not in statuses:
                return False
            if slugs is not None and post.slug not in slugs:
                return False
            if include and post.id not in include:
                return False
            if post.id in exclude or (authors and post.author not in authors):
                return False
            if categories and not set(categories) & set(post.categories):
                return False
            if tags and not set(tags) & set(post.tags):
                return False
            haystack = f"{post.title}\n{post.excerpt}\n{post.content}".lower()
            return all(w.lower() in haystack for w in words)

        found = [p for p in self.posts.values() if wanted(p)]
        keys = {"id": lambda p: p.id, "title": lambda p: (p.title.lower(), p.id),
                "slug": lambda p: (p.slug, p.id), "modified": lambda p: (p.modified, p.id),
                "author": lambda p: (p.author, p.id), "include_slugs": lambda p: p.id,
                "include": lambda p: (include.index(p.id) if include else p.id)}
        found.sort(key=keys.get(orderby, lambda p: (p.date, p.id)), reverse=order == "desc")
        total = len(found)
        pages = -(-total // per_page) if total else 0
        if page > 1 and page > pages and total > 0:
            raise _Error(400, "rest_post_invalid_page_number",
                         "The page number requested is larger than the number of pages "
                         "available.")
        start = offset if offset is not None else (page - 1) * per_page
        items = []
        for post in found[start:start + per_page]:
            allowed = (self.can_post(user, "edit", post) if context == "edit"
                       else self.can_post(user, "read", post))
            if allowed:
                items.append(self._fields(req, self.post_json(post, context, user)))
        return _Response(200, items, {"X-WP-Total": str(total), "X-WP-TotalPages": str(pages)})

    def get_post(self, req: _Request, post_id: int) -> _Response:
        post = self._find_post(post_id)
        context = self._context(req)
        user = req.user
        if context == "edit" and not self.can_post(user, "edit", post):
            raise _Error(self.required_code(user), "rest_forbidden_context",
                         "Sorry, you are not allowed to edit this post.")
        if not self.can_post(user, "read", post):
            raise _Error(self.required_code(user), "rest_forbidden",
                         "Sorry, you are not allowed to do that.")
        link = f'<{self.permalink(post)}>; rel="alternate"; type=text/html'
        return _Response(200, self._fields(req, self.post_json(post, context, user)),
                         {"Link": link})

    # -- posts: writing --------------------------------------------------------------------

    def _text_param(self, req: _Request, name: str) -> Optional[str]:
        if name not in req.present:
            return None
        value = req.params.get(name)
        if isinstance(value, str):
            return value
        if isinstance(value, dict) and isinstance(value.get("raw"), str):
            return value["raw"]
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return None

    def _validate_post_params(self, req: _Request, current: Optional[Post]) -> None:
        """Schema validation (WP_REST_Request::has_valid_params): before permissions."""
        problems: dict[str, tuple[str, str]] = {}
        if "status" in req.present:
            status = req.params.get("status")
            if not (current is not None and status == current.status) \
                    and status not in _POST_STATUSES:
                problems["status"] = ("rest_not_in_enum",
                                      f"status is not one of {_and_list(_POST_STATUSES)}.")
        for name in ("date", "date_gmt"):
            if name in req.present and req.params.get(name) is not None:
                value = req.params.get(name)
                if not isinstance(value, str) or _parse_date(value) is None:
                    problems[name] = ("rest_invalid_date", "Invalid date.")
        for name in ("categories", "tags"):
            if name in req.present:
                for index, item in enumerate(self._list(req.params.get(name))):
                    try:
                        if isinstance(item, bool):
                            raise ValueError
                        int(item)
                    except (TypeError, ValueError):
                        problems[name] = ("rest_invalid_type",
                                          f"{name}[{index}] is not of type integer.")
                        break
        if "meta" in req.present and not isinstance(req.params.get("meta"), dict):
            problems["meta"] = ("rest_invalid_param", "Invalid parameter.")
        for name, allowed in (("comment_status", ("open", "closed")),
                              ("ping_status", ("open", "closed"))):
            if name in req.present and req.params.get(name) not in allowed:
                problems[name] = ("rest_not_in_enum", f"{name} is not one of open and closed.")
        if "slug" in req.present and not isinstance(req.params.get("slug"), str):
            problems["slug"] = ("rest_invalid_type", "slug is not of type string.")
        if problems:
            raise _invalid_params(problems)

    def _check_status_permission(self, status: str, user: Optional[User]) -> None:
        # handle_status_param
        if status == "private" and not self.can(user, "publish_posts"):
            raise _Error(self.required_code(user), "rest_cannot_publish",
                         "Sorry, you are not allowed to create private posts in this post type.")
        if status in ("publish", "future") and not self.can(user, "publish_posts"):
            raise _Error(self.required_code(user), "rest_cannot_publish",
                         "Sorry, you are not allowed to publish posts in this post type.")

    def create_post(self, req: _Request) -> _Response:
        user = req.user
        self._validate_post_params(req, None)
        if req.params.get("id"):
            raise _Error(400, "rest_post_exists", "Cannot create existing post.")
        if not self.can(user, "edit_posts"):
            raise _Error(self.required_code(user), "rest_cannot_create",
                         "Sorry, you are not allowed to create posts as this user.")
        status = req.params.get("status", "draft") if "status" in req.present else "draft"
        self._check_status_permission(status, user)
        title = self._text_param(req, "title") or ""
        content = self._text_param(req, "content") or ""
        excerpt = self._text_param(req, "excerpt") or ""
        if not (title or content or excerpt):
            raise _Error(400, "empty_content", "Content, title, and excerpt are empty.")
        if not self.can(user, "unfiltered_html"):
            title, content, excerpt = _TAGS.sub("", title), _kses_post(content), \
                _kses_post(excerpt)
        assert user is not None
        now_gmt = self.now_gmt()
        post = Post(id=next(self.fake._post_ids), author=user.id, status=status, slug="",
                    title=title, content=content, excerpt=excerpt,
                    date=now_gmt + self.offset(), date_gmt=None,
                    modified=now_gmt + self.offset(), modified_gmt=now_gmt)
        self._apply_dates(req, post, creating=True)
        requested = req.params.get("slug") if "slug" in req.present else None
        post.requested_slug = requested
        slug = sanitize_title(requested) if requested else ""
        if slug and status in ("draft", "pending"):
            # The REST controller asks for uniqueness as if publishing: see the docstring.
            slug = self.unique_post_slug(slug, post.id, "publish")
        post.slug = slug
        self._settle_status_and_slug(post)
        for key in ("comment_status", "ping_status"):
            if key in req.present:
                setattr(post, key, req.params[key])
        if "sticky" in req.present:
            post.sticky = self._bool(req.params.get("sticky"))
        if "password" in req.present and isinstance(req.params.get("password"), str):
            post.password = req.params["password"]
        post.categories = [1]  # wp_insert_post: 'post' needs a category
        self.posts[post.id] = post
        req.created_post = post.id
        # What follows runs after wp_insert_post: an error here leaves the post stored.
        self._apply_terms_and_meta(req, post)
        data = self.post_json(post, "edit", user)
        return _Response(201, self._fields(req, data),
                         {"Location": self.rest_url(f"/wp/v2/posts/{post.id}")})

    def _apply_dates(self, req: _Request, post: Post, creating: bool) -> bool:
        """The date parameters; True if an explicit date was set (edit_date)."""
        for name in ("date", "date_gmt"):
            if name in req.present and req.params.get(name) is None:
                # "Sending a null date or date_gmt value resets date and date_gmt".
                post.date_gmt = None
                post.date = self.now_gmt() + self.offset()
                return False
        # `date` wins over `date_gmt` when both are sent, as in prepare_item_for_database.
        for name, is_utc in (("date", False), ("date_gmt", True)):
            value = req.params.get(name)
            if name not in req.present or not value:
                continue
            moment, had_zone = _parse_date(value)  # validated already
            if is_utc or had_zone:
                utc, local = moment, moment + self.offset()
            else:
                local, utc = moment, moment - self.offset()
            if not creating and (post.date == local if not is_utc else post.date_gmt == utc):
                return False  # the same date: not an edit of the date
            post.date, post.date_gmt = local, utc
            return True
        return False

    def _settle_status_and_slug(self, post: Post) -> None:
        """wp_insert_post: future/publish by date, dates of published posts, the slug."""
        now = self.now_gmt()
        if post.status in ("publish", "private") and post.date_gmt is None:
            post.date_gmt = post.date - self.offset()  # only drafts keep a floating date
        if post.status == "publish" and post.date_gmt is not None \
                and (post.date_gmt - now).total_seconds() >= 60:
            post.status = "future"
        elif post.status == "future":
            if post.date_gmt is None:
                post.date_gmt = post.date - self.offset()
            if (post.date_gmt - now).total_seconds() < 60:
                post.status = "publish"
        if post.status not in ("draft", "pending", "auto-draft"):
            if not post.slug:
                post.slug = sanitize_title(post.title, str(post.id))
            post.slug = self.unique_post_slug(post.slug, post.id, post.status)

    def _apply_terms_and_meta(self, req: _Request, post: Post) -> None:
        for name, taxonomy in (("categories", "category"), ("tags", "post_tag")):
            ids = self._id_list(req, name)
            if ids is not None:
                # wp_set_object_terms: ids that are not terms of the taxonomy are skipped.
                setattr(post, name, [i for i in dict.fromkeys(ids)
                                     if i in self.terms and self.terms[i].taxonomy == taxonomy])
        meta = req.params.get("meta") if "meta" in req.present else None
        if isinstance(meta, dict):
            post.meta_sent.update(meta)
            for key, (kind, _default) in self.registered_meta.items():
                if key not in meta:
                    continue
                value = meta[key]
                if value is None:
                    post.meta.pop(key, None)
                    continue
                checked = self._meta_value(value, kind)
                if checked is None:
                    raise _Error(400, "rest_invalid_type", f"meta.{key} is not of type {kind}.",
                                 param=f"meta.{key}")
                post.meta[key] = checked

    @staticmethod
    def _meta_value(value: Any, kind: str) -> Any:
        if kind == "string":
            return value if isinstance(value, str) else None
        if kind == "integer":
            if isinstance(value, bool):
                return None
            if isinstance(value, int) or (isinstance(value, str) and re.fullmatch(r"-?\d+", value)):
                return int(value)
            return None
        if kind == "number":
            if isinstance(value, bool):
                return None
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
        if kind == "boolean":
            if isinstance(value, bool):
                return value
            if value in ("true", "1", 1, ""):
                return value in ("true", "1", 1)
            if value in ("false", "0", 0):
                return False
            return None
        return value

    def update_post(self, req: _Request, post_id: int) -> _Response:
        user = req.user
        post = self._find_post(post_id)
        self._validate_post_params(req, post)
        if not self.can_post(user, "edit", post):
            raise _Error(self.required_code(user), "rest_cannot_edit",
                         "Sorry, you are not allowed to edit this post.")
        old_status = post.status
        status = old_status
        if "status" in req.present and req.params.get("status") != old_status:
            status = req.params["status"]
            self._check_status_permission(status, user)
        edited = dataclasses.replace(post, categories=list(post.categories),
                                     tags=list(post.tags), meta=dict(post.meta),
                                     meta_sent=dict(post.meta_sent))
        edited.status = status
        for name in ("title", "content", "excerpt"):
            value = self._text_param(req, name)
            if value is not None:
                if not self.can(user, "unfiltered_html"):
                    value = _TAGS.sub("", value) if name == "title" else _kses_post(value)
                setattr(edited, name, value)
        if not (edited.title or edited.content or edited.excerpt):
            raise _Error(400, "empty_content", "Content, title, and excerpt are empty.")
        edit_date = self._apply_dates(req, edited, creating=False)
        if old_status in ("draft", "pending", "auto-draft") and post.date_gmt is None \
                and not edit_date and edited.date_gmt is None:
            # wp_update_post: a floating draft date moves to now on every save.
            edited.date = self.now_gmt() + self.offset()
        if old_status == "trash" and status != "trash":
            # wp_insert_post: a post leaving the trash gets its desired slug back.
            if edited.desired_slug:
                edited.slug, edited.desired_slug = edited.desired_slug, None
            edited.trashed_status = None
        if "slug" in req.present and isinstance(req.params.get("slug"), str):
            edited.slug = sanitize_title(req.params["slug"])
            if edited.slug and status in ("draft", "pending"):
                edited.slug = self.unique_post_slug(edited.slug, post.id, "publish")
        self._settle_status_and_slug(edited)
        for key in ("comment_status", "ping_status"):
            if key in req.present:
                setattr(edited, key, req.params[key])
        if "sticky" in req.present:
            edited.sticky = self._bool(req.params.get("sticky"))
        now = self.now_gmt()
        edited.modified, edited.modified_gmt = now + self.offset(), now
        edited.updates += 1
        self.posts[post.id] = edited
        self._apply_terms_and_meta(req, edited)
        return _Response(200, self._fields(req, self.post_json(edited, "edit", user)))

    def delete_post(self, req: _Request, post_id: int) -> _Response:
        user = req.user
        post = self._find_post(post_id)
        if not self.can_post(user, "delete", post):
            raise _Error(self.required_code(user), "rest_cannot_delete",
                         "Sorry, you are not allowed to delete this post.")
        if self._bool(req.params.get("force", False)):
            previous = self.post_json(post, "edit", user)
            del self.posts[post.id]
            self.deleted.append(post)
            return _Response(200, {"deleted": True, "previous": previous})
        if not self.fake.trash_enabled:
            raise _Error(501, "rest_trash_not_supported",
                         "The post does not support trashing. Set 'force=true' to delete.")
        if post.status == "trash":
            raise _Error(410, "rest_already_trashed", "The post has already been deleted.")
        # wp_trash_post, then wp_add_trashed_suffix_to_post_name_for_post.
        post.trashed_status = post.status
        if not post.slug:
            post.slug = self.unique_post_slug(sanitize_title(post.title, str(post.id)),
                                              post.id, "publish")
        post.desired_slug = post.slug
        post.slug = _truncate_slug(post.slug, 191) + "__trashed"
        post.status = "trash"
        now = self.now_gmt()
        post.modified, post.modified_gmt = now + self.offset(), now
        return _Response(200, self._fields(req, self.post_json(post, "edit", user)))

    # -- terms -----------------------------------------------------------------------------

    def term_json(self, term: Term) -> dict[str, Any]:
        count = sum(1 for p in self.posts.values() if p.status == "publish"
                    and term.id in (p.categories if term.taxonomy == "category" else p.tags))
        base = "categories" if term.taxonomy == "category" else "tags"
        data: dict[str, Any] = {"id": term.id, "count": count, "description": term.description,
                                "link": self.term_link(term), "name": term.name,
                                "slug": term.slug, "taxonomy": term.taxonomy}
        if term.taxonomy == "category":
            data["parent"] = term.parent
        data["meta"] = []
        data["_links"] = {"self": [{"href": self.rest_url(f"/wp/v2/{base}/{term.id}")}],
                          "collection": [{"href": self.rest_url(f"/wp/v2/{base}")}]}
        return data

    def list_terms(self, req: _Request, taxonomy: str) -> _Response:
        self._context(req)
        per_page = self._int(req, "per_page", 10, 1, 100)
        page = self._int(req, "page", 1, 1, None)
        search = str(req.params.get("search") or "").lower()
        slugs = ({sanitize_title(s) for s in self._list(req.params.get("slug"))}
                 if "slug" in req.present else None)
        include = self._id_list(req, "include")
        hide_empty = self._bool(req.params.get("hide_empty", False))
        found = []
        for term in self.terms.values():
            if term.taxonomy != taxonomy:
                continue
            if search and search not in term.name.lower() and search not in term.slug.lower():
                continue
            if slugs is not None and term.slug not in slugs:
                continue
            if include and term.id not in include:
                continue
            found.append(self.term_json(term))
        if hide_empty:
            found = [t for t in found if t["count"]]
        orderby = str(req.params.get("orderby", "name"))
        order = str(req.params.get("order", "asc")).lower()
        key = {"id": lambda t: t["id"], "slug": lambda t: t["slug"],
               "count": lambda t: t["count"]}.get(orderby, lambda t: t["name"].lower())
        found.sort(key=key, reverse=order == "desc")
        total = len(found)
        pages = -(-total // per_page) if total else 0
        if page > 1 and page > pages and total > 0:
            raise _Error(400, "rest_term_invalid_page_number",
                         "The page number requested is larger than the number of pages "
                         "available.")
        items = [self._fields(req, t) for t in found[(page - 1) * per_page:page * per_page]]
        return _Response(200, items, {"X-WP-Total": str(total), "X-WP-TotalPages": str(pages)})

    def get_term(self, req: _Request, taxonomy: str, term_id: int) -> _Response:
        term = self.terms.get(term_id)
        if term is None or term.taxonomy != taxonomy:
            raise _Error(404, "rest_term_invalid", "Term does not exist.")
        return _Response(200, self._fields(req, self.term_json(term)))

    def create_term(self, req: _Request, taxonomy: str) -> _Response:
        user = req.user
        if "name" not in req.present:
            raise _Error(400, "rest_missing_callback_param", "Missing parameter(s): name",
                         params=["name"])
        # Categories need edit_terms (manage_categories); tags only assign_terms (edit_posts).
        needed = "manage_categories" if taxonomy == "category" else "edit_posts"
        if not self.can(user, needed):
            raise _Error(self.required_code(user), "rest_cannot_create",
                         "Sorry, you are not allowed to create terms in this taxonomy.")
        name = _escape_term_name(str(req.params.get("name") or ""))
        if not name:
            raise _Error(400, "empty_term_name", "A name is required for this term.")
        parent = self._int(req, "parent", 0) or 0
        if parent and taxonomy != "category":
            raise _Error(400, "rest_taxonomy_not_hierarchical",
                         "Cannot set parent term, taxonomy is not hierarchical.")
        if parent and (parent not in self.terms or self.terms[parent].taxonomy != taxonomy):
            raise _Error(400, "rest_term_invalid", "Parent term does not exist.")
        slug_given = req.params.get("slug") if "slug" in req.present else None
        slug = sanitize_title(slug_given) if slug_given else sanitize_title(name)
        for term in self.terms.values():
            if term.taxonomy != taxonomy or term.name.lower() != name.lower():
                continue
            if taxonomy == "category" and term.parent != parent:
                continue
            slug_match = any(t.slug == slug for t in self.terms.values()
                             if t.taxonomy == taxonomy)
            if not slug_given or term.slug == slug or slug_match:
                message = ("A term with the name provided already exists with this parent."
                           if taxonomy == "category" else
                           "A term with the name provided already exists in this taxonomy.")
                raise _Error(400, "term_exists", message, term_id=term.id,
                             _additional=[term.id, term.id])
        description = str(req.params.get("description") or "")
        term_id = next(self.fake._term_ids)
        # A name without a letter or digit gets its id as slug, as wp_insert_term does.
        term = Term(term_id, taxonomy, name, self.unique_term_slug(slug or str(term_id), taxonomy),
                    description, parent)
        self.terms[term.id] = term
        base = "categories" if taxonomy == "category" else "tags"
        return _Response(201, self._fields(req, self.term_json(term)),
                         {"Location": self.rest_url(f"/wp/v2/{base}/{term.id}")})

    def delete_term(self, req: _Request, taxonomy: str, term_id: int) -> _Response:
        user = req.user
        term = self.terms.get(term_id)
        if term is None or term.taxonomy != taxonomy:
            raise _Error(404, "rest_term_invalid", "Term does not exist.")
        if not self.can(user, "manage_categories"):
            raise _Error(self.required_code(user), "rest_cannot_delete",
                         "Sorry, you are not allowed to delete this term.")
        if not self._bool(req.params.get("force", False)):
            raise _Error(501, "rest_trash_not_supported",
                         "Terms do not support trashing. Set 'force=true' to delete.")
        previous = self.term_json(term)
        del self.terms[term_id]
        for post in self.posts.values():
            for name in ("categories", "tags"):
                ids = getattr(post, name)
                if term_id in ids:
                    ids.remove(term_id)
        return _Response(200, {"deleted": True, "previous": previous})


# -- HTTP plumbing -------------------------------------------------------------------------------


class _Server(FakeHTTPServer):
    quiet_errors = FakeHTTPServer.quiet_errors + (ClientGone,)
    fake: FakeWordPress


def _encode_json(data: Any) -> bytes:
    # PHP's json_encode escapes slashes ("https:\/\/...") and non-ASCII (\uXXXX).
    return json.dumps(data, ensure_ascii=True, separators=(",", ":")).replace(
        "/", "\\/").encode("ascii")


class _Handler(FakeHandler):
    server_version = "Apache"
    server: _Server

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    # -- reading (and _read_body: FakeHandler) ----------------------------------------------

    @staticmethod
    def _parse_query(query: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
            if key.endswith("[]"):
                out.setdefault(key[:-2], [])
                if isinstance(out[key[:-2]], list):
                    out[key[:-2]].append(value)
                continue
            nested = re.fullmatch(r"([^\[]+)\[([^\]]*)\]", key)
            if nested:  # meta[key]=value, title[raw]=...
                holder = out.setdefault(nested.group(1), {})
                if isinstance(holder, dict):
                    holder[nested.group(2)] = value
                continue
            out[key] = value
        return out

    # -- serving -----------------------------------------------------------------------------

    def _serve(self, verb: str) -> None:
        fake = self.server.fake
        raw = self._read_body()
        parsed = urllib.parse.urlsplit(self.path)
        query = self._parse_query(parsed.query)
        method = verb
        override = self.headers.get("X-HTTP-Method-Override") or query.get("_method")
        if verb == "POST" and isinstance(override, str) and override:
            method = override.upper()
        route: Optional[str] = None
        path = parsed.path or "/"
        if path == "/wp-json" or path.startswith("/wp-json/"):
            route = path[len("/wp-json"):] or "/"
        elif path in ("/", "/index.php") and isinstance(query.get("rest_route"), str):
            route = query["rest_route"] or "/"
        content_type = self.headers.get("Content-Type", "")
        body: Any = None
        bad_json = False
        if raw:
            if "json" in content_type.lower():
                try:
                    body = json.loads(raw)
                except ValueError:
                    bad_json = True
            elif "x-www-form-urlencoded" in content_type.lower():
                body = self._parse_query(raw.decode("utf-8", "replace"))
        record = RequestRecord(start=time.monotonic(), method=method, path=path, route=route,
                               query=query, body=body,
                               headers={k: v for k, v in self.headers.items()}, raw_body=raw)
        auth_name = self._basic_user()
        record.auth_sent = auth_name[0] if auth_name else None
        fault, hold = fake._begin(record)
        with self._answering(record):
            self._answer(record, fault, hold, bad_json)

    def _basic_user(self) -> Optional[tuple[str, str]]:
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return None
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None  # PHP sets no PHP_AUTH_USER: the request is anonymous
        if ":" not in decoded:
            return None
        user, _, password = decoded.partition(":")
        return user, password

    def _answer(self, record: RequestRecord, fault: Optional[Fault], hold: Optional[Hold],
                bad_json: bool) -> None:
        fake = self.server.fake
        if fault is not None and fault.kind == "latency":
            self._sleep(fault.seconds)
        if fake.latency:
            self._sleep(fake.latency)
        if hold is not None and not hold.stored:
            self._hold(record, hold)
        if fault is not None and not fault.store and fault.kind != "latency":
            if fault.kind == "drop":
                self._drop()
                return
            if fault.kind == "hang":
                self._pause_until(time.monotonic() + fault.seconds)
                self._drop()
                return
            self._send_fault(record, fault)
            return
        status, headers, payload, page = fake._apply(record, self._basic_user(), bad_json)
        if hold is not None and hold.stored:
            self._hold(record, hold)
        if fault is not None and fault.store:
            if fault.kind == "stored_then_hang":
                self._pause_until(time.monotonic() + fault.seconds)
                self._drop()
                return
            if fault.kind == "stored_then_drop":
                self._drop()
                return
            if fault.kind == "stored_then_error":
                self._send_fault(record, fault)
                return
            if fault.kind == "php_notice":
                notice = ("<br />\n<b>Deprecated</b>:  Creation of dynamic property "
                          "Social_Share::$options is deprecated in <b>/var/www/html/wp-content/"
                          "plugins/social-share/social-share.php</b> on line <b>42</b><br />\n")
                body = notice.encode() + (_encode_json(payload) if page is None
                                          else page.encode("utf-8"))
                self._send(record, status, headers, body, JSON_TYPE, payload)
                return
        if page is not None:
            self._send(record, status, headers, page.encode("utf-8"), HTML_TYPE, None)
        else:
            self._send(record, status, headers, _encode_json(payload), JSON_TYPE, payload)

    def _send_fault(self, record: RequestRecord, fault: Fault) -> None:
        fake = self.server.fake
        status = fault.status or 500
        headers = dict(fault.headers)
        body = fault.body
        if fault.kind == "redirect" and not headers.get("Location"):
            headers["Location"] = "https://" + fake.url.split("://", 1)[1] + self.path
        if body == "critical" or body == "maintenance":
            wants_json = any("json" in self.headers.get(h, "").lower()
                             for h in ("Accept", "Content-Type"))
            if body == "critical":
                message, title, code = _CRITICAL, "WordPress &rsaquo; Error", \
                    "internal_server_error"
            else:
                message = "Briefly unavailable for scheduled maintenance. Check back in a minute."
                title, code = "Maintenance", "wp_die"
            if wants_json:  # wp_die's JSON handler (wp_is_json_request)
                body = {"code": code, "message": message, "data": {"status": status},
                        "additional_errors": []}
            else:
                body = _page(title, f"<div class=\"wp-die-message\">{message}</div>")
        elif body == "home":
            body = fake._home_page()
        if isinstance(body, dict):
            self._send(record, status, headers, _encode_json(body), JSON_TYPE, body)
        else:
            self._send(record, status, headers, str(body or "").encode("utf-8"), HTML_TYPE, None)

    def _send(self, record: RequestRecord, status: int, headers: dict[str, str], body: bytes,
              content_type: str, payload: Any) -> None:
        fake = self.server.fake
        if fake._stopping.is_set():
            raise Stopping()
        fake._answered(record, status, payload)
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            if record.route is not None and content_type == JSON_TYPE:
                self.send_header("X-Robots-Tag", "noindex")
                self.send_header("Link", f'<{fake._api_root()}>; rel="https://api.w.org/"')
                self.send_header("X-Content-Type-Options", "nosniff")
                self.send_header("Access-Control-Expose-Headers",
                                 "X-WP-Total, X-WP-TotalPages, Link")
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body) if record.method != "HEAD" else 0))
            self.end_headers()
            if record.method != "HEAD":
                self.wfile.write(body)
            self.wfile.flush()
        except DISCONNECT_ERRORS as exc:
            raise ClientGone() from exc

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- waiting (and _pause_until: FakeHandler) --------------------------------------------

    def _sleep(self, seconds: float) -> None:
        """Slow, not watching the client: the request is applied even if it has left."""
        fake = self.server.fake
        if fake._stopping.wait(seconds):
            raise Stopping()

    def _hold(self, record: RequestRecord, hold: Hold) -> None:
        """Wait for release; a client that leaves meanwhile is noted, the wait goes on."""
        fake = self.server.fake
        fake._mark_held(record, hold)
        noted = False
        while not hold.released.wait(0.02):
            if fake._stopping.is_set():
                raise Stopping()
            if not noted and self._client_gone():
                fake._mark_disconnected(record)
                noted = True

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)
        except (OSError, ValueError):
            return True


# -- the public object ---------------------------------------------------------------------------

_SETTINGS = {
    "site_name": "Fake WordPress",
    "site_mode": "wordpress",
    "rest_requires_auth": False,
    "auth_header_stripped": False,
    "app_passwords_available": True,
    "trash_enabled": True,
    "cron": True,
    "timezone_offset": 0.0,
    "permalinks": "/%postname%/",
    "latency": 0.0,
}


class FakeWordPress(FakeServer[RequestRecord]):
    """A WordPress REST API on 127.0.0.1, run in a daemon thread. Public attributes may be
    read and set from any thread; the site's state changes under one lock."""

    _server_class = _Server
    _handler_class = _Handler

    site_name: str
    site_mode: str
    rest_requires_auth: bool
    auth_header_stripped: bool
    app_passwords_available: bool
    trash_enabled: bool
    cron: bool
    timezone_offset: float
    permalinks: str
    latency: float

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, **settings: Any) -> None:
        unknown = set(settings) - set(_SETTINGS)
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        super().__init__(host, port, threading.RLock())
        self._defaults = {**_SETTINGS, **settings}
        # Post ids never restart, not even across reset(): a post id an app kept from an
        # earlier test never names a post of this one.
        self._post_ids = itertools.count(1)
        self._reset_state()

    def _reset_state(self) -> None:
        for name, value in self._defaults.items():
            setattr(self, name, value)
        self._clock_offset = 0.0
        self._clear_log()
        self._script: list[tuple[Callable[[RequestRecord], bool], Optional[Fault]]] = []
        self._default_faults: list[tuple[Callable[[RequestRecord], bool], Fault]] = []
        self._holds: list[Hold] = []
        self._taken_holds: list[Hold] = []
        # A fresh site's users and terms: admin is user 1, Uncategorized term 1.
        self._term_ids = itertools.count(1)
        self._user_ids = itertools.count(1)
        self._site = _Site(self)

    # -- lifecycle (start, stop, port: FakeServer) -----------------------------------------

    def _on_stop(self) -> None:
        self.release()

    def _banner(self) -> Iterable[str]:
        yield self.url
        for login, _, password in DEFAULT_USERS:
            yield f"  {login}: {password}"

    @property
    def url(self) -> str:
        """The site's address (home and siteurl), e.g. http://127.0.0.1:41234."""
        return f"http://{self._host}:{self.port}"

    @property
    def api_url(self) -> str:
        return self._api_root()

    def _api_root(self) -> str:
        if self.site_mode == "plain_permalinks":
            return f"{self.url}/?rest_route=/"
        return f"{self.url}/wp-json/"

    def reset(self) -> None:
        """A fresh site: default users and settings, no posts, only Uncategorized, an empty
        log, no faults or holds (held requests are released first)."""
        self.release()
        with self._lock:
            self._reset_state()
            self._changed.notify_all()

    # -- users, terms, meta ----------------------------------------------------------------

    def credentials(self, login: str = "admin") -> tuple[str, str]:
        """(login, application password as shown, with spaces) of a user."""
        with self._lock:
            user = self._site.user_by_login(login)
            if user is None or not user.app_passwords:
                raise KeyError(f"no user {login!r} with an application password")
            return user.login, user.app_passwords[0]

    def add_user(self, login: str, role: str = "administrator", *,
                 app_password: Optional[str] = None, email: str = "") -> str:
        """Add a user; returns the application password (made up when not given)."""
        with self._lock:
            if app_password is None:
                raw = (login + "X" * 24)[:4].ljust(4, "X") + "0" * 20
                app_password = " ".join(raw[i:i + 4] for i in range(0, 24, 4))
            self._site.add_user(login, role, app_password, email)
            return app_password

    def user(self, login: str) -> User:
        with self._lock:
            user = self._site.user_by_login(login)
            if user is None:
                raise KeyError(login)
            return dataclasses.replace(user, app_passwords=list(user.app_passwords))

    def set_role(self, login: str, role: str) -> None:
        if role not in ROLE_CAPS:
            raise ValueError(f"unknown role {role!r}")
        with self._lock:
            self._user(login).role = role

    def revoke_app_passwords(self, login: str = "admin") -> None:
        """The user revoked their application passwords: 401 incorrect_password from now on."""
        with self._lock:
            self._user(login).app_passwords.clear()

    def add_app_password(self, login: str, password: str) -> None:
        with self._lock:
            self._user(login).app_passwords.append(password)

    def disable_app_passwords_for(self, login: str) -> None:
        """wp_is_application_passwords_available_for_user is false: 401
        application_passwords_disabled_for_user."""
        with self._lock:
            self._user(login).app_passwords_enabled = False

    def _user(self, login: str) -> User:
        user = self._site.user_by_login(login)
        if user is None:
            raise KeyError(login)
        return user

    def register_meta(self, key: str, type: str = "string", default: Any = None) -> None:  # noqa: A002
        """register_post_meta(key, show_in_rest=True, single=True): the key is then stored
        and returned; unregistered keys are dropped."""
        if type not in ("string", "integer", "number", "boolean", "array", "object"):
            raise ValueError(f"unknown meta type {type!r}")
        empty = {"string": "", "integer": 0, "number": 0.0, "boolean": False, "array": [],
                 "object": {}}[type]
        with self._lock:
            self._site.registered_meta[key] = (type, empty if default is None else default)

    def add_category(self, name: str, slug: Optional[str] = None, parent: int = 0) -> int:
        with self._lock:
            return self._site.add_term("category", name, slug, parent=parent).id

    def add_tag(self, name: str, slug: Optional[str] = None) -> int:
        with self._lock:
            return self._site.add_term("post_tag", name, slug).id

    def add_post(self, title: str, *, status: str = "publish", slug: Optional[str] = None,
                 content: str = "", author: str = "admin", **fields: Any) -> int:
        """Put a post on the site directly (not through the API), e.g. one with a slug the app
        will also ask for. Returns its id."""
        with self._lock:
            site = self._site
            now = site.now_gmt()
            post = Post(id=next(self._post_ids), author=self._user(author).id, status=status,
                        slug=sanitize_title(slug) if slug else "", title=title,
                        content=content, excerpt=fields.pop("excerpt", ""),
                        date=now + site.offset(), date_gmt=None if status in (
                            "draft", "pending") else now,
                        modified=now + site.offset(), modified_gmt=now, categories=[1])
            for name, value in fields.items():
                setattr(post, name, value)
            site._settle_status_and_slug(post)
            site.posts[post.id] = post
            return post.id

    # -- clock -----------------------------------------------------------------------------

    def now(self) -> datetime:
        """The site's clock (UTC, naive)."""
        with self._lock:
            return self._site.now_gmt()

    def advance_clock(self, seconds: float) -> None:
        """Move the site's clock forward (to make a scheduled post due)."""
        with self._lock:
            self._clock_offset += seconds

    def run_cron(self) -> list[int]:
        """Publish the future posts that are due now; returns their ids."""
        with self._lock:
            return self._site.run_cron()

    # -- faults and holds ------------------------------------------------------------------

    def script(self, *faults: Optional[Fault], on: Matcher = ANY) -> None:
        """Queue faults, each used once, by the next requests matching ``on``, in order.
        ``None`` means "answer that one normally"."""
        match = _matcher(on)
        with self._lock:
            self._script.extend((match, fault) for fault in faults)

    def set_default_fault(self, fault: Optional[Fault], on: Matcher = ANY) -> None:
        """Apply ``fault`` to every request matching ``on`` that no scripted fault took
        (the first default set that matches wins). ``None`` removes all defaults."""
        with self._lock:
            if fault is None:
                self._default_faults.clear()
            else:
                self._default_faults.append((_matcher(on), fault))

    def clear_faults(self) -> None:
        with self._lock:
            self._script.clear()
            self._default_faults.clear()

    def hold(self, on: Matcher = CREATE_POST, *, stored: bool = True) -> Hold:
        """Stop the next request matching ``on`` until its Hold is released: after it was
        applied (``stored``), or before."""
        hold = Hold(_matcher(on), stored)
        with self._lock:
            self._holds.append(hold)
        return hold

    def release(self) -> None:
        """Release every hold: the held requests answer, unused holds are dropped."""
        with self._lock:
            holds = self._holds + self._taken_holds
            self._holds, self._taken_holds = [], []
        for hold in holds:
            hold.release()

    # -- records (also requests, in_flight, wait_for: FakeServer) ----------------------------

    def requests_to(self, on: Matcher) -> list[RequestRecord]:
        match = _matcher(on)
        with self._lock:
            return [r for r in self._requests if match(r)]

    def count(self, on: Matcher = ANY) -> int:
        return len(self.requests_to(on))

    def _snapshot(self, post: Post) -> Post:
        copy = dataclasses.replace(post, categories=list(post.categories), tags=list(post.tags),
                                   meta=dict(post.meta), meta_sent=dict(post.meta_sent))
        copy.link = self._site.permalink(post)
        return copy

    @property
    def posts(self) -> list[Post]:
        """All posts on the site (trashed ones included, deleted ones not), by id."""
        with self._lock:
            return [self._snapshot(p) for _, p in sorted(self._site.posts.items())]

    @property
    def deleted_posts(self) -> list[Post]:
        with self._lock:
            return [self._snapshot(p) for p in self._site.deleted]

    def post(self, post_id: int) -> Optional[Post]:
        with self._lock:
            post = self._site.posts.get(post_id)
            return None if post is None else self._snapshot(post)

    def find_posts(self, *, include_trash: bool = False, **criteria: Any) -> list[Post]:
        """Posts whose fields equal the criteria (title=..., slug=..., requested_slug=...,
        status=...; meta__<key>=... for the meta a request *sent*, stored or not)."""
        out = []
        for post in self.posts:
            if post.status == "trash" and not include_trash and criteria.get("status") != "trash":
                continue
            ok = True
            for name, value in criteria.items():
                if name.startswith("meta__"):
                    ok = post.meta_sent.get(name[6:]) == value
                else:
                    ok = getattr(post, name) == value
                if not ok:
                    break
            if ok:
                out.append(post)
        return out

    def duplicates(self, key: str = "requested_slug", *,
                   include_trash: bool = False) -> dict[Any, list[int]]:
        """{value: [post ids]} for every value of ``key`` held by more than one post: the
        "never two posts for one article" check. ``key``: a Post field ("title",
        "requested_slug", "slug") or "meta:<key>" (meta a request sent, kept or not).
        Trashed posts count only with ``include_trash``."""
        groups: dict[Any, list[int]] = {}
        for post in self.posts:
            if post.status == "trash" and not include_trash:
                continue
            value = (post.meta_sent.get(key[5:]) if key.startswith("meta:")
                     else getattr(post, key))
            if value in (None, ""):
                continue
            groups.setdefault(value, []).append(post.id)
        return {value: ids for value, ids in groups.items() if len(ids) > 1}

    @property
    def categories(self) -> list[Term]:
        return self._terms("category")

    @property
    def tags(self) -> list[Term]:
        return self._terms("post_tag")

    def _terms(self, taxonomy: str) -> list[Term]:
        with self._lock:
            out = []
            for term in sorted(self._site.terms.values(), key=lambda t: t.id):
                if term.taxonomy == taxonomy:
                    copy = dataclasses.replace(term)
                    copy.count = self._site.term_json(term)["count"]
                    out.append(copy)
            return out

    # -- called by the handler -------------------------------------------------------------

    def _begin(self, record: RequestRecord) -> tuple[Optional[Fault], Optional[Hold]]:
        with self._lock:
            fault: Optional[Fault] = None
            for index, (match, scripted) in enumerate(self._script):
                if match(record):
                    fault = scripted
                    del self._script[index]
                    break
            else:
                for match, default in self._default_faults:
                    if match(record):
                        fault = default
                        break
            hold = None
            for index, candidate in enumerate(self._holds):
                if candidate._matcher(record):
                    hold = candidate
                    del self._holds[index]
                    self._taken_holds.append(hold)
                    break
            record.fault = fault.kind if fault is not None else None
            self._log(record)
            self._changed.notify_all()
            return fault, hold

    def _mark_disconnected(self, record: RequestRecord) -> None:
        with self._lock:
            record.client_disconnected = True
            self._changed.notify_all()

    def _mark_held(self, record: RequestRecord, hold: Hold) -> None:
        with self._lock:
            record.held = True
            hold.record = record
            hold.arrived.set()
            self._changed.notify_all()

    def _answered(self, record: RequestRecord, status: int, payload: Any) -> None:
        with self._lock:
            record.status = status
            record.response = payload
            self._changed.notify_all()

    def _home_page(self) -> str:
        if self.site_mode == "not_wordpress":
            return _page("Welcome", "<h1>Welcome to our website</h1>")
        return _page(self.site_name,
                     f"<link rel=\"https://api.w.org/\" href=\"{self._api_root()}\" />"
                     f"<meta name=\"generator\" content=\"WordPress 6.8\" />"
                     f"<h1>{self.site_name}</h1>")

    def _apply(self, record: RequestRecord, basic: Optional[tuple[str, str]],
               bad_json: bool) -> tuple[int, dict[str, str], Any, Optional[str]]:
        """The site's answer: (status, headers, JSON payload, or an HTML page)."""
        with self._lock:
            site = self._site
            if record.route is None or self.site_mode == "not_wordpress" or (
                    self.site_mode == "plain_permalinks" and record.path.startswith("/wp-json")):
                if record.path in ("/", "/index.php") and record.method in ("GET", "HEAD"):
                    return 200, {}, None, self._home_page()
                return 404, {}, None, _page("Page not found", "<h1>Not Found</h1><p>The "
                                            "requested URL was not found on this server.</p>")
            if self.cron:
                site.run_cron()
            before = self._fingerprint()
            params: dict[str, Any] = dict(record.query)
            params.pop("rest_route", None)
            params.pop("_method", None)
            if isinstance(record.body, dict):
                params.update(record.body)  # the body wins over the query string
            req = _Request(record.method, record.route, params, set(params), None, bad_json)
            try:
                # rest_authentication_errors comes first, for every route.
                req.user = self._authenticate(record, basic)
                if self.rest_requires_auth and req.user is None:
                    raise _Error(401, "rest_not_logged_in", "You are not currently logged in.")
                response = site.dispatch(req)
                status, headers, payload = response.status, dict(response.headers), \
                    response.data
            except _Error as error:
                status, headers, payload = error.status, {}, error.payload()
            record.stored = self._fingerprint() != before
            match = re.fullmatch(r"/wp/v2/posts/(\d+)/?", record.route)
            if match:
                record.post_id = int(match.group(1))
            elif req.created_post is not None:
                record.post_id = req.created_post
                site.posts[req.created_post].created_by_request = self._requests.index(record)
            self._changed.notify_all()
            return status, headers, payload, None

    def _fingerprint(self) -> tuple:
        site = self._site
        return (tuple((p.id, p.status, p.slug, p.updates, p.modified) for p in
                      site.posts.values()), len(site.deleted), tuple(site.terms))

    def _authenticate(self, record: RequestRecord,
                      basic: Optional[tuple[str, str]]) -> Optional[User]:
        """determine_current_user + rest_application_password_check_errors."""
        site = self._site
        if basic is None or self.auth_header_stripped or not self.app_passwords_available:
            return None
        if not any(u.app_passwords for u in site.users.values()):
            return None  # WP_Application_Passwords::is_in_use() is false: not even tried
        name, password = basic
        user = site.user_by_login(name)
        if user is None and "@" in name:
            user = next((u for u in site.users.values() if u.email.lower() == name.lower()),
                        None)
        if user is None:
            if "@" in name:
                raise _Error(401, "invalid_email", "<strong>Error:</strong> Unknown email "
                             "address. Check again or try your username.")
            raise _Error(401, "invalid_username", "<strong>Error:</strong> Unknown username. "
                         "Check again or try your email address.")
        if not user.app_passwords_enabled:
            raise _Error(401, "application_passwords_disabled_for_user",
                         "Application passwords are not available for your account. Please "
                         "contact the site administrator for assistance.")
        given = _normalise_app_password(password)
        if not any(_normalise_app_password(p) == given for p in user.app_passwords):
            raise _Error(401, "incorrect_password",
                         "The provided password is an invalid application password.")
        record.auth_user = user.login
        return user


# -- command line: python -m tests.fakewp --port 0 ---------------------------------------------


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakewp",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port (default)")
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args(argv)
    FakeWordPress(host=args.host, port=args.port, latency=args.latency).serve_until_interrupted()


if __name__ == "__main__":
    main()
