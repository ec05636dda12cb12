"""The generation task on the real worker: idempotent, retried with backoff, failing clearly."""
from __future__ import annotations

import uuid

import pytest

from sqlalchemy import insert, select

from tests.fakeai import Fault
from tests.helpers import FINISH_TIMEOUT, articles_state, batch_state, wait_batch_final
from webapp.extensions import db
from webapp.models import Article, Batch, User, utcnow
from webapp.generation.provider import provider_label

TASK = "webapp.tasks.generate_article"


def _stored_article(app, title: str) -> tuple[int, int, str]:
    """A queued one-article batch stored directly, with nothing enqueued yet."""
    with app.app_context():
        user_id = db.session.scalar(select(User.id).where(User.email == "editor@example.test"))
        batch = Batch(user_id=user_id, name="Twice", provider=provider_label(app.config),
                      model="gpt-4o-mini", target_words=200, tone="neutral", language="English",
                      instructions="", total=1, created_at=utcnow())
        db.session.add(batch)
        db.session.flush()
        task_id = str(uuid.uuid4())
        db.session.execute(insert(Article), [{
            "batch_id": batch.id, "position": 1, "title": title, "status": "queued",
            "task_id": task_id, "created_at": utcnow(), "updated_at": utcnow()}])
        db.session.commit()
        article_id = db.session.scalar(select(Article.id).where(Article.task_id == task_id))
        return batch.id, article_id, task_id


def test_same_task_twice_yields_one_body(app, celery_app, fake):
    title = "Written only once"
    fake.latency, fake.chunks = 2.0, 10
    batch_id, article_id, task_id = _stored_article(app, title)

    first = celery_app.send_task(TASK, args=[article_id], task_id=task_id, queue="generation")
    fake.wait_for(lambda: fake.requests_for(title), timeout=FINISH_TIMEOUT,
                  message="the first run to reach the provider")
    # A second delivery of the same work while the first is still writing.
    second = celery_app.send_task(TASK, args=[article_id], task_id=str(uuid.uuid4()),
                                  queue="generation")

    assert second.get(timeout=FINISH_TIMEOUT) == {"status": "skipped"}
    assert first.get(timeout=FINISH_TIMEOUT)["status"] == "succeeded"
    # And once more after it finished: it returns at once without calling the provider.
    third = celery_app.send_task(TASK, args=[article_id], task_id=str(uuid.uuid4()),
                                 queue="generation")
    assert third.get(timeout=FINISH_TIMEOUT) == {"status": "succeeded"}

    assert len(fake.requests_for(title)) == 1
    (article,) = articles_state(app, batch_id)
    assert article["status"] == "succeeded"
    assert article["attempts"] == 1
    assert article["body"].startswith(f"# {title}\n")
    assert article["body"].count(f"# {title}") == 1
    assert batch_state(app, batch_id)["status"] == "succeeded"


def _submit_one(client, api_headers, title: str) -> int:
    response = client.post("/api/v1/batches", headers=api_headers,
                           json={"name": title, "titles": [title], "target_words": 200})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def test_retryable_errors_are_retried_with_backoff(app, client, api_headers, fake):
    title = "Retried twice"
    fake.script(Fault.rate_limit(retry_after=0.3), Fault.server_error())
    batch_id = _submit_one(client, api_headers, title)

    batch = wait_batch_final(app, batch_id)
    assert batch["status"] == "succeeded"
    (article,) = articles_state(app, batch_id)
    assert article["status"] == "succeeded"
    assert article["attempts"] == 3  # attempts are recorded
    assert article["body"].startswith(f"# {title}\n")
    assert article["body"].count(f"# {title}") == 1
    assert article["error"] is None and article["note"] is None

    records = fake.requests_for(title)
    assert [r.status for r in records] == [429, 500, 200]
    # The second attempt waited at least as long as the 429's Retry-After asked.
    assert records[1].start - records[0].end >= 0.3 - 0.02


def test_unauthorized_fails_at_once_with_an_actionable_message(app, client, api_headers, fake):
    title = "Wrong key"
    fake.script(Fault.unauthorized())
    batch_id = _submit_one(client, api_headers, title)

    batch = wait_batch_final(app, batch_id)
    assert batch["status"] == "failed"
    (article,) = articles_state(app, batch_id)
    assert article["status"] == "failed"
    assert article["body"] is None
    assert "API key" in article["error"] and "OPENAI_API_KEY" in article["error"]
    # Not retried: a 401 will not go away by asking again.
    assert len(fake.requests_for(title)) == 1
    assert article["attempts"] == 1

    page = client.get(f"/articles/{article['id']}").get_data(as_text=True)
    assert "OPENAI_API_KEY" in page and "badge-failed" in page
    api = client.get(f"/api/v1/batches/{batch_id}", headers=api_headers).get_json()
    assert api["status"] == "failed" and api["percent"] == 100
    assert api["counts"]["failed"] == 1
    assert "API key" in api["articles"][0]["error"]


@pytest.mark.parametrize("articles", [7, 6])
def test_a_batch_is_sent_a_chunk_of_rows_at_a_time(app, fake, monkeypatch, articles):
    """publish_batch reads the queued rows in chunks (a 100,000-article batch is never held
    in memory at once): every chunk is sent, a short last one and an exact multiple alike."""
    from webapp.generation import dispatch

    monkeypatch.setattr(dispatch, "SEND_CHUNK", 3)
    fake.latency = 0.0
    with app.app_context():
        user_id = db.session.scalar(select(User.id).where(User.email == "editor@example.test"))
        batch = Batch(user_id=user_id, name="Chunks", provider=provider_label(app.config),
                      model="gpt-4o-mini", target_words=200, tone="neutral", language="English",
                      instructions="", total=articles, created_at=utcnow())
        db.session.add(batch)
        db.session.flush()
        db.session.execute(insert(Article), [{
            "batch_id": batch.id, "position": i + 1, "title": f"Chunked {i + 1}",
            "status": "queued", "task_id": str(uuid.uuid4()), "created_at": utcnow(),
            "updated_at": utcnow()} for i in range(articles)])
        db.session.commit()
        batch_id = batch.id
        assert dispatch.publish_batch(batch_id) is None
    assert wait_batch_final(app, batch_id)["status"] == "succeeded"
    assert sorted(r.title for r in fake.requests) == sorted(f"Chunked {i + 1}"
                                                              for i in range(articles))
