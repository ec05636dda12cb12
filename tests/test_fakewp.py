"""Tests of tests/fakewp.py itself, driven over HTTP with httpx (not through the app): the
WordPress behaviours the publishing code relies on, and every fault it can be given."""

from __future__ import annotations

import base64
import email.utils
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.fakewp import (ANY, CREATE_POST, DEFAULT_USERS, FakeWordPress, Fault, LIST_POSTS, ME,
                          sanitize_title)

POSTS = "/wp-json/wp/v2/posts"


@pytest.fixture
def http(fakewp):
    with httpx.Client(base_url=fakewp.url, timeout=5) as client:
        yield client


@pytest.fixture
def admin(fakewp):
    return fakewp.credentials("admin")


def create(http, auth, **fields):
    fields.setdefault("title", "A title")
    response = http.post(POSTS, auth=auth, json=fields)
    assert response.status_code == 201, response.text
    return response.json()


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


# -- index and authentication ------------------------------------------------------------------


def test_index_names_the_api_and_application_passwords(fakewp, http):
    response = http.get("/wp-json/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["link"] == f'<{fakewp.url}/wp-json/>; rel="https://api.w.org/"'
    index = response.json()
    assert "wp/v2" in index["namespaces"] and index["url"] == fakewp.url
    assert index["name"] == "Fake WordPress"
    assert "application-passwords" in index["authentication"]
    # PHP's json_encode escapes slashes; clients must parse, not match text.
    assert "http:\\/\\/127.0.0.1" in response.text


def test_users_me_needs_credentials(fakewp, http, admin):
    anonymous = http.get("/wp-json/wp/v2/users/me")
    assert anonymous.status_code == 401
    assert anonymous.json() == {"code": "rest_not_logged_in",
                                "message": "You are not currently logged in.",
                                "data": {"status": 401}}
    me = http.get("/wp-json/wp/v2/users/me", params={"context": "edit"}, auth=admin)
    assert me.status_code == 200
    assert me.json()["username"] == "admin" and me.json()["roles"] == ["administrator"]
    assert me.json()["capabilities"]["publish_posts"] is True
    view = http.get("/wp-json/wp/v2/users/me", auth=admin).json()
    assert "roles" not in view and view["slug"] == "admin"


def test_application_password_with_or_without_spaces_and_email_as_user(fakewp, http, admin):
    login, password = admin
    assert " " in password
    for auth in ((login, password), (login, password.replace(" ", "")),
                 ("admin@example.test", password), ("ADMIN", password)):
        assert http.get("/wp-json/wp/v2/users/me", auth=auth).status_code == 200, auth


@pytest.mark.parametrize("user, password, code", [
    ("admin", "wrong password 1234", "incorrect_password"),
    ("admin", "admin-login-password", "incorrect_password"),  # a login password is no app password
    ("nobody", "AdmN 1pwD Fake WP24 Test Pass", "invalid_username"),
    ("nobody@example.test", "AdmN 1pwD Fake WP24 Test Pass", "invalid_email"),
])
def test_rejected_credentials_fail_every_request_with_401(fakewp, http, user, password, code):
    for path in ("/wp-json/wp/v2/users/me", "/wp-json/", POSTS, "/wp-json/no/such/route"):
        response = http.get(path, auth=(user, password))
        assert response.status_code == 401, path
        assert response.json()["code"] == code
    assert "invalid application password" in http.get(
        "/wp-json/", auth=("admin", "x")).json()["message"]
    assert all(r.auth_user is None and r.auth_sent == user for r in fakewp.requests[:4])


def test_revoked_or_disabled_application_passwords(fakewp, http, admin):
    fakewp.revoke_app_passwords("admin")
    assert http.get("/wp-json/wp/v2/users/me", auth=admin).json()["code"] == "incorrect_password"
    editor = fakewp.credentials("editor")
    fakewp.disable_app_passwords_for("editor")
    response = http.get("/wp-json/wp/v2/users/me", auth=editor)
    assert response.status_code == 401
    assert response.json()["code"] == "application_passwords_disabled_for_user"


def test_missing_capabilities(fakewp, http, admin):
    anonymous = http.post(POSTS, json={"title": "x"})
    assert (anonymous.status_code, anonymous.json()["code"]) == (401, "rest_cannot_create")
    subscriber = http.post(POSTS, json={"title": "x"}, auth=fakewp.credentials("subscriber"))
    assert (subscriber.status_code, subscriber.json()["code"]) == (403, "rest_cannot_create")
    contributor = fakewp.credentials("contributor")
    refused = http.post(POSTS, json={"title": "x", "status": "publish"}, auth=contributor)
    assert (refused.status_code, refused.json()["code"]) == (403, "rest_cannot_publish")
    assert create(http, contributor, status="pending")["status"] == "pending"
    author = fakewp.credentials("author")
    category = http.post("/wp-json/wp/v2/categories", json={"name": "News"}, auth=author)
    assert (category.status_code, category.json()["code"]) == (403, "rest_cannot_create")
    assert http.post("/wp-json/wp/v2/tags", json={"name": "news"}, auth=author).status_code == 201
    others = create(http, admin)
    edit = http.post(f"{POSTS}/{others['id']}", json={"title": "mine"}, auth=author)
    assert (edit.status_code, edit.json()["code"]) == (403, "rest_cannot_edit")
    assert fakewp.post(others["id"]).title == "A title"


# -- posts -------------------------------------------------------------------------------------


def test_create_get_update(fakewp, http, admin):
    response = http.post(POSTS, auth=admin, json={
        "title": "It's a Q&A", "content": "<p>Hello</p>", "excerpt": "Short", "status": "draft",
        "slug": "q-and-a"})
    assert response.status_code == 201
    post = response.json()
    assert response.headers["location"] == f"{fakewp.url}/wp-json/wp/v2/posts/{post['id']}"
    assert post["title"] == {"raw": "It's a Q&A", "rendered": "It&#8217;s a Q&#038;A"}
    assert post["content"]["raw"] == "<p>Hello</p>"
    assert post["excerpt"]["rendered"] == "<p>Short</p>\n"
    assert post["status"] == "draft" and post["slug"] == "q-and-a" and post["type"] == "post"
    assert post["link"] == f"{fakewp.url}/?p={post['id']}"
    assert post["categories"] == [1] and post["tags"] == [] and post["author"] == 1
    assert post["date"] and post["date_gmt"] and post["modified_gmt"]

    public = http.get(f"{POSTS}/{post['id']}")
    assert (public.status_code, public.json()["code"]) == (401, "rest_forbidden")
    seen = http.get(f"{POSTS}/{post['id']}", auth=admin).json()
    assert "raw" not in seen["title"] and seen["title"]["rendered"] == "It&#8217;s a Q&#038;A"
    assert http.get(f"{POSTS}/{post['id']}", params={"context": "edit"},
                    auth=admin).json()["title"]["raw"] == "It's a Q&A"

    updated = http.post(f"{POSTS}/{post['id']}", auth=admin,
                        json={"status": "publish", "content": "New text"})
    assert updated.status_code == 200
    assert updated.json()["id"] == post["id"] and updated.json()["status"] == "publish"
    assert updated.json()["link"] == f"{fakewp.url}/q-and-a/"
    assert updated.json()["title"]["raw"] == "It's a Q&A"  # untouched fields stay
    assert updated.json()["content"]["rendered"] == "<p>New text</p>\n"
    assert http.get(f"{POSTS}/{post['id']}").status_code == 200  # now public
    assert [p.id for p in fakewp.posts] == [post["id"]]
    missing = http.get(f"{POSTS}/999999", auth=admin)
    assert (missing.status_code, missing.json()["code"]) == (404, "rest_post_invalid_id")


def test_trash_then_force_delete(fakewp, http, admin):
    post = create(http, admin, status="publish", slug="gone")
    trashed = http.delete(f"{POSTS}/{post['id']}", auth=admin)
    assert trashed.status_code == 200
    assert trashed.json()["status"] == "trash" and trashed.json()["slug"] == "gone__trashed"
    again = http.delete(f"{POSTS}/{post['id']}", auth=admin)
    assert (again.status_code, again.json()["code"]) == (410, "rest_already_trashed")
    assert fakewp.post(post["id"]).desired_slug == "gone"
    deleted = http.delete(f"{POSTS}/{post['id']}", params={"force": "true"}, auth=admin)
    assert deleted.json()["deleted"] is True and deleted.json()["previous"]["id"] == post["id"]
    assert http.get(f"{POSTS}/{post['id']}", auth=admin).status_code == 404
    assert fakewp.posts == [] and [p.id for p in fakewp.deleted_posts] == [post["id"]]

    restored = create(http, admin, status="publish", slug="back")
    http.delete(f"{POSTS}/{restored['id']}", auth=admin)
    create(http, admin, status="publish", slug="back")  # takes the freed slug meanwhile
    untrashed = http.post(f"{POSTS}/{restored['id']}", auth=admin, json={"status": "publish"})
    assert untrashed.json()["status"] == "publish" and untrashed.json()["slug"] == "back-2"

    fakewp.trash_enabled = False
    other = create(http, admin)
    refused = http.delete(f"{POSTS}/{other['id']}", auth=admin)
    assert (refused.status_code, refused.json()["code"]) == (501, "rest_trash_not_supported")


def test_slugs_are_sanitised_and_made_unique(fakewp, http, admin):
    assert create(http, admin, status="draft", slug="same")["slug"] == "same"
    # Over the REST API a requested slug is made unique for drafts and pending posts too.
    assert create(http, admin, status="pending", slug="same")["slug"] == "same-2"
    assert create(http, admin, status="publish", slug="same")["slug"] == "same-3"
    # A draft without a slug has none until it is published; then it comes from the title.
    floating = create(http, admin, title="Hello World", status="draft")
    assert floating["slug"] == "" and floating["link"].endswith(f"/?p={floating['id']}")
    published = http.post(f"{POSTS}/{floating['id']}", auth=admin,
                          json={"status": "publish"}).json()
    assert published["slug"] == "hello-world"
    assert create(http, admin, title="Hello World", status="publish")["slug"] == "hello-world-2"
    # A slug a trashed post had is free again.
    http.delete(f"{POSTS}/{published['id']}", auth=admin)
    assert create(http, admin, status="publish", slug="hello-world")["slug"] == "hello-world"
    # Numbers clash with date archives under /%postname%/.
    assert create(http, admin, status="publish", slug="2024")["slug"] == "2024-2"
    assert create(http, admin, status="publish", slug="Café Ünïcode & Co.")["slug"] == \
        "cafe-unicode-co"
    assert create(http, admin, status="publish", title="中文标题")["slug"] == \
        "%e4%b8%ad%e6%96%87%e6%a0%87%e9%a2%98"
    assert sanitize_title("“Quoted” — dash") == "quoted-dash"


def test_lookup_by_slug(fakewp, http, admin):
    draft = create(http, admin, status="draft", slug="pressroom-7")
    create(http, admin, status="publish", slug="other")
    anonymous = http.get(POSTS, params={"slug": "pressroom-7"})
    assert anonymous.status_code == 200 and anonymous.json() == []  # drafts are not public
    forbidden = http.get(POSTS, params={"slug": "pressroom-7", "status": "any"})
    assert forbidden.status_code == 400
    assert forbidden.json()["data"]["params"]["status"] == "Status is forbidden."
    found = http.get(POSTS, params={"slug": "pressroom-7", "status": "any", "context": "edit"},
                     auth=admin)
    assert [p["id"] for p in found.json()] == [draft["id"]]
    assert found.headers["x-wp-total"] == "1" and found.headers["x-wp-totalpages"] == "1"
    assert found.json()[0]["title"]["raw"] == "A title"
    listed = http.get(POSTS, params={"status": "draft,publish"}, auth=admin).json()
    assert len(listed) == 2
    # Meta queries are no REST parameters: ignored, everything comes back.
    ignored = http.get(POSTS, params={"meta_key": "x", "meta_value": "y", "status": "any"},
                       auth=admin)
    assert len(ignored.json()) == 2
    http.delete(f"{POSTS}/{draft['id']}", auth=admin)
    assert http.get(POSTS, params={"slug": "pressroom-7", "status": "any"},
                    auth=admin).json() == []  # `any` leaves the trash out
    assert [p["id"] for p in http.get(POSTS, params={"search": "title", "status": "trash"},
                                      auth=admin).json()] == [draft["id"]]


def test_list_paging(fakewp, http, admin):
    for n in range(5):
        create(http, admin, status="publish", title=f"Post {n}")
    page = http.get(POSTS, params={"per_page": 2, "page": 2})
    assert len(page.json()) == 2
    assert page.headers["x-wp-total"] == "5" and page.headers["x-wp-totalpages"] == "3"
    too_far = http.get(POSTS, params={"per_page": 2, "page": 4})
    assert too_far.json()["code"] == "rest_post_invalid_page_number"
    too_many = http.get(POSTS, params={"per_page": 101})
    assert too_many.status_code == 400 and too_many.json()["code"] == "rest_invalid_param"
    fields = http.get(POSTS, params={"per_page": 1, "_fields": "id,slug"}).json()
    assert set(fields[0]) == {"id", "slug"}


# -- dates -------------------------------------------------------------------------------------


def test_future_past_and_cron(fakewp, http, admin):
    ahead = utc_now() + timedelta(hours=1)
    future = create(http, admin, status="future", date_gmt=iso(ahead))
    assert future["status"] == "future" and future["date_gmt"] == iso(ahead)
    assert future["link"].endswith(f"/?p={future['id']}")
    # A past date publishes at once (backdated); publish with a later date schedules.
    past = create(http, admin, status="future", date_gmt=iso(utc_now() - timedelta(days=2)))
    assert past["status"] == "publish"
    assert create(http, admin, status="future")["status"] == "publish"  # no date: now
    scheduled = create(http, admin, status="publish", date=iso(ahead))
    assert scheduled["status"] == "future"
    with_offset = create(http, admin, status="future",
                         date=(ahead + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00"))
    assert with_offset["date_gmt"] == iso(ahead)

    fakewp.cron = False
    fakewp.advance_clock(2 * 3600)
    assert http.get(f"{POSTS}/{future['id']}", auth=admin).json()["status"] == "future"
    fakewp.cron = True  # "WP-Cron" runs on the next request
    assert http.get(f"{POSTS}/{future['id']}", auth=admin).json()["status"] == "publish"


def test_site_timezone(fakewp, http, admin):
    fakewp.timezone_offset = 8
    local = utc_now().replace(hour=9, minute=30, second=0) + timedelta(days=3)
    post = create(http, admin, status="future", date=iso(local))
    assert post["date"] == iso(local) and post["date_gmt"] == iso(local - timedelta(hours=8))
    assert http.get("/wp-json/").json()["gmt_offset"] == 8


def test_draft_dates_float(fakewp, http, admin):
    draft = create(http, admin, status="draft")
    assert fakewp.post(draft["id"]).date_gmt is None
    fakewp.advance_clock(600)
    moved = http.post(f"{POSTS}/{draft['id']}", auth=admin, json={"title": "B"}).json()
    assert moved["date"] > draft["date"]  # a floating date follows each save
    fixed_at = utc_now() + timedelta(days=5)
    fixed = http.post(f"{POSTS}/{draft['id']}", auth=admin, json={"date_gmt": iso(fixed_at)})
    assert fixed.json()["date_gmt"] == iso(fixed_at) and fixed.json()["status"] == "draft"
    reset = http.post(f"{POSTS}/{draft['id']}", auth=admin, json={"date": None})
    assert reset.status_code == 200 and fakewp.post(draft["id"]).date_gmt is None


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("body, param", [
    ({"title": "x", "status": "scheduled"}, "status"),
    ({"title": "x", "date": "tomorrow"}, "date"),
    ({"title": "x", "categories": ["news"]}, "categories"),
])
def test_invalid_parameters(fakewp, http, admin, body, param):
    response = http.post(POSTS, auth=admin, json=body)
    assert response.status_code == 400
    assert response.json()["code"] == "rest_invalid_param"
    assert param in response.json()["data"]["params"]
    assert fakewp.posts == []


def test_other_refusals(fakewp, http, admin):
    empty = http.post(POSTS, auth=admin, json={"status": "draft"})
    assert (empty.status_code, empty.json()["code"]) == (400, "empty_content")
    broken = http.post(POSTS, auth=admin, content=b"{not json",
                       headers={"Content-Type": "application/json"})
    assert (broken.status_code, broken.json()["code"]) == (400, "rest_invalid_json")
    nowhere = http.get("/wp-json/wp/v2/nothing", auth=admin)
    assert (nowhere.status_code, nowhere.json()["code"]) == (404, "rest_no_route")
    assert http.request("PATCH", POSTS, auth=admin).json()["code"] == "rest_no_route"
    assert fakewp.posts == []


def test_form_bodies_and_method_override(fakewp, http, admin):
    tag = fakewp.add_tag("Alpha")
    response = http.post(POSTS, auth=admin, data={"title": "Form", "status": "publish",
                                                  "tags[]": [str(tag)]})
    assert response.status_code == 201 and response.json()["tags"] == [tag]
    post_id = response.json()["id"]
    trashed = http.post(f"{POSTS}/{post_id}", auth=admin,
                        headers={"X-HTTP-Method-Override": "DELETE"})
    assert trashed.json()["status"] == "trash"


def test_authors_lose_scripts_administrators_do_not(fakewp, http, admin):
    content = '<p onclick="x()">Hi</p><script>alert(1)</script>'
    assert create(http, admin, content=content)["content"]["raw"] == content
    filtered = create(http, fakewp.credentials("author"), content=content)["content"]["raw"]
    assert filtered == "<p>Hi</p>"


# -- terms and meta ----------------------------------------------------------------------------


def test_terms_exist_once(fakewp, http, admin):
    made = http.post("/wp-json/wp/v2/categories", auth=admin, json={"name": "News & Politics"})
    assert made.status_code == 201
    category = made.json()
    assert category["name"] == "News &amp; Politics" and category["slug"] == "news-politics"
    assert category["link"] == f"{fakewp.url}/category/news-politics/"
    again = http.post("/wp-json/wp/v2/categories", auth=admin, json={"name": "news & politics"})
    assert again.status_code == 400
    assert again.json()["code"] == "term_exists"
    assert again.json()["data"] == {"status": 400, "term_id": category["id"]}
    assert http.get("/wp-json/wp/v2/categories", params={"search": "News & Politics"}).json() \
        == []  # the stored name is escaped: search misses it, term_exists tells
    assert [c["id"] for c in http.get("/wp-json/wp/v2/categories",
                                      params={"search": "politics"}).json()] == [category["id"]]
    assert [c["id"] for c in http.get("/wp-json/wp/v2/categories",
                                      params={"slug": "news-politics"}).json()] == [category["id"]]
    tag = http.post("/wp-json/wp/v2/tags", auth=admin, json={"name": "Politics"}).json()
    duplicate = http.post("/wp-json/wp/v2/tags", auth=admin, json={"name": "POLITICS"}).json()
    assert duplicate["code"] == "term_exists" and duplicate["data"]["term_id"] == tag["id"]
    assert duplicate["message"] == "A term with the name provided already exists in this taxonomy."
    assert tag["id"] > category["id"] and "parent" not in tag  # one id sequence for both

    post = create(http, admin, status="publish",
                  categories=[category["id"], 999, tag["id"]], tags=[tag["id"]])
    assert post["categories"] == [category["id"]] and post["tags"] == [tag["id"]]
    assert [c.count for c in fakewp.categories] == [0, 1]
    assert [(t.name, t.count) for t in fakewp.tags] == [("Politics", 1)]


def test_meta_only_when_registered(fakewp, http, admin):
    dropped = create(http, admin, meta={"pressroom_article": "a-7", "footnotes": ""})
    assert dropped["meta"] == {"footnotes": ""}
    assert fakewp.post(dropped["id"]).meta == {"footnotes": ""}
    assert fakewp.post(dropped["id"]).meta_sent["pressroom_article"] == "a-7"

    fakewp.register_meta("pressroom_article")
    kept = create(http, admin, meta={"pressroom_article": "a-8"})
    assert kept["meta"] == {"footnotes": "", "pressroom_article": "a-8"}
    # The wrong type fails after the post was stored: a "failed" create that left a post.
    wrong = http.post(POSTS, auth=admin, json={"title": "Typed", "meta": {"pressroom_article": 8}})
    assert (wrong.status_code, wrong.json()["code"]) == (400, "rest_invalid_type")
    assert [p.title for p in fakewp.posts] == ["A title", "A title", "Typed"]
    assert fakewp.requests_to(CREATE_POST)[-1].stored


# -- faults ------------------------------------------------------------------------------------


def test_rate_limit_with_retry_after(fakewp, http, admin):
    fakewp.script(Fault.rate_limit(retry_after=7), on=CREATE_POST)
    assert http.get(POSTS).status_code == 200  # not a create: untouched
    limited = http.post(POSTS, auth=admin, json={"title": "x"})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "7"
    assert fakewp.posts == []
    assert http.post(POSTS, auth=admin, json={"title": "x"}).status_code == 201

    fakewp.script(Fault.rate_limit(retry_after=30, http_date=True), on=ANY)
    dated = http.get(POSTS)
    assert dated.status_code == 429
    when = email.utils.parsedate_to_datetime(dated.headers["retry-after"])
    assert 25 <= (when - datetime.now(timezone.utc)).total_seconds() <= 31
    fakewp.script(Fault.rate_limit(retry_after=1.5, json_body=True))
    as_json = http.get(POSTS)
    assert as_json.headers["retry-after"] == "1.5"
    assert as_json.json()["code"] == "too_many_requests"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_store_nothing(fakewp, http, admin, status):
    fakewp.script(Fault.server_error(status), on=CREATE_POST)
    response = http.post(POSTS, auth=admin, json={"title": "x"})
    assert response.status_code == status and fakewp.posts == []
    if status == 500:  # WordPress's fatal error handler answers a JSON request in JSON
        assert response.json()["code"] == "internal_server_error"
    else:
        assert "nginx" in response.text


def test_stored_then_error_keeps_the_post(fakewp, http, admin):
    fakewp.script(Fault.stored_then_error(500), on=CREATE_POST)
    response = http.post(POSTS, auth=admin, json={"title": "Lost", "slug": "lost-1"})
    assert response.status_code == 500
    (post,) = fakewp.posts
    assert post.title == "Lost" and post.slug == "lost-1" and post.requested_slug == "lost-1"
    (record,) = fakewp.requests_to(CREATE_POST)
    assert record.stored and record.post_id == post.id and record.fault == "stored_then_error"
    assert post.created_by_request == fakewp.requests.index(record)
    # What a careful client does next: look the post up and adopt it.
    found = http.get(POSTS, params={"slug": "lost-1", "status": "any"}, auth=admin).json()
    assert [p["id"] for p in found] == [post.id]


def test_stored_then_hang_outlives_the_client(fakewp, admin):
    fakewp.script(Fault.stored_then_hang(30), on=CREATE_POST)
    with httpx.Client(base_url=fakewp.url, timeout=0.5) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post(POSTS, auth=admin, json={"title": "Slow"})
    assert [p.title for p in fakewp.posts] == ["Slow"]
    (record,) = fakewp.requests_to(CREATE_POST)
    fakewp.wait_for(lambda: record.done, 5, "the hanging request to notice the client left")
    assert record.client_disconnected and record.status is None


def test_stored_then_drop_and_drop(fakewp, http, admin):
    fakewp.script(Fault.stored_then_drop(), Fault.drop(), on=CREATE_POST)
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(POSTS, auth=admin, json={"title": "Kept"})
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(POSTS, auth=admin, json={"title": "Never"})
    assert [p.title for p in fakewp.posts] == ["Kept"]
    assert [r.stored for r in fakewp.requests_to(CREATE_POST)] == [True, False]


def test_hang_stores_nothing(fakewp, admin):
    fakewp.script(Fault.hang(30), on=CREATE_POST)
    with httpx.Client(base_url=fakewp.url, timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post(POSTS, auth=admin, json={"title": "x"})
    fakewp.wait_idle()
    assert fakewp.posts == []


def test_latency_applies_the_request_even_after_the_client_gave_up(fakewp, admin):
    fakewp.script(Fault.latency(0.8), on=CREATE_POST)
    with httpx.Client(base_url=fakewp.url, timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post(POSTS, auth=admin, json={"title": "Late"})
    fakewp.wait_for(lambda: fakewp.posts, 5, "the slow create to be applied")
    assert [p.title for p in fakewp.posts] == ["Late"]


def test_php_notice_before_the_json(fakewp, http, admin):
    fakewp.script(Fault.php_notice(), on=CREATE_POST)
    response = http.post(POSTS, auth=admin, json={"title": "Noisy"})
    assert response.status_code == 201 and response.text.startswith("<br />")
    with pytest.raises(ValueError):
        response.json()
    assert [p.title for p in fakewp.posts] == ["Noisy"]


def test_pages_in_front_of_wordpress(fakewp, http, admin):
    fakewp.script(Fault.maintenance(), Fault.blocked(), Fault.redirect(), Fault.html(),
                  Fault.error(418, "teapot", "No.", {"hint": 1}))
    maintenance = http.get(POSTS)
    assert maintenance.status_code == 503 and maintenance.headers["retry-after"] == "600"
    assert "Briefly unavailable for scheduled maintenance" in maintenance.text
    blocked = http.get(POSTS)
    assert blocked.status_code == 403 and blocked.headers["content-type"].startswith("text/html")
    moved = http.get(POSTS + "?x=1")
    assert moved.status_code == 301
    assert moved.headers["location"] == "https://" + fakewp.url.split("://")[1] + POSTS + "?x=1"
    page = http.get(POSTS)
    assert page.status_code == 200 and "<html>" in page.text
    custom = http.get(POSTS)
    assert custom.status_code == 418 and custom.json()["data"] == {"status": 418, "hint": 1}
    assert http.get(POSTS).status_code == 200  # the script is used up


def test_default_faults_match_routes(fakewp, http, admin):
    fakewp.set_default_fault(Fault.server_error(503), on="GET /wp/v2/categories")
    assert http.get("/wp-json/wp/v2/categories").status_code == 503
    assert http.get("/wp-json/wp/v2/categories").status_code == 503
    assert http.get(POSTS).status_code == 200
    fakewp.script(None, Fault.drop(), on=LIST_POSTS)  # None: the first answers normally
    assert http.get(POSTS).status_code == 200
    with pytest.raises(httpx.RemoteProtocolError):
        http.get(POSTS)
    fakewp.set_default_fault(None)
    assert http.get("/wp-json/wp/v2/categories").status_code == 200
    fakewp.script(Fault.server_error(), on=lambda record: record.auth_sent == "editor")
    assert http.get(POSTS, auth=admin).status_code == 200
    assert http.get(POSTS, auth=fakewp.credentials("editor")).status_code == 500


def test_hold_after_store(fakewp, http, admin):
    hold = fakewp.hold(on=CREATE_POST)
    answers = []
    client = threading.Thread(target=lambda: answers.append(
        http.post(POSTS, auth=admin, json={"title": "Held"})))
    client.start()
    record = hold.wait_arrived(5)
    assert record.held and record.stored and [p.title for p in fakewp.posts] == ["Held"]
    assert not answers  # the client is still waiting for its answer
    hold.release()
    client.join(5)
    assert answers[0].status_code == 201 and answers[0].json()["id"] == record.post_id


def test_hold_before_store_and_a_client_that_leaves(fakewp, admin):
    hold = fakewp.hold(on=CREATE_POST, stored=False)
    with httpx.Client(base_url=fakewp.url, timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post(POSTS, auth=admin, json={"title": "Later"})
    record = hold.wait_arrived(5)
    assert fakewp.posts == []
    fakewp.wait_for(lambda: record.client_disconnected, 5, "the hold to see the client leave")
    fakewp.release()
    fakewp.wait_idle()
    # The site still applies what it received, as PHP would.
    assert [p.title for p in fakewp.posts] == ["Later"] and record.status == 201


# -- site modes --------------------------------------------------------------------------------


def test_not_wordpress(fakewp, http, admin):
    fakewp.site_mode = "not_wordpress"
    for path in ("/wp-json/", "/wp-json/wp/v2/users/me"):
        response = http.get(path, auth=admin)
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
    home = http.get("/", params={"rest_route": "/wp/v2/users/me"}, auth=admin)
    assert home.status_code == 200 and "api.w.org" not in home.text


def test_plain_permalinks(fakewp, http, admin):
    fakewp.site_mode = "plain_permalinks"
    assert http.get("/wp-json/wp/v2/users/me", auth=admin).status_code == 404
    assert 'rel="https://api.w.org/"' in http.get("/").text
    me = http.get("/", params={"rest_route": "/wp/v2/users/me"}, auth=admin)
    assert me.status_code == 200 and me.json()["slug"] == "admin"
    made = http.post("/?rest_route=/wp/v2/posts", auth=admin,
                     json={"title": "Plain", "status": "publish"}).json()
    assert made["link"] == f"{fakewp.url}/?p={made['id']}"
    assert made["_links"]["self"][0]["href"] == \
        f"{fakewp.url}/?rest_route=/wp/v2/posts/{made['id']}"


def test_login_required_stripped_header_and_no_https(fakewp, http, admin):
    fakewp.rest_requires_auth = True
    assert http.get("/wp-json/").json()["code"] == "rest_not_logged_in"
    assert http.get("/wp-json/", auth=admin).status_code == 200
    fakewp.rest_requires_auth = False

    fakewp.auth_header_stripped = True  # Apache + FastCGI without the rewrite rule
    stripped = http.get("/wp-json/wp/v2/users/me", auth=admin)
    assert (stripped.status_code, stripped.json()["code"]) == (401, "rest_not_logged_in")
    assert http.post(POSTS, auth=admin, json={"title": "x"}).json()["code"] == \
        "rest_cannot_create"
    fakewp.auth_header_stripped = False

    fakewp.app_passwords_available = False  # a site without HTTPS
    assert http.get("/wp-json/").json()["authentication"] == []
    assert http.get("/wp-json/wp/v2/users/me", auth=("admin", "wrong")).json()["code"] == \
        "rest_not_logged_in"  # credentials are not even looked at


def test_malformed_authorization_is_anonymous(fakewp, http):
    response = http.get("/wp-json/wp/v2/users/me", headers={"Authorization": "Basic %%%"})
    assert response.json()["code"] == "rest_not_logged_in"
    token = base64.b64encode(b"admin:AdmN1pwDFakeWP24TestPass").decode()
    assert http.get("/wp-json/wp/v2/users/me",
                    headers={"Authorization": f"Basic {token}"}).status_code == 200


# -- records -----------------------------------------------------------------------------------


def test_records_and_duplicates(fakewp, http, admin):
    first = create(http, admin, status="publish", slug="article-1", title="One")
    second = create(http, admin, status="publish", slug="article-1", title="One again")
    create(http, admin, status="draft", slug="article-2", title="Two")
    http.get(POSTS, params={"slug": "article-1"})
    assert second["slug"] == "article-1-2"
    assert fakewp.duplicates() == {"article-1": [first["id"], second["id"]]}
    assert fakewp.duplicates("slug") == {}
    assert [p.id for p in fakewp.find_posts(requested_slug="article-1")] == \
        [first["id"], second["id"]]
    http.delete(f"{POSTS}/{second['id']}", auth=admin)
    assert fakewp.duplicates() == {}
    assert list(fakewp.duplicates(include_trash=True)) == ["article-1"]

    creates = fakewp.requests_to(CREATE_POST)
    assert len(creates) == 3 and fakewp.count(CREATE_POST) == 3
    assert creates[0].body["slug"] == "article-1" and creates[0].auth_user == "admin"
    assert creates[0].status == 201 and creates[0].response["id"] == first["id"]
    (lookup,) = fakewp.requests_to(LIST_POSTS)
    assert lookup.query == {"slug": "article-1"} and lookup.auth_user is None
    assert lookup.key == "GET /wp/v2/posts" and not lookup.stored
    assert fakewp.count(ME) == 0


def test_meta_duplicates_count_what_was_sent(fakewp, http, admin):
    create(http, admin, meta={"pressroom_article": "7"})
    create(http, admin, meta={"pressroom_article": "7"})
    ids = [p.id for p in fakewp.posts]
    assert len(ids) == 2 and fakewp.duplicates("meta:pressroom_article") == {"7": ids}


def test_concurrent_creates(fakewp, admin):
    results = []

    def one():
        with httpx.Client(base_url=fakewp.url, timeout=10) as client:
            results.append(client.post(POSTS, auth=admin,
                                       json={"title": "Same", "status": "publish"}).json())
    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len({r["id"] for r in results}) == 8
    assert sorted(r["slug"] for r in results) == sorted(
        ["same"] + [f"same-{n}" for n in range(2, 9)])
    assert fakewp.max_concurrent >= 1


def test_reset_restores_the_site_but_not_the_ids(fakewp, http, admin):
    before = create(http, admin)
    fakewp.site_mode = "not_wordpress"
    fakewp.add_user("extra", "editor")
    fakewp.register_meta("k")
    fakewp.script(Fault.drop())
    fakewp.reset()
    assert fakewp.posts == [] and fakewp.requests == [] and fakewp.site_mode == "wordpress"
    assert [t.name for t in fakewp.categories] == ["Uncategorized"]
    with pytest.raises(KeyError):
        fakewp.user("extra")
    after = create(http, admin)
    assert after["id"] > before["id"] and after["meta"] == {"footnotes": ""}


def test_default_users_and_add_user(fakewp, http):
    assert [u for u, _, _ in DEFAULT_USERS] == ["admin", "editor", "author", "contributor",
                                                "subscriber"]
    password = fakewp.add_user("newsbot", "author")
    assert len(password.replace(" ", "")) == 24
    me = http.get("/wp-json/wp/v2/users/me", params={"context": "edit"},
                  auth=("newsbot", password))
    assert me.json()["roles"] == ["author"]


def test_add_post_directly(fakewp, http, admin):
    existing = fakewp.add_post("Taken", slug="taken")
    assert create(http, admin, status="publish", slug="taken")["slug"] == "taken-2"
    assert fakewp.post(existing).link == f"{fakewp.url}/taken/"


def test_own_server_and_cli():
    with FakeWordPress(host="127.0.0.2", latency=0.01) as other:
        assert other.url.startswith("http://127.0.0.2:")
        assert httpx.get(other.url + "/wp-json/", timeout=5).status_code == 200
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakewp", "--port", "0"], cwd=root,
                            stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url + "/wp-json/", timeout=5).json()["namespaces"]
    finally:
        proc.terminate()
        proc.wait(timeout=5)
