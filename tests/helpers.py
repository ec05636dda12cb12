"""Small helpers shared by the integration tests: deadlines, forms, HTML parsing, DB reads.

Tests never sleep for a fixed time: they wait for a condition with a deadline, so a fast
machine is not slowed down and a slow one gets time (the deadlines are generous on purpose).
"""
from __future__ import annotations

import html
import re
import time
from contextlib import contextmanager
from typing import Any, Callable, Optional

from sqlalchemy import event, func, select

from webapp.extensions import db
from webapp.models import Article, Batch, PromptTemplate

# Deadline for "the worker finishes a small batch": generous, because a 2-core CI machine
# running the worker, the fake provider and the tests at once can be slow.
FINISH_TIMEOUT = 60.0


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0,
               message: str = "condition", *, sleep: Callable[[float], Any] = time.sleep,
               first_pause: float = 0.005, max_pause: float = 0.1) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds.

    `sleep` waits between looks (a browser test passes one that keeps the page's events
    flowing)."""
    deadline = time.monotonic() + timeout
    pause = first_pause
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for: {message}")
        # Short at first so fast conditions are seen at once, then backing off so that a
        # long wait does not steal CPU from the worker it is waiting for.
        sleep(pause)
        pause = min(pause * 2, max_pause)


# -- forms and sign-in ---------------------------------------------------------------

_CSRF_INPUT = re.compile(r'name="csrf_token"[^>]*\bvalue="([^"]+)"')
_CSRF_HEADER = re.compile(r'"X-CSRFToken":\s*"([^"]+)"')


def csrf_from(page: str) -> str:
    """The CSRF token of a rendered page (hidden input, or the hx-headers on <body>)."""
    match = _CSRF_INPUT.search(page) or _CSRF_HEADER.search(page)
    assert match, "no CSRF token found in the page"
    return html.unescape(match.group(1))


def login(client, email: str, password: str) -> None:
    """Sign in through the real form: GET it for its CSRF token, then POST it."""
    page = client.get("/login")
    assert page.status_code == 200, page.status_code
    response = client.post("/login", data={
        "email": email, "password": password, "csrf_token": csrf_from(page.get_data(as_text=True)),
    })
    assert response.status_code == 303, (response.status_code,
                                         response.get_data(as_text=True)[:500])


def page_csrf(client, path: str = "/batches/new") -> str:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return csrf_from(response.get_data(as_text=True))


def submit_form(client, name: str, titles: list[str] | str, **fields) -> Any:
    """POST the new-batch form the way a browser does (CSRF token from the form page)."""
    data = {
        "name": name,
        "titles": titles if isinstance(titles, str) else "\n".join(titles),
        "model": "gpt-4o-mini", "target_words": "200", "tone": "neutral",
        "language": "English", "instructions": "",
        "csrf_token": page_csrf(client),
    }
    data.update({k: str(v) for k, v in fields.items()})
    return client.post("/batches/new", data=data)


def batch_id_from_location(response) -> int:
    match = re.search(r"/batches/(\d+)$", response.headers.get("Location", ""))
    assert match, f"not a redirect to a batch page: {response.status_code} {response.headers}"
    return int(match.group(1))


def htmx_post(client, path: str, csrf_token: str):
    """A POST as htmx sends it: the CSRF token in the X-CSRFToken header (from hx-headers)."""
    return client.post(path, headers={"HX-Request": "true", "X-CSRFToken": csrf_token})


# -- reading rendered partials ---------------------------------------------------------

_PERCENT = re.compile(r'<span class="percent">(\d+)%</span>')
_FRACTION = re.compile(r'<strong class="fraction">(\d+) / (\d+)</strong>')
_POLL_URL = re.compile(r'id="batch-progress"[^>]*?hx-get="([^"]+)"', re.S)
_WORDS = re.compile(r'<span id="article-words-(\d+)"[^>]*>(\d+)</span>')
_ROW = re.compile(r'<div class="row row-(\w+)" id="article-(\d+)"')


def percent_of(page: str) -> int:
    match = _PERCENT.search(page)
    assert match, "no percent in the page"
    return int(match.group(1))


def done_of(page: str) -> int:
    match = _FRACTION.search(page)
    assert match, "no done/total fraction in the page"
    return int(match.group(1))


def poll_url_of(page: str) -> Optional[str]:
    """The URL the batch-progress partial polls next (None when it stopped polling)."""
    match = _POLL_URL.search(page)
    return html.unescape(match.group(1)) if match else None


def words_of(page: str) -> dict[int, int]:
    """Words shown per article id (rows and out-of-band word counters)."""
    return {int(a): int(w) for a, w in _WORDS.findall(page)}


def rows_of(page: str) -> dict[int, str]:
    """Whole article rows in the page: article id -> status class."""
    return {int(a): status for status, a in _ROW.findall(page)}


def prose_of(page: str) -> str:
    """The rendered article body (the <article class="prose..."> element)."""
    match = re.search(r'<article class="prose[^"]*"[^>]*>(.*?)</article>', page, re.S)
    assert match, "no article body in the page"
    return match.group(1)


# -- reading the database ----------------------------------------------------------------
# Every read opens its own app context, so it gets a fresh session and never sees a stale
# identity map; the worker writes from another process.

def batch_state(app, batch_id: int) -> dict:
    with app.app_context():
        batch = db.session.get(Batch, batch_id)
        assert batch is not None, f"batch {batch_id} is missing"
        return {c.name: getattr(batch, c.name) for c in Batch.__table__.columns}


def articles_state(app, batch_id: int) -> list[dict]:
    with app.app_context():
        rows = db.session.scalars(select(Article).where(Article.batch_id == batch_id)
                                  .order_by(Article.position)).all()
        return [{c.name: getattr(a, c.name) for c in Article.__table__.columns} for a in rows]


def status_counts(app, batch_id: int) -> dict[str, int]:
    with app.app_context():
        return dict(db.session.execute(
            select(Article.status, func.count()).where(Article.batch_id == batch_id)
            .group_by(Article.status)).all())


def row_counts(app) -> tuple[int, int]:
    """(batches, articles) stored: to prove that invalid input stored nothing."""
    with app.app_context():
        return (db.session.scalar(select(func.count()).select_from(Batch)),
                db.session.scalar(select(func.count()).select_from(Article)))


def wait_batch_final(app, batch_id: int, timeout: float = FINISH_TIMEOUT) -> dict:
    """Wait (via the database) until the batch reaches a final status; returns its row."""
    def final():
        state = batch_state(app, batch_id)
        return state if state["status"] in ("succeeded", "failed", "cancelled") else None
    return wait_until(final, timeout, f"batch {batch_id} to finish")


@contextmanager
def count_sql(app):
    """Every SQL statement the app's engine sends inside the block, in order."""
    statements: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before)


def template_id_of(app, name: str) -> int:
    with app.app_context():
        return db.session.scalar(select(PromptTemplate.id).where(PromptTemplate.name == name))


def template_count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(PromptTemplate))
