"""Shared pieces of the security tests (test_security_*.py): accounts, sign-in limits, HTML checks.

Users, templates and audit entries outlive a test (the per-test reset only deletes batches and
articles), so every account and template made here has a unique name.
"""
from __future__ import annotations

import html
import re
import uuid
from dataclasses import dataclass
from html.parser import HTMLParser

import pytest

from tests.helpers import csrf_from, login

# What Flask-Limiter stores its sign-in counters under (RATELIMIT_KEY_PREFIX).
LIMIT_KEYS = "*pressroom-limits*"


@dataclass
class Account:
    id: int
    email: str
    password: str
    token: str
    role: str


def make_account(app, role: str, label: str = "") -> Account:
    """A new user through the real service (hashed password, first API token)."""
    from webapp.services import users

    email = f"{label or role}-{uuid.uuid4().hex[:10]}@example.test"
    password = f"pw-{uuid.uuid4().hex}"
    with app.app_context():
        user, _, token = users.create_user(email, role, password=password)
        return Account(user.id, email, password, token, role)


def signed_in(app, account: Account, remote_addr: str | None = None):
    """A test client signed in through the real form (optionally from another address)."""
    client = app.test_client()
    if remote_addr:
        client.environ_base["REMOTE_ADDR"] = remote_addr
    login(client, account.email, account.password)
    return client


def csrf_of(client, path: str = "/account/tokens") -> str:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return csrf_from(response.get_data(as_text=True))


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def clean_login_limits(redis_client):
    """Sign-in failures are counted in the suite's Redis for 10 minutes: start from none, and
    leave none behind, so that no other test's sign-in is refused with a 429."""
    def wipe():
        keys = list(redis_client.scan_iter(match=LIMIT_KEYS, count=1000))
        if keys:
            redis_client.delete(*keys)
    wipe()
    yield
    wipe()


# -- reading pages -------------------------------------------------------------------------

class Element:
    def __init__(self, tag: str, attrs: list[tuple[str, str | None]], ancestors: list["Element"]):
        self.tag = tag
        self.attrs = {name.lower(): (value or "") for name, value in attrs}
        self.ancestors = list(ancestors)
        self.text = ""


class PageParser(HTMLParser):
    """Every element of a page with its attributes, ancestors and (for <script>) body."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
            "source", "track", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self.stack: list[Element] = []

    def handle_starttag(self, tag, attrs):
        element = Element(tag, attrs, self.stack)
        self.elements.append(element)
        if tag not in self.VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag, attrs):
        self.elements.append(Element(tag, attrs, self.stack))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                break

    def handle_data(self, data):
        if self.stack:
            self.stack[-1].text += data


def elements_of(page: str) -> list[Element]:
    parser = PageParser()
    parser.feed(page)
    parser.close()
    return parser.elements


_JS_URL = re.compile(r"^\s*(javascript|vbscript|data)\s*:", re.I)
URL_ATTRS = ("href", "src", "action", "formaction", "hx-get", "hx-post", "hx-put", "hx-delete",
             "hx-patch", "xlink:href")


def active_content_problems(page: str) -> list[str]:
    """Everything in a page that would run script or send a request nobody wrote into a template:
    inline script bodies, on* handlers, style attributes, javascript: URLs."""
    problems = []
    for el in elements_of(page):
        if el.tag == "script":
            if not el.attrs.get("src"):
                problems.append("a <script> without src (inline script)")
            if el.text.strip():
                problems.append(f"a <script> with a body: {el.text[:80]!r}")
        if el.tag in ("iframe", "object", "embed", "base"):
            problems.append(f"a <{el.tag}> element")
        for name, value in el.attrs.items():
            if name.startswith("on"):
                problems.append(f"<{el.tag} {name}=…> event handler")
            if name == "style":
                problems.append(f"<{el.tag} style=…> inline style")
            if name in URL_ATTRS and _JS_URL.match(html.unescape(value)):
                problems.append(f"<{el.tag} {name}={value!r}> script URL")
    return problems
