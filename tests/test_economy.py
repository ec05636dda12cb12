"""Economy mode end to end: the real worker sends a batch to the tests' server's Batch API
(/v1/files, /v1/batches), follows it, and imports its results through the real openai SDK.
"""
from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select, update

from tests.helpers import (articles_state, batch_id_from_location, login, page_csrf,
                           submit_form, wait_batch_final, wait_until)
from tests.support import ACCOUNTS
from webapp.extensions import db
from webapp.generation import economy, economy_requests, reconciler
from webapp.generation.batchapi import OpenAIBatches
from webapp.generation.pricing import cost_of, price_table
from webapp.models import Article, ArticleVersion, ProviderBatch, utcnow

TITLES = ["Tides of the northern coast", "A guide to winter cycling",
          "The last lighthouse keeper", "Bread, slowly"]


def submit_api(client, headers, titles, **extra):
    # A target that FakeAI's answers (120 words) meet: under half of it they are "short".
    return client.post("/api/v1/batches", headers=headers,
                       json={"name": "Economy", "titles": titles, "mode": "economy",
                             "target_words": 200, **extra})


def held_economy_batch(client, headers, titles) -> int:
    """An economy batch stored and held (not sent): the test sends it step by step."""
    return client.post("/api/v1/batches", headers=headers,
                       json={"name": "Held", "titles": titles, "mode": "economy",
                             "paused": True}).get_json()["id"]


def parts(app, batch_id: int) -> list[dict]:
    with app.app_context():
        rows = db.session.scalars(select(ProviderBatch).where(ProviderBatch.batch_id == batch_id)
                                  .order_by(ProviderBatch.id)).all()
        return [{c.name: getattr(r, c.name) for c in ProviderBatch.__table__.columns}
                for r in rows]


def versions_of(app, article_id: int) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(ArticleVersion)
                                 .where(ArticleVersion.article_id == article_id))


def test_an_economy_batch_is_written_through_the_batch_api_at_half_price(app, client,
                                                                        api_headers, fake):
    response = submit_api(client, api_headers, TITLES)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["mode"] == "economy"
    batch_id = body["id"]

    batch = wait_batch_final(app, batch_id)
    assert batch["status"] == "succeeded" and batch["mode"] == "economy"
    # No live request was made: every article went through the one provider batch.
    assert fake.request_count() == 0
    [remote] = fake.batches.created
    assert remote.metadata["pressroom_batch"] == str(batch_id)
    assert sorted(remote.titles) == sorted(TITLES)
    [line] = remote.lines[:1]
    assert line["url"] == "/v1/chat/completions" and line["method"] == "POST"
    assert line["body"]["model"] == "gpt-4o-mini" and line["body"]["max_tokens"] > 0

    price = price_table(app.config)["gpt-4o-mini"]
    for article in articles_state(app, batch_id):
        assert article["status"] == "succeeded"
        assert article["body"].startswith(f"# {article['title']}\n")
        assert article["finish_reason"] == "stop" and article["review_flag"] is None
        assert article["completion_tokens"] == fake.words
        full = cost_of(price, article["prompt_tokens"], article["completion_tokens"])
        assert article["cost_usd"] == pytest.approx(full * 0.5)
        assert versions_of(app, article["id"]) == 1

    [part] = parts(app, batch_id)
    assert part["status"] == "completed" and part["imported_at"] is not None
    assert (part["requests"], part["completed"]) == (len(TITLES), len(TITLES))
    # The input, output (and no error) files are deleted once the results are in.
    assert set(fake.batches.deleted) == {remote.input_file_id, remote.output_file_id}

    api = client.get(f"/api/v1/batches/{batch_id}", headers=api_headers).get_json()
    assert api["mode"] == "economy" and api["percent"] == 100
    [listed] = api["provider_batches"]
    assert listed["id"] == remote.id and listed["status"] == "completed"
    assert listed["request_counts"] == {"total": 4, "completed": 4, "failed": 0}
    page = client.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert "At the provider" in page and "completed" in page


def test_the_page_follows_the_provider_and_the_provider_is_not_hammered(app, client,
                                                                         api_headers, fake):
    fake.batches.seconds_per_request = 1.5
    batch_id = submit_api(client, api_headers, TITLES[:3]).get_json()["id"]
    wait_until(lambda: [p for p in parts(app, batch_id) if p["completed"] >= 1], 20,
               "the page's source to see a first request written at the provider")
    page = client.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert "being written at the provider" in page
    assert "left of the 24-hour window" in page
    # No Pause for an economy batch, and it says why.
    assert "cannot be paused" in page and "/pause" not in page
    paused = client.post(f"/api/v1/batches/{batch_id}/pause", headers=api_headers)
    assert paused.status_code == 409
    assert "cannot be paused" in paused.get_json()["error"]["message"]

    wait_batch_final(app, batch_id)
    [remote] = fake.batches.created
    # About 5 s from creation to the end, asked about every 0.2 s at first, then ever less
    # often while nothing changes (at most every second here): far fewer than 25 questions.
    polls = fake.batches.polls(remote.id)
    assert 3 <= polls <= 15, polls


@pytest.mark.parametrize("kind, status, flag, error", [
    ("length", "succeeded", "length", None),
    ("content_filter", "succeeded", "content_filter", None),
    ("empty", "succeeded", "empty", None),
    ("refusal", "succeeded", "refused", None),
    ("no_finish", "failed", None, "The answer was cut off"),
    ("error", "failed", None, "The provider could not write this article"),
])
def test_each_result_meets_the_same_rules_as_a_live_answer(app, client, api_headers, fake,
                                                           kind, status, flag, error):
    odd, plain = "An article that goes wrong", "An article that goes right"
    fake.batches.outcome(odd, kind)
    batch_id = submit_api(client, api_headers, [odd, plain]).get_json()["id"]
    batch = wait_batch_final(app, batch_id)
    assert batch["status"] == ("failed" if status == "failed" else "succeeded")
    rows = {a["title"]: a for a in articles_state(app, batch_id)}
    assert rows[plain]["status"] == "succeeded" and rows[plain]["review_flag"] is None
    assert rows[odd]["status"] == status
    assert rows[odd]["review_flag"] == flag
    if error:
        assert error in rows[odd]["error"] and not rows[odd]["body"]
        assert versions_of(app, rows[odd]["id"]) == 0


def test_an_expired_batch_keeps_what_was_written_and_the_rest_can_be_sent_again(
        app, client, api_headers, fake):
    fake.batches.expire_after(2)
    response = submit_form(client, "Expiring", TITLES, mode="economy")
    assert response.status_code == 303
    batch_id = batch_id_from_location(response)
    batch = wait_batch_final(app, batch_id)
    assert batch["status"] == "failed"
    rows = articles_state(app, batch_id)
    written = [a for a in rows if a["status"] == "succeeded"]
    lost = [a for a in rows if a["status"] == "failed"]
    assert len(written) == 2 and len(lost) == 2
    assert all("expired" in a["error"] for a in lost)
    assert parts(app, batch_id)[0]["status"] == "expired"

    page = client.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert "Send all failed again (economy)" in page and "Write all failed now (standard)" in page
    token = page_csrf(client, f"/batches/{batch_id}")
    again = client.post(f"/batches/{batch_id}/regenerate",
                        data={"which": "failed", "mode": "economy", "csrf_token": token})
    assert again.status_code == 303
    batch = wait_batch_final(app, batch_id)
    assert batch["status"] == "succeeded"
    assert len(fake.batches.created) == 2
    assert sorted(fake.batches.created[1].titles) == sorted(a["title"] for a in lost)
    assert fake.request_count() == 0
    # The two written first were not written again.
    for a in written:
        assert versions_of(app, a["id"]) == 1


def test_cancel_cancels_at_the_provider_and_keeps_what_arrived(app, client, api_headers, fake):
    fake.batches.seconds_per_request = 1.0
    fake.batches.cancel_seconds = 1.0
    batch_id = submit_api(client, api_headers, TITLES).get_json()["id"]
    wait_until(lambda: [p for p in parts(app, batch_id) if p["completed"] >= 1], 20,
               "one request written at the provider")
    cancel = client.post(f"/api/v1/batches/{batch_id}/cancel", headers=api_headers)
    assert cancel.status_code in (200, 202)
    # Until the provider says it has cancelled, the batch says it is being cancelled.
    wait_until(lambda: parts(app, batch_id)[0]["status"] == "cancelling", 10,
               "the provider to be asked to cancel")
    assert client.get(f"/api/v1/batches/{batch_id}",
                      headers=api_headers).get_json()["status"] == "cancelling"
    batch = wait_batch_final(app, batch_id)
    assert batch["status"] == "cancelled"
    rows = articles_state(app, batch_id)
    kept = [a for a in rows if a["status"] == "succeeded"]
    assert kept and all(a["body"] for a in kept)
    assert {a["status"] for a in rows} <= {"succeeded", "cancelled"}
    assert len(kept) == parts(app, batch_id)[0]["completed"]


def test_economy_is_refused_with_a_reason_where_the_server_has_no_batch_api(
        app, client, api_headers, fake):
    fake.batches.supported = False
    response = submit_api(client, api_headers, TITLES[:1])
    assert response.status_code == 422
    problem = response.get_json()["error"]
    assert problem["code"] == "unavailable"
    assert "no Batch API" in problem["message"] and "mode" in problem["fields"]
    probes = len(fake.batches.calls)
    assert probes >= 1
    # The answer is remembered: the form says why without asking again.
    page = client.get("/batches/new").get_data(as_text=True)
    assert "no Batch API" in page and 'value="economy"' in page and "disabled" in page
    assert len(fake.batches.calls) == probes
    # Standard batches go on as before.
    assert client.post("/api/v1/batches", headers=api_headers,
                       json={"name": "Now", "titles": ["Plain"]}).status_code == 201


def test_the_estimate_shows_both_prices_and_the_budget_is_checked_before_sending(
        app, client, api_headers, fake):
    token = page_csrf(client)
    estimate = client.post("/batches/estimate", data={"name": "E", "titles": "\n".join(TITLES),
                                                      "csrf_token": token},
                           headers={"HX-Request": "true"}).get_data(as_text=True)
    standard, cheaper = map(float, re.search(
        r"= <strong>\$([\d.]+)</strong>\.</p>\s*<p[^>]*>The same in economy mode: "
        r"<strong>\$([\d.]+)</strong>", estimate).groups())
    assert 0 < cheaper < standard and abs(cheaper - standard / 2) <= 0.0001

    response = submit_api(client, api_headers, TITLES, budget_usd=0.000001)
    batch_id = response.get_json()["id"]
    batch = wait_batch_final(app, batch_id)
    assert batch["status"] == "cancelled"
    assert "exceeds the budget" in batch["stop_reason"]
    assert fake.batches.created == [] and parts(app, batch_id) == []


def test_a_provider_batch_made_just_before_a_crash_is_found_not_made_twice(
        app, client, api_headers, fake):
    """The worker dies after creating the provider batch and before storing its id: the
    part is sent again, finds its batch by the tag in its metadata, and makes no second."""
    batch_id = held_economy_batch(client, api_headers, TITLES[:2])
    with app.app_context():
        [pb_id] = economy.store_parts(batch_id)
        pb = db.session.get(ProviderBatch, pb_id)
        api = OpenAIBatches(app.config)
        path = economy_requests.write_requests(pb)
        try:
            file_id = api.upload(path)
        finally:
            path.unlink()
        made = api.create(file_id, pb.token, batch_id)
        db.session.rollback()
        # What a crash left: the row knows nothing of the provider batch.
        assert db.session.get(ProviderBatch, pb_id).provider_batch_id is None
        economy.send_part.apply(args=(pb_id,)).get()
        db.session.expire_all()
        assert db.session.get(ProviderBatch, pb_id).provider_batch_id == made.id
    assert [b.id for b in fake.batches.created] == [made.id]
    batch = wait_batch_final(app, batch_id)
    assert batch["status"] == "succeeded"


def test_importing_twice_at_once_writes_each_article_once(app, client, api_headers, fake):
    """The worker and a second importer (here, the test) take the same ended provider
    batch at the same moment: every article gets one body and one version."""
    fake.batches.hold()
    batch_id = submit_api(client, api_headers, TITLES).get_json()["id"]
    wait_until(lambda: parts(app, batch_id) and parts(app, batch_id)[0]["provider_batch_id"],
               20, "the provider batch to be created")
    pb_id = parts(app, batch_id)[0]["id"]
    fake.batches.release()
    fake.batches.advance(60)
    with app.app_context():
        economy.follow_part.apply(args=(pb_id,)).get()
    wait_batch_final(app, batch_id)
    for article in articles_state(app, batch_id):
        assert article["status"] == "succeeded"
        assert versions_of(app, article["id"]) == 1


def test_parts_stay_within_the_providers_limits(app, client, api_headers, fake):
    titles = [f"Part test {i}" for i in range(7)]
    batch_id = held_economy_batch(client, api_headers, titles)
    with app.app_context():
        app.config["ECONOMY_MAX_REQUESTS"] = 3
        try:
            plan = economy_requests.plan(batch_id)
        finally:
            app.config["ECONOMY_MAX_REQUESTS"] = 50_000
        assert [p.count for p in plan] == [3, 3, 1]
        app.config["ECONOMY_MAX_FILE_BYTES"] = plan[0].size // 3 * 2
        try:
            by_size = economy_requests.plan(batch_id)
        finally:
            app.config["ECONOMY_MAX_FILE_BYTES"] = 190 * 1024 * 1024
        assert all(p.size <= plan[0].size // 3 * 2 for p in by_size) and len(by_size) >= 4
        assert sum(p.count for p in by_size) == 7


def test_an_article_cancelled_while_at_the_provider_keeps_its_late_result_as_a_version(
        app, client, api_headers, fake):
    fake.batches.hold()
    batch_id = submit_api(client, api_headers, TITLES[:2]).get_json()["id"]
    wait_until(lambda: parts(app, batch_id) and parts(app, batch_id)[0]["provider_batch_id"],
               20, "the provider batch to be created")
    first = articles_state(app, batch_id)[0]
    token = page_csrf(client, f"/batches/{batch_id}")
    assert client.post(f"/articles/{first['id']}/cancel",
                       data={"csrf_token": token}).status_code == 303
    assert articles_state(app, batch_id)[0]["status"] == "cancelled"
    fake.batches.release()
    fake.batches.advance(60)
    batch = wait_batch_final(app, batch_id)
    assert batch["status"] == "succeeded"
    cancelled, written = articles_state(app, batch_id)
    # Paid for and delivered: kept as a version of the cancelled article, not its body.
    assert cancelled["status"] == "cancelled" and not cancelled["body"]
    assert versions_of(app, cancelled["id"]) == 1
    assert written["status"] == "succeeded" and versions_of(app, written["id"]) == 1


def test_failed_articles_can_be_written_now_in_standard_mode(app, client, api_headers, fake):
    fake.batches.outcome(TITLES[0], "error")
    batch_id = submit_api(client, api_headers, TITLES[:2]).get_json()["id"]
    assert wait_batch_final(app, batch_id)["status"] == "failed"
    token = page_csrf(client, f"/batches/{batch_id}")
    client.post(f"/batches/{batch_id}/regenerate",
                data={"which": "failed", "mode": "standard", "csrf_token": token})
    assert wait_batch_final(app, batch_id)["status"] == "succeeded"
    # Written by the workers through one live request; no second provider batch.
    assert len(fake.requests_for(TITLES[0])) == 1 and len(fake.batches.created) == 1


def test_without_a_key_the_offline_provider_imitates_a_batch_api(app, make_app, fake):
    """`make run` on a fresh machine (no OPENAI_API_KEY) can show economy mode."""
    offline = make_app(OPENAI_API_KEY="")
    client = offline.test_client()
    login(client, *ACCOUNTS["editor"])
    page = client.get("/batches/new").get_data(as_text=True)
    assert 'value="economy"' in page and "economy-unavailable" not in page
    response = submit_form(client, "Offline economy", TITLES[:2], mode="economy")
    batch_id = batch_id_from_location(response)
    batch = wait_batch_final(app, batch_id)
    assert batch["status"] == "succeeded" and batch["provider"] == "offline"
    for article in articles_state(app, batch_id):
        assert "Offline placeholder" in article["body"] and article["cost_usd"] == 0
    assert fake.batches.calls == [] and fake.request_count() == 0
    assert parts(app, batch_id)[0]["status"] == "completed"


def test_a_cancel_before_the_provider_batch_exists_sends_nothing(app, client, api_headers,
                                                                 fake):
    batch_id = held_economy_batch(client, api_headers, TITLES[:2])
    with app.app_context():
        [pb_id] = economy.store_parts(batch_id)
    assert client.post(f"/api/v1/batches/{batch_id}/cancel",
                       headers=api_headers).status_code == 202
    with app.app_context():
        economy.send_part.apply(args=(pb_id,)).get()
    batch = wait_batch_final(app, batch_id)
    assert batch["status"] == "cancelled"
    assert fake.batches.created == [] and fake.batches.files == []
    assert {a["status"] for a in articles_state(app, batch_id)} == {"cancelled"}
    [part] = parts(app, batch_id)
    assert part["status"] == "cancelled" and part["imported_at"] is not None


def test_the_reconciler_leaves_articles_at_the_provider_alone(app, client, api_headers, fake):
    """Economy articles are `running` under their provider batch's token; even past their
    lease they are not the articles of a dead worker, and are not sent again live."""
    fake.batches.hold()
    batch_id = submit_api(client, api_headers, TITLES[:2]).get_json()["id"]
    wait_until(lambda: parts(app, batch_id) and parts(app, batch_id)[0]["provider_batch_id"],
               20, "the provider batch to be created")
    with app.app_context():
        db.session.execute(update(Article).where(Article.batch_id == batch_id)
                           .values(lease_expires_at=utcnow()))  # as if 48 h had passed
        db.session.commit()
        done = reconciler.run_once()
    assert done["requeued_lost_running"] == 0 and done["failed_lost_running"] == 0
    assert {a["status"] for a in articles_state(app, batch_id)} == {"running"}
    assert fake.request_count() == 0
    fake.batches.release()
    fake.batches.advance(60)
    assert wait_batch_final(app, batch_id)["status"] == "succeeded"
