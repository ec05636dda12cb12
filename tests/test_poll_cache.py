"""The batch page's shared progress render (webapp/services/pollcache.py): one render a tick
whoever watches, the same HTML for everyone, and everything that depends on the person
(sign-in, the Cancel buttons and their CSRF tokens, the batch's buttons) checked on every
poll, never taken from the cache.

The tick clock is held still (tests.test_poll_cost.HeldTicks): the tests, not the wall
clock, say when a tick ends.
"""
from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select, update

from tests.helpers import count_sql, csrf_from, login, poll_url_of, rows_of
from tests.sec_support import make_account, signed_in
from tests.support import ACCOUNTS
from tests.test_poll_cost import (_change_some, _make_batch, as_another_process,
                                  count_redis_round_trips, only_the_users_load,
                                  ticks)  # noqa: F401 (a fixture)
from webapp.extensions import db, get_redis
from webapp.installation import prefix
from webapp.models import Article, Batch, Role, User, utcnow
from webapp.services import pollcache, users

HX = {"HX-Request": "true"}
CANCEL_FORM = re.compile(r'<form method="post" action="/articles/(\d+)/cancel"')
CSRF_VALUE = re.compile(r'name="csrf_token" value="([^"]*)"')


def _url(batch_id: int, since, seen: str = "running") -> str:
    return (f"/batches/{batch_id}/progress?since={since.isoformat()}&seen={seen}"
            f"&first=1&last=500")


def _batch_statements(statements: list[str]) -> int:
    """How many times the batch with its counts was read (once per render)."""
    return sum(1 for s in statements if "FROM batches" in s)


def test_one_render_a_tick_whoever_watches(app, client, admin_client, ticks):
    batch_id, _ = _make_batch(app)
    viewer = signed_in(app, make_account(app, Role.VIEWER))
    viewers = [client, admin_client, viewer] * 2
    with count_sql(app) as statements:
        # Six polls out of step within one tick, with `since` in this tick or the two before.
        for n, browser in enumerate(viewers):
            assert browser.get(_url(batch_id, ticks.since_in(n % 3)), headers=HX
                               ).status_code == 200
    assert _batch_statements(statements) == 1, "\n\n".join(statements)

    ticks.next_tick()
    with count_sql(app) as statements:
        for n, browser in enumerate(viewers):
            assert browser.get(_url(batch_id, ticks.since_in(1 + n % 2)), headers=HX
                               ).status_code == 200
    assert _batch_statements(statements) == 1, "\n\n".join(statements)


def test_each_viewer_gets_only_its_own_buttons(app, client, admin_client, ticks):
    """Cancel buttons for those who manage the batch, each with its own CSRF token; none
    for a viewer or another editor, though all are sent the same render."""
    batch_id, _ = _make_batch(app)
    started = _change_some(app, batch_id, "running")  # whole rows, each with a Cancel button
    since = ticks.since_in(1)
    owner = client.get(_url(batch_id, since), headers=HX).get_data(as_text=True)
    admin = admin_client.get(_url(batch_id, since), headers=HX).get_data(as_text=True)
    others = [signed_in(app, make_account(app, role)).get(_url(batch_id, since), headers=HX)
              .get_data(as_text=True) for role in (Role.VIEWER, Role.EDITOR)]

    for page in (owner, admin):
        assert sorted(int(a) for a in CANCEL_FORM.findall(page)) == sorted(started)
    for page in others:
        assert set(rows_of(page)) == set(started)  # the same rows...
        assert not CANCEL_FORM.search(page) and "csrf_token" not in page  # ...no buttons
    for page in (owner, admin, *others):
        assert "<!--csrf-->" not in page
    owner_token = set(CSRF_VALUE.findall(owner))
    admin_token = set(CSRF_VALUE.findall(admin))
    assert len(owner_token) == len(admin_token) == 1 and owner_token != admin_token

    # Each token is its user's: the admin's is refused from the owner's session, the
    # owner's own works.
    refused = client.post(f"/articles/{started[0]}/cancel",
                          data={"csrf_token": admin_token.pop()})
    assert refused.status_code == 400
    done = client.post(f"/articles/{started[0]}/cancel", data={"csrf_token": owner_token.pop()})
    assert done.status_code == 303


def test_access_is_checked_on_every_poll_even_from_the_cache(app, client, anon_client,
                                                             ticks):
    owner = make_account(app, Role.EDITOR, "owner")
    batch_id, _ = _make_batch(app, owner=owner.email)
    started = _change_some(app, batch_id, "running")
    url = _url(batch_id, ticks.since_in(1))
    owner_browser = signed_in(app, owner)
    viewer = make_account(app, Role.VIEWER)
    viewer_browser = signed_in(app, viewer)
    first = owner_browser.get(url, headers=HX)
    assert first.status_code == 200 and CANCEL_FORM.search(first.get_data(as_text=True))
    assert viewer_browser.get(url, headers=HX).status_code == 200  # from the cache

    # Signed out: the poll is refused, and nothing of the batch is sent.
    refused = anon_client.get(url, headers=HX)
    assert refused.status_code == 401 and refused.headers["HX-Redirect"].startswith("/login")
    assert "Article" not in refused.get_data(as_text=True)
    # Disabled since the last poll, same tick, same render in Redis: refused.
    with app.app_context():
        admin = db.session.scalar(select(User).where(User.email == ACCOUNTS["admin"][0]))
        users.set_disabled(admin, viewer.id, True)
    assert viewer_browser.get(url, headers=HX).status_code == 401
    # The owner made a viewer: the cached rows come without their Cancel buttons.
    with app.app_context():
        admin = db.session.scalar(select(User).where(User.email == ACCOUNTS["admin"][0]))
        users.set_role(admin, owner.id, Role.VIEWER)
    demoted = owner_browser.get(url, headers=HX)
    assert demoted.status_code == 200
    page = demoted.get_data(as_text=True)
    assert set(rows_of(page)) == set(started) and not CANCEL_FORM.search(page)
    # A batch that does not exist is not found, whatever the cache holds.
    assert client.get(_url(batch_id + 1000, ticks.since_in(1)), headers=HX).status_code == 404


def test_batch_buttons_come_per_user_when_the_status_changed(app, client, ticks):
    batch_id, _ = _make_batch(app)
    viewer = signed_in(app, make_account(app, Role.VIEWER))
    since = ticks.since_in(1)
    assert client.get(_url(batch_id, since), headers=HX).status_code == 200  # the render
    # Both from the cache; each saw "queued" last, so each gets the buttons it may use.
    owner = client.get(_url(batch_id, since, seen="queued"), headers=HX).get_data(as_text=True)
    other = viewer.get(_url(batch_id, since, seen="queued"), headers=HX).get_data(as_text=True)
    assert 'id="batch-actions"' in owner and "Cancel batch" in owner and "Pause" in owner
    assert 'id="batch-actions"' in other and "Cancel batch" not in other
    assert "Pause" not in other and "<form" not in other
    # The status as seen: no buttons sent.
    same = client.get(_url(batch_id, since), headers=HX).get_data(as_text=True)
    assert 'id="batch-actions"' not in same


def _finish(app, batch_id: int) -> None:
    """Every article written (with a body and an end, as a stored answer has), the batch
    succeeded."""
    now = utcnow()
    with app.app_context():
        db.session.execute(update(Article).where(Article.batch_id == batch_id)
                           .values(status="succeeded", body="Written.", finished_at=now,
                                   updated_at=now))
        db.session.execute(update(Batch).where(Batch.id == batch_id)
                           .values(status="succeeded", finished_at=now))
        db.session.commit()


def test_a_finished_batch_stops_polling_from_the_cache_too(app, client, admin_client, ticks):
    batch_id, _ = _make_batch(app)
    _finish(app, batch_id)
    since = ticks.since_in(1)
    for browser in (client, admin_client, client):  # a render, then from the cache
        response = browser.get(_url(batch_id, since), headers=HX)
        assert response.status_code == 286
        body = response.get_data(as_text=True)
        assert "hx-get" not in body and "hx-trigger" not in body
        assert '<span class="percent">100%</span>' in body
    # Even to a viewer whose `since` is newer than the render: never "nothing new".
    assert client.get(_url(batch_id, utcnow()), headers=HX).status_code == 286


def test_a_viewer_whose_since_is_before_the_window_gets_its_own(app, client, admin_client,
                                                                monkeypatch, ticks):
    batch_id, _ = _make_batch(app)
    # Changed ten seconds ago: before what this tick's shared render holds (its tick, the
    # two before, and the poll's overlap of 2 s), after what a tab hidden for 11 s has seen.
    older = _change_some(app, batch_id, "succeeded",
                         when=utcnow() - timedelta(seconds=10))
    in_step = client.get(_url(batch_id, ticks.since_in(1)), headers=HX).get_data(as_text=True)
    assert set(rows_of(in_step)).isdisjoint(older)
    hidden = utcnow() - timedelta(seconds=11)
    late = client.get(_url(batch_id, hidden), headers=HX).get_data(as_text=True)
    assert set(older) <= set(rows_of(late))
    assert poll_url_of(late) != poll_url_of(in_step)  # a render of its own
    # Another viewer with the same window, in another web process, shares it.
    as_another_process(app)
    with count_redis_round_trips(monkeypatch) as round_trips, count_sql(app) as statements:
        again = admin_client.get(_url(batch_id, hidden + timedelta(microseconds=1)),
                                 headers=HX).get_data(as_text=True)
    assert len(round_trips) == 1 and only_the_users_load(statements)
    assert poll_url_of(again) == poll_url_of(late)


def test_while_another_poll_renders_the_previous_tick_answers(app, client, ticks):
    batch_id, _ = _make_batch(app)
    behind = ticks.since_in(1)
    answer = client.get(_url(batch_id, behind), headers=HX).get_data(as_text=True)
    ticks.next_tick()
    # Another poll holds the claim on this tick's render (it is rendering it now).
    with app.app_context():
        w = pollcache.window(ticks.since_in(1))
        get_redis().set(pollcache._key(batch_id, 1, 500, w) + ":claim", "1", px=5000)
    # A viewer behind the previous tick's render is sent it...
    stale = client.get(_url(batch_id, behind - timedelta(microseconds=1)), headers=HX)
    assert stale.status_code == 200 and poll_url_of(stale.get_data(as_text=True)) == \
        poll_url_of(answer)
    # ...one who has it is told nothing is new (and given its summary)...
    has_it = client.get(poll_url_of(answer), headers=HX)
    assert has_it.status_code == 200 and has_it.headers["HX-Reswap"] == "none"
    assert poll_url_of(has_it.get_data(as_text=True)) == poll_url_of(answer)
    # ...and one with something newer gets nothing at all, and polls again later.
    newer = client.get(_url(batch_id, utcnow()), headers=HX)
    assert newer.status_code == 204 and newer.headers["HX-Trigger"] == "pressroom:unchanged"
    assert newer.get_data() == b""


def test_renders_are_kept_under_the_installation_prefix_and_expire(app, client, ticks):
    batch_id, _ = _make_batch(app)
    _change_some(app, batch_id, "running")
    assert client.get(_url(batch_id, ticks.since_in(1)), headers=HX).status_code == 200
    with app.app_context():
        scope = prefix()
    redis_client = get_redis_of(app)
    keys = sorted(redis_client.scan_iter(match=f"*poll:{batch_id}:*"))
    assert len(keys) == 2, keys  # the render and the claim on making it
    limit_ms = max(pollcache.KEEP_TICKS * ticks.interval, pollcache.KEEP_AT_LEAST_S) * 1000
    for key in keys:
        assert key.decode().startswith(f"{scope}poll:{batch_id}:1-500:")
        assert 0 < redis_client.pttl(key) <= limit_ms
    render = next(k for k in keys if not k.endswith(b":claim"))
    stored = redis_client.get(render).decode()
    # Nobody's in it: the CSRF tokens are a placeholder, no email, no session.
    assert set(CSRF_VALUE.findall(stored)) == {"<!--csrf-->"}
    assert "@example.test" not in stored


def get_redis_of(app):
    with app.app_context():
        return get_redis()


def test_a_redis_without_the_lookup_script_is_sent_it_once(app, client, monkeypatch,
                                                           ticks):
    """The lookup goes by its SHA1 (EVALSHA); a Redis that has not run it (restarted, or
    SCRIPT FLUSH) answers NOSCRIPT, is sent the script once, and the poll still answers."""
    batch_id, _ = _make_batch(app)
    first = client.get(_url(batch_id, ticks.since_in(1)), headers=HX)
    assert first.status_code == 200
    get_redis_of(app).script_flush()
    as_another_process(app)

    with count_redis_round_trips(monkeypatch) as round_trips:
        again = client.get(_url(batch_id, ticks.since_in(2)), headers=HX)
    assert again.status_code == 200
    assert poll_url_of(again.get_data(as_text=True)) == poll_url_of(first.get_data(as_text=True))
    assert [t.split(b"\r\n")[2].upper() for t in round_trips] == [b"EVALSHA", b"EVAL"]

    as_another_process(app)
    with count_redis_round_trips(monkeypatch) as round_trips:
        assert client.get(_url(batch_id, ticks.since_in(2)), headers=HX).status_code == 200
    assert len(round_trips) == 1 and b"EVALSHA" in round_trips[0].upper()


def test_with_redis_down_polls_answer_from_the_database(app, make_app, ticks):
    from tests.support import free_port
    batch_id, _ = _make_batch(app)
    _change_some(app, batch_id, "running")  # rows with Cancel buttons
    down = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    browser = down.test_client()
    login(browser, *ACCOUNTS["editor"])
    response = browser.get(_url(batch_id, ticks.since_in(1)), headers=HX)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Live progress is unavailable" in page
    assert "400 / 1000" in page
    assert csrf_from(page)  # the rows' Cancel buttons still carry a real token
    _finish(app, batch_id)
    assert browser.get(_url(batch_id, ticks.since_in(1)), headers=HX).status_code == 286
