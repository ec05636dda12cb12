"""Trust: sign-in limits that strangers cannot turn against an account's owner, sessions that
end on the server, token revocation by admins, HSTS, no-store on shown-once secrets and the
metrics token (the "Trust" issue, items 4, 5 and 6)."""
from __future__ import annotations

import html
import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import select, update

from tests.helpers import count_sql, csrf_from
from tests.sec_support import (bearer, clean_login_limits, csrf_of, make_account,  # noqa: F401
                               signed_in)
from webapp.extensions import db
from webapp.models import AuditEvent, Role, UserSession, utcnow

ROOT = Path(__file__).resolve().parent.parent
HSTS = "max-age=31536000; includeSubDomains"
_SECRET = re.compile(r"<dt>([^<]+)</dt><dd><code class=\"secret\">([^<]+)</code></dd>")


def _sign_in(app, email: str, password: str, *, address: str | None = None,
             headers: dict | None = None, remember: bool = False, client=None):
    """The real sign-in form, GET then POST, from `address` (REMOTE_ADDR) if given."""
    client = client or app.test_client()
    environ = {"REMOTE_ADDR": address} if address else {}
    page = client.get("/login", environ_base=environ, headers=headers or {})
    data = {"email": email, "password": password,
            "csrf_token": csrf_from(page.get_data(as_text=True))}
    if remember:
        data["remember"] = "y"
    return client.post("/login", data=data, environ_base=environ, headers=headers or {})


def _goes_to_login(response) -> bool:
    return response.status_code in (302, 303) and \
        urlsplit(response.headers["Location"]).path == "/login"


def _api_status(app, token: str) -> int:
    """An authenticated request for a batch that does not exist: 404 if the token works."""
    return app.test_client().get("/api/v1/batches/2000000000", headers=bearer(token)).status_code


def _audit(app, action: str, target: str) -> list[AuditEvent]:
    with app.app_context():
        return db.session.scalars(select(AuditEvent).where(
            AuditEvent.action == action, AuditEvent.target == target)).all()


# -- item 4: sign-in limits per account and address -------------------------------------------

def test_a_strangers_guesses_do_not_lock_the_owner_out(app, make_app, clean_login_limits):
    # A generous per-address limit, so that only the per-account-and-address one is tested.
    limited = make_app(LOGIN_LIMIT_ACCOUNT="3 per 10 minutes", LOGIN_LIMIT_IP="50 per 10 minutes")
    owner = make_account(limited, Role.EDITOR, "flooded")
    bystander = make_account(limited, Role.EDITOR, "flood-bystander")
    for _ in range(3):
        assert _sign_in(limited, owner.email, "guess", address="10.0.0.5").status_code == 401

    # The flooding address is refused for this account, even with the right password...
    response = _sign_in(limited, owner.email, owner.password, address="10.0.0.5")
    assert response.status_code == 429
    assert "Too many failed sign-ins" in response.get_data(as_text=True)
    # ...while the owner, from anywhere else, signs in, and can use the app.
    owner_client = limited.test_client()
    response = _sign_in(limited, owner.email, owner.password, address="10.0.0.6",
                        client=owner_client)
    assert response.status_code == 303
    assert owner_client.get("/", environ_base={"REMOTE_ADDR": "10.0.0.6"}).status_code == 200
    # The limit is the account's at that address, not the whole address.
    assert _sign_in(limited, bystander.email, bystander.password,
                    address="10.0.0.5").status_code == 303
    # Still refused later on: successful sign-ins elsewhere do not reset it.
    assert _sign_in(limited, owner.email, owner.password, address="10.0.0.5").status_code == 429


def test_the_per_address_limit_still_holds(app, make_app, clean_login_limits):
    limited = make_app(LOGIN_LIMIT_ACCOUNT="3 per 10 minutes", LOGIN_LIMIT_IP="4 per 10 minutes")
    owner = make_account(limited, Role.EDITOR, "addr-limit")
    # Guesses spread over accounts: each stays under the per-account limit.
    for i in range(4):
        assert _sign_in(limited, f"nobody-{i}@example.test", "guess",
                        address="10.0.1.5").status_code == 401
    assert _sign_in(limited, owner.email, owner.password, address="10.0.1.5").status_code == 429
    assert _sign_in(limited, owner.email, owner.password, address="10.0.1.6").status_code == 303


def test_behind_a_proxy_the_client_address_is_what_counts(app, make_app, clean_login_limits):
    """Every request comes from the proxy (127.0.0.1): the limit keys on X-Forwarded-For."""
    proxied = make_app(PROXY_FIX_HOPS=1, LOGIN_LIMIT_ACCOUNT="3 per 10 minutes",
                       LOGIN_LIMIT_IP="50 per 10 minutes")
    owner = make_account(proxied, Role.EDITOR, "proxied-flood")
    stranger = {"X-Forwarded-For": "203.0.113.5"}
    for _ in range(3):
        assert _sign_in(proxied, owner.email, "guess", headers=stranger).status_code == 401
    assert _sign_in(proxied, owner.email, owner.password, headers=stranger).status_code == 429
    assert _sign_in(proxied, owner.email, owner.password,
                    headers={"X-Forwarded-For": "203.0.113.6"}).status_code == 303


# -- item 5: sessions that end ------------------------------------------------------------------

def _with_cookies(app, **cookies):
    client = app.test_client()
    for name, value in cookies.items():
        client.set_cookie(name, value)
    return client


def test_copied_cookies_stop_working_at_sign_out(app, clean_login_limits):
    account = make_account(app, Role.EDITOR, "copied-cookies")
    browser = app.test_client()
    assert _sign_in(app, account.email, account.password, remember=True,
                    client=browser).status_code == 303
    other_browser = signed_in(app, account)
    copied = {"session": browser.get_cookie("session").value,
              "remember_token": browser.get_cookie("remember_token").value}

    # Before sign-out each copy works on its own: the session cookie, and the remember-me
    # cookie alone (as after the browser was closed).
    assert _with_cookies(app, session=copied["session"]).get("/").status_code == 200
    assert _with_cookies(app, remember_token=copied["remember_token"]).get("/").status_code == 200

    assert browser.post("/logout", data={"csrf_token": csrf_of(browser)}).status_code == 303
    assert _goes_to_login(browser.get("/"))
    for cookies in ({"session": copied["session"]},
                    {"remember_token": copied["remember_token"]}, copied):
        response = _with_cookies(app, **cookies).get("/")
        assert _goes_to_login(response), (sorted(cookies), response.status_code)
    # Only that session ended: the same person's other browser is still signed in.
    assert other_browser.get("/").status_code == 200
    with app.app_context():
        rows = db.session.scalars(select(UserSession).where(UserSession.user_id == account.id)
                                  .order_by(UserSession.id)).all()
        assert [row.ended_at is not None for row in rows] == [True, False]
        assert rows[0].user_agent and rows[0].ip == "127.0.0.1"


def test_password_reset_and_disable_end_every_session(app, clean_login_limits):
    admin = signed_in(app, make_account(app, Role.ADMIN, "ends-admin"))
    account = make_account(app, Role.EDITOR, "ends-all")
    browsers = [signed_in(app, account) for _ in range(2)]
    remembered = app.test_client()
    assert _sign_in(app, account.email, account.password, remember=True,
                    client=remembered).status_code == 303
    token_cookie = remembered.get_cookie("remember_token").value

    response = admin.post(f"/admin/users/{account.id}/password",
                          data={"csrf_token": csrf_of(admin)})
    assert response.status_code == 200
    for browser in browsers + [remembered, _with_cookies(app, remember_token=token_cookie)]:
        assert _goes_to_login(browser.get("/"))
    password = html.unescape(dict(_SECRET.findall(response.get_data(as_text=True)))["Password"])

    browser = app.test_client()
    assert _sign_in(app, account.email, password, client=browser).status_code == 303
    assert admin.post(f"/admin/users/{account.id}/disable",
                      data={"csrf_token": csrf_of(admin)}).status_code == 303
    assert admin.post(f"/admin/users/{account.id}/enable",
                      data={"csrf_token": csrf_of(admin)}).status_code == 303
    assert _goes_to_login(browser.get("/"))
    with app.app_context():
        assert db.session.scalars(select(UserSession.ended_at).where(
            UserSession.user_id == account.id)).all().count(None) == 0


def test_a_signed_in_request_loads_user_and_session_in_one_query(app, clean_login_limits):
    account = make_account(app, Role.EDITOR, "one-query")
    session_id = _session_id_of(app, signed_in(app, account))
    with app.test_request_context("/"):
        with count_sql(app) as seen:
            user = app.login_manager._user_callback(session_id)
        assert user is not None and user.id == account.id
        assert len(seen) == 1, seen
        assert "user_sessions" in seen[0] and "users" in seen[0]

    # Last seen is written at most once a minute: a stale one is brought up to date once.
    with app.app_context():
        db.session.execute(update(UserSession).where(UserSession.user_id == account.id)
                           .values(last_seen_at=utcnow() - timedelta(minutes=5)))
        db.session.commit()
    with app.test_request_context("/"):
        with count_sql(app) as seen:
            assert app.login_manager._user_callback(session_id) is not None
        assert any(s.lstrip().upper().startswith("UPDATE") for s in seen), seen
    with app.test_request_context("/"):
        with count_sql(app) as seen:
            assert app.login_manager._user_callback(session_id) is not None
        assert len(seen) == 1, seen
    with app.app_context():
        last_seen = db.session.scalar(select(UserSession.last_seen_at).where(
            UserSession.user_id == account.id))
        assert utcnow() - last_seen < timedelta(minutes=1)


def _session_id_of(app, client) -> str:
    """The id Flask-Login keeps in the client's (signed) session cookie."""
    data = app.session_interface.get_signing_serializer(app).loads(
        client.get_cookie("session").value)
    return data["_user_id"]


def test_a_session_id_from_before_server_sessions_signs_nobody_in(app, clean_login_limits):
    account = make_account(app, Role.EDITOR, "old-format")
    browser = signed_in(app, account)
    with app.app_context():
        from webapp.models import User
        user = db.session.get(User, account.id)
        old_style = f"{user.id}.{user.session_fingerprint()}"  # "userid.fingerprint"
    serializer = app.session_interface.get_signing_serializer(app)
    data = serializer.loads(browser.get_cookie("session").value)
    data["_user_id"] = old_style
    forged = _with_cookies(app, session=serializer.dumps(data))
    assert _goes_to_login(forged.get("/"))


# -- item 5: API tokens revoked by a password reset or by an admin ------------------------------

def test_password_reset_revokes_the_users_api_tokens(app, clean_login_limits):
    admin = signed_in(app, make_account(app, Role.ADMIN, "reset-tokens-admin"))
    account = make_account(app, Role.EDITOR, "reset-tokens")
    person = signed_in(app, account)
    response = person.post("/account/tokens",
                           data={"name": "second", "csrf_token": csrf_of(person)})
    second = html.unescape(dict(_SECRET.findall(response.get_data(as_text=True)))["API token"])
    bystander = make_account(app, Role.EDITOR, "reset-bystander")
    assert _api_status(app, account.token) == _api_status(app, second) == 404

    assert admin.post(f"/admin/users/{account.id}/password",
                      data={"csrf_token": csrf_of(admin)}).status_code == 200
    assert _api_status(app, account.token) == 401
    assert _api_status(app, second) == 401
    assert _api_status(app, bystander.token) == 404
    entries = _audit(app, "token_revoked", f"user:{account.id}")
    assert len(entries) == 1 and "2 API tokens" in entries[0].detail
    assert "password reset" in entries[0].detail
    assert _audit(app, "password_reset", f"user:{account.id}")


def test_admin_revokes_all_api_tokens_of_a_user(app, clean_login_limits):
    admin_account = make_account(app, Role.ADMIN, "revoke-admin")
    admin = signed_in(app, admin_account)
    account = make_account(app, Role.EDITOR, "revoked")
    bystander = make_account(app, Role.EDITOR, "revoke-bystander")
    person = signed_in(app, account)

    # The button: a POST form with the CSRF token, confirmed before it is sent.
    page = admin.get("/admin/users").get_data(as_text=True)
    (form,) = re.findall(rf'<form[^>]*action="/admin/users/{account.id}/tokens/revoke"'
                         r'[^>]*>.*?</form>', page, re.S)
    assert 'method="post"' in form and 'name="csrf_token"' in form
    assert "hx-confirm=" in form and "Revoke API tokens" in form
    # Without the CSRF token: refused, nothing revoked.
    assert admin.post(f"/admin/users/{account.id}/tokens/revoke").status_code == 400
    assert _api_status(app, account.token) == 404
    # Only admins.
    assert person.post(f"/admin/users/{account.id}/tokens/revoke",
                       data={"csrf_token": csrf_of(person)}).status_code == 403
    assert _api_status(app, account.token) == 404

    response = admin.post(f"/admin/users/{account.id}/tokens/revoke",
                          data={"csrf_token": csrf_of(admin)})
    assert response.status_code == 303
    assert "1 API token of " in html.unescape(admin.get("/admin/users").get_data(as_text=True))
    assert _api_status(app, account.token) == 401
    assert _api_status(app, bystander.token) == 404
    # The person keeps their session (only tokens were revoked) and sees them revoked.
    statuses = re.findall(r'<tr id="token-\d+">.*?<td>(active|revoked)</td>',
                          person.get("/account/tokens").get_data(as_text=True), re.S)
    assert statuses == ["revoked"]
    (entry,) = _audit(app, "token_revoked", f"user:{account.id}")
    assert entry.user_id == admin_account.id and account.email in entry.detail
    assert admin.post("/admin/users/2000000000/tokens/revoke",
                      data={"csrf_token": csrf_of(admin)}).status_code == 404


# -- item 6: HSTS, no-store, the metrics token, .env -------------------------------------------

def test_hsts_only_over_https(app, make_app):
    assert app.test_client().get("/login", base_url="https://localhost") \
        .headers.get("Strict-Transport-Security") == HSTS
    assert app.test_client().get("/healthz", base_url="https://localhost") \
        .headers.get("Strict-Transport-Security") == HSTS
    assert "Strict-Transport-Security" not in app.test_client().get("/login").headers
    # A forwarded proto is not believed without PROXY_FIX_HOPS.
    response = app.test_client().get("/login", headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" not in response.headers

    proxied = make_app(PROXY_FIX_HOPS=1)
    response = proxied.test_client().get("/login", headers={"X-Forwarded-Proto": "https"})
    assert response.headers.get("Strict-Transport-Security") == HSTS
    response = proxied.test_client().get("/login", headers={"X-Forwarded-Proto": "http"})
    assert "Strict-Transport-Security" not in response.headers


def test_pages_that_show_a_secret_once_are_not_stored(app, clean_login_limits):
    admin = signed_in(app, make_account(app, Role.ADMIN, "no-store-admin"))
    subject = make_account(app, Role.EDITOR, "no-store-subject")
    shown = {
        "user created": admin.post("/admin/users", data={
            "email": f"no-store-{subject.id}@example.test", "role": "viewer",
            "csrf_token": csrf_of(admin)}),
        "password reset": admin.post(f"/admin/users/{subject.id}/password",
                                     data={"csrf_token": csrf_of(admin)}),
        "token created": admin.post("/account/tokens", data={"name": "no-store",
                                                             "csrf_token": csrf_of(admin)}),
    }
    for what, response in shown.items():
        assert response.status_code == 200, what
        assert _SECRET.search(response.get_data(as_text=True)), what
        assert response.headers.get("Cache-Control") == "no-store", what
    # Ordinary pages keep their usual caching.
    for path in ("/account/tokens", "/admin/users", "/login"):
        assert "no-store" not in admin.get(path).headers.get("Cache-Control", ""), path


def test_metrics_token_is_checked(app, make_app):
    guarded = make_app(METRICS_TOKEN="metrics-token-for-tests", METRICS_ALLOW="")
    client = guarded.test_client()
    assert client.get("/metrics").status_code == 403
    for wrong in ("Bearer metrics-token-for-test", "Bearer metrics-token-for-testsx",
                  "metrics-token-for-tests", "Bearer métrics-token-for-tests"):
        assert client.get("/metrics", headers={"Authorization": wrong}).status_code == 403, wrong
    response = client.get("/metrics", headers={"Authorization": "Bearer metrics-token-for-tests"})
    assert response.status_code == 200
    assert response.mimetype == "text/plain"


def test_env_file_is_ignored_by_git():
    lines = [line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()]
    assert ".env" in lines
