"""A small client for WordPress's REST API (wp/v2), under the webhooks' address rules.

The site's address is typed in by an admin, so a request must not become a way into our
own network (netguard.py): the host is resolved once per client and every address checked
(PUBLISH_ALLOWED_HOSTS names sites on private addresses that may be reached anyway), each
request connects to the checked address (pinned.py), redirects are not followed, and one
deadline (PUBLISH_TIMEOUT) bounds each request: lookup, connect, send and the whole answer.

Every failure is a WPError whose `kind` says what to do with it (retry, stop the
destination, fail the article) and whose `message` is an English sentence for the
publication's record; `site_message` keeps the site's own words ("Sorry, you are not
allowed to create posts as this user.").

No Flask: the caller passes the settings in, so unit tests can use it against any server.
"""
from __future__ import annotations

import base64
import dataclasses
import email.utils
import html
import http.client
import json
import re
import ssl
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from .. import netguard, pinned

USER_AGENT = "Pressroom-Publisher/1"
# An answer larger than this is not a post or a list of terms: refused, never held.
MAX_BODY = 4 * 1024 * 1024

# What went wrong, as the task and the Test connection button act on it.
AUTH = "auth"              # 401: the application password was rejected
FORBIDDEN = "forbidden"    # 403: this user may not do this
NOT_FOUND = "not_found"    # 404
RATE_LIMIT = "rate_limit"  # 429
SERVER = "server"          # 5xx
TIMEOUT = "timeout"
CONNECT = "connect"        # refused, unreachable, no such name
TLS = "tls"
REFUSED = "refused"        # the address rules: private or local, or not a valid URL
REDIRECT = "redirect"      # 3xx, not followed
BAD_RESPONSE = "bad_response"  # not JSON, too large, not HTTP
REJECTED = "rejected"      # another 4xx: the site refused this request (its message says why)

RETRYABLE = frozenset({RATE_LIMIT, SERVER, TIMEOUT, CONNECT})
# Credentials the site refuses: the destination stops until an admin fixes them.
CREDENTIALS = frozenset({AUTH, FORBIDDEN})


class WPError(Exception):
    def __init__(self, kind: str, message: str, *, status: Optional[int] = None,
                 site_message: str = "", code: str = "", retry_after: Optional[float] = None,
                 detail: str = "", location: str = "", data: Any = None):
        super().__init__(message)
        self.data = data  # the site's JSON error body, when it sent one
        self.kind, self.message, self.status = kind, message, status
        self.site_message, self.code, self.retry_after = site_message, code, retry_after
        self.detail = detail or message  # for the log: hosts, addresses, exception text
        self.location = location         # a redirect's target

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict
    data: Any


# -- the site's address ------------------------------------------------------------------

def normalize_site_url(raw: str) -> str:
    """The site's address as stored: http(s), lower-case scheme and host, the path kept
    without a trailing slash, /wp-json and anything after it dropped, no query or fragment.
    Raises ValueError with a sentence for a person."""
    text = (raw or "").strip()
    if not text:
        raise ValueError("empty")
    if "://" not in text:
        text = "https://" + text
    try:
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise ValueError("not a valid URL") from exc
    if scheme not in ("http", "https") or not host:
        raise ValueError("not an http(s) URL with a host")
    if parts.username or parts.password:
        raise ValueError("a user or password in the address")
    try:
        host = netguard.normalize_host(host)
    except (ValueError, UnicodeError) as exc:
        raise ValueError("not a valid host name") from exc
    path = parts.path.rstrip("/")
    cut = path.lower().find("/wp-json")
    if cut >= 0:
        path = path[:cut]
    shown_host = f"[{host}]" if ":" in host else host
    netloc = shown_host + (f":{port}" if port and port != netguard.DEFAULT_PORTS[scheme] else "")
    return urlunsplit((scheme, netloc, path, "", ""))


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (now if now is not None else time.time())
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


_TAGS = re.compile(r"<[^>]*>")


def plain(text: Any, limit: int = 300) -> str:
    """A site's message as plain text: WordPress messages may hold HTML and entities."""
    if not isinstance(text, str):
        return ""
    cleaned = " ".join(html.unescape(_TAGS.sub("", text)).split())
    return cleaned[:limit]


# -- the client --------------------------------------------------------------------------

class Client:
    """Requests to one site as one user. The host is resolved and checked once, on the
    first request; every request of this client then goes to that checked address."""

    def __init__(self, site_url: str, username: str, password: str, *, allowed_hosts="",
                 timeout: float = 15.0, context: Optional[ssl.SSLContext] = None):
        self.site_url, self.timeout, self.context = site_url.rstrip("/"), timeout, context
        self.allowed_hosts = allowed_hosts
        # Application passwords are shown with spaces ("abcd efgh ..."); WordPress
        # accepts them with or without.
        credentials = f"{username}:{password}".encode("utf-8")
        self._auth = "Basic " + base64.b64encode(credentials).decode("ascii")
        self._target: Optional[netguard.Target] = None
        # Sites on WordPress's default ("plain") permalinks have no /wp-json/ path: their
        # REST API answers at /?rest_route=/... instead. Tried once, after a non-JSON 404.
        self._rest_route = False

    def _check(self, url: str, deadline: float) -> netguard.Target:
        if self._target is None:
            try:
                self._target = netguard.check_url(url, self.allowed_hosts,
                                                  timeout=pinned.remaining(deadline))
            except netguard.Refused as exc:
                raise WPError(REFUSED, "The site's address is not allowed: "
                              f"{exc.reason} (PUBLISH_ALLOWED_HOSTS can name it).",
                              detail=exc.detail) from exc
        path = urlsplit(url)
        request_path = (path.path or "/") + (f"?{path.query}" if path.query else "")
        # The request line is ASCII (as netguard writes a webhook's path).
        request_path = "".join(c if " " < c < "\x7f" else quote(c, safe="")
                               for c in request_path)
        return dataclasses.replace(self._target, path=request_path)

    def url(self, route: str, params: Optional[dict] = None) -> str:
        pairs = [(k, v) for k, v in (params or {}).items() if v is not None]
        if self._rest_route:
            return f"{self.site_url}/?" + urlencode([("rest_route", route)] + pairs, doseq=True)
        query = urlencode(pairs, doseq=True)
        return f"{self.site_url}/wp-json{route}" + (f"?{query}" if query else "")

    def request(self, method: str, route: str, *, params: Optional[dict] = None,
                body: Optional[dict] = None) -> Answer:
        """One request within PUBLISH_TIMEOUT; the answer's JSON, or WPError."""
        url = self.url(route, params)
        deadline = time.monotonic() + self.timeout
        host = urlsplit(self.site_url).hostname or "?"
        payload = json.dumps(body).encode("utf-8") if body is not None else None
        headers = {"Authorization": self._auth, "Accept": "application/json",
                   "User-Agent": USER_AGENT}
        if payload is not None:
            headers["Content-Type"] = "application/json; charset=utf-8"
        try:
            target = self._check(url, deadline)
            connection = pinned.open_connection(target, deadline, self.context)
            try:
                connection.request(method, target.path, body=payload, headers=headers)
                response = connection.getresponse()
                status = response.status
                answer_headers = {k.lower(): v for k, v in response.getheaders()}
                raw = response.read(MAX_BODY + 1)
            finally:
                connection.close()
        except WPError:
            raise
        except TimeoutError as exc:  # socket timeouts, the deadline, a slow lookup
            raise WPError(TIMEOUT, f"The site did not answer within {self.timeout:g} s.",
                          detail=f"{host}: {exc!r}") from exc
        except ssl.SSLError as exc:
            raise WPError(TLS, "The TLS handshake with the site failed (its certificate?).",
                          detail=f"{host}: {exc!r}") from exc
        except http.client.HTTPException as exc:
            # Closed without an answer, or cut mid-answer: the site may have acted (a lost
            # answer), so it is retried, and a lost create is looked for first.
            raise WPError(CONNECT, "The connection to the site was cut before its answer was "
                          "complete.", detail=f"{host}: {exc!r}") from exc
        except (OSError, ValueError) as exc:  # refused, unreachable, no such name
            raise WPError(CONNECT, "Could not connect to the site.",
                          detail=f"{host}: {exc!r}") from exc
        if len(raw) > MAX_BODY:
            raise WPError(BAD_RESPONSE, "The site's answer was too large.", status=status)
        if status == 404 and not self._rest_route and not _is_json(raw):
            # Not WordPress's JSON 404: the site may use plain permalinks (nothing was done
            # by this request, so asking again the other way is safe).
            self._rest_route = True
            try:
                return self.request(method, route, params=params, body=body)
            except WPError as err:
                if err.status != 404:
                    raise
                self._rest_route = False
        return self._answer(method, route, status, answer_headers, raw)

    def _answer(self, method: str, route: str, status: int, headers: dict,
                raw: bytes) -> Answer:
        data, is_json = _json(raw)
        if 200 <= status < 300:
            if not is_json:
                raise WPError(BAD_RESPONSE, "The site answered with something that is not "
                              "JSON: no WordPress REST API at this address?", status=status,
                              code="not_json")
            return Answer(status, headers, data)
        site = plain(data.get("message")) if isinstance(data, dict) else ""
        code = str(data.get("code", ""))[:100] if isinstance(data, dict) else ""
        said = f" The site said: “{site}”" if site else ""
        if status >= 400:
            error = self._error(status, site, code, said, headers, method, route)
            error.data = data
            raise error
        location = headers.get("location", "")
        raise WPError(REDIRECT, f"The site redirects (HTTP {status}) to {location[:200]}; "
                      "redirects are not followed: use that address.", status=status,
                      location=location)

    @staticmethod
    def _error(status: int, site: str, code: str, said: str, headers: dict, method: str,
               route: str) -> WPError:
        if status == 401:
            return WPError(AUTH, "The site rejected the application password (HTTP 401)."
                           f"{said}", status=status, site_message=site, code=code)
        if status == 403:
            return WPError(FORBIDDEN, "The site refused: this user may not do this "
                           f"(HTTP 403).{said}", status=status, site_message=site, code=code)
        if status == 404:
            return WPError(NOT_FOUND, f"The site answered HTTP 404 for {method} {route}."
                           f"{said}", status=status, site_message=site, code=code)
        retry_after = parse_retry_after(headers.get("retry-after"))
        if status == 429:
            return WPError(RATE_LIMIT, "The site asked to slow down (HTTP 429).",
                           status=status, site_message=site, code=code, retry_after=retry_after)
        if status >= 500:
            return WPError(SERVER, f"The site had a temporary error (HTTP {status}).",
                           status=status, site_message=site, code=code,
                           retry_after=retry_after)
        return WPError(REJECTED, f"The site refused the request (HTTP {status}).{said}",
                       status=status, site_message=site, code=code)

    # -- what Pressroom asks of a site ---------------------------------------------------

    def me(self) -> dict:
        """The user the application password belongs to, with its capabilities."""
        answer = self.request("GET", "/wp/v2/users/me", params={"context": "edit"})
        if not isinstance(answer.data, dict):
            raise WPError(BAD_RESPONSE, "The site's answer about the user was not a user.")
        return answer.data

    def find_posts(self, **params) -> list[dict]:
        """Posts of any status (drafts and scheduled ones too) matching `params`."""
        answer = self.request("GET", "/wp/v2/posts", params={
            "status": "any", "context": "edit", "per_page": 20, **params})
        return [p for p in answer.data if isinstance(p, dict)] \
            if isinstance(answer.data, list) else []

    def create_post(self, fields: dict) -> dict:
        return _post(self.request("POST", "/wp/v2/posts", body=fields))

    def update_post(self, post_id: int, fields: dict) -> dict:
        return _post(self.request("POST", f"/wp/v2/posts/{int(post_id)}", body=fields))

    def trash_post(self, post_id: int) -> dict:
        """Into the trash (DELETE without force: the site can restore it)."""
        answer = self.request("DELETE", f"/wp/v2/posts/{int(post_id)}")
        data = answer.data
        # Older WordPress answered {"deleted": false, "previous": {...}}; newer, the post.
        if isinstance(data, dict) and isinstance(data.get("previous"), dict):
            data = {**data["previous"], "status": "trash"}
        return _post(Answer(answer.status, answer.headers, data))

    def find_terms(self, taxonomy: str, name: str = "", *, slug: str = "") -> list[dict]:
        """Terms whose name or slug contains `name` (the site's search), or with `slug`."""
        wanted = {"slug": slug} if slug else {"search": name}
        answer = self.request("GET", f"/wp/v2/{taxonomy}",
                              params={**wanted, "per_page": 100, "context": "view"})
        return [t for t in answer.data if isinstance(t, dict)] \
            if isinstance(answer.data, list) else []

    def create_term(self, taxonomy: str, name: str) -> int:
        """The new term's id; a term another request made meanwhile is taken as it is
        (WordPress answers 400 term_exists with its id)."""
        try:
            answer = self.request("POST", f"/wp/v2/{taxonomy}", body={"name": name})
        except WPError as err:
            extra = err.data.get("data") if isinstance(err.data, dict) else None
            if err.code == "term_exists" and isinstance(extra, dict) \
                    and isinstance(extra.get("term_id"), int):
                return extra["term_id"]
            raise
        if not isinstance(answer.data, dict) or not isinstance(answer.data.get("id"), int):
            raise WPError(BAD_RESPONSE, "The site's answer about a new term had no id.")
        return answer.data["id"]


def _json(raw: bytes) -> tuple[Any, bool]:
    """The answer's JSON, and whether there was any. A site that prints a PHP notice
    before its JSON (WP_DEBUG_DISPLAY) still answered: the JSON after the notice counts."""
    if not raw:
        return None, True
    try:
        return json.loads(raw), True
    except ValueError:
        pass
    for start in sorted(i for i in (raw.find(b"{"), raw.find(b"[")) if i > 0):
        try:
            return json.loads(raw[start:]), True
        except ValueError:
            continue
    return None, False


def _is_json(raw: bytes) -> bool:
    return _json(raw)[1]


def _post(answer: Answer) -> dict:
    data = answer.data
    if not isinstance(data, dict) or not isinstance(data.get("id"), int):
        raise WPError(BAD_RESPONSE, "The site's answer about the post had no post id.",
                      status=answer.status)
    return data


def utc_iso(moment: datetime) -> str:
    """A naive-UTC datetime as WordPress's date_gmt wants it."""
    return moment.replace(microsecond=0, tzinfo=None).isoformat()
