"""What one progress poll of a 1,000-article batch costs: SQL statements, Redis round trips, bytes.

No worker is involved: the batch is written straight to the database, in the state it would
be in mid-way, and the running articles' Celery result keys hold PROGRESS meta exactly as
Celery's Redis backend stores it.

A batch page's polls render the partial once a tick for every viewer
(webapp/services/pollcache.py): the poll that renders costs at most 3 statements and 3 Redis
round trips (the lookup, the MGET of the live words, keeping the render); the other polls of
the tick cost 1 round trip and no statement but the signed-in user's in another web process,
and no round trip in one that has read or made that render already. The tests hold the tick
clock still (HeldTicks), so that they, not the wall clock, decide when a tick ends; and
`as_another_process` makes the next poll one of another web process.
"""
from __future__ import annotations

import json
import math
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest
import redis
from sqlalchemy import insert, select, update

from tests.helpers import count_sql, poll_url_of, rows_of, words_of
from webapp.extensions import db
from webapp.models import Article, Batch, User, utcnow
from webapp.services import pollcache

TOTAL, RUNNING, RECENT = 1000, 32, 3


class HeldTicks:
    """pollcache's clock, held still: a test moves it to the next tick when it wants one."""

    def __init__(self, interval: float):
        self.interval = interval
        # Mid-tick, so that a `since` a whole number of ticks away is mid-tick too; and
        # in the past, so that a `since` of this tick is older than what a poll reads now.
        self.now = (math.floor(time.time() / interval) - 0.5) * interval

    def __call__(self) -> float:
        return self.now

    def next_tick(self) -> None:
        self.now += self.interval

    def since_in(self, ticks_back: int) -> datetime:
        """A `since` in the middle of the tick `ticks_back` before the current one."""
        return datetime(1970, 1, 1) + timedelta(seconds=self.now - ticks_back * self.interval)


@pytest.fixture
def ticks(app, monkeypatch) -> HeldTicks:
    held = HeldTicks(app.config["POLL_INTERVAL"])
    monkeypatch.setattr(pollcache, "clock", held)
    return held


def _make_batch(app, owner: str = "editor@example.test") -> tuple[int, dict[int, int]]:
    """A 1,000-article batch: 400 finished long ago, 32 running (with progress in Redis),
    the rest queued. Returns (batch id, words so far by running article id)."""
    with app.app_context():
        user_id = db.session.scalar(select(User.id).where(User.email == owner))
        long_ago = utcnow() - timedelta(hours=1)
        batch = Batch(user_id=user_id, name="Big batch", provider="openai-compatible (test)",
                      model="gpt-4o-mini", target_words=300, tone="neutral", language="English",
                      instructions="", total=TOTAL, status="running", created_at=long_ago,
                      started_at=long_ago, dispatched_at=long_ago)
        db.session.add(batch)
        db.session.flush()
        db.session.execute(insert(Article), [
            {"batch_id": batch.id, "position": i, "title": f"Article {i}",
             "status": "succeeded" if i <= 400 else "queued", "words": 300 if i <= 400 else 0,
             "task_id": str(uuid.uuid4()), "created_at": long_ago, "updated_at": long_ago}
            for i in range(1, TOTAL + 1)])
        db.session.commit()
        batch_id = batch.id
        running = db.session.execute(
            select(Article.id, Article.task_id).where(Article.batch_id == batch_id,
                                                      Article.status == "queued")
            .order_by(Article.position).limit(RUNNING)).all()
        db.session.execute(update(Article).where(Article.id.in_([r.id for r in running]))
                           .values(status="running", started_at=long_ago, attempts=1,
                                   claim_token=str(uuid.uuid4()),
                                   lease_expires_at=utcnow() + timedelta(hours=1)))
        db.session.commit()

    # The result keys as Celery's Redis backend writes them for update_state("PROGRESS").
    client = redis.Redis.from_url(app.config["REDIS_URL"])
    words = {}
    for n, (article_id, task_id) in enumerate(running, start=1):
        words[article_id] = 10 * n
        client.set(f"celery-task-meta-{task_id}", json.dumps({
            "status": "PROGRESS", "result": {"words": 10 * n, "attempt": 1},
            "traceback": None, "children": [], "date_done": None, "task_id": task_id}))
    client.close()
    return batch_id, words


def _change_some(app, batch_id: int, status: str, n: int = RECENT,
                 when: datetime | None = None) -> list[int]:
    """`n` queued articles (on the first page of the batch) become `status` at `when`."""
    with app.app_context():
        ids = db.session.scalars(
            select(Article.id).where(Article.batch_id == batch_id, Article.status == "queued")
            .order_by(Article.position).limit(n)).all()
        db.session.execute(update(Article).where(Article.id.in_(ids))
                           .values(status=status, words=250 if status == "succeeded" else 0,
                                   updated_at=when or utcnow()))
        db.session.commit()
    return list(ids)


def _finish_some(app, batch_id: int) -> list[int]:
    """Three queued articles (on the first page of the batch) finish now."""
    return _change_some(app, batch_id, "succeeded")


@contextmanager
def count_redis_round_trips(monkeypatch):
    """Every write of a command (or of a whole pipeline) to a Redis socket, client-side:
    a pipeline or an MGET is one round trip; a health-check PING would be another."""
    sent: list[bytes] = []
    original = redis.connection.AbstractConnection.send_packed_command

    def send_packed_command(self, command, check_health=True):
        sent.append(command if isinstance(command, bytes) else b"".join(command))
        return original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command",
                        send_packed_command)
    yield sent
    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", original)


def only_the_users_load(statements: list[str]) -> bool:
    """The one statement every signed-in request makes: its user and session."""
    return len(statements) == 1 and "user_sessions" in statements[0]


def test_poll_that_renders_a_1000_article_batch(app, client, monkeypatch, ticks):
    batch_id, words = _make_batch(app)
    # The URL the batch page polls, exactly as the browser gets it.
    url = poll_url_of(client.get(f"/batches/{batch_id}").get_data(as_text=True))
    assert url and "since=" in url
    # A first poll opens the Redis connection (and its handshake), as any earlier poll would.
    assert client.get(url, headers={"HX-Request": "true"}).status_code == 200
    recent = _finish_some(app, batch_id)  # changed after the page was rendered
    ticks.next_tick()  # the first poll of a new tick renders

    with count_sql(app) as statements, count_redis_round_trips(monkeypatch) as round_trips:
        response = client.get(url, headers={"HX-Request": "true"})

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    # At most 3 statements: the signed-in user, the batch with its counts, the changed rows.
    assert len(statements) <= 3, "\n\n".join(statements)
    # 3 round trips: the lookup (this tick's render, or a claim on making it), one MGET of
    # the 32 result keys (not one call per task), and keeping the render for the others.
    assert len(round_trips) == 3, round_trips
    lookup, live, keep = round_trips
    assert b"EVAL" in lookup.upper() and b":claim" in lookup
    assert b"MGET" in live.upper() and live.count(b"celery-task-meta-") == RUNNING
    assert keep.upper().startswith(b"*") and b"SET" in keep.upper() and b"PX" in keep.upper()

    # Only what changed: the 3 rows that just finished, and the 32 running word counters.
    assert rows_of(page) == {article_id: "succeeded" for article_id in recent}
    shown = words_of(page)
    assert {a: n for a, n in shown.items() if a in words} == words
    assert set(shown) == set(words) | set(recent)
    assert page.count('id="article-') == 2 * RECENT + RUNNING  # row + its counter, counters
    assert 'hx-trigger="load delay:' in page
    assert len(page) < 20_000, f"a poll of {len(page)} bytes is too big"


def as_another_process(app) -> None:
    """The next poll is one of another web process: it has no copy of this tick's renders
    (pollcache._Recent), only Redis has them."""
    with app.app_context():
        pollcache.forget_recent()


def test_poll_answered_from_the_shared_render(app, client, admin_client, monkeypatch, ticks):
    """Two viewers with different `since` in one tick: one render; the second viewer, in
    another web process, is sent it for 1 Redis round trip and no SQL but its user's, and
    a third in that process for no round trip at all."""
    batch_id, words = _make_batch(app)
    recent = _finish_some(app, batch_id)
    base = f"/batches/{batch_id}/progress?seen=running&first=1&last=500"
    first = client.get(f"{base}&since={ticks.since_in(1).isoformat()}",
                       headers={"HX-Request": "true"})
    assert first.status_code == 200
    as_another_process(app)

    with count_sql(app) as statements, count_redis_round_trips(monkeypatch) as round_trips:
        second = admin_client.get(f"{base}&since={ticks.since_in(2).isoformat()}",
                                  headers={"HX-Request": "true"})

    assert second.status_code == 200
    assert only_the_users_load(statements), "\n\n".join(statements)
    assert len(round_trips) == 1, round_trips
    assert b"EVAL" in round_trips[0].upper() and b"celery-task-meta-" not in round_trips[0]
    page = second.get_data(as_text=True)
    assert rows_of(page) == rows_of(first.get_data(as_text=True)) == {
        article_id: "succeeded" for article_id in recent}
    assert {a: n for a, n in words_of(page).items() if a in words} == words
    # The same render: both carry the same next URL (the time the render was read).
    assert poll_url_of(page) == poll_url_of(first.get_data(as_text=True))

    # The third viewer of the tick in that process: its copy, no round trip.
    with count_sql(app) as statements, count_redis_round_trips(monkeypatch) as round_trips:
        third = client.get(f"{base}&since={ticks.since_in(2).isoformat()}",
                           headers={"HX-Request": "true"})
    assert third.status_code == 200 and only_the_users_load(statements)
    assert round_trips == []
    assert third.get_data(as_text=True) == first.get_data(as_text=True)

    # The next tick asks Redis again: a copy serves only its own tick.
    ticks.next_tick()
    with count_redis_round_trips(monkeypatch) as round_trips:
        assert client.get(f"{base}&since={ticks.since_in(1).isoformat()}",
                          headers={"HX-Request": "true"}).status_code == 200
    assert round_trips and b"EVAL" in round_trips[0].upper()


def test_first_poll_without_since_sends_active_rows_only(app, client):
    batch_id, words = _make_batch(app)
    _finish_some(app, batch_id)
    response = client.get(f"/batches/{batch_id}/progress", headers={"HX-Request": "true"})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert set(rows_of(page)) == set(words)
    assert all(status == "running" for status in rows_of(page).values())
    # 403 of 1000 finished (400 long ago + 3 just now): 40 %.
    assert '<span class="percent">40%</span>' in page


@pytest.mark.parametrize("process", ["another", "the same"])
def test_nothing_new_costs_at_most_one_round_trip(app, client, monkeypatch, ticks, process):
    """A viewer who already has this tick's render (it polls again within the tick):
    htmx is told to keep what it shows, for 1 round trip (none in the process that has
    the render) and no SQL but the user's."""
    batch_id, _ = _make_batch(app)
    url = poll_url_of(client.get(f"/batches/{batch_id}").get_data(as_text=True))
    answer = client.get(url, headers={"HX-Request": "true"}).get_data(as_text=True)
    again = poll_url_of(answer)  # the URL the answer carries: its `since` is the render's
    if process == "another":
        as_another_process(app)

    with count_sql(app) as statements, count_redis_round_trips(monkeypatch) as round_trips:
        response = client.get(again, headers={"HX-Request": "true"})

    assert only_the_users_load(statements), "\n\n".join(statements)
    assert len(round_trips) == (1 if process == "another" else 0), round_trips
    assert response.status_code == 200
    assert response.headers["HX-Reswap"] == "none"
    assert response.headers["HX-Trigger"] == "pressroom:unchanged"
    body = response.get_data(as_text=True)
    # Only the summary the viewer has (for clients that read the body), and its same URL.
    assert rows_of(body) == {} and words_of(body) == {} and "hx-swap-oob" not in body
    assert poll_url_of(body) == again
    assert body == answer[:answer.index("</section>") + len("</section>")]
