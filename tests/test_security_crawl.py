"""Every route checks the role on the server (issue 3, items 1 and 7).

The crawler walks `app.url_map.iter_rules()`, so a route added later is covered without
anyone remembering to: it fills `<int:...>` with ids of real objects (another editor's batch,
its article and version, a template, a token, a user) and with ids that do not exist, and
requests it as five people. What each may do is written down in EXPECTATIONS; a rule that
is not there fails the test until someone decides who may use it.
"""
from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from tests.helpers import batch_id_from_location, submit_form, wait_batch_final
from tests.sec_support import (bearer, clean_login_limits, csrf_of, make_account,  # noqa: F401
                               signed_in)
from webapp.extensions import db
from webapp.models import ApiToken, Article, ArticleVersion, Role

ACTORS = ("anonymous", "viewer", "editor", "owner", "admin")

# Who may use a rule. "owner" is the editor who owns the batch (and the token) under test;
# "editor" is another editor, who may read it and review its articles but not manage it.
PUBLIC = frozenset(ACTORS)
SIGNED_IN = frozenset({"viewer", "editor", "owner", "admin"})
WRITER = frozenset({"editor", "owner", "admin"})          # submit, templates, review any article
OWNER = frozenset({"owner", "admin"})                     # cancel, pause, resume, dispatch, export
ADMIN = frozenset({"admin"})
SELF = frozenset({"owner"})                               # one's own API tokens, even for admins

EXPECTATIONS: dict[tuple[str, str], frozenset] = {
    # Machines and the sign-in form.
    ("ops.healthz", "GET"): PUBLIC,
    ("ops.readyz", "GET"): PUBLIC,
    # Guarded by METRICS_TOKEN or METRICS_ALLOW rather than a session (checked below); the
    # test client comes from 127.0.0.1, which the default METRICS_ALLOW lets in.
    ("ops.metrics", "GET"): PUBLIC,
    ("static", "GET"): PUBLIC,
    ("auth.login", "GET"): PUBLIC,
    ("auth.login", "POST"): PUBLIC,
    ("auth.logout", "POST"): SIGNED_IN,
    # The header's theme switch, on the sign-in page too (a cookie when signed out).
    ("account.set_theme", "POST"): PUBLIC,
    # Reading is for everyone signed in.
    ("batches.dashboard", "GET"): SIGNED_IN,
    ("batches.batch_table", "GET"): SIGNED_IN,
    ("batches.batch_detail", "GET"): SIGNED_IN,
    ("batches.batch_progress", "GET"): SIGNED_IN,
    ("batches.batch_charts", "GET"): SIGNED_IN,
    ("articles.article_detail", "GET"): SIGNED_IN,
    ("articles.article_live", "GET"): SIGNED_IN,
    ("templates.template_list", "GET"): SIGNED_IN,
    ("articles.version_show", "GET"): SIGNED_IN,
    # The review queue: everyone signed in reads it (viewers without the decisions).
    ("review.queue", "GET"): SIGNED_IN,
    ("review.queue_list", "GET"): SIGNED_IN,
    ("review.pane", "GET"): SIGNED_IN,
    ("account.tokens", "GET"): SIGNED_IN,
    ("account.create_token", "POST"): SIGNED_IN,
    ("account.revoke_token", "POST"): SELF,
    # Saved views: anyone signed in keeps their own (viewers too: a view only reads); each
    # is private, so another person, admins included, finds nothing to delete.
    ("views.save_view", "POST"): SIGNED_IN,
    ("views.delete_view", "POST"): SELF,
    # Writing.
    ("batches.new_batch", "GET"): WRITER,
    ("batches.new_batch", "POST"): WRITER,
    ("batches.estimate", "POST"): WRITER,
    ("templates.template_new", "GET"): WRITER,
    ("templates.template_new", "POST"): WRITER,
    ("templates.template_edit", "GET"): WRITER,
    # Anyone who writes may read and copy a template; its author or an admin changes it.
    ("templates.template_edit", "POST"): OWNER,
    ("templates.template_archive", "POST"): OWNER,
    ("templates.template_preview", "POST"): WRITER,
    ("articles.article_review", "POST"): WRITER,
    # The queue's Approve / Reject: the same decision as the article page's.
    ("review.decide", "POST"): WRITER,
    ("articles.article_edit", "GET"): WRITER,
    ("articles.article_edit", "POST"): WRITER,
    ("articles.version_restore", "POST"): WRITER,
    # Writing articles again spends the batch's money: its author's or an admin's call.
    ("articles.article_regenerate", "POST"): OWNER,
    ("batches.batch_regenerate", "POST"): OWNER,
    # A copy is a new batch of the person who copies it.
    ("batches.batch_duplicate", "POST"): WRITER,
    # Managing a batch is for its author and admins.
    ("batches.cancel_batch", "POST"): OWNER,
    ("batches.pause_batch", "POST"): OWNER,
    ("batches.resume_batch", "POST"): OWNER,
    ("batches.retry_dispatch", "POST"): OWNER,
    ("articles.cancel_article", "POST"): OWNER,
    ("batches.batch_export", "GET"): OWNER,
    # Bulk actions: any writer asks and confirms (each item is then checked as its single
    # action is: reviews by any editor, the rest by the batch's author or an admin); a
    # bulk action's page and progress are its author's and admins'.
    ("bulk.bulk_preview", "POST"): WRITER,
    ("bulk.bulk_run", "POST"): WRITER,
    ("bulk.bulk_show", "GET"): OWNER,
    ("bulk.bulk_progress", "GET"): OWNER,
    # Administration.
    ("admin.user_list", "GET"): ADMIN,
    ("admin.create_user", "POST"): ADMIN,
    ("admin.change_role", "POST"): ADMIN,
    ("admin.disable", "POST"): ADMIN,
    ("admin.enable", "POST"): ADMIN,
    ("admin.reset_password", "POST"): ADMIN,
    ("admin.revoke_tokens", "POST"): ADMIN,
    ("admin.audit_log", "GET"): ADMIN,
    ("admin.system_page", "GET"): ADMIN,
    ("admin.system_panel", "GET"): ADMIN,
    ("admin.system_charts", "GET"): ADMIN,
    # The JSON API: bearer tokens, same roles.
    ("api.create_batch", "POST"): WRITER,
    ("api.get_batch", "GET"): SIGNED_IN,
    ("api.get_article", "GET"): SIGNED_IN,
    # Like the page's Approve/Reject (articles.article_review): any editor, not viewers.
    ("api.review_article", "POST"): WRITER,
    ("api.cancel_batch", "POST"): OWNER,
    ("api.pause_batch", "POST"): OWNER,
    ("api.resume_batch", "POST"): OWNER,
    # Growing a held batch spends its money later: its author's or an admin's call.
    ("api.append_rows", "POST"): OWNER,
    # Publishing to WordPress: the destinations are the admins'; publishing a batch's (or an
    # article's) approved articles, or taking them back, is its author's or an admin's call,
    # as exporting it is; everyone signed in sees what was published where.
    ("admin.destination_list", "GET"): ADMIN,
    ("admin.add_destination", "POST"): ADMIN,
    ("admin.change_destination", "POST"): ADMIN,
    ("admin.test_destination", "POST"): ADMIN,
    ("admin.remove_destination", "POST"): ADMIN,
    ("batches.batch_publish", "POST"): OWNER,
    ("batches.batch_unpublish", "POST"): OWNER,
    ("batches.batch_publications", "GET"): SIGNED_IN,
    ("articles.article_publish", "POST"): OWNER,
    ("articles.article_unpublish", "POST"): OWNER,
    ("api.publish_batch", "POST"): OWNER,
    ("api.unpublish_batch", "POST"): OWNER,
    ("api.publish_article", "POST"): OWNER,
    ("api.unpublish_article", "POST"): OWNER,
}

# POSTs that remove the object under test: crawled last, so the rules after them still find
# it (the crawl is in order of the rule's text otherwise).
REMOVES_ITS_OBJECT = {"admin.remove_destination"}

# A POST that ends the session it is sent with: sent from a throwaway client.
ENDS_SESSION = {"auth.logout"}

# Answers that mean "you may": success, redirects, and a refusal of the input itself (400
# field errors, 409 conflicts), which only comes after the role check has passed.
ALLOWED_STATUSES = {200, 201, 202, 286, 302, 303, 400, 409}
# ids that no object has: one in range, one past any database integer (no route matches).
MISSING_IDS = (2_000_000_000, 10**30)

SECRET_BATCH = "Crawler secret batch"
SECRET_TITLES = ["Crawler secret title one", "Crawler secret title two"]


def _rules(app):
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method


def _build(rule, values: dict) -> str:
    built = rule.build(values, append_unknown=False)
    assert built is not None, f"cannot build {rule.rule} from {values}"
    return built[1]


@pytest.fixture
def world(app, clean_login_limits, fakewp):
    """Five people and real objects: the owner's finished batch (with versions), a template,
    the owner's spare token, a user for the admin pages to act on, and a destination (the
    tests' fake WordPress)."""
    from webapp.services import bulk, bulk_actions, destinations, saved_views, templates, users

    people = {role: make_account(app, Role.EDITOR if role in ("editor", "owner") else role,
                                 f"crawl-{role}")
              for role in ("viewer", "editor", "owner", "admin")}
    victim = make_account(app, Role.EDITOR, "crawl-victim")
    clients = {"anonymous": app.test_client()}
    for role, account in people.items():
        clients[role] = signed_in(app, account)

    response = submit_form(clients["owner"], SECRET_BATCH, SECRET_TITLES)
    batch_id = batch_id_from_location(response)
    wait_batch_final(app, batch_id)
    with app.app_context():
        articles = db.session.scalars(select(Article).where(Article.batch_id == batch_id)
                                      .order_by(Article.position)).all()
        version = db.session.scalars(select(ArticleVersion).where(
            ArticleVersion.article_id == articles[0].id)).first()
        other_version = db.session.scalars(select(ArticleVersion).where(
            ArticleVersion.article_id == articles[1].id)).first()
        assert version is not None and other_version is not None
        owner = db.session.get(users.User, people["owner"].id)
        users.create_token(owner, "crawl target")
        token_id = db.session.scalar(select(ApiToken.id).where(
            ApiToken.user_id == owner.id, ApiToken.name == "crawl target"))
        template = templates.save(owner, f"Crawler template {victim.id}",
                                  templates.prompts.DEFAULT_TEMPLATE)
        view = saved_views.save(owner, "dashboard", f"Crawler view {victim.id}",
                                "status=succeeded")
        approved = bulk_actions.start(owner, bulk.plan(owner, bulk.Selection(
            "batches", "approve", False, [batch_id], "")))
        login, password = fakewp.credentials("admin")
        destination = destinations.add(db.session.get(users.User, people["admin"].id),
                                       name=f"Crawler site {victim.id}", url=fakewp.url,
                                       username=login, password=password)
        ids = {"batch_id": batch_id, "article_id": articles[0].id, "version_id": version.id,
               "template_id": template.id, "token_id": token_id, "user_id": victim.id,
               "other_version_id": other_version.id, "view_id": view.id,
               "bulk_id": approved.id, "destination_id": destination.id}
    return {"people": people, "clients": clients, "ids": ids}


def _values_for(rule, ids: dict, missing: int | None = None) -> dict:
    values = {}
    for name in rule.arguments:
        if name == "fmt":
            values[name] = "csv"
        elif name == "filename":
            values[name] = "css/app.css"
        elif name in ids:
            values[name] = missing if missing is not None else ids[name]
        else:
            pytest.fail(f"{rule.rule}: the crawler has no object for <{name}>; add one to "
                        "the `world` fixture")
    return values


def _request(app, world, actor: str, endpoint: str, method: str, url: str):
    """One request as `actor`: the API with the actor's bearer token and no cookies, pages
    with the actor's session and, for a POST, its valid CSRF token."""
    clients, people = world["clients"], world["people"]
    is_api = endpoint.startswith("api.")
    if is_api:
        client = app.test_client()  # no session cookie: the token alone must do
        headers = bearer(people[actor].token) if actor in people else {}
        response = (client.get(url, headers=headers) if method == "GET"
                    else client.post(url, json={}, headers=headers))
    else:
        client = clients[actor]
        if endpoint in ENDS_SESSION and actor in people:
            client = signed_in(app, people[actor])
        if method == "GET":
            response = client.get(url)
        else:
            csrf = csrf_of(client, "/login" if actor == "anonymous" else "/account/tokens")
            response = client.post(url, data={"csrf_token": csrf})
    response.get_data()  # read streamed bodies (exports) to the end
    return response


def _secret_leak(response) -> str | None:
    body = response.get_data(as_text=True)
    for secret in [SECRET_BATCH] + SECRET_TITLES:
        if secret in body:
            return secret
    return None


def _check(endpoint: str, actor: str, policy: frozenset, response) -> str | None:
    """None if the answer fits the decision, else what went wrong."""
    allowed = actor in policy
    status = response.status_code
    location = urlsplit(response.headers.get("Location", "")).path
    if status >= 500 and not (endpoint == "ops.readyz" and status == 503):
        return f"server error {status}"
    if allowed:
        if location == "/login" and actor != "anonymous" and endpoint not in ENDS_SESSION:
            return f"{status} to /login: the session was lost"
        if status == 401 and endpoint == "auth.login" and actor == "anonymous":
            return None  # the sign-in form refusing empty credentials
        if status not in ALLOWED_STATUSES:
            return f"expected to be allowed, got {status}"
        return None
    if actor == "anonymous":
        if endpoint.startswith("api."):
            if status != 401 or not response.is_json or \
                    response.get_json()["error"]["code"] != "unauthorized":
                return f"expected a 401 JSON error, got {status}"
        elif status not in (302, 303) or location != "/login":
            return f"expected a redirect to /login, got {status} {location!r}"
    elif status not in (403, 404):
        return f"expected 403 or 404, got {status}"
    elif policy == ADMIN and status != 403:
        return f"an admin page must answer 403 to a non-admin, got {status}"
    leaked = _secret_leak(response)
    if leaked:
        return f"refused with {status} but the answer holds {leaked!r}"
    return None


def test_every_rule_has_a_decision(app):
    """A new route without an entry in EXPECTATIONS is a failure, not a silent gap."""
    present = {(rule.endpoint, method) for rule, method in _rules(app)}
    unknown = sorted(present - set(EXPECTATIONS))
    assert not unknown, (
        "routes without an access decision; add each to EXPECTATIONS in "
        f"tests/test_security_crawl.py (who may use it?): {unknown}")
    stale = sorted(set(EXPECTATIONS) - present)
    assert not stale, f"EXPECTATIONS names routes that no longer exist: {stale}"


def test_crawl_every_route_as_every_role(app, world):
    # GETs first, then POSTs, so the reads see the objects before anything changes them.
    rules = sorted(_rules(app), key=lambda rm: (rm[1] != "GET",
                                                rm[0].endpoint in REMOVES_ITS_OBJECT, rm[0].rule))
    failures = []
    for rule, method in rules:
        key = (rule.endpoint, method)
        if key not in EXPECTATIONS:
            continue  # reported by test_every_rule_has_a_decision
        url = _build(rule, _values_for(rule, world["ids"]))
        for actor in ACTORS:
            response = _request(app, world, actor, rule.endpoint, method, url)
            problem = _check(rule.endpoint, actor, EXPECTATIONS[key], response)
            if problem:
                failures.append(f"{method} {url} as {actor}: {problem}")
    assert not failures, "\n".join(failures)


def test_crawl_with_ids_that_do_not_exist(app, world):
    """Guessed ids get 404 (or 403 before the lookup), never a 500 and never data."""
    failures = []
    for rule, method in _rules(app):
        if not (rule.arguments & set(world["ids"])):
            continue
        for missing in MISSING_IDS:
            url = _build(rule, _values_for(rule, world["ids"], missing))
            for actor in ACTORS:
                response = _request(app, world, actor, rule.endpoint, method, url)
                status = response.status_code
                if status >= 500:
                    failures.append(f"{method} {url} as {actor}: server error {status}")
                elif actor == "anonymous":
                    if status not in (302, 303, 401, 404):
                        failures.append(f"{method} {url} as anonymous: {status}")
                elif status not in (403, 404):
                    failures.append(f"{method} {url} as {actor}: expected 403/404, got {status}")
                if rule.endpoint.startswith("api.") and status in (401, 403, 404) \
                        and not response.is_json:
                    failures.append(f"{method} {url} as {actor}: API error is not JSON")
    assert not failures, "\n".join(failures)


def test_a_version_of_another_article_is_not_found(app, world):
    """Pairing an article with a version id that belongs to a different article."""
    ids = world["ids"]
    base = f"/articles/{ids['article_id']}/versions/{ids['other_version_id']}"
    for actor in ("viewer", "editor", "owner", "admin"):
        client = world["clients"][actor]
        assert client.get(base).status_code == 404, actor
        response = client.post(base + "/restore", data={"csrf_token": csrf_of(client)})
        assert response.status_code in (403, 404), (actor, response.status_code)


def test_partials_ask_htmx_to_sign_in_again(app, world):
    """A poll whose session is gone gets 401 and HX-Redirect to the sign-in page, no rows."""
    anonymous = world["clients"]["anonymous"]
    for rule, method in _rules(app):
        if method != "GET" or EXPECTATIONS.get((rule.endpoint, method)) == PUBLIC \
                or rule.endpoint.startswith("api."):
            continue
        url = _build(rule, _values_for(rule, world["ids"]))
        response = anonymous.get(url, headers={"HX-Request": "true"})
        assert response.status_code == 401, (url, response.status_code)
        assert urlsplit(response.headers["HX-Redirect"]).path == "/login", url
        assert _secret_leak(response) is None, url


def test_metrics_need_an_allowed_address_or_the_token(app, world):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "203.0.113.9"
    response = client.get("/metrics")
    assert response.status_code == 403
    assert "pressroom_" not in response.get_data(as_text=True)


def test_post_routes_refuse_a_missing_or_wrong_csrf_token(app, world):
    """Every form and htmx POST (all but the bearer-token API) needs the session's token."""
    clients = world["clients"]
    owner, admin = clients["owner"], clients["admin"]
    checked = []
    for rule, method in _rules(app):
        if method != "POST" or rule.endpoint.startswith("api."):
            continue
        url = _build(rule, _values_for(rule, world["ids"]))
        # The admin may do everything, so a refusal here can only be the CSRF check.
        client = app.test_client() if rule.endpoint == "auth.login" else admin
        attempts = [
            ("no token", {}, {}),
            ("wrong token in the form", {"csrf_token": "forged-token"}, {}),
            ("wrong token in the htmx header", {}, {"HX-Request": "true", "X-CSRFToken": "forged"}),
            ("another session's token", {"csrf_token": csrf_of(owner)}, {}),
        ]
        for label, data, headers in attempts:
            response = client.post(url, data=data, headers=headers)
            assert response.status_code == 400, (url, label, response.status_code)
            assert "reload the page" in response.get_data(as_text=True), (url, label)
        checked.append(rule.rule)
    assert "/logout" in checked and "/batches/<int:batch_id>/cancel" in checked
    # Nothing was done: the owner's batch is still final and uncancelled, the admin signed in.
    assert admin.get("/admin/users").status_code == 200
    page = owner.get(f"/batches/{world['ids']['batch_id']}").get_data(as_text=True)
    assert "badge-succeeded" in page


def test_api_refuses_a_session_cookie_without_a_token(app, world):
    """The API is exempt from CSRF because it never accepts cookies: a browser session alone
    (as a forged cross-site request would carry) gets 401 on every API route."""
    admin = world["clients"]["admin"]
    csrf = csrf_of(admin)
    for rule, method in _rules(app):
        if not rule.endpoint.startswith("api."):
            continue
        url = _build(rule, _values_for(rule, world["ids"]))
        if method == "GET":
            response = admin.get(url)
        else:
            response = admin.post(url, json={"name": "Forged", "titles": ["Forged title"]},
                                  headers={"X-CSRFToken": csrf})
        assert response.status_code == 401, (method, url, response.status_code)
        assert response.get_json()["error"]["code"] == "unauthorized"
    # The batch was neither cancelled nor paused, and no batch was created.
    response = app.test_client().get(f"/api/v1/batches/{world['ids']['batch_id']}",
                                     headers=bearer(world["people"]["owner"].token))
    assert response.get_json()["status"] == "succeeded"
    assert "Forged" not in admin.get("/").get_data(as_text=True)
