"""Saved views (issue 15, item 7): a person names and keeps a filter of the dashboard, finds
it in the nav of every page, and its link shows the same list. Views are private to their
user; refused input stores nothing and says which field is wrong."""
from __future__ import annotations

import html
import re
from urllib.parse import parse_qsl, urlsplit

import pytest
from markupsafe import escape
from sqlalchemy import delete, select

from tests.helpers import (batch_id_from_location, count_sql, page_csrf, submit_form,
                           wait_batch_final)
from tests.sec_support import make_account, signed_in
from tests.support import ACCOUNTS
from webapp.extensions import db
from webapp.models import Role, SavedView, User

_ROW_IDS = re.compile(r'id="batch-row-(\d+)"')
_MENU = re.compile(r'<details class="nav-menu saved-views-menu">(.*?)</details>', re.S)
_LINK = re.compile(r'<a href="([^"]+)">([^<]*)</a>')
_DELETE = re.compile(r'action="(/views/(\d+)/delete)"')


@pytest.fixture(autouse=True)
def no_views(app):
    """Views outlive the per-test reset (it deletes batches only): start and end with none."""
    def wipe():
        with app.app_context():
            db.session.execute(delete(SavedView))
            db.session.commit()
    wipe()
    yield
    wipe()


def _stored(app) -> list[tuple[str, str, str]]:
    with app.app_context():
        return [(v.name, v.page, v.query) for v in db.session.scalars(
            select(SavedView).order_by(SavedView.id))]


def _save(client, name: str, query: str, page: str = "dashboard"):
    return client.post("/views", data={"csrf_token": page_csrf(client, "/account/tokens"),
                                       "page": page, "name": name, "query": query})


def _nav(page: str) -> dict[str, str]:
    """name → link of the nav's saved views menu ({} when the menu is not shown)."""
    menu = _MENU.search(page)
    if not menu:
        return {}
    return {html.unescape(name): html.unescape(href) for href, name in _LINK.findall(menu[1])}


def _listed(client, url: str) -> list[int]:
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return [int(i) for i in _ROW_IDS.findall(response.get_data(as_text=True))]


def _flashes(client) -> str:
    return client.get("/account/tokens").get_data(as_text=True)


def test_a_saved_filter_is_in_the_nav_of_every_page_and_shows_the_same_list(app, client,
                                                                            admin_client):
    mine = batch_id_from_location(submit_form(client, "Alpha harbour news", ["Lighthouse"]))
    other = batch_id_from_location(submit_form(client, "Beta sports", ["Derby day"]))
    theirs = batch_id_from_location(submit_form(admin_client, "Alpha of the admin", ["Tides"]))
    for batch_id in (mine, other, theirs):
        wait_batch_final(app, batch_id)
    editor = ACCOUNTS["editor"][0]
    filtered = f"/?q=alpha&author={editor}"
    assert _listed(client, filtered) == [mine]

    # The dashboard offers to save its current filter, as the page applied it.
    page = client.get(filtered).get_data(as_text=True)
    offered = html.unescape(re.search(r'name="query" value="([^"]*)"', page)[1])
    assert dict(parse_qsl(offered)) == {"q": "alpha", "author": editor}
    response = _save(client, "  Mine,   alpha ", f"q=alpha&author={editor}&page=3&lang=en")
    assert response.status_code == 303
    # Saved trimmed, with the page's filters only, in a fixed order; then shown at once.
    [(name, kind, query)] = _stored(app)
    assert (name, kind) == ("Mine, alpha", "dashboard")
    assert query == f"q=alpha&author={editor.replace('@', '%40')}"
    assert response.headers["Location"] == "/?" + query
    landing = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "“Mine, alpha” is saved" in landing

    # In the nav of every page, its link the filtered dashboard.
    for path in ("/", f"/batches/{theirs}", "/templates", "/account/tokens"):
        assert _nav(client.get(path).get_data(as_text=True)) == {"Mine, alpha": "/?" + query}, path
    assert _listed(client, "/?" + query) == [mine]
    # The dashboard's own list of views links it too, with a way to delete it.
    assert _DELETE.search(client.get("/").get_data(as_text=True))


def test_the_nav_reads_views_once_per_page_and_never_in_polls(app, client):
    assert _save(client, "Failed ones", "status=failed").status_code == 303
    with count_sql(app) as statements:
        page = client.get("/").get_data(as_text=True)
    # Shown twice (the nav's menu and the dashboard's list), read once.
    assert "Failed ones" in _nav(page) and page.count("Failed ones") >= 2
    assert sum("saved_views" in s for s in statements) == 1
    with count_sql(app) as statements:
        assert client.get("/batches/rows").status_code in (200, 286)
    assert not any("saved_views" in s for s in statements)


def test_a_name_already_used_on_the_page_is_refused_and_the_first_view_kept(app, client):
    assert _save(client, "Mine", "status=failed").status_code == 303
    response = _save(client, " Mine ", "status=succeeded")
    assert response.status_code == 303
    assert "You already have a view named “Mine” on this page" in _flashes(client)
    assert _stored(app) == [("Mine", "dashboard", "status=failed")]
    # Another name is fine, and so is the same name for someone else.
    assert _save(client, "Mine too", "status=succeeded").status_code == 303
    viewer = signed_in(app, make_account(app, Role.VIEWER, "views-viewer"))
    assert _save(viewer, "Mine", "status=succeeded").status_code == 303
    assert len(_stored(app)) == 3


def test_delete_one_of_ones_own_views(app, client):
    _save(client, "Old filter", "status=cancelled")
    _save(client, "Keep me", "status=failed")
    page = client.get("/").get_data(as_text=True)
    with app.app_context():
        old = db.session.scalar(select(SavedView.id).where(SavedView.name == "Old filter"))
    assert f'action="/views/{old}/delete"' in page
    response = client.post(f"/views/{old}/delete",
                           data={"csrf_token": page_csrf(client, "/")},
                           headers={"Referer": "http://localhost/?status=failed"})
    assert response.status_code == 303
    assert urlsplit(response.headers["Location"]).path == "/"  # back where it was asked
    page = client.get("/").get_data(as_text=True)
    assert "The view “Old filter” is deleted." in page
    assert _nav(page) == {"Keep me": "/?status=failed"}
    assert [name for name, _, _ in _stored(app)] == ["Keep me"]
    # Deleted once: the second time there is nothing there.
    again = client.post(f"/views/{old}/delete", data={"csrf_token": page_csrf(client, "/")})
    assert again.status_code == 404


def test_views_are_private_even_from_admins(app, client, admin_client):
    _save(client, "Editor view", "status=failed")
    with app.app_context():
        view_id = db.session.scalar(select(SavedView.id))
    viewer = signed_in(app, make_account(app, Role.VIEWER, "views-other"))
    for other in (admin_client, viewer):
        page = other.get("/").get_data(as_text=True)
        assert "Editor view" not in page and _nav(page) == {}
        response = other.post(f"/views/{view_id}/delete",
                              data={"csrf_token": page_csrf(other, "/")})
        assert response.status_code == 404
    assert [name for name, _, _ in _stored(app)] == ["Editor view"]
    # A viewer, who may only read, keeps views of their own.
    assert _save(viewer, "Viewer view", "status=succeeded").status_code == 303
    assert _nav(viewer.get("/").get_data(as_text=True)) == {"Viewer view": "/?status=succeeded"}
    assert "Viewer view" not in client.get("/").get_data(as_text=True)


@pytest.mark.parametrize("fields, message", [
    ({"name": "   "}, "Give the view a name."),
    ({"name": "x" * 81}, "The view's name has 81 characters; it can have at most 80."),
    ({"page": "articles"}, "Views can be saved for the batches dashboard and the review queue, "
                           "not for “articles”."),
    ({"page": ""}, "not for “”."),
    ({"query": "status=failed&colour=red"}, "“colour” is not a filter of this page"),
    ({"query": "page=2&lang=en"}, "There is no filter to save"),
    ({"query": ""}, "There is no filter to save"),
    ({"query": "status=exploded"}, "The filter “status” has a value this page does not "
                                   "accept: “exploded”."),
    ({"query": "since=2026-02-30"}, "The filter “since” has a value this page does not accept"),
    ({"query": "q=" + "a" * 5000}, "The filter is too long to be saved"),
])
def test_bad_input_is_refused_naming_the_field_and_nothing_is_stored(app, client, fields,
                                                                     message):
    data = {"name": "A view", "page": "dashboard", "query": "status=failed", **fields}
    response = _save(client, data["name"], data["query"], data["page"])
    assert response.status_code == 303  # back to the page, which says why
    assert str(escape(message)) in _flashes(client)
    assert _stored(app) == []


def test_the_limit_per_person_is_said_and_kept(app, client, monkeypatch):
    from webapp.services import saved_views
    monkeypatch.setattr(saved_views, "LIMIT", 3)
    for n in range(3):
        assert _save(client, f"View {n}", "status=failed").status_code == 303
    _save(client, "One too many", "status=failed")
    assert "You have 3 saved views, the most one person can keep" in _flashes(client)
    assert len(_stored(app)) == 3
    # Another person's views do not count against this one's.
    viewer = signed_in(app, make_account(app, Role.VIEWER, "views-limit"))
    assert _save(viewer, "Theirs", "status=failed").status_code == 303
    assert len(_stored(app)) == 4


def test_normalise_keeps_only_the_pages_filters_as_the_page_reads_them(app):
    from webapp.services.errors import Invalid
    from webapp.services.saved_views import normalise

    with app.test_request_context():
        assert normalise("dashboard", "?page=4&lang=zh-Hant&csrf_token=x&status=failed") \
            == "status=failed"
        # Empty values go; the order is the page's; values as the page applies them.
        assert normalise("dashboard", "until=20260105&author=+Ed+&status=&q=%E6%96%B0%E9%97%BB") \
            == "q=%E6%96%B0%E9%97%BB&author=Ed&until=2026-01-05"
        with pytest.raises(Invalid) as refused:
            normalise("dashboard", "status=failed&sort=name")
        assert list(refused.value.fields) == ["query"]
        with pytest.raises(Invalid) as refused:
            normalise("dashboard", "until=yesterday")
        assert list(refused.value.fields) == ["until"]


def test_the_forms_need_the_csrf_token(app, client):
    response = client.post("/views", data={"page": "dashboard", "name": "Forged",
                                           "query": "status=failed"})
    assert response.status_code == 400
    assert _stored(app) == []
    with app.app_context():
        editor = db.session.scalar(select(User).where(User.email == ACCOUNTS["editor"][0]))
        db.session.add(SavedView(user_id=editor.id, page="dashboard", name="Kept",
                                 query="status=failed"))
        db.session.commit()
        view_id = db.session.scalar(select(SavedView.id))
    assert client.post(f"/views/{view_id}/delete").status_code == 400
    assert [name for name, _, _ in _stored(app)] == ["Kept"]


def test_a_review_queue_filter_is_saved_and_listed_under_its_page(app, client):
    assert _save(client, "Mine", "status=failed").status_code == 303
    queue = client.get("/review?flag=flagged&language=English&page=2")
    assert queue.status_code == 200
    offered = html.unescape(re.search(r'name="query" value="([^"]*)"',
                                      queue.get_data(as_text=True))[1])
    assert dict(parse_qsl(offered)) == {"flag": "flagged", "language": "English"}
    # The queue's selected article and page are part of its address, not of its filter.
    response = _save(client, "Mine", "language=English&flag=flagged&article=12&page=2",
                     page="review")
    assert response.status_code == 303  # the same name on another page is another view
    assert _stored(app)[-1] == ("Mine", "review", "flag=flagged&language=English")
    assert response.headers["Location"] == "/review?flag=flagged&language=English"
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert re.search(r'<option value="flagged"\s+selected', page)
    # The menu groups the views by page, so the two "Mine" are told apart.
    menu = _MENU.search(page)[1]
    assert menu.index("Batches") < menu.index("/?status=failed") \
        < menu.index("Review queue") < menu.index("/review?flag=flagged&amp;language=English")


@pytest.mark.parametrize("query, message", [
    ("flag=odd", "Flag: “odd” is not one of the choices."),
    ("batch=abc", "Batch: “abc” is not a batch number."),
    ("since=2026-05-02&until=2026-05-01", "Finished to: the date is before “Finished from”."),
    ("status=failed", "“status” is not a filter of this page"),
])
def test_the_review_queues_bad_filters_are_refused_in_its_own_words(app, client, query,
                                                                    message):
    _save(client, "Queue view", query, page="review")
    assert str(escape(message)) in _flashes(client)
    assert _stored(app) == []
