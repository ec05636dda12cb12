"""Publishing approved articles to WordPress (issue 16), against the tests' own site
(tests/fakewp.py) through the real publisher worker (queue `publishing`), Redis and database.

The key assertion everywhere: the site never holds two posts for one article
(`fakewp.duplicates()`, and one post per article's slug as it was asked for), whatever
fails in between: a lost answer, a hung site, a worker killed between the create and its
record. Articles are made approved directly in the database (generation and review are
tested elsewhere); everything after that goes through the pages, the API, the CLI and the
worker.
"""
from __future__ import annotations

import html
import json
import re
import uuid
from datetime import datetime, timedelta, timezone

import kombu
import pytest
from sqlalchemy import func, select, update

from tests.dedicated import Dedicated
from tests.fakewp import CREATE_POST, DELETE_POST, LIST_POSTS, UPDATE_POST, Fault
from tests.helpers import csrf_from, page_csrf, wait_until
from tests.support import ACCOUNTS, PUBLISH_TIMEOUT
from webapp import crypto
from webapp.extensions import db
from webapp.generation import publishing
from webapp.models import (Article, AuditEvent, Batch, BulkAction, Destination, Publication,
                           ReviewStatus as R, User, utcnow)

# Long enough for a retry or two (backoff from 0.2 s, a 3 s timeout) on a loaded machine.
PUBLISH_WAIT = 60.0
BODY = "# {title}\n\nThe first paragraph of *{title}*.\n\n## A section\n\nMore text here."


# -- setting up ------------------------------------------------------------------------------

def approved_batch(app, titles: list[str], *, not_approved: tuple[str, ...] = (),
                   owner: str = "editor") -> tuple[int, dict[str, int]]:
    """A finished batch of the editor's whose articles are approved (those named in
    `not_approved` are left awaiting review): (batch id, {title: article id})."""
    with app.app_context():
        user_id = db.session.scalar(select(User.id).where(User.email == ACCOUNTS[owner][0]))
        reviewer = db.session.scalar(select(User.id).where(User.email == ACCOUNTS["admin"][0]))
        batch = Batch(user_id=user_id, name=f"Publish {uuid.uuid4().hex[:6]}",
                      provider="offline", model="gpt-4o-mini", target_words=100,
                      tone="neutral", language="English", status="succeeded", total=len(titles),
                      finished_at=utcnow())
        db.session.add(batch)
        db.session.flush()
        ids = {}
        for position, title in enumerate(titles, 1):
            approved = title not in not_approved
            article = Article(batch_id=batch.id, position=position, title=title,
                              status="succeeded", task_id=str(uuid.uuid4()),
                              body=BODY.format(title=title), words=12, finished_at=utcnow(),
                              review_status=R.APPROVED if approved else R.NEEDS_REVIEW,
                              reviewed_by=reviewer if approved else None,
                              reviewed_at=utcnow() if approved else None)
            db.session.add(article)
            db.session.flush()
            ids[title] = article.id
        db.session.commit()
        return batch.id, ids


def add_destination(app, fakewp, name: str = "Blog", login: str = "admin",
                    password: str | None = None, **options) -> int:
    """A destination for the fake site, added through the service as an admin would."""
    from webapp.services import destinations

    user_login, app_password = fakewp.credentials(login)
    with app.app_context():
        admin = db.session.scalar(select(User).where(User.email == ACCOUNTS["admin"][0]))
        return destinations.add(admin, name=name, url=fakewp.url, username=user_login,
                                password=password or app_password, **options).id


def publish(client, headers, batch_id: int, **body):
    return client.post(f"/api/v1/batches/{batch_id}/publish", json=body, headers=headers)


def publications(app, batch_id: int) -> dict[int, dict]:
    """{article id: its publication row} of a batch."""
    with app.app_context():
        rows = db.session.scalars(select(Publication).join(Article).where(
            Article.batch_id == batch_id)).all()
        return {p.article_id: {c.name: getattr(p, c.name) for c in Publication.__table__.columns}
                for p in rows}


def wait_settled(app, batch_id: int, count: int, timeout: float = PUBLISH_WAIT) -> dict:
    """Wait until `count` publications of the batch are neither queued nor being sent."""
    def settled():
        rows = publications(app, batch_id)
        done = [r for r in rows.values() if r["status"] not in ("queued", "publishing")]
        return rows if len(done) == count else None
    return wait_until(settled, timeout, f"{count} publications of batch {batch_id} to settle")


def posts_for(fakewp, title: str, article_id: int) -> list:
    """The site's posts made for one article (by the slug its create asked for; the site may
    have changed the stored slug)."""
    return fakewp.find_posts(requested_slug=publishing.post_slug(title, article_id),
                             include_trash=True)


def one_post_each(fakewp, ids: dict[str, int]) -> dict[str, object]:
    """The key assertion: exactly one post per article, and no two posts alike."""
    assert fakewp.duplicates() == {}
    assert fakewp.duplicates("title") == {}
    found = {}
    for title, article_id in ids.items():
        posts = posts_for(fakewp, title, article_id)
        assert len(posts) == 1, (title, [(p.id, p.status, p.slug) for p in posts])
        found[title] = posts[0]
    return found


def admin_user(app):
    return db.session.scalar(select(User).where(User.email == ACCOUNTS["admin"][0]))


# -- drafts, once, and never what is not approved --------------------------------------------

def test_approved_articles_go_out_as_drafts_once_and_others_never(app, client, api_headers,
                                                                 fakewp):
    add_destination(app, fakewp)
    titles = ["Tide pools at dawn", "Salt marsh birds", "Not yet reviewed"]
    batch_id, ids = approved_batch(app, titles, not_approved=("Not yet reviewed",))
    with app.app_context():  # audit entries outlive a test: count only this one's
        audit_before = db.session.scalar(select(func.coalesce(func.max(AuditEvent.id), 0)))

    response = publish(client, api_headers, batch_id, destination="Blog")
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert (body["destination"], body["status"], body["queued"]) == ("Blog", "draft", 2)
    assert body["skipped"] == {"not_approved": 1}
    rows = wait_settled(app, batch_id, 2)
    assert ids["Not yet reviewed"] not in rows

    posts = one_post_each(fakewp, {t: ids[t] for t in titles[:2]})
    for title in titles[:2]:
        post, row = posts[title], rows[ids[title]]
        assert (row["status"], row["remote_status"], row["remote_id"]) == \
            ("published", "draft", post.id)
        assert post.status == "draft" and post.title == title
        assert "<em>" + title + "</em>" in post.content and "<h1>" not in post.content
        assert publishing.marker(row["token"]) in post.content
        assert row["url"] == f"{fakewp.url}/?p={post.id}"
    # What is not approved is never sent, in any request.
    assert all("Not yet reviewed" not in json.dumps(r.body) for r in fakewp.requests)
    assert fakewp.count(CREATE_POST) == 2

    # The article's JSON, alone and in its batch, says where it went.
    article = client.get(f"/api/v1/articles/{ids[titles[0]]}", headers=api_headers).get_json()
    (pub,) = article["publications"]
    assert pub["destination"] == "Blog" and pub["status"] == "published"
    assert pub["remote_id"] == posts[titles[0]].id and pub["url"].endswith(
        f"?p={posts[titles[0]].id}") and pub["published_at"].endswith("Z")
    assert pub["error"] is None
    batch = json.loads(client.get(f"/api/v1/batches/{batch_id}",
                                  headers=api_headers).get_data(as_text=True))
    by_title = {a["title"]: a["publications"] for a in batch["articles"]}
    assert [p["remote_id"] for p in by_title[titles[1]]] == [posts[titles[1]].id]
    assert by_title["Not yet reviewed"] == []

    # The batch page links each post; its partial has stopped polling.
    page = client.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert 'id="publish-form"' in page
    for title in titles[:2]:
        assert f'href="{fakewp.url}/?p={posts[title].id}"' in page
    partial = client.get(f"/batches/{batch_id}/publications")
    assert partial.status_code == 286 and "hx-get" not in partial.get_data(as_text=True)

    # One audit entry for the request: who, what, where.
    with app.app_context():
        (entry,) = db.session.scalars(select(AuditEvent).where(
            AuditEvent.action == "articles_published", AuditEvent.id > audit_before)).all()
        assert entry.actor == ACCOUNTS["editor"][0] and entry.target == f"batch:{batch_id}"
        assert "2 as draft to Blog" in entry.detail and fakewp.url in entry.detail


def test_a_scheduled_post_goes_out_as_future_with_its_date(app, client, api_headers, fakewp):
    add_destination(app, fakewp)
    batch_id, ids = approved_batch(app, ["Spring planting guide"])
    when = datetime.now(timezone(timedelta(hours=2))).replace(microsecond=0) + timedelta(days=2)
    response = publish(client, api_headers, batch_id, destination="Blog", status="future",
                       publish_at=when.isoformat())
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["publish_at"] == \
        when.astimezone(timezone.utc).replace(tzinfo=None).isoformat() + "Z"
    row = wait_settled(app, batch_id, 1)[ids["Spring planting guide"]]
    (post,) = one_post_each(fakewp, ids).values()
    assert post.status == "future" and row["remote_status"] == "future"
    assert post.date_gmt == when.astimezone(timezone.utc).replace(tzinfo=None)
    assert fakewp.requests_to(CREATE_POST)[0].body["date_gmt"] == \
        when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def test_publishing_again_updates_the_same_post(app, client, api_headers, fakewp):
    add_destination(app, fakewp)
    batch_id, ids = approved_batch(app, ["Quiet harbours"])
    assert publish(client, api_headers, batch_id, destination="Blog").status_code == 202
    first = wait_settled(app, batch_id, 1)[ids["Quiet harbours"]]
    # An editor changes the text; publishing again sends it, and publishes it.
    with app.app_context():
        db.session.execute(update(Article).where(Article.id == ids["Quiet harbours"])
                           .values(body="# Quiet harbours\n\nA better text."))
        db.session.commit()
    assert publish(client, api_headers, batch_id, destination="Blog",
                   status="publish").status_code == 202
    wait_until(lambda: publications(app, batch_id)[ids["Quiet harbours"]]["remote_status"]
               == "publish", PUBLISH_WAIT, "the second publish")
    again = publications(app, batch_id)[ids["Quiet harbours"]]
    (post,) = one_post_each(fakewp, ids).values()
    assert again["remote_id"] == first["remote_id"] == post.id
    assert fakewp.count(CREATE_POST) == 1 and fakewp.count(UPDATE_POST) == 1
    assert post.status == "publish" and "A better text." in post.content
    assert again["url"] == f"{fakewp.url}/{post.slug}/"


# -- exactly once when answers are lost --------------------------------------------------------

@pytest.mark.parametrize("fault", [Fault.stored_then_error(500),
                                   Fault.stored_then_hang(PUBLISH_TIMEOUT + 3),
                                   Fault.stored_then_drop()],
                         ids=["stored_then_error", "stored_then_hang", "stored_then_drop"])
def test_a_lost_create_answer_is_adopted_not_duplicated(app, client, api_headers, fakewp,
                                                        fault):
    add_destination(app, fakewp)
    batch_id, ids = approved_batch(app, ["Lighthouse keepers", "Ferry timetables"])
    # The first create is stored by the site, but its answer never reaches us.
    fakewp.script(fault, on=CREATE_POST)
    assert publish(client, api_headers, batch_id, destination="Blog").status_code == 202
    rows = wait_settled(app, batch_id, 2)
    posts = one_post_each(fakewp, ids)
    for title, article_id in ids.items():
        assert rows[article_id]["status"] == "published", rows[article_id]
        assert rows[article_id]["remote_id"] == posts[title].id
    # Two creates in all (one lost), and the lost one's post found by its marker.
    assert fakewp.count(CREATE_POST) == 2
    assert fakewp.count(LIST_POSTS) >= 1
    assert max(r["attempts"] for r in rows.values()) == 2


# -- manners: 401, 429 ------------------------------------------------------------------------

def test_a_rejected_password_costs_one_request_and_stops_the_destination(
        app, client, admin_client, api_headers, fakewp):
    destination_id = add_destination(app, fakewp, password="wrong pass word 1234 5678")
    titles = ["Dune grasses", "Wader counts", "Estuary mud", "Shell middens"]
    batch_id, ids = approved_batch(app, titles)
    assert publish(client, api_headers, batch_id, destination="Blog").status_code == 202
    rows = wait_settled(app, batch_id, len(titles))

    assert fakewp.count() == 1  # one request for the whole batch
    assert fakewp.posts == []
    errors = sorted(r["error"] for r in rows.values())
    refused = [e for e in errors if "HTTP 401" in e]
    assert len(refused) == 1 and "invalid application password" in refused[0]
    assert errors.count(publishing.STOPPED) == len(titles) - 1
    assert all(r["status"] == "failed" for r in rows.values())
    with app.app_context():
        destination = db.session.get(Destination, destination_id)
        assert destination.status == "needs_credentials" and "HTTP 401" in destination.last_error

    # The page says why, and publishing more is refused until the credentials are fixed.
    page = admin_client.get("/admin/destinations").get_data(as_text=True)
    assert "needs credentials" in page and "The site rejected the application password" in page
    again = publish(client, api_headers, batch_id, destination="Blog")
    assert again.status_code == 409 and "credentials" in again.get_json()["error"]["message"]
    assert fakewp.count() == 1

    # An admin enters the right password: it is tested at once, and publishing goes on.
    _, password = fakewp.credentials("admin")
    response = admin_client.post(f"/admin/destinations/{destination_id}", data={
        "csrf_token": page_csrf(admin_client, "/admin/destinations"), "password": password,
        "provenance": "none"})
    assert response.status_code == 303
    page = admin_client.get("/admin/destinations").get_data(as_text=True)
    assert "Connected as" in page and "needs credentials" not in page
    assert publish(client, api_headers, batch_id, destination="Blog").status_code == 202
    wait_until(lambda: all(r["status"] == "published"
                           for r in publications(app, batch_id).values()),
               PUBLISH_WAIT, "the batch to be published after the fix")
    one_post_each(fakewp, ids)


def test_a_429_waits_as_long_as_retry_after_says(app, client, api_headers, fakewp):
    add_destination(app, fakewp)
    batch_id, ids = approved_batch(app, ["Slow down please"])
    fakewp.script(Fault.rate_limit(2), on=CREATE_POST)
    assert publish(client, api_headers, batch_id, destination="Blog").status_code == 202
    row = wait_settled(app, batch_id, 1)[ids["Slow down please"]]
    assert row["status"] == "published" and row["attempts"] == 2
    first, second = fakewp.requests_to(CREATE_POST)
    assert first.status == 429 and second.status == 201
    assert second.start - first.start >= 2.0
    one_post_each(fakewp, ids)


def test_a_site_that_keeps_failing_is_given_up_on_with_a_message(app, client, api_headers,
                                                                  fakewp):
    add_destination(app, fakewp)
    batch_id, ids = approved_batch(app, ["Always broken"])
    fakewp.set_default_fault(Fault.server_error(503), on=CREATE_POST)
    assert publish(client, api_headers, batch_id, destination="Blog").status_code == 202
    row = wait_settled(app, batch_id, 1, timeout=90)[ids["Always broken"]]
    assert row["status"] == "failed"
    assert row["error"] == "The site had a temporary error (HTTP 503). Gave up after 5 attempts."
    # Every attempt after the first looked for a post the last create may have made.
    assert fakewp.count(CREATE_POST) == 5 and fakewp.posts == []


def test_requests_per_destination_are_capped_across_worker_threads(app, client, api_headers,
                                                                    fakewp):
    from webapp.services import destinations

    destination_id = add_destination(app, fakewp)
    with app.app_context():  # the credentials work: the cap is PUBLISH_CONCURRENCY (2)
        assert destinations.test_connection(admin_user(app), destination_id).ok
    fakewp.latency = 0.5
    titles = [f"Busy harbour {n}" for n in range(6)]
    batch_id, ids = approved_batch(app, titles)
    assert publish(client, api_headers, batch_id, destination="Blog").status_code == 202
    wait_settled(app, batch_id, len(titles))
    one_post_each(fakewp, ids)
    # The publisher has 4 threads; the site never saw more than 2 requests at once.
    assert fakewp.max_concurrent == 2


def test_an_article_no_longer_approved_when_its_turn_comes_is_not_sent(app, client,
                                                                       api_headers, fakewp):
    add_destination(app, fakewp)
    batch_id, ids = approved_batch(app, ["First in line", "Changed its mind"])
    # One request at a time until one succeeded: the first create holds the second back.
    hold = fakewp.hold(CREATE_POST)
    assert publish(client, api_headers, batch_id, destination="Blog").status_code == 202
    first = hold.wait_arrived(timeout=30)
    waiting = next(t for t in ids if t not in json.dumps(first.body))
    with app.app_context():
        db.session.execute(update(Article).where(Article.id == ids[waiting])
                           .values(review_status=R.REJECTED, review_reason="Not after all"))
        db.session.commit()
    hold.release()
    rows = wait_settled(app, batch_id, 2)
    assert rows[ids[waiting]]["status"] == "failed"
    assert rows[ids[waiting]]["error"] == publishing.NOT_APPROVED
    assert fakewp.count(CREATE_POST) == 1
    assert all(waiting not in json.dumps(r.body) for r in fakewp.requests)


# -- categories and tags --------------------------------------------------------------------

def test_terms_are_looked_up_and_created_only_when_allowed(app, client, api_headers, fakewp):
    from webapp.services import destinations

    news = fakewp.add_category("News")
    # Stored as "Food &amp; Drink", which the site's search for "Food & Drink" misses.
    food = fakewp.add_category("Food & Drink")
    destination_id = add_destination(app, fakewp)
    batch_id, ids = approved_batch(app, ["Harbour news"])
    response = publish(client, api_headers, batch_id, destination="Blog",
                       categories=["news", "Food & Drink"], tags="Fresh, Boats")
    assert response.status_code == 202
    row = wait_settled(app, batch_id, 1)[ids["Harbour news"]]
    assert row["status"] == "failed"
    assert row["error"] == ("The tag “Fresh” does not exist on the site, and this destination "
                            "does not create new categories and tags.")
    assert fakewp.count(CREATE_POST) == 0 and fakewp.tags == []

    with app.app_context():
        destinations.update(admin_user(app), destination_id, allow_new_terms=True)
    assert publish(client, api_headers, batch_id, destination="Blog",
                   categories=["news", "Food & Drink"], tags="Fresh, Boats").status_code == 202
    wait_until(lambda: publications(app, batch_id)[ids["Harbour news"]]["status"]
               == "published", PUBLISH_WAIT, "the publish with new tags")
    (post,) = one_post_each(fakewp, ids).values()
    tags = {t.name: t.id for t in fakewp.tags}
    assert set(tags) == {"Fresh", "Boats"}
    assert post.categories == [news, food] and sorted(post.tags) == sorted(tags.values())
    assert fakewp.count("POST /wp/v2/categories") == 0  # found, not made


# -- address rules -----------------------------------------------------------------------------

PRIVATE = ["http://10.0.0.5", "https://192.168.1.20/blog", "http://localhost:8080",
           "https://[::1]/", "http://169.254.169.254/", "https://127.0.0.2:8443"]


@pytest.mark.parametrize("url", PRIVATE)
def test_the_destination_form_refuses_a_private_address(app, admin_client, url):
    csrf = page_csrf(admin_client, "/admin/destinations")
    response = admin_client.post("/admin/destinations", data={
        "csrf_token": csrf, "name": "Inside", "url": url, "username": "admin",
        "password": "abcd efgh ijkl mnop qrst uvwx", "provenance": "none"})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "The address is private or local" in page and "PUBLISH_ALLOWED_HOSTS" in page
    assert "abcd efgh" not in page  # the password is never sent back
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Destination)) == 0


def test_plain_http_to_a_public_host_is_refused(app, admin_client):
    response = admin_client.post("/admin/destinations", data={
        "csrf_token": page_csrf(admin_client, "/admin/destinations"), "name": "Clear",
        "url": "http://93.184.215.14", "username": "admin", "password": "x" * 24})
    assert response.status_code == 400
    assert "Use https://" in response.get_data(as_text=True)


def test_the_cli_refuses_a_private_address(app):
    result = app.test_cli_runner().invoke(
        args=["destinations", "add", "Inside", "--wordpress", "http://10.1.2.3", "--user", "u"],
        env={"WORDPRESS_APP_PASSWORD": "abcd efgh ijkl mnop qrst uvwx"})
    assert result.exit_code != 0
    assert "url: The address is private or local" in result.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Destination)) == 0


def test_a_private_address_is_refused_at_request_time_too(app, client, api_headers, fakewp):
    # As if PUBLISH_ALLOWED_HOSTS had named the host when it was saved, and no longer does.
    destination_id = add_destination(app, fakewp)
    with app.app_context():
        db.session.execute(update(Destination).where(Destination.id == destination_id)
                           .values(url=fakewp.url.replace("127.0.0.1", "127.0.0.2")))
        db.session.commit()
    batch_id, ids = approved_batch(app, ["Inside job"])
    assert publish(client, api_headers, batch_id, destination="Blog").status_code == 202
    row = wait_settled(app, batch_id, 1)[ids["Inside job"]]
    assert row["status"] == "failed"
    assert row["error"].startswith("The site's address is not allowed: not a public address")
    assert fakewp.count() == 0


# -- the API's answers -------------------------------------------------------------------------

def test_the_publish_api_names_what_is_wrong(app, client, api_headers, fakewp):
    add_destination(app, fakewp)
    batch_id, _ = approved_batch(app, ["Checked fields"])
    cases = [
        ({}, "destination"), ({"destination": "Nope"}, "destination"),
        ({"destination": "Blog", "status": "live"}, "status"),
        ({"destination": "Blog", "status": "future"}, "publish_at"),
        ({"destination": "Blog", "status": "future", "publish_at": "2001-01-01T00:00:00Z"},
         "publish_at"),
        ({"destination": "Blog", "status": "future", "publish_at": "next week"}, "publish_at"),
        ({"destination": "Blog", "publish_at": "2031-01-01T00:00:00Z"}, "publish_at"),
        ({"destination": "Blog", "tags": 5}, "tags"),
        ({"destination": "Blog", "colour": "red"}, "colour"),
    ]
    for body, field in cases:
        response = publish(client, api_headers, batch_id, **body)
        assert response.status_code == 400, (body, response.status_code)
        assert field in response.get_json()["error"]["fields"], (body, response.get_json())
    assert client.post(f"/api/v1/batches/{batch_id}/publish", data="[]", headers={
        **api_headers, "Content-Type": "application/json"}).status_code == 400
    assert publish(client, api_headers, 2_000_000_000, destination="Blog").status_code == 404

    nothing_id, _ = approved_batch(app, ["Awaiting review"], not_approved=("Awaiting review",))
    refused = publish(client, api_headers, nothing_id, destination="Blog")
    assert refused.status_code == 409 and "approved" in refused.get_json()["error"]["message"]
    # Another editor's batch: only its author or an admin publishes it.
    others_id, _ = approved_batch(app, ["The admin's batch"], owner="admin")
    assert publish(client, api_headers, others_id, destination="Blog").status_code == 403
    assert fakewp.count() == 0
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Publication)) == 0


def test_one_article_is_published_and_unpublished_alone(app, client, api_headers, fakewp):
    add_destination(app, fakewp)
    batch_id, ids = approved_batch(app, ["Alone", "Left out"])
    response = client.post(f"/api/v1/articles/{ids['Alone']}/publish",
                           json={"destination": "Blog", "status": "publish"},
                           headers=api_headers)
    assert response.status_code == 202 and response.get_json()["queued"] == 1
    wait_settled(app, batch_id, 1)
    assert [p.title for p in fakewp.posts] == ["Alone"]
    response = client.post(f"/api/v1/articles/{ids['Alone']}/unpublish",
                           json={"destination": "Blog", "to": "draft"}, headers=api_headers)
    assert response.status_code == 202
    wait_until(lambda: publications(app, batch_id)[ids["Alone"]]["status"] == "unpublished",
               PUBLISH_WAIT, "the unpublish")
    assert fakewp.posts[0].status == "draft"

    # The other one from its own page's form.
    page = client.get(f"/articles/{ids['Left out']}").get_data(as_text=True)
    assert 'id="article-publish-form"' in page
    response = client.post(f"/articles/{ids['Left out']}/publish", data={
        "csrf_token": csrf_from(page), "destination": "Blog", "status": "pending"})
    assert response.status_code == 303
    wait_until(lambda: publications(app, batch_id).get(ids["Left out"], {}).get("status")
               == "published", PUBLISH_WAIT, "the article page's publish")
    assert {p.title: p.status for p in fakewp.posts} == {"Alone": "draft", "Left out": "pending"}
    page = client.get(f"/articles/{ids['Left out']}").get_data(as_text=True)
    assert "pending review" in page and 'class="post-link"' in page


# -- a selection -----------------------------------------------------------------------------

_CONFIRM = re.compile(r'name="confirm" value="([^"]+)"')
_QUESTION = re.compile(r'<h2 id="bulk-question">(.*?)</h2>', re.S)


def bulk_preview(client, csrf: str, batch_ids, **fields):
    """The dashboard's bulk bar sent with the rows ticked and "publish" chosen."""
    return client.post("/bulk/preview", data={
        "csrf_token": csrf, "scope": "batches", "action": "publish", "select": "rows",
        "filter": "", "ids": [str(i) for i in batch_ids], **fields})


def test_a_selection_of_batches_is_published_from_the_dashboard_once(app, client, fakewp,
                                                                    monkeypatch):
    """Ticked batches on the dashboard, "publish" with a destination and a scheduled date:
    the confirmation counts the approved articles of the editor's own batches (someone
    else's batch is skipped and said), the run (on the worker, past BULK_SYNC_LIMIT) sends
    exactly those, each once, and a second confirm sends nothing more."""
    monkeypatch.setitem(app.config, "BULK_SYNC_LIMIT", 2)  # 3 articles: on the worker
    coast, wildlife, sea = (fakewp.add_category("Coast"), fakewp.add_category("Wildlife"),
                            fakewp.add_tag("sea"))
    add_destination(app, fakewp)
    first, first_ids = approved_batch(app, ["Kelp forests", "Sea otters", "Unreviewed one"],
                                      not_approved=("Unreviewed one",))
    second, second_ids = approved_batch(app, ["Harbour seals"])
    others, others_ids = approved_batch(app, ["The admin's own"], owner="admin")
    with app.app_context():
        audit_before = db.session.scalar(select(func.coalesce(func.max(AuditEvent.id), 0)))
    when = (datetime.now(timezone.utc) + timedelta(days=3)).replace(microsecond=0, second=0)

    dashboard = client.get("/").get_data(as_text=True)
    assert '<option value="publish">' in dashboard and 'id="bulk-publish-destination"' in dashboard
    csrf = csrf_from(dashboard)
    preview = bulk_preview(client, csrf, [first, second, others], destination="Blog",
                           status="future", publish_at=when.strftime("%Y-%m-%dT%H:%M"),
                           categories="Coast, Wildlife", tags="sea")
    page = preview.get_data(as_text=True)
    assert preview.status_code == 200, page[:2000]
    assert html.unescape(_QUESTION.search(page).group(1)).strip() == \
        "Publish 3 approved articles to Blog?"
    assert "They are in 2 batches." in page
    assert "1 batch belongs to someone else and will be skipped." in page
    assert "scheduled for " + when.strftime("%Y-%m-%d %H:%M") in page
    assert "Categories: Coast, Wildlife" in page and "Tags: sea" in page
    assert fakewp.count() == 0  # nothing is sent before the confirmation

    token = html.unescape(_CONFIRM.search(page).group(1))
    ran = client.post("/bulk/run", data={"csrf_token": csrf, "confirm": token})
    assert ran.status_code == 303 and "/bulk/" in ran.headers["Location"]
    sent = {**{t: first_ids[t] for t in ("Kelp forests", "Sea otters")}, **second_ids}
    wait_settled(app, first, 2)
    wait_settled(app, second, 1)
    posts = one_post_each(fakewp, sent)
    for post in posts.values():
        assert post.status == "future"
        assert post.date_gmt == when.replace(tzinfo=None)
        assert post.categories == [coast, wildlife] and post.tags == [sea]
    assert publications(app, others) == {}  # someone else's batch: never sent
    assert first_ids["Unreviewed one"] not in publications(app, first)  # not approved
    report = client.get(ran.headers["Location"]).get_data(as_text=True)
    assert "3 articles are being published." in report
    assert "1 batch belongs to someone else and was skipped." in report

    # The same confirmation again (a double submit, the back button): nothing more.
    again = client.post("/bulk/run", data={"csrf_token": csrf, "confirm": token})
    assert again.status_code == 303 and again.headers["Location"] == ran.headers["Location"]
    assert fakewp.count(CREATE_POST) == 3
    one_post_each(fakewp, sent)

    # One audit entry for the selection, none per batch; each article's page says so.
    with app.app_context():
        entries = db.session.scalars(select(AuditEvent).where(
            AuditEvent.id > audit_before,
            AuditEvent.action.in_(("bulk_published", "articles_published")))).all()
        assert [e.action for e in entries] == ["bulk_published"]
        assert "3 articles are being published." in entries[0].detail
        assert f"picked batches {first}, {second}, {others}" in entries[0].detail
    article = client.get(f"/articles/{sent['Harbour seals']}").get_data(as_text=True)
    assert "Published in bulk by " + ACCOUNTS["editor"][0] in article


def test_publishing_a_selection_checks_its_fields_and_stores_nothing(app, client, fakewp):
    destination_id = add_destination(app, fakewp)
    batch_id, _ = approved_batch(app, ["Checked in bulk"])
    csrf = page_csrf(client, "/")
    with app.app_context():
        before = db.session.scalar(select(func.count()).select_from(BulkAction))
    past = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    cases = [({}, "destination", "Choose a destination."),
             ({"destination": "Nope"}, "destination", "No destination is named"),
             ({"destination": "Blog", "status": "future"}, "publish_at", "needs a date"),
             ({"destination": "Blog", "status": "future", "publish_at": past}, "publish_at",
              "must be in the future"),
             ({"destination": "Blog", "status": "live"}, "status", "The status is one of")]
    for fields, name, words in cases:
        page = bulk_preview(client, csrf, [batch_id], **fields)
        text = html.unescape(page.get_data(as_text=True))
        assert page.status_code == 400, fields
        assert f'data-field="{name}"' in text and words in text, (fields, text[:3000])
    # A stopped destination is said at once, not found out by the worker.
    with app.app_context():
        db.session.get(Destination, destination_id).status = "needs_credentials"
        db.session.commit()
    page = html.unescape(bulk_preview(client, csrf, [batch_id], destination="Blog")
                         .get_data(as_text=True))
    assert 'data-field="destination"' in page and "Blog is stopped" in page
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(BulkAction)) == before
        assert db.session.scalar(select(func.count()).select_from(Publication)) == 0
    assert fakewp.count() == 0


def test_the_api_publishes_a_selection_of_a_batchs_articles(app, client, api_headers, fakewp):
    add_destination(app, fakewp)
    batch_id, ids = approved_batch(app, ["Picked one", "Not picked", "Picked two"])
    _, foreign = approved_batch(app, ["Another batch's"])
    for articles in ([], "1,2", [True], [ids["Picked one"], foreign["Another batch's"]]):
        refused = publish(client, api_headers, batch_id, destination="Blog", articles=articles)
        assert refused.status_code == 400, articles
        assert "articles" in refused.get_json()["error"]["fields"], refused.get_json()
    # One article's route names its article in the URL.
    assert client.post(f"/api/v1/articles/{ids['Not picked']}/publish", headers=api_headers,
                       json={"destination": "Blog", "articles": [ids["Not picked"]]}
                       ).status_code == 400
    assert fakewp.count() == 0

    picked = [ids["Picked one"], ids["Picked two"]]
    response = publish(client, api_headers, batch_id, destination="Blog", articles=picked)
    assert response.status_code == 202 and response.get_json()["queued"] == 2
    rows = wait_settled(app, batch_id, 2)
    assert sorted(rows) == sorted(picked)
    one_post_each(fakewp, {"Picked one": ids["Picked one"], "Picked two": ids["Picked two"]})
    assert len(fakewp.posts) == 2

    # …and takes back just one of them.
    taken = client.post(f"/api/v1/batches/{batch_id}/unpublish", headers=api_headers,
                        json={"destination": "Blog", "articles": [ids["Picked two"]]})
    assert taken.status_code == 202 and taken.get_json()["queued"] == 1
    wait_until(lambda: publications(app, batch_id)[ids["Picked two"]]["status"] == "unpublished",
               PUBLISH_WAIT, "the unpublish of one picked article")
    assert {p.title: p.status for p in fakewp.posts} == {"Picked one": "draft",
                                                         "Picked two": "draft"}
    assert publications(app, batch_id)[ids["Picked one"]]["status"] == "published"


# -- unpublish -------------------------------------------------------------------------------

def test_unpublish_moves_posts_back_to_draft_or_to_the_trash(app, client, api_headers, fakewp):
    add_destination(app, fakewp)
    batch_id, ids = approved_batch(app, ["Going back", "Going away"])
    assert publish(client, api_headers, batch_id, destination="Blog",
                   status="publish").status_code == 202
    wait_settled(app, batch_id, 2)
    assert {p.status for p in fakewp.posts} == {"publish"}

    # The whole batch back to draft, from its page.
    page = client.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert 'id="unpublish-form"' in page
    response = client.post(f"/batches/{batch_id}/unpublish", data={
        "csrf_token": csrf_from(page), "destination": "Blog", "to": "draft"})
    assert response.status_code == 303
    wait_until(lambda: {r["status"] for r in publications(app, batch_id).values()}
               == {"unpublished"}, PUBLISH_WAIT, "both posts back in draft")
    assert {p.status for p in fakewp.posts} == {"draft"}
    assert {r["remote_status"] for r in publications(app, batch_id).values()} == {"draft"}

    # One article to the trash, from its row on the batch page.
    response = client.post(f"/articles/{ids['Going away']}/unpublish", data={
        "csrf_token": csrf_from(page), "destination": "Blog", "to": "trash", "back": "batch"})
    assert response.status_code == 303 and response.headers["Location"].endswith(
        f"/batches/{batch_id}#batch-publications")
    wait_until(lambda: publications(app, batch_id)[ids["Going away"]]["remote_status"]
               == "trash", PUBLISH_WAIT, "the post in the trash")
    statuses = {p.title: p.status for p in fakewp.posts}
    assert statuses == {"Going back": "draft", "Going away": "trash"}
    assert fakewp.count(DELETE_POST) == 1
    assert fakewp.requests_to(DELETE_POST)[0].query.get("force") in (None, "false")
    with app.app_context():
        actions = db.session.execute(select(AuditEvent.target, AuditEvent.detail).where(
            AuditEvent.action == "articles_unpublished",
            AuditEvent.target.in_([f"batch:{batch_id}", f"article:{ids['Going away']}"]))
            .order_by(AuditEvent.id)).all()
    assert [target for target, _ in actions] == [f"batch:{batch_id}",
                                                 f"article:{ids['Going away']}"]
    assert actions[0][1].startswith("2 to draft on Blog") and "to trash on Blog" in actions[1][1]

    # Publishing the trashed article again brings its post back, still one post.
    assert publish(client, api_headers, batch_id, destination="Blog",
                   status="publish").status_code == 202
    wait_until(lambda: {r["status"] for r in publications(app, batch_id).values()}
               == {"published"}, PUBLISH_WAIT, "both posts published again")
    one_post_each(fakewp, ids)
    assert {p.status for p in fakewp.posts} == {"publish"}


# -- encryption at rest, and a new SECRET_KEY ------------------------------------------------

def test_the_password_is_encrypted_at_rest_and_a_new_secret_key_asks_for_it_again(
        app, client, admin_client, api_headers, fakewp):
    destination_id = add_destination(app, fakewp)
    _, password = fakewp.credentials("admin")
    with app.app_context():
        stored = db.session.get(Destination, destination_id).password_encrypted
        raw = db.session.execute(select(Destination.__table__.c.password_encrypted)).scalar()
    assert stored == raw and password not in raw and password.replace(" ", "") not in raw
    page = admin_client.get("/admin/destinations").get_data(as_text=True)
    assert ">set<" in page and password not in page

    # As if SECRET_KEY had been rotated since the password was stored.
    with app.app_context():
        db.session.execute(update(Destination).where(Destination.id == destination_id)
                           .values(password_encrypted=crypto.encrypt(password, "an older key")))
        db.session.commit()
    page = admin_client.get("/admin/destinations")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "cannot be read: enter it again" in text and "SECRET_KEY changed" in text

    batch_id, ids = approved_batch(app, ["Locked out"])
    assert publish(client, api_headers, batch_id, destination="Blog").status_code == 202
    row = wait_settled(app, batch_id, 1)[ids["Locked out"]]
    assert row["status"] == "failed" and row["error"] == publishing.UNREADABLE
    assert fakewp.count() == 0
    with app.app_context():
        destination = db.session.get(Destination, destination_id)
        assert destination.status == "needs_credentials"
    # Test connection says so too, without a request.
    response = admin_client.post(f"/admin/destinations/{destination_id}/test", data={
        "csrf_token": page_csrf(admin_client, "/admin/destinations")}, follow_redirects=True)
    assert "can no longer be read" in response.get_data(as_text=True)
    assert fakewp.count() == 0


# -- the command line ----------------------------------------------------------------------

def test_the_cli_adds_lists_tests_and_removes_destinations(app, fakewp):
    with app.app_context():
        last_entry = db.session.scalar(select(func.max(AuditEvent.id))) or 0
    runner = app.test_cli_runner()
    login, password = fakewp.credentials("editor")
    added = runner.invoke(args=["destinations", "add", "Site A", "--wordpress", fakewp.url + "/",
                                "--user", login, "--allow-new-terms", "--provenance", "footer"],
                          env={"WORDPRESS_APP_PASSWORD": password})
    assert added.exit_code == 0, added.output
    assert f"Added Site A: {fakewp.url} as {login}." in added.output and password not in \
        added.output
    # Without the variable the password is asked for, and not echoed.
    prompted = runner.invoke(args=["destinations", "add", "Site B", "--wordpress", fakewp.url,
                                   "--user", login], input=password + "\n")
    assert prompted.exit_code == 0, prompted.output
    assert password not in prompted.output
    twice = runner.invoke(args=["destinations", "add", "Site B", "--wordpress", fakewp.url,
                                "--user", login], env={"WORDPRESS_APP_PASSWORD": password})
    assert twice.exit_code != 0 and "exists already" in twice.output

    listed = runner.invoke(args=["destinations", "list"])
    assert listed.exit_code == 0
    assert "Site A" in listed.output and "Site B" in listed.output
    assert "password=set" in listed.output and password not in listed.output
    tested = runner.invoke(args=["destinations", "test", "Site A"])
    assert tested.exit_code == 0 and "may publish posts" in tested.output
    with app.app_context():
        site_a = db.session.scalar(select(Destination).where(Destination.name == "Site A"))
        assert (site_a.allow_new_terms, site_a.provenance) == (True, "footer")

    removed = runner.invoke(args=["destinations", "remove", "Site A"])
    assert removed.exit_code == 0 and "Removed Site A." in removed.output
    missing = runner.invoke(args=["destinations", "remove", "Site A"])
    assert missing.exit_code != 0 and "No destination named" in missing.output
    with app.app_context():
        assert db.session.scalars(select(Destination.name)).all() == ["Site B"]
        entries = db.session.scalars(select(AuditEvent.action).where(
            AuditEvent.id > last_entry, AuditEvent.actor == "cli",
            AuditEvent.action.like("destination_%")).order_by(AuditEvent.id)).all()
    assert entries == ["destination_added", "destination_added", "destination_removed"]


# -- Test connection ----------------------------------------------------------------------------

@pytest.mark.parametrize("setup, login, ok, words", [
    (None, "admin", True, "this user may publish posts"),
    ("wrong", "admin", False, "The application password was rejected (HTTP 401)"),
    (None, "subscriber", False, "this user may not publish posts"),
    ("not_wordpress", "admin", False, "There is no WordPress REST API at this address"),
    ("plain_permalinks", "admin", True, "this user may publish posts"),
    ("hang", "admin", False, f"The site did not answer in {PUBLISH_TIMEOUT:g} s"),
    ("redirect", "admin", False, "enter that address instead"),
])
def test_test_connection_says_what_is_wrong_in_words(app, admin_client, fakewp, setup, login,
                                                    ok, words):
    from tests.fakewp import ME
    destination_id = add_destination(app, fakewp, login=login,
                                     password="wrong 1234" if setup == "wrong" else None)
    if setup in ("not_wordpress", "plain_permalinks"):
        fakewp.site_mode = setup
    elif setup == "hang":
        fakewp.script(Fault.hang(PUBLISH_TIMEOUT + 3), on=ME)
    elif setup == "redirect":
        fakewp.script(Fault.redirect("https://www.example.com/wp-json/wp/v2/users/me"), on=ME)
    response = admin_client.post(f"/admin/destinations/{destination_id}/test", data={
        "csrf_token": page_csrf(admin_client, "/admin/destinations")}, follow_redirects=True)
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and words in page, page[page.find("flash"):][:400]
    assert ("flash-success" if ok else "flash-error") in page
    with app.app_context():
        status = db.session.get(Destination, destination_id).status
    assert status == ("needs_credentials" if setup == "wrong" or login == "subscriber"
                      else "ok")


# -- a worker killed between the create and its record -----------------------------------------

@pytest.fixture(scope="module")
def publisher_worker(_app, database_url, redis_url, fake_server, artifacts, worker):
    dedicated = Dedicated("publisher", _app, database_url, redis_url, fake_server, artifacts,
                          db_index=13, publishing=True, concurrency=1, settings={})
    yield dedicated
    dedicated.stop()


@pytest.fixture
def publisher(app, publisher_worker):
    with publisher_worker.in_use() as dedicated:
        yield dedicated


def _restore_unacked(redis_url: str) -> None:
    """As if the visibility timeout of the killed worker's message had run out: kombu puts
    it back on its queue (its task then finds the publication done)."""
    with kombu.Connection(redis_url, transport_options={"visibility_timeout": 0}) as conn:
        conn.default_channel.qos.restore_visible(num=1000, interval=1)


def test_a_worker_killed_between_create_and_record_leaves_one_post(app, publisher, fakewp):
    from webapp.generation import reconciler

    add_destination(app, fakewp)
    title = "Killed mid-publish"
    batch_id, ids = approved_batch(app, [title])
    hold = fakewp.hold(CREATE_POST)  # the site stores the post, then holds its answer
    client = publisher.app.test_client()
    headers = {"Authorization": f"Bearer {app.config['TEST_TOKENS']['editor']}"}
    assert publish(client, headers, batch_id, destination="Blog").status_code == 202
    hold.wait_arrived(timeout=30)
    index = next(i for i, (path, _) in enumerate(publisher.logs)
                 if path.name.endswith("publisher.log"))
    publisher.kill(index)
    hold.release()
    row = publications(app, batch_id)[ids[title]]
    assert row["status"] == "publishing" and row["remote_id"] is None
    assert row["create_sent_at"] is not None
    assert len(posts_for(fakewp, title, ids[title])) == 1  # made, and not recorded

    publisher.respawn(index)

    def sent_again():
        with publisher.app.app_context():
            return reconciler.requeue_lost_publications()[0]
    wait_until(sent_again, publishing.lease_seconds(PUBLISH_TIMEOUT) + 30,
               "the reconciler to send the lost publication again")
    row = wait_settled(app, batch_id, 1)[ids[title]]
    (post,) = one_post_each(fakewp, ids).values()
    assert row["status"] == "published" and row["remote_id"] == post.id
    assert row["attempts"] == 2 and fakewp.count(CREATE_POST) == 1
    # The dead worker's own message comes back in the end: it finds the work done.
    _restore_unacked(publisher.redis_url)
    publisher.wait_idle()
    assert fakewp.count(CREATE_POST) == 1
    one_post_each(fakewp, ids)
