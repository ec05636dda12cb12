"""Accounts, tokens, sign-in hardening, cookies, headers, secrets and the audit log (issue 3,
items 2, 3, 4 and 6)."""
from __future__ import annotations

import hashlib
import html
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
import sqlalchemy
from sqlalchemy import func, select, text

from tests.helpers import batch_id_from_location, csrf_from, login, submit_form, wait_batch_final
from tests.sec_support import (active_content_problems, bearer, clean_login_limits,  # noqa: F401
                               csrf_of, make_account, signed_in)
from webapp.extensions import db
from webapp.labels import AUDIT
from webapp.models import ApiToken, Article, AuditEvent, Role, User

ROOT = Path(__file__).resolve().parent.parent
_SECRET = re.compile(r"<dt>([^<]+)</dt><dd><code class=\"secret\">([^<]+)</code></dd>")
_AUDIT_ROW = re.compile(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>"
                        r"<td[^>]*>([^<]*)</td><td>([^<]*)</td></tr>")
# The log shows each action's label (webapp/labels.py, English here); the checks name codes.
_ACTION_OF = {str(words): code for code, words in AUDIT.items()}


def _secrets(page: str) -> dict[str, str]:
    return {label: html.unescape(value) for label, value in _SECRET.findall(page)}


def _post_login(client, email: str, password: str, next_url: str | None = None, **extra):
    page = client.get("/login")
    data = {"email": email, "password": password,
            "csrf_token": csrf_from(page.get_data(as_text=True)), **extra}
    path = "/login" + (f"?next={quote(next_url, safe='')}" if next_url is not None else "")
    return client.post(path, data=data)


def _api_status(app, token: str) -> int:
    """An authenticated request for a batch that does not exist: 404 if the token works."""
    return app.test_client().get("/api/v1/batches/2000000000", headers=bearer(token)).status_code


def _goes_to_login(response) -> bool:
    return response.status_code in (302, 303) and \
        urlsplit(response.headers["Location"]).path == "/login"


# -- users page ---------------------------------------------------------------------------------

def test_admin_manages_an_account_from_creation_to_password_reset(app, clean_login_limits):
    admin = signed_in(app, make_account(app, Role.ADMIN, "users-admin"))
    email = f"new-person-{os.urandom(4).hex()}@example.test"

    # Created: the password and the first token are shown once, and only stored hashed.
    response = admin.post("/admin/users", data={"email": email, "role": "editor",
                                                "csrf_token": csrf_of(admin, "/admin/users")})
    assert response.status_code == 200
    shown = _secrets(response.get_data(as_text=True))
    password, token = shown["Password"], shown["API token"]
    assert token.startswith("pr_") and len(password) >= 12
    listing = admin.get("/admin/users").get_data(as_text=True)
    assert email in listing and password not in listing and token not in listing
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == email))
        assert user.role == "editor" and password not in user.password_hash
        hashes = db.session.scalars(select(ApiToken.token_hash)
                                    .where(ApiToken.user_id == user.id)).all()
        assert hashes == [hashlib.sha256(token.encode()).hexdigest()]
        user_id = user.id

    person = app.test_client()
    login(person, email, password)
    assert person.get("/batches/new").status_code == 200
    assert _api_status(app, token) == 404

    # Role changed to viewer: it applies to the open session and the token at once.
    response = admin.post(f"/admin/users/{user_id}/role",
                          data={"role": "viewer", "csrf_token": csrf_of(admin)})
    assert response.status_code == 303
    assert person.get("/batches/new").status_code == 403
    assert app.test_client().post("/api/v1/batches", headers=bearer(token),
                                  json={"name": "x", "titles": ["y"]}).status_code == 403

    # A second session, kept aside: it is never used while the account is disabled.
    stale = app.test_client()
    login(stale, email, password)
    # Disabled: the next request of the open session goes to the sign-in page, a poll is
    # told to sign in again, the token gets 401 and the password no longer signs in.
    response = admin.post(f"/admin/users/{user_id}/disable", data={"csrf_token": csrf_of(admin)})
    assert response.status_code == 303
    assert "disabled" in admin.get("/admin/users").get_data(as_text=True)
    assert _goes_to_login(person.get("/"))
    assert person.get("/batches/rows", headers={"HX-Request": "true"}).status_code == 401
    assert _api_status(app, token) == 401
    assert _post_login(app.test_client(), email, password).status_code == 401

    # Enabled again: the password and the token work again, but the session that was open
    # when the account was disabled stays ended (even a kept copy of its cookie).
    assert admin.post(f"/admin/users/{user_id}/enable",
                      data={"csrf_token": csrf_of(admin)}).status_code == 303
    assert _goes_to_login(stale.get("/"))
    person = app.test_client()
    login(person, email, password)
    assert person.get("/").status_code == 200
    assert _api_status(app, token) == 404

    # Password reset: a new one is shown once; the old one fails; open sessions end.
    response = admin.post(f"/admin/users/{user_id}/password", data={"csrf_token": csrf_of(admin)})
    assert response.status_code == 200
    new_password = _secrets(response.get_data(as_text=True))["Password"]
    assert new_password != password
    assert new_password not in admin.get("/admin/users").get_data(as_text=True)
    assert _goes_to_login(person.get("/"))
    failed = _post_login(app.test_client(), email, password)
    assert failed.status_code == 401 and "Wrong email or password." in failed.get_data(as_text=True)
    login(app.test_client(), email, new_password)


def test_admin_cannot_lock_themselves_out(app):
    account = make_account(app, Role.ADMIN, "self-admin")
    admin = signed_in(app, account)
    for path, data in ((f"/admin/users/{account.id}/disable", {}),
                       (f"/admin/users/{account.id}/role", {"role": "viewer"})):
        response = admin.post(path, data={**data, "csrf_token": csrf_of(admin)})
        assert response.status_code == 303
    page = admin.get("/admin/users").get_data(as_text=True)
    assert "cannot" in page  # the flash says why
    with app.app_context():
        user = db.session.get(User, account.id)
        assert user.role == "admin" and not user.is_disabled


def test_invalid_new_accounts_are_refused_with_a_reason(app):
    admin = signed_in(app, make_account(app, Role.ADMIN, "form-admin"))
    existing = make_account(app, Role.EDITOR, "existing")
    with app.app_context():
        before = db.session.scalar(select(func.count()).select_from(User))
    for data, words in (({"email": "not-an-email", "role": "editor"}, "not an email"),
                        ({"email": existing.email, "role": "editor"}, "already exists"),
                        ({"email": "ok-role@example.test", "role": "superuser"}, "Role must be")):
        response = admin.post("/admin/users", data={**data, "csrf_token": csrf_of(admin)})
        assert response.status_code == 400
        assert words in html.unescape(response.get_data(as_text=True))
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == before


# -- tokens page ---------------------------------------------------------------------------------

def test_named_token_is_shown_once_records_its_use_and_can_be_revoked(app):
    account = make_account(app, Role.VIEWER, "tokens")
    person = signed_in(app, account)
    response = person.post("/account/tokens", data={"name": "CMS import",
                                                    "csrf_token": csrf_of(person)})
    assert response.status_code == 200
    token = _secrets(response.get_data(as_text=True))["API token"]

    def row() -> str:
        page = person.get("/account/tokens").get_data(as_text=True)
        assert token not in page  # shown once, never again
        (found,) = [r for r in re.findall(r'<tr id="token-\d+">.*?</tr>', page, re.S)
                    if "CMS import" in r]
        return found

    assert "never" in row()
    assert _api_status(app, token) == 404
    assert "never" not in row() and "active" in row()
    with app.app_context():
        tok = db.session.scalar(select(ApiToken).where(ApiToken.user_id == account.id,
                                                       ApiToken.name == "CMS import"))
        assert tok.last_used_at is not None
        token_id = tok.id

    response = person.post(f"/account/tokens/{token_id}/revoke",
                           data={"csrf_token": csrf_of(person)})
    assert response.status_code == 303
    assert _api_status(app, token) == 401
    assert "revoked" in row()
    # The account's other token is untouched.
    assert _api_status(app, account.token) == 404

    response = person.post("/account/tokens", data={"name": "  ", "csrf_token": csrf_of(person)})
    assert response.status_code == 400 and "name" in response.get_data(as_text=True)


# -- sign-in hardening -----------------------------------------------------------------------------

def test_unknown_user_and_wrong_password_look_the_same(app, clean_login_limits):
    account = make_account(app, Role.EDITOR, "same-message")
    wrong_password = _post_login(app.test_client(), account.email, "not-the-password")
    unknown_user = _post_login(app.test_client(), "nobody-" + account.email, "not-the-password")
    assert wrong_password.status_code == unknown_user.status_code == 401

    def message(response) -> str:
        page = response.get_data(as_text=True)
        return re.search(r'<p class="flash flash-error" role="alert">(.*?)</p>', page).group(1)

    assert message(wrong_password) == message(unknown_user) == "Wrong email or password."

    def without_variable_parts(response) -> str:
        page = response.get_data(as_text=True)
        page = re.sub(r'(name="csrf_token"[^>]*value=")[^"]+', r"\1", page)
        page = re.sub(r'("X-CSRFToken": ")[^"]+', r"\1", page)
        return re.sub(r'value="[^"]*@example.test"', 'value=""', page)

    assert without_variable_parts(wrong_password) == without_variable_parts(unknown_user)


def _limited_app(make_app):
    return make_app(LOGIN_LIMIT_ACCOUNT="3 per 10 minutes", LOGIN_LIMIT_IP="5 per 10 minutes")


def _from(app, address: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def test_failed_sign_ins_are_limited_per_account(app, make_app, clean_login_limits):
    limited = _limited_app(make_app)
    target, bystander = make_account(limited, Role.EDITOR, "limit-acct"), \
        make_account(limited, Role.EDITOR, "limit-other")
    for _ in range(3):
        assert _post_login(_from(limited, "192.0.2.10"), target.email, "guess").status_code == 401
    # The fourth try from that address is refused even with the right password; the limit
    # is per account and address, so the owner still signs in from elsewhere (the "Trust"
    # issue, item 4; see tests/test_trust_auth.py).
    response = _post_login(_from(limited, "192.0.2.10"), target.email, target.password)
    assert response.status_code == 429
    page = response.get_data(as_text=True)
    assert "Too many failed sign-ins" in page and "Wait" in page
    assert _post_login(_from(limited, "192.0.2.12"), target.email,
                       target.password).status_code == 303
    # Other accounts are not affected.
    assert _post_login(_from(limited, "192.0.2.11"), bystander.email,
                       bystander.password).status_code == 303


def test_failed_sign_ins_are_limited_per_address(app, make_app, clean_login_limits):
    limited = _limited_app(make_app)
    target = make_account(limited, Role.EDITOR, "limit-ip")
    # Five different (unknown) accounts from one address: each failure counts for the address.
    for i in range(5):
        response = _post_login(_from(limited, "192.0.2.20"), f"guess-{i}@example.test", "guess")
        assert response.status_code == 401
    response = _post_login(_from(limited, "192.0.2.20"), target.email, target.password)
    assert response.status_code == 429
    assert "Too many failed sign-ins" in response.get_data(as_text=True)
    # Another address signs the same account in.
    assert _post_login(_from(limited, "192.0.2.21"), target.email,
                       target.password).status_code == 303


def test_successful_sign_ins_are_not_counted(app, make_app, clean_login_limits):
    limited = _limited_app(make_app)
    account = make_account(limited, Role.EDITOR, "limit-ok")
    for _ in range(6):
        assert _post_login(_from(limited, "192.0.2.30"), account.email,
                           account.password).status_code == 303


def test_session_is_rotated_at_sign_in_and_cleared_at_sign_out(app):
    account = make_account(app, Role.EDITOR, "rotation")
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token_before = csrf_from(page)
    cookie_before = client.get_cookie("session").value
    response = client.post("/login", data={"email": account.email, "password": account.password,
                                           "csrf_token": token_before})
    assert response.status_code == 303
    cookie_after = client.get_cookie("session").value
    assert cookie_after != cookie_before

    # The token from before sign-in no longer works; the session's new one does.
    response = client.post("/account/tokens", data={"name": "stale", "csrf_token": token_before})
    assert response.status_code == 400
    assert client.post("/account/tokens", data={"name": "fresh",
                                                "csrf_token": csrf_of(client)}).status_code == 200
    # The pre-sign-in cookie (what a fixation attacker would hold) is still anonymous.
    attacker = app.test_client()
    attacker.set_cookie("session", cookie_before)
    assert _goes_to_login(attacker.get("/"))

    token_signed_in = csrf_of(client)
    response = client.post("/logout", data={"csrf_token": token_signed_in})
    assert response.status_code == 303
    cookie = client.get_cookie("session")
    if cookie is not None:
        data = app.session_interface.get_signing_serializer(app).loads(cookie.value)
        assert "_user_id" not in data and "csrf_token" not in data, data
    assert _goes_to_login(client.get("/"))
    # And the signed-in session's token died with it.
    response = client.post("/login", data={"email": account.email, "password": account.password,
                                           "csrf_token": token_signed_in})
    assert response.status_code == 400


@pytest.mark.parametrize("target", [
    "//evil.example", "https://evil.example", "/\\evil.example", "javascript:alert(1)",
    "http:evil", "///evil.example", "/\\/evil.example", " //evil.example", "\t//evil.example",
    "/\t/evil.example", "https:/evil.example", "//evil.example/batches/new", "evil.example",
])
def test_next_only_goes_to_local_paths(app, target):
    account = make_account(app, Role.EDITOR, "next")
    response = _post_login(app.test_client(), account.email, account.password, next_url=target)
    assert response.status_code == 303
    location = urlsplit(response.headers["Location"])
    assert location.path == "/" and location.netloc in ("", "localhost"), (
        response.headers["Location"])


def test_next_to_a_local_page_is_honoured(app):
    account = make_account(app, Role.EDITOR, "next-ok")
    client = app.test_client()
    response = _post_login(client, account.email, account.password, next_url="/batches/new")
    assert response.status_code == 303
    assert urlsplit(response.headers["Location"]).path == "/batches/new"
    assert client.get(response.headers["Location"]).status_code == 200


# -- cookies ---------------------------------------------------------------------------------------

def _set_cookies(response) -> dict[str, str]:
    return {header.split("=", 1)[0]: header for header in response.headers.getlist("Set-Cookie")}


def _sign_in_response(app, account, **kwargs):
    client = app.test_client()
    page = client.get("/login", **kwargs).get_data(as_text=True)
    # Over HTTPS, Flask-WTF also wants a same-origin Referer, as a browser sends.
    kwargs["headers"] = {"Referer": "https://localhost/login", **kwargs.get("headers", {})}
    return client.post("/login", data={"email": account.email, "password": account.password,
                                       "remember": "y", "csrf_token": csrf_from(page)}, **kwargs)


def _flags(header: str) -> set[str]:
    return {part.strip().lower() for part in header.split(";")[1:]}


def test_cookies_over_plain_http_are_httponly_and_lax_but_not_secure(app):
    account = make_account(app, Role.EDITOR, "cookies-http")
    response = _sign_in_response(app, account)
    assert response.status_code == 303
    cookies = _set_cookies(response)
    assert {"session", "remember_token"} <= set(cookies)
    for name in ("session", "remember_token"):
        flags = _flags(cookies[name])
        assert "httponly" in flags and "samesite=lax" in flags, cookies[name]
        assert "secure" not in flags, cookies[name]
    # X-Forwarded-Proto is not trusted without PROXY_FIX_HOPS.
    response = _sign_in_response(app, account, headers={"X-Forwarded-Proto": "https"})
    assert "secure" not in _flags(_set_cookies(response)["session"])


def test_cookies_over_https_are_secure(app):
    account = make_account(app, Role.EDITOR, "cookies-https")
    response = _sign_in_response(app, account, base_url="https://localhost")
    assert response.status_code == 303
    for name, header in _set_cookies(response).items():
        flags = _flags(header)
        assert {"secure", "httponly", "samesite=lax"} <= flags, header


def test_cookies_behind_a_trusted_proxy_are_secure(app, make_app):
    proxied = make_app(PROXY_FIX_HOPS=1)
    account = make_account(proxied, Role.EDITOR, "cookies-proxy")
    response = _sign_in_response(proxied, account, headers={"X-Forwarded-Proto": "https"})
    assert response.status_code == 303
    for header in _set_cookies(response).values():
        assert {"secure", "httponly", "samesite=lax"} <= _flags(header), header
    # The same proxy answering plain http: not Secure (the browser would drop it).
    response = _sign_in_response(proxied, account, headers={"X-Forwarded-Proto": "http"})
    assert "secure" not in _flags(_set_cookies(response)["session"])


# -- headers and templates -------------------------------------------------------------------------

@pytest.fixture
def populated(app, clean_login_limits):
    """An admin and a finished batch with an approved, edited article: every page has content."""
    account = make_account(app, Role.ADMIN, "pages")
    client = signed_in(app, account)
    batch_id = batch_id_from_location(submit_form(client, "Pages batch", ["Pages title one",
                                                                         "Pages title two"]))
    wait_batch_final(app, batch_id)
    with app.app_context():
        article_id = db.session.scalar(select(Article.id).where(Article.batch_id == batch_id)
                                       .order_by(Article.position))
    csrf = csrf_of(client)
    client.post(f"/articles/{article_id}/edit", data={"body": "# Edited\n\nNew text.",
                                                      "csrf_token": csrf})
    client.post(f"/articles/{article_id}/review", data={"decision": "approved", "csrf_token": csrf})
    response = client.post("/templates/new", data={"name": f"Pages template {account.id}",
                                                   "body": "Write {{ title }}.",
                                                   "csrf_token": csrf})
    assert response.status_code == 303
    template_id = int(re.search(r'<tr id="template-(\d+)">\s*<td><a[^>]*>Pages template',
                                client.get("/templates").get_data(as_text=True)).group(1))
    with app.app_context():
        from webapp.models import ArticleVersion
        version_id = db.session.scalar(select(ArticleVersion.id)
                                       .where(ArticleVersion.article_id == article_id))
    pages = ["/", "/batches/rows", "/batches/new", f"/batches/{batch_id}",
             f"/batches/{batch_id}/progress", f"/articles/{article_id}",
             f"/articles/{article_id}/live", f"/articles/{article_id}/edit",
             f"/articles/{article_id}/versions/{version_id}", "/templates", "/templates/new",
             f"/templates/{template_id}", "/account/tokens", "/admin/users", "/admin/audit",
             "/admin/system", "/admin/system/panel", "/no-such-page"]
    return client, pages


def _check_headers(response, url: str) -> None:
    headers = response.headers
    csp = {d.split()[0]: d.split()[1:] for d in headers["Content-Security-Policy"].split(";")
           if d.strip()}
    for directive in ("script-src", "style-src"):
        assert csp.get(directive) == ["'self'"], (url, directive, csp.get(directive))
    assert csp.get("default-src") == ["'self'"] and csp.get("frame-ancestors") == ["'none'"], url
    assert "unsafe-inline" not in headers["Content-Security-Policy"], url
    assert "unsafe-eval" not in headers["Content-Security-Policy"], url
    assert headers["X-Content-Type-Options"] == "nosniff", url
    assert headers["X-Frame-Options"] == "DENY", url
    assert headers["Referrer-Policy"] in ("same-origin", "no-referrer", "strict-origin",
                                          "strict-origin-when-cross-origin"), url


def test_security_headers_on_every_kind_of_answer(app, populated):
    client, pages = populated
    for url in pages + ["/login", "/healthz"]:
        _check_headers(client.get(url), url)
    _check_headers(app.test_client().get("/login"), "/login (anonymous)")
    _check_headers(app.test_client().get("/"), "/ (redirect)")
    api = app.test_client().get("/api/v1/batches/1")
    assert api.status_code == 401
    _check_headers(api, "API error")


def test_pages_have_no_inline_script_style_or_handlers(app, populated):
    client, pages = populated
    rendered = 0
    for url in pages:
        response = client.get(url)
        assert response.status_code in (200, 286, 404), (url, response.status_code)
        problems = active_content_problems(response.get_data(as_text=True))
        assert not problems, (url, problems)
        rendered += 1
    page = app.test_client().get("/login").get_data(as_text=True)
    assert not active_content_problems(page)
    # A page shown once (secret_once.html) too.
    response = client.post("/account/tokens",
                           data={"name": "headers", "csrf_token": csrf_of(client)})
    assert not active_content_problems(response.get_data(as_text=True))
    assert rendered == len(pages)


def test_template_sources_have_no_inline_script_style_or_handlers():
    """The same rule at the source, so a template no test renders is covered too."""
    problems = []
    for path in sorted((ROOT / "templates").rglob("*.html")):
        source = path.read_text()
        for match in re.finditer(r"<script\b[^>]*>", source, re.I):
            if "src=" not in match.group(0):
                problems.append(f"{path.name}: inline {match.group(0)}")
        for match in re.finditer(r"<[a-z][^>]*?\s(style|on[a-z]+)\s*=", source, re.I):
            problems.append(f"{path.name}: {match.group(1)}= attribute")
    assert not problems, problems


# -- the secret key in production ------------------------------------------------------------------

def _start_production(redis_url, tmp_path, secret_key: str | None):
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "TEST_DATABASE_URL")}
    env.update({"PRESSROOM_ENV": "production", "REDIS_URL": redis_url,
                "DATABASE_URL": f"sqlite:///{tmp_path / 'prod.sqlite3'}", "OPENAI_API_KEY": ""})
    if secret_key is not None:
        env["SECRET_KEY"] = secret_key
    return subprocess.run([sys.executable, "-c", "from webapp import create_app; create_app()"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("secret_key", [None, "", "secret", "change-me", "dev",
                                        "short-but-not-default", "x" * 31])
def test_production_refuses_a_missing_default_or_short_secret_key(redis_url, tmp_path, secret_key):
    result = _start_production(redis_url, tmp_path, secret_key)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "SECRET_KEY" in result.stderr, result.stderr[-2000:]


def test_production_starts_with_a_long_random_secret_key(redis_url, tmp_path):
    result = _start_production(redis_url, tmp_path, os.urandom(32).hex())
    assert result.returncode == 0, result.stderr[-2000:]


# -- the audit log ---------------------------------------------------------------------------------

def _audit_rows(admin, **params) -> list[tuple[str, ...]]:
    response = admin.get("/admin/audit", query_string=params)
    assert response.status_code == 200
    rows = [[html.unescape(cell) for cell in row]
            for row in _AUDIT_ROW.findall(response.get_data(as_text=True))]
    return [(when, who, _ACTION_OF.get(action, action), *rest)
            for when, who, action, *rest in rows]


def test_audit_log_records_who_did_what_when_and_from_where(app, fake, clean_login_limits):
    admin_account = make_account(app, Role.ADMIN, "audit-admin")
    editor_account = make_account(app, Role.EDITOR, "audit-editor")
    subject = make_account(app, Role.EDITOR, "audit-subject")
    admin = signed_in(app, admin_account, remote_addr="198.51.100.7")
    # A failed sign-in, from an address of its own.
    assert _post_login(_from(app, "198.51.100.9"), editor_account.email, "wrong").status_code == 401
    editor = signed_in(app, editor_account, remote_addr="198.51.100.8")

    # A finished batch: review, edit and export one article.
    done_id = batch_id_from_location(submit_form(editor, "Audited batch", ["Audited title"]))
    wait_batch_final(app, done_id)
    with app.app_context():
        article_id = db.session.scalar(select(Article.id).where(Article.batch_id == done_id))
    csrf = csrf_of(editor)
    assert editor.post(f"/articles/{article_id}/review",
                       data={"decision": "approved", "csrf_token": csrf}).status_code == 303
    assert editor.post(f"/articles/{article_id}/edit",
                       data={"body": "Edited for the audit.",
                             "csrf_token": csrf}).status_code == 303
    assert editor.get(f"/batches/{done_id}/export.json").status_code == 200

    # A slow batch: pause it, then cancel it.
    fake.latency = 3.0
    slow_id = batch_id_from_location(submit_form(editor, "Audited slow batch",
                                                 ["Slow one", "Slow two"]))
    assert editor.post(f"/batches/{slow_id}/pause", data={"csrf_token": csrf}).status_code == 303
    assert editor.post(f"/batches/{slow_id}/cancel", data={"csrf_token": csrf}).status_code == 303
    wait_batch_final(app, slow_id)

    # Tokens, and account changes by the admin.
    response = editor.post("/account/tokens", data={"name": "audited token", "csrf_token": csrf})
    assert response.status_code == 200
    with app.app_context():
        token_id = db.session.scalar(select(ApiToken.id).where(
            ApiToken.user_id == editor_account.id, ApiToken.name == "audited token"))
    assert editor.post(f"/account/tokens/{token_id}/revoke",
                       data={"csrf_token": csrf}).status_code == 303
    admin_csrf = csrf_of(admin)
    created_email = f"audit-created-{os.urandom(3).hex()}@example.test"
    assert admin.post("/admin/users", data={"email": created_email, "role": "viewer",
                                            "csrf_token": admin_csrf}).status_code == 200
    for path, data in ((f"/admin/users/{subject.id}/role", {"role": "viewer"}),
                       (f"/admin/users/{subject.id}/disable", {}),
                       (f"/admin/users/{subject.id}/enable", {}),
                       (f"/admin/users/{subject.id}/password", {})):
        assert admin.post(path, data={**data, "csrf_token": admin_csrf}).status_code in (200, 303)
    assert editor.post("/logout", data={"csrf_token": csrf}).status_code == 303

    rows = _audit_rows(admin, actor=editor_account.email)
    by_action: dict[str, list[tuple[str, ...]]] = {}
    for row in rows:
        by_action.setdefault(row[2], []).append(row)
    expected_editor = {"sign_in_failed", "sign_in", "batch_submitted", "article_reviewed",
                       "article_edited", "batch_exported", "batch_paused", "batch_cancelled",
                       "token_created", "token_revoked", "sign_out"}
    assert expected_editor <= set(by_action), sorted(by_action)
    for when, who, action, target, detail, ip in rows:
        # To the second, as the page's locale writes it (English: "Dec 6, 2026, 9:05:03 PM").
        assert re.fullmatch(r"[A-Z][a-z]{2} \d{1,2}, \d{4}, \d{1,2}:\d\d:\d\d\s[AP]M", when), when
        assert who == editor_account.email
        assert ip == ("198.51.100.9" if action == "sign_in_failed"
                      else "198.51.100.8"), (action, ip)
    assert by_action["batch_cancelled"][0][3] == f"batch:{slow_id}"
    assert by_action["batch_paused"][0][3] == f"batch:{slow_id}"
    assert by_action["article_reviewed"][0][3] == f"article:{article_id}"
    assert "approved" in by_action["article_reviewed"][0][4]
    assert by_action["batch_exported"][0][3] == f"batch:{done_id}"
    assert "audited token" in by_action["token_created"][0][4]
    assert len(by_action["batch_submitted"]) == 2

    admin_rows = _audit_rows(admin, actor=admin_account.email)
    admin_actions = {row[2]: row for row in admin_rows}
    assert {"sign_in", "user_created", "user_role_changed", "user_disabled", "user_enabled",
            "password_reset"} <= set(admin_actions), sorted(admin_actions)
    assert created_email in admin_actions["user_created"][4]
    assert admin_actions["user_disabled"][3] == f"user:{subject.id}"
    assert all(row[5] == "198.51.100.7" for row in admin_rows)

    # Filtering by action (and person) shows only those entries.
    only = _audit_rows(admin, action="batch_cancelled", actor=editor_account.email)
    assert [row[2] for row in only] == ["batch_cancelled"]
    sign_ins = _audit_rows(admin, action="sign_in")
    assert sign_ins and all(row[2] == "sign_in" for row in sign_ins)
    # The filter is matched as text, not as a pattern.
    assert _audit_rows(admin, actor="%") == []


def test_audit_entries_cannot_be_changed_or_deleted(app):
    make_account(app, Role.EDITOR, "append-only")  # at least one entry: its user_created
    with app.app_context():
        count = db.session.scalar(select(func.count()).select_from(AuditEvent))
        last = db.session.scalar(select(func.max(AuditEvent.id)))
        # The triggers fire per row, so every statement here touches at least one.
        for statement in (f"UPDATE audit_events SET action = 'tampered' WHERE id = {last}",
                          "UPDATE audit_events SET detail = ''",
                          f"DELETE FROM audit_events WHERE id = {last}",
                          "DELETE FROM audit_events"):
            with pytest.raises(sqlalchemy.exc.DatabaseError, match="append-only"):
                db.session.execute(text(statement))
                db.session.commit()
            db.session.rollback()
        assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == count
        assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "tampered")) == 0
