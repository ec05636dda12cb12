"""Fixtures for the browser suite: Playwright (sync API) drives Debian's Chromium against the
real app served by gunicorn.

- The app runs as in production: `gunicorn -c gunicorn.conf.py ... wsgi:app`, two workers, on
  a free loopback port. Its environment is the one conftest gives its Celery worker (same
  database, Redis, FakeAI, SECRET_KEY, retry base), so pages, polls and tasks all meet in
  the same places; only POLL_INTERVAL is shorter (0.5 s), so live updates show quickly.
- The Redis server, FakeAI, Celery worker, database and the clean slate per test are
  conftest's own fixtures (`_app`, `worker`, `app`, `fake`), reused unchanged.
- Browsers are never downloaded: /usr/bin/chromium (installed by `make test` through
  scripts/setup.sh) is launched by executable_path. Without it, or without Playwright, every
  test in this directory is skipped with the reason.
- Each test gets a fresh browser context (no cookies, 1200x900) and keeps screenshots under
  test-artifacts/browser/<test>-<step>.png, plus <test>-failure.png when it fails. The
  gunicorn log is kept there too.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support import (ACCOUNTS, ARTIFACTS, PUBLISH_ALLOWED_HOSTS, PUBLISH_RETRY_BASE,
                           PUBLISH_TIMEOUT, RETRY_BASE, ROOT, SECRET_KEY, free_port,
                           stop_process)
from tests.helpers import wait_until

CHROMIUM = Path("/usr/bin/chromium")
# Debian's Chromium, as headless and quiet as it goes: no sandbox (CI runs as root), no GPU,
# and none of the background traffic (component updates, sync, QUIC probes) that would
# reach out of a machine that must work offline.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
BROWSER_ARTIFACTS = ARTIFACTS / "browser"
BROWSER_DIR = Path(__file__).resolve().parent
VIEWPORT = {"width": 1200, "height": 900}
# The suite's poll interval: short enough to see a 2-second article grow, long enough that
# polls stay sparse on a 2-core CI machine that also runs the worker and the browser.
POLL_INTERVAL = 0.5
# gunicorn imports the app once (preload) and forks; on a loaded machine that takes seconds.
SERVER_START_TIMEOUT = 60.0
# An editor of the browser suite's own, made through the service layer (as `flask users
# create` does), so that its failed sign-in never counts against conftest's accounts.
BROWSER_EDITOR = ("browser-editor@example.test", "browser-editor-password-1")
BULK_SYNC_LIMIT = 8


def _skip_reason() -> str | None:
    if not CHROMIUM.exists():
        return (f"{CHROMIUM} is missing: the browser tests drive Debian's Chromium and never "
                "download one (`make test` installs it: apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -r requirements-dev.txt)"
    return None


def pytest_collection_modifyitems(config, items):
    """Skip the whole directory, saying why, when the browser cannot be driven."""
    reason = _skip_reason()
    if reason is None:
        return
    marker = pytest.mark.skip(reason=reason)
    for item in items:
        if BROWSER_DIR in item.path.resolve().parents:
            item.add_marker(marker)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Lets the page fixture know, at teardown, whether the test failed (for a screenshot).
    outcome = yield
    report = outcome.get_result()
    if BROWSER_DIR in item.path.resolve().parents:
        setattr(item, f"browser_report_{report.when}", report)


# -- the web server ---------------------------------------------------------------------------

class LiveServer:
    """gunicorn serving wsgi:app on a fixed loopback port; stoppable and restartable there,
    so a test can take the server away under a page and bring it back."""

    def __init__(self, env: dict, log_path: Path):
        self.env, self.log_path = env, log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self._log = None

    def start(self) -> None:
        gunicorn = Path(sys.executable).with_name("gunicorn")
        # Appended: a restart in the middle of a test keeps the earlier lines.
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [str(gunicorn), "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{self.port}",
             "--workers", "2", "wsgi:app"],
            cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        wait_until(self._ready, SERVER_START_TIMEOUT,
                   f"gunicorn to answer /readyz on {self.url} (log: {self.log_path})")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"gunicorn exited ({self.proc.returncode}); see {self.log_path}")
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            # SIGTERM: gunicorn's graceful stop (no request of ours lasts long).
            stop_process(self.proc)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def ensure_running(self) -> None:
        """A test that stopped the server and then failed must not take the next one down."""
        if not self.running:
            self.stop()
            self.start()


def server_env(database_url: str, redis_url: str, fake_url: str) -> dict:
    """The Celery worker's environment (see conftest's `worker`), plus the poll interval.

    They must agree: the web process enqueues what the worker runs, reads the progress the
    worker writes, and both sign sessions and cancel flags with the same settings.
    """
    env = dict(os.environ)
    # A developer's own settings must not leak in (a production check, another bind).
    for name in ("PRESSROOM_ENV", "BIND", "PORT", "WEB_CONCURRENCY"):
        env.pop(name, None)
    env.update({
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "OPENAI_API_KEY": "test",
        "OPENAI_BASE_URL": fake_url,
        "OPENAI_MODEL": "gpt-4o-mini",
        "OPENAI_TIMEOUT": "30",
        "GENERATION_RETRY_BASE": str(RETRY_BASE),
        "SECRET_KEY": SECRET_KEY,
        "POLL_INTERVAL": str(POLL_INTERVAL),
        "PYTHONUNBUFFERED": "1",
        # Bulk actions on more items than this run on the worker, with a progress bar
        # (tests/browser/test_bulk.py shows both ways).
        "BULK_SYNC_LIMIT": str(BULK_SYNC_LIMIT),
        # The fake WordPress site on 127.0.0.1 may be added as a destination (the publisher
        # worker has the same settings).
        "PUBLISH_ALLOWED_HOSTS": PUBLISH_ALLOWED_HOSTS,
        "PUBLISH_TIMEOUT": str(PUBLISH_TIMEOUT),
        "PUBLISH_RETRY_BASE": str(PUBLISH_RETRY_BASE),
    })
    return env


@pytest.fixture(scope="session")
def browser_artifacts() -> Path:
    BROWSER_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return BROWSER_ARTIFACTS


@pytest.fixture(scope="session")
def live_server(_app, worker, database_url, redis_url, fake_server, browser_artifacts):
    """gunicorn for the whole session; `_app` has already built the schema by migrations."""
    server = LiveServer(server_env(database_url, redis_url, fake_server.base_url),
                        browser_artifacts / f"gunicorn-{os.getpid()}.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser_editor(_app):
    """(email, password) of an editor created through the service layer in the shared DB."""
    from webapp.extensions import db
    from webapp.models import Role, User
    from webapp.services import users

    email, password = BROWSER_EDITOR
    with _app.app_context():
        if db.session.scalar(select(User.id).where(User.email == email)) is None:
            users.create_user(email, Role.EDITOR, password=password)
    return BROWSER_EDITOR


@pytest.fixture
def no_sign_in_failures(redis_client):
    """Failed sign-ins are counted per address (all tests share 127.0.0.1) in the suite's
    Redis for 10 minutes: start from none, and leave none behind."""
    def wipe():
        keys = list(redis_client.scan_iter(match="*pressroom-limits*", count=1000))
        if keys:
            redis_client.delete(*keys)
    wipe()
    yield
    wipe()


# -- the browser --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import expect, sync_playwright

    # Live updates arrive by polling through a real worker on a small machine: give every
    # `expect` more than Playwright's 5 s (each test passes longer ones where it waits on work).
    expect.set_options(timeout=15_000)
    with sync_playwright() as playwright:
        # launch() gives the browser a fresh temporary profile (--user-data-dir) of its own
        # and deletes it on close: nothing is shared with a developer's Chromium.
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _unfinished_batches_cancelled(app) -> None:
    """Cancel what a test left running, through the service (as an admin): streams of slow
    FakeAI settings then stop within a chunk, instead of making the clean-up wait for them."""
    from webapp.extensions import db
    from webapp.models import Batch, BatchStatus, User
    from webapp.services import control

    with app.app_context():
        admin = db.session.scalar(select(User).where(User.email == ACCOUNTS["admin"][0]))
        for batch in db.session.scalars(select(Batch)
                                        .where(Batch.status.not_in(BatchStatus.FINAL))).all():
            control.cancel_batch(admin, batch)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


@pytest.fixture
def shot(request, browser_artifacts):
    """shot(page, step): keep a screenshot as test-artifacts/browser/<test>-<step>.png."""
    def take(page, step: str, **options) -> Path:
        path = browser_artifacts / f"{_slug(request.node.name)}-{_slug(step)}.png"
        page.screenshot(path=str(path), **options)
        return path
    return take


@pytest.fixture
def page(browser, live_server, app, request, browser_artifacts):
    """A fresh browser context and page on the live server (signed out), on a clean slate.

    JavaScript errors and Content-Security-Policy violations fail the test: the pages must
    work under the app's strict CSP.
    """
    live_server.ensure_running()
    context = browser.new_context(base_url=live_server.url, viewport=VIEWPORT,
                                  accept_downloads=True)
    context.set_default_timeout(15_000)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"JavaScript error: {error}"))
    tab.on("console", lambda message: problems.append(f"console: {message.text}")
           if message.type == "error" and "Content Security Policy" in message.text else None)
    yield tab
    report = getattr(request.node, "browser_report_call", None)
    if report is not None and report.failed and not tab.is_closed():
        try:
            tab.screenshot(path=str(browser_artifacts / f"{_slug(request.node.name)}-failure.png"))
        except Exception:  # a screenshot must never hide the real failure
            pass
    context.close()
    live_server.ensure_running()
    _unfinished_batches_cancelled(app)
    assert not problems, "the page reported problems:\n" + "\n".join(problems)
