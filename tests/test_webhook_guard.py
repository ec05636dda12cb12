"""Webhooks that cannot reach inside: local and private addresses are refused at submit
(literals) and at delivery (whatever a name resolves to), redirects are not followed, one
deadline cuts a slow receiver on the webhooks worker while articles keep being written,
and the page shows generic reasons and the URL only to those who manage the batch.

Every receiver here listens on 127.0.0.1. Only `allowed` (one port) and `closed_port`
(nothing listens) are named in the guard worker's WEBHOOK_ALLOWED_HOSTS; any other
receiver (`stranger`) must never see a connection.
"""
from __future__ import annotations

import ipaddress
import socket
import uuid

import pytest
from sqlalchemy import select, update

from tests.support import free_port
from tests.dedicated import Dedicated
from tests.helpers import (FINISH_TIMEOUT, batch_id_from_location, batch_state, login,
                           page_csrf, row_counts, submit_form, wait_batch_final, wait_until)
from tests.receivers import Receiver
from webapp.extensions import db
from webapp.models import Batch, Role, User, WebhookDelivery

# Short, so the drip test is quick; long enough for a one-article batch to be written
# while a webhook is held.
GUARD_TIMEOUT = 2.0
REFUSED = "refused: not a public address"
PRIVATE_MESSAGE = "The webhook URL points at a private or local address"
OTHER_EDITOR = ("guard-editor@example.test", "guard-editor-password-1")
# What must never reach a page: socket, resolver and exception text.
LEAKS = ("Errno", "ConnectionRefused", "Connection refused", "URLError", "gaierror",
         "Name or service not known", "Temporary failure", "resolves to")


@pytest.fixture(scope="module")
def allowed():
    """The one receiver WEBHOOK_ALLOWED_HOSTS names (host and port)."""
    receiver = Receiver()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def closed_port():
    """Allowed too, but nothing listens there: a delivery cannot connect."""
    return free_port()


@pytest.fixture(scope="module")
def guard_worker(_app, database_url, redis_url, fake_server, artifacts, worker, allowed,
                 closed_port):
    # One generation thread: a webhook that took it would stop every article behind it.
    dedicated = Dedicated("guard", _app, database_url, redis_url, fake_server, artifacts,
                          db_index=11, webhooks=True, concurrency=1, settings={
                              "WEBHOOK_TIMEOUT": str(GUARD_TIMEOUT),
                              "WEBHOOK_ALLOWED_HOSTS":
                                  f"127.0.0.1:{allowed.port}, 127.0.0.1:{closed_port}"})
    yield dedicated
    dedicated.stop()


@pytest.fixture
def guard(app, guard_worker, allowed):
    allowed.reset()
    with guard_worker.in_use() as dedicated:
        yield dedicated
    allowed.reset()


@pytest.fixture
def stranger():
    """A receiver on 127.0.0.1 that nothing allows."""
    receiver = Receiver()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def other_editor(_app):
    from webapp.services import users

    with _app.app_context():
        if db.session.scalar(select(User.id).where(User.email == OTHER_EDITOR[0])) is None:
            users.create_user(OTHER_EDITOR[0], Role.EDITOR, password=OTHER_EDITOR[1])
    return OTHER_EDITOR


def _deliveries(app, batch_id: int) -> list[dict]:
    with app.app_context():
        rows = db.session.scalars(select(WebhookDelivery).where(
            WebhookDelivery.batch_id == batch_id).order_by(WebhookDelivery.id)).all()
        return [{c.name: getattr(d, c.name) for c in WebhookDelivery.__table__.columns}
                for d in rows]


def _one_delivery(app, batch_id: int) -> dict:
    wait_until(lambda: _deliveries(app, batch_id), FINISH_TIMEOUT,
               f"a webhook delivery of batch {batch_id} to be recorded")
    (delivery,) = _deliveries(app, batch_id)
    return delivery


def _submit(browser, webhook_url: str = "", name: str = "Guarded") -> int:
    return batch_id_from_location(submit_form(browser, name, [f"Guard {uuid.uuid4().hex[:8]}"],
                                              webhook_url=webhook_url))


def _log(guard, which: str) -> str:
    """A guard worker's log so far: "webhooks", or "0" for the generation worker."""
    (path,) = [p for p, _ in guard.logs if p.name == f"worker-guard-{which}.log"]
    return path.read_text(errors="replace")


def _page(browser, batch_id: int) -> str:
    response = browser.get(f"/batches/{batch_id}")
    assert response.status_code == 200
    return response.get_data(as_text=True)


# -- at submit: literals and local names, in any spelling -------------------------------------

SUBMIT_REFUSED = [
    "http://127.0.0.1:5432/", "http://127.1/hook", "http://2130706433/", "http://0x7f000001/",
    "http://0177.0.0.1/", "http://0x7f.1:8080/", "http://127.0.0.1./",
    "http://[::ffff:127.0.0.1]/", "http://[::1]:80/x", "http://[::]/", "http://0.0.0.0/",
    "http://localhost/", "http://LOCALHOST./", "https://foo.localhost/hook",
    "http://169.254.169.254/latest/meta-data/", "http://[::ffff:a9fe:a9fe]/",
    "http://10.1.2.3/", "http://172.16.5.4/", "http://192.168.0.10/", "http://100.64.0.1/",
    "http://[fd00::1]/", "http://[fe80::1%25eth0]/", "http://[64:ff9b::7f00:1]/",
    "http://[2002:7f00:1::]/", "http://[::127.0.0.1]/", "http://224.0.0.1/",
    "http://198.18.0.1/", "http://192.0.2.1/", "http://[2001:db8::1]/", "http://240.0.0.1/",
]


@pytest.mark.parametrize("url", SUBMIT_REFUSED)
def test_submit_refuses_local_and_private_literals(app, client, api_headers, url):
    before = row_counts(app)
    response = submit_form(client, "Hooked inside", ["Inside"], webhook_url=url)
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert PRIVATE_MESSAGE in page

    response = client.post("/api/v1/batches", headers=api_headers, json={
        "name": "Hooked inside", "titles": ["Inside"], "webhook_url": url})
    assert response.status_code == 400, response.get_json()
    fields = response.get_json()["error"]["fields"]
    assert list(fields) == ["webhook_url"] and PRIVATE_MESSAGE in fields["webhook_url"][0]
    assert row_counts(app) == before


def test_allowed_hosts_name_a_host_and_its_port(app, guard, allowed, stranger):
    browser = guard.client()
    for url in (f"http://127.0.0.1:{stranger.port}/hook", f"http://localhost:{allowed.port}/",
                f"http://127.0.0.2:{allowed.port}/"):
        response = submit_form(browser, "Not allowed", ["Not allowed"], webhook_url=url)
        assert response.status_code == 400, url
        assert PRIVATE_MESSAGE in response.get_data(as_text=True)
    # Another spelling of the allowed address and port is the same receiver.
    batch_id = _submit(browser, f"http://127.1:{allowed.port}/hooks/pressroom")
    delivery = _one_delivery(app, batch_id)
    assert delivery["ok"] and delivery["status_code"] == 200
    assert allowed.count() == 1 and allowed.posts[0]["path"] == "/hooks/pressroom"
    assert allowed.posts[0]["headers"]["Host"] == f"127.0.0.1:{allowed.port}"
    assert stranger.connections == 0


# -- at delivery: what only the resolver knows, and URLs stored before the rule ---------------

def _loopback_name() -> str:
    """A name of this machine that really resolves to loopback only (from /etc/hosts)."""
    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)}
    except OSError:
        pytest.skip(f"this machine's name {name!r} does not resolve")
    if not addresses or not all(ipaddress.ip_address(a).is_loopback for a in addresses):
        pytest.skip(f"{name!r} resolves to {sorted(addresses)}, not only to loopback")
    return name


def test_a_name_that_resolves_to_loopback_is_refused_at_delivery(app, guard, stranger):
    name = _loopback_name()
    browser = guard.client()
    url = f"http://{name}:{stranger.port}/hook"
    batch_id = _submit(browser, url)  # a name: nothing to see without a lookup
    assert wait_batch_final(app, batch_id)["status"] == "succeeded"
    delivery = _one_delivery(app, batch_id)
    assert (delivery["ok"], delivery["status_code"], delivery["error"]) == (False, None, REFUSED)
    guard.wait_idle()
    assert stranger.connections == 0
    page = _page(browser, batch_id)
    assert REFUSED in page and not [leak for leak in LEAKS if leak in page]
    # The details are in the worker's log, not on the page.
    wait_until(lambda: f"{name.lower()} resolves to 127." in _log(guard, "webhooks"), 10,
               "the refusal's details in the webhooks worker log")


STORED_SPELLINGS = ["http://127.0.0.1:{port}/", "http://127.1:{port}/", "http://2130706433:{port}/",
                    "http://0x7f000001:{port}/", "http://0177.0.0.1:{port}/",
                    "http://[::ffff:127.0.0.1]:{port}/", "http://localhost:{port}/",
                    "http://LOCALHOST.:{port}/", "http://foo.localhost:{port}/"]


def test_urls_stored_before_the_rule_are_refused_at_delivery(app, guard, stranger):
    """Batches stored before submit checked literals keep their URL: delivery refuses it."""
    from webapp.generation import reconciler

    browser = guard.client()
    ids = [_submit(browser) for _ in STORED_SPELLINGS]
    for batch_id in ids:
        assert wait_batch_final(app, batch_id)["status"] == "succeeded"
    with app.app_context():
        for batch_id, spelling in zip(ids, STORED_SPELLINGS):
            db.session.execute(update(Batch).where(Batch.id == batch_id).values(
                webhook_url=spelling.format(port=stranger.port)))
        db.session.commit()
    with guard.app.app_context():
        assert reconciler.reconcile()["webhooks_scheduled"] == len(ids)
    for batch_id, spelling in zip(ids, STORED_SPELLINGS):
        delivery = _one_delivery(app, batch_id)
        assert (delivery["ok"], delivery["error"]) == (False, REFUSED), spelling
    guard.wait_idle()
    assert stranger.connections == 0


def test_a_redirect_is_not_followed(app, guard, allowed, stranger):
    allowed.redirect_to = stranger.url
    browser = guard.client()
    batch_id = _submit(browser, allowed.url)
    delivery = _one_delivery(app, batch_id)
    assert (delivery["ok"], delivery["status_code"], delivery["error"]) == \
        (False, 302, "redirect not followed (HTTP 302)")
    guard.wait_idle()
    assert allowed.count() == 1 and stranger.connections == 0
    assert batch_state(app, batch_id)["webhook_done_at"] is None  # retried later, with backoff
    assert "redirect not followed (HTTP 302)" in _page(browser, batch_id)


# -- one deadline, on the webhooks worker ---------------------------------------------------

def test_a_slow_drip_is_cut_at_the_deadline_without_a_generation_thread(app, guard, allowed):
    from webapp.generation import reconciler, webhooks

    allowed.drip = True
    browser = guard.client()
    hooked = _submit(browser, allowed.url, name="Dripped")
    wait_until(lambda: allowed.drip_started_at, FINISH_TIMEOUT, "the receiver to start dripping")

    # While the drip holds the attempt: an article is still written (the only generation
    # thread is free)...
    other = _submit(browser, name="Written meanwhile")
    with guard.app.app_context():
        # ...the lock keeps a second attempt out, and the reconciler sends none...
        assert webhooks.deliver(hooked) == {"skipped": "a delivery is under way"}
        assert reconciler.reconcile()["webhooks_scheduled"] == 0
        lock = webhooks.lock_key(hooked)
    assert wait_batch_final(app, other, timeout=GUARD_TIMEOUT)["status"] == "succeeded"
    assert allowed.drip_cut_at is None, "the drip ended before the other batch was written"
    # ...and a lock that is no longer the attempt's own (say it expired and another took
    # it) is not deleted by the attempt when it ends.
    guard.redis.set(lock, "another-owner", ex=60)

    wait_until(lambda: allowed.drip_cut_at, GUARD_TIMEOUT + 10, "the drip to be cut")
    held = allowed.drip_cut_at - allowed.drip_started_at
    assert GUARD_TIMEOUT - 1.0 <= held <= GUARD_TIMEOUT + 1.0, held
    delivery = _one_delivery(app, hooked)
    assert (delivery["ok"], delivery["status_code"], delivery["error"]) == \
        (False, None, "timed out")
    assert GUARD_TIMEOUT * 1000 - 50 <= delivery["duration_ms"] <= (GUARD_TIMEOUT + 1.5) * 1000
    guard.wait_idle()
    assert guard.redis.get(lock) == b"another-owner"
    guard.redis.delete(lock)
    assert allowed.count() == 1 and allowed.connections == 1
    # The delivery ran on the webhooks worker, never on the generation worker.
    received = "Task webapp.webhooks.deliver["  # Celery's "received" line, not the banner
    assert received in _log(guard, "webhooks") and received not in _log(guard, "0")


# -- what the page shows, and to whom -------------------------------------------------------

def test_the_page_shows_reasons_and_the_url_only_to_managers(app, guard, closed_port,
                                                              other_editor):
    author = guard.client()
    refused_url = f"http://127.0.0.1:{closed_port}/hook?token=s3cret-token"
    unknown_url = "https://no-such-host.invalid/hook"
    closed = _submit(author, refused_url)
    unknown = _submit(author, unknown_url)
    assert _one_delivery(app, closed)["error"] == "could not connect"
    assert _one_delivery(app, unknown)["error"] in ("could not connect", "timed out")
    # A row written before the generic reasons, with the old socket text.
    with app.app_context():
        db.session.add(WebhookDelivery(batch_id=closed, attempt=2, ok=False,
                                       error="URLError: [Errno 111] Connection refused"))
        db.session.commit()

    admin = guard.client("admin")
    stranger = guard.app.test_client()
    login(stranger, *other_editor)
    for batch_id, url in ((closed, refused_url), (unknown, unknown_url)):
        for who, browser in (("author", author), ("admin", admin), ("other editor", stranger)):
            page = _page(browser, batch_id)
            assert "could not connect" in page or "timed out" in page, who
            assert not [leak for leak in LEAKS if leak in page], who
            shown = url.replace("&", "&amp;") in page
            assert shown == (who != "other editor"), who
        assert "its address is shown to the batch" in _page(stranger, batch_id)
    assert "s3cret-token" not in _page(stranger, closed)
    assert "Connection refused" in _log(guard, "webhooks")  # the detail stays in the log

    # A copy by someone who may not see the URL leaves it out; the author's keeps it.
    path = f"/batches/{closed}/duplicate"
    copy = batch_id_from_location(stranger.post(path, data={
        "csrf_token": page_csrf(stranger, f"/batches/{closed}")}))
    assert batch_state(app, copy)["webhook_url"] is None
    own = batch_id_from_location(author.post(path, data={
        "csrf_token": page_csrf(author, f"/batches/{closed}")}))
    assert batch_state(app, own)["webhook_url"] == refused_url
    for batch_id in (copy, own):
        wait_batch_final(app, batch_id)
