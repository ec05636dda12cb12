"""What one progress poll of a 1,000-article batch costs: SQL statements, Redis round trips, bytes.

No worker is involved: the batch is written straight to the database, in the state it would
be in mid-way, and the running articles' Celery result keys hold PROGRESS meta exactly as
Celery's Redis backend stores it.
"""
from __future__ import annotations

import json
import uuid
from contextlib import contextmanager
from datetime import timedelta

import redis
from sqlalchemy import insert, select, update

from tests.helpers import count_sql, poll_url_of, rows_of, words_of
from webapp.extensions import db
from webapp.models import Article, Batch, User, utcnow

TOTAL, RUNNING, RECENT = 1000, 32, 3


def _make_batch(app) -> tuple[int, dict[int, int]]:
    """A 1,000-article batch: 400 finished long ago, 32 running (with progress in Redis),
    the rest queued. Returns (batch id, words so far by running article id)."""
    with app.app_context():
        user_id = db.session.scalar(select(User.id).where(User.email == "editor@example.test"))
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


def _finish_some(app, batch_id: int) -> list[int]:
    """Three queued articles (on the first page of the batch) finish now."""
    with app.app_context():
        recent = db.session.scalars(
            select(Article.id).where(Article.batch_id == batch_id, Article.status == "queued")
            .order_by(Article.position).limit(RECENT)).all()
        db.session.execute(update(Article).where(Article.id.in_(recent))
                           .values(status="succeeded", words=250, updated_at=utcnow()))
        db.session.commit()
    return list(recent)


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


def test_poll_cost_of_a_1000_article_batch(app, client, monkeypatch):
    batch_id, words = _make_batch(app)
    # The URL the batch page polls, exactly as the browser gets it.
    url = poll_url_of(client.get(f"/batches/{batch_id}").get_data(as_text=True))
    assert url and "since=" in url
    # A first poll opens the Redis connection (and its handshake), as any earlier poll would.
    assert client.get(url, headers={"HX-Request": "true"}).status_code == 200
    recent = _finish_some(app, batch_id)  # changed after the page was rendered

    with count_sql(app) as statements, count_redis_round_trips(monkeypatch) as round_trips:
        response = client.get(url, headers={"HX-Request": "true"})

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    # At most 3 statements: the signed-in user, the batch with its counts, the changed rows.
    assert len(statements) <= 3, "\n\n".join(statements)
    # Exactly one Redis round trip: one MGET of the 32 result keys, not one call per task.
    assert len(round_trips) == 1, round_trips
    assert round_trips[0].count(b"celery-task-meta-") == RUNNING
    assert b"MGET" in round_trips[0].upper()

    # Only what changed: the 3 rows that just finished, and the 32 running word counters.
    assert rows_of(page) == {article_id: "succeeded" for article_id in recent}
    shown = words_of(page)
    assert {a: n for a, n in shown.items() if a in words} == words
    assert set(shown) == set(words) | set(recent)
    assert page.count('id="article-') == 2 * RECENT + RUNNING  # row + its counter, counters
    assert 'hx-trigger="load delay:' in page
    assert len(page) < 20_000, f"a poll of {len(page)} bytes is too big"


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

