"""Publishing's pure rules (issue 16): the password's encryption, the site's address, the
post's slug, content and marker, Retry-After and backoff, the request's fields, and the
publication state machine's guards (generation/publishing_states.py) on SQLite in memory.
No Redis, worker or site."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect

from webapp import crypto
from webapp.extensions import db
from webapp.generation import publishing, publishing_states as states, wordpress
from webapp.models import (Article, ArticleStatus as A, Batch, Destination, DestinationStatus as D,
                           Publication, PublicationStatus as P, ReviewStatus as R, User, utcnow)
from webapp.services.errors import Invalid

KEY = "a-secret-key-for-the-unit-tests"


# -- encryption at rest ---------------------------------------------------------------------

def test_a_password_is_stored_encrypted_and_read_back():
    token = crypto.encrypt("abcd EFGH 1234 ijkl MNOP 5678", KEY)
    assert "abcd" not in token and "EFGH" not in token
    assert crypto.decrypt(token, KEY) == "abcd EFGH 1234 ijkl MNOP 5678"
    # A new IV each time: the same password never looks the same twice.
    assert crypto.encrypt("same", KEY) != crypto.encrypt("same", KEY)


def test_the_key_is_derived_not_the_secret_key_itself():
    derived = crypto.fernet_for(KEY)._encryption_key + crypto.fernet_for(KEY)._signing_key
    assert KEY.encode() not in derived
    assert crypto.fernet_for(KEY)._signing_key != crypto.fernet_for(KEY + "x")._signing_key


@pytest.mark.parametrize("stored", [crypto.encrypt("pw", "another key"), "not a token", ""])
def test_another_secret_key_or_damage_reads_as_unreadable(stored):
    with pytest.raises(crypto.Unreadable):
        crypto.decrypt(stored, KEY)


# -- the site's address ---------------------------------------------------------------------

@pytest.mark.parametrize("typed, stored", [
    ("https://Example.COM/", "https://example.com"),
    ("example.com", "https://example.com"),
    ("https://example.com/blog/wp-json/wp/v2/", "https://example.com/blog"),
    ("https://example.com:443/wp-json", "https://example.com"),
    ("http://127.0.0.1:8080/?x=1#y", "http://127.0.0.1:8080"),
    ("https://BÜCHER.example/", "https://xn--bcher-kva.example"),
])
def test_the_site_address_is_normalised(typed, stored):
    assert wordpress.normalize_site_url(typed) == stored


@pytest.mark.parametrize("typed", ["", "   ", "ftp://example.com", "https://user:pw@example.com",
                                   "https://", "http://[::1"])
def test_an_address_that_is_no_site_is_refused(typed):
    with pytest.raises(ValueError):
        wordpress.normalize_site_url(typed)


# -- Retry-After and backoff ----------------------------------------------------------------

def test_retry_after_in_seconds_or_as_a_date():
    assert wordpress.parse_retry_after("7") == 7.0
    assert wordpress.parse_retry_after(" 2.5 ") == 2.5
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=timezone.utc).timestamp()
    assert wordpress.parse_retry_after("Tue, 01 Jan 2030 12:00:30 GMT", now=now) == 30.0
    assert wordpress.parse_retry_after("Tue, 01 Jan 2030 11:00:00 GMT", now=now) == 0.0
    for nothing in (None, "", "soon", "nan"):
        assert wordpress.parse_retry_after(nothing) is None


def test_backoff_honours_retry_after_up_to_the_cap():
    for _ in range(50):
        assert 3.0 <= publishing.backoff_delay(1, 3.0, base=5, cap=600) <= 4.0
        # A site asking for an hour waits the cap (then asks again, or is given up on).
        assert 60.0 <= publishing.backoff_delay(1, 3600.0, base=5, cap=60) <= 61.0
        # Without one: exponential, with jitter, capped.
        assert 5.0 <= publishing.backoff_delay(3, None, base=2.5, cap=600) <= 10.0
        assert publishing.backoff_delay(20, None, base=5, cap=60) <= 60.0


# -- what a post is made of -----------------------------------------------------------------

def test_the_slug_is_deterministic_ascii_and_names_the_article():
    assert publishing.post_slug("How to Grow Tomatoes: A Guide!", 42) == \
        "how-to-grow-tomatoes-a-guide-42"
    assert publishing.post_slug("Crème brûlée", 7) == "creme-brulee-7"
    assert publishing.post_slug("春季新品", 9) == "pressroom-9"
    assert len(publishing.post_slug("x" * 300, 123456)) <= publishing.SLUG_TITLE_CHARS + 7
    assert publishing.post_slug("Same", 1) == publishing.post_slug("Same", 1)


def test_the_title_heading_is_not_repeated_in_the_content():
    assert publishing.without_title("# My title\n\nBody.", "My title") == "\nBody."
    assert publishing.without_title("# Another\n\nBody.", "My title") == "# Another\n\nBody."
    assert publishing.without_title("Body only.", "My title") == "Body only."


def test_content_is_the_sanitised_html_with_the_marker(bare_app):
    token = "0123abcd" * 4
    html = publishing.post_content("# T\n\nHello *there* <script>alert(1)</script>", "T", token,
                                   provenance="none", model="gpt-x", reviewer="ed@example.test")
    assert "<em>there</em>" in html and "<script>" not in html and "<h1>" not in html
    assert html.rstrip().endswith(publishing.marker(token))
    assert "--" not in publishing.marker(token)[4:-3]  # kses would shorten "--" inside
    assert "gpt-x" not in html
    footer = publishing.post_content("Body", "T", token, provenance="footer", model="gpt-x",
                                     reviewer="ed@example.test")
    assert "Written with gpt-x in Pressroom; reviewed by ed@example.test." in footer
    assert publishing.has_marker({"content": {"raw": footer, "rendered": ""}}, token)
    assert publishing.has_marker({"content": {"rendered": footer}}, token)
    assert not publishing.has_marker({"content": {"raw": footer}}, "f" * 32)
    assert not publishing.has_marker({"content": "nothing"}, token)


def test_a_term_matches_by_name_any_case_or_by_slug():
    assert publishing.term_matches({"name": "Food &amp; Drink", "slug": "food-drink"},
                                   "food & drink")
    assert publishing.term_matches({"name": "Other", "slug": "news"}, "News")
    assert not publishing.term_matches({"name": "Newsletter", "slug": "newsletter"}, "News")


# -- a request's fields ---------------------------------------------------------------------

def test_dates_with_z_an_offset_or_none_are_read_as_utc():
    assert publishing_service().parse_when("2030-05-01T09:00:00Z") == datetime(2030, 5, 1, 9)
    assert publishing_service().parse_when("2030-05-01T11:00:00+02:00") == \
        datetime(2030, 5, 1, 9)
    assert publishing_service().parse_when("2030-05-01T09:00") == datetime(2030, 5, 1, 9)
    for bad in ("", "tomorrow", None, 12):
        with pytest.raises((ValueError, TypeError)):
            publishing_service().parse_when(bad)


def test_names_as_a_list_or_with_commas(db_app):
    parse = publishing_service().parse_names
    assert parse("News, Food ,news,", "tags") == ["News", "Food", "news"]
    assert parse(["A", " B "], "tags") == ["A", "B"]
    assert parse(None, "tags") == [] and parse("", "tags") == []
    with pytest.raises(Invalid) as refused:
        parse([1, 2], "categories")
    assert "categories" in refused.value.fields
    with pytest.raises(Invalid):
        parse(",".join(f"t{i}" for i in range(30)), "tags")
    with pytest.raises(Invalid):
        parse(["x" * 101], "tags")


def publishing_service():
    from webapp.services import publishing as service
    return service


@pytest.mark.parametrize("data, field", [
    ({}, "destination"),
    ({"destination": "Nowhere"}, "destination"),
    ({"destination": "Blog", "status": "published"}, "status"),
    ({"destination": "Blog", "status": "future"}, "publish_at"),
    ({"destination": "Blog", "status": "future", "publish_at": "2001-01-01T00:00:00Z"},
     "publish_at"),
    ({"destination": "Blog", "status": "draft", "publish_at": "2031-01-01T00:00:00Z"},
     "publish_at"),
    ({"destination": "Blog", "tags": {"a": 1}}, "tags"),
])
def test_a_request_names_the_field_at_fault(db_app, data, field):
    _destination()
    with pytest.raises(Invalid) as refused:
        publishing_service().read_request(data)
    assert field in refused.value.fields


def test_a_good_request_is_read(db_app):
    _destination()
    asked = publishing_service().read_request({
        "destination": "Blog", "status": "future", "publish_at": "2031-01-01T10:00:00+01:00",
        "categories": "News", "tags": ["a", "b"]})
    assert (asked.destination.name, asked.status, asked.publish_at) == \
        ("Blog", "future", datetime(2031, 1, 1, 9))
    assert asked.categories == ["News"] and asked.tags == ["a", "b"]
    assert publishing_service().read_request({"destination": "Blog"}).status == "draft"


# -- the state machine ------------------------------------------------------------------------

def _destination(status: str = D.OK) -> int:
    existing = db.session.scalar(db.select(Destination.id).where(Destination.name == "Blog"))
    if existing:
        return existing
    destination = Destination(name="Blog", url="https://blog.example", username="u",
                              password_encrypted=crypto.encrypt("pw", KEY), status=status)
    db.session.add(destination)
    db.session.commit()
    return destination.id


def _publication(status: str = P.QUEUED, **values) -> int:
    user = User(email=f"{uuid.uuid4().hex[:8]}@example.test", password_hash="x")
    db.session.add(user)
    db.session.flush()
    batch = Batch(user_id=user.id, name="B", provider="offline", model="m", target_words=100,
                  tone="neutral", language="English")
    db.session.add(batch)
    db.session.flush()
    article = Article(batch_id=batch.id, position=1, title="T", status=A.SUCCEEDED,
                      task_id=str(uuid.uuid4()), review_status=R.APPROVED, body="b")
    db.session.add(article)
    db.session.flush()
    publication = Publication(article_id=article.id, destination_id=_destination(),
                              token=uuid.uuid4().hex, status=status, **values)
    db.session.add(publication)
    db.session.commit()
    return publication.id


def _row(model, row_id: int) -> dict:
    db.session.expire_all()
    obj = db.session.get(model, row_id)
    return {c.key: getattr(obj, c.key) for c in inspect(model).column_attrs}


def _unchanged(row_id: int, transition) -> None:
    before = _row(Publication, row_id)
    assert not transition()
    assert _row(Publication, row_id) == before


def test_one_delivery_claims_a_publication_and_only_its_owner_records_it(db_app):
    pub = _publication()
    assert states.claim(pub, "first", 30)
    _unchanged(pub, lambda: states.claim(pub, "second", 30))  # its lease runs
    row = _row(Publication, pub)
    assert (row["status"], row["claim_token"], row["attempts"]) == (P.PUBLISHING, "first", 1)
    _unchanged(pub, lambda: states.record_sent(pub, "second", remote_id=9, url=None,
                                               remote_status="draft"))
    assert states.note_create(pub, "first")
    assert _row(Publication, pub)["create_sent_at"] is not None
    assert states.record_sent(pub, "first", remote_id=9, url="https://blog.example/?p=9",
                              remote_status="draft")
    row = _row(Publication, pub)
    assert (row["status"], row["remote_id"], row["remote_status"]) == (P.PUBLISHED, 9, "draft")
    assert row["published_at"] is not None and row["lease_expires_at"] is None
    _unchanged(pub, lambda: states.fail(pub, "first", "late"))


def test_a_dead_workers_publication_is_taken_over_after_its_lease(db_app):
    pub = _publication()
    assert states.claim(pub, "dead", 30)
    db.session.execute(db.update(Publication).where(Publication.id == pub).values(
        lease_expires_at=utcnow() - timedelta(seconds=1)))  # the test's own setup
    db.session.commit()
    assert states.claim(pub, "next", 30)
    assert _row(Publication, pub)["attempts"] == 2
    assert not states.renew(pub, "dead", 30)


def test_a_lost_publication_goes_back_to_the_queue_keeping_what_was_sent(db_app):
    pub = _publication()
    states.claim(pub, "dead", 30)
    states.note_create(pub, "dead")
    _unchanged(pub, lambda: states.release_lost(pub, "again"))  # lease still runs
    assert states.release_lost(pub, "again", lapsed_before=utcnow() + timedelta(minutes=1))
    row = _row(Publication, pub)
    assert (row["status"], row["claim_token"], row["attempts"]) == (P.QUEUED, None, 1)
    assert row["create_sent_at"] is not None  # the next attempt looks before it creates


def test_asking_again_is_refused_while_a_worker_holds_it(db_app):
    pub = _publication()
    states.claim(pub, "owner", 30)
    _unchanged(pub, lambda: states.request(pub, action="publish", wanted="publish"))
    states.record_sent(pub, "owner", remote_id=5, url=None, remote_status="draft")
    assert states.request(pub, action="unpublish", wanted="trash")
    row = _row(Publication, pub)
    assert (row["status"], row["action"], row["wanted"], row["remote_id"]) == \
        (P.QUEUED, "unpublish", "trash", 5)


def test_adopting_keeps_the_first_post_id(db_app):
    pub = _publication()
    states.claim(pub, "owner", 30)
    assert states.adopt(pub, "owner", 11, "https://blog.example/?p=11")
    _unchanged(pub, lambda: states.adopt(pub, "owner", 12, None))
    assert states.forget_remote(pub, "owner")
    row = _row(Publication, pub)
    assert row["remote_id"] is None and row["create_sent_at"] is None


def test_a_stopped_destination_fails_its_queued_publications_at_once(db_app):
    queued = [_publication() for _ in range(3)]
    states.claim(queued[0], "owner", 30)
    destination = _destination()
    assert states.mark_needs_credentials(destination, "HTTP 401")
    assert not states.mark_needs_credentials(destination, "a later reason")
    assert _row(Destination, destination)["last_error"] == "HTTP 401"
    assert states.stop_destination(destination, publishing.STOPPED) == 2
    assert [_row(Publication, p)["status"] for p in queued] == [P.PUBLISHING, P.FAILED,
                                                                 P.FAILED]
    assert _row(Publication, queued[1])["error"] == publishing.STOPPED
    assert states.mark_ok(destination)
    assert (_row(Destination, destination)["status"],
            _row(Destination, destination)["last_error"]) == (D.OK, None)


def test_names_are_stored_as_json(db_app):
    pub = _publication(categories=json.dumps(["News"]))
    assert json.loads(_row(Publication, pub)["categories"]) == ["News"]
