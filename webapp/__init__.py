"""Pressroom: batches of articles written by an LLM, watched live, cancellable."""
from __future__ import annotations

import os

from flask import Flask, g, render_template, request, template_rendered
from flask_babel import gettext as _, lazy_gettext as _l
from flask_wtf.csrf import CSRFError
from sqlalchemy import event
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter

from .config import load_config
from .extensions import babel, csrf, db, limiter, login_manager, migrate

INSECURE_KEYS = {"", "dev", "change-me", "changeme", "secret", "secret-key"}


def create_app(test_config: dict | None = None) -> Flask:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    app = Flask(__name__, instance_path=os.path.join(root, "instance"),
                template_folder=os.path.join(root, "templates"),
                static_folder=os.path.join(root, "static"))
    app.config.from_mapping(load_config(app.instance_path))
    if test_config:
        app.config.from_mapping(test_config)
    os.makedirs(app.instance_path, exist_ok=True)
    check_settings(app)

    # Outermost first: ProxyFix decides whether the request came over HTTPS, then every
    # cookie of an HTTPS response is marked Secure (session and remember-me alike).
    app.wsgi_app = SecureCookies(app.wsgi_app)
    if app.config["PROXY_FIX_HOPS"]:
        from werkzeug.middleware.proxy_fix import ProxyFix
        hops = app.config["PROXY_FIX_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    register_extensions(app)
    register_i18n(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_input_guard(app)
    register_headers(app)
    register_commands(app)
    register_template_helpers(app)

    from .celery_app import celery_init_app
    celery_init_app(app)
    return app


class SecureCookies:
    """WSGI middleware: over HTTPS, add `Secure` to every Set-Cookie header.

    Flask writes the session cookie, and Flask-Login the remember-me cookie, after the
    app's own response hooks, so the flag is added here, on the way out.
    """

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        if environ.get("wsgi.url_scheme") != "https":
            return self.wsgi_app(environ, start_response)

        def secure_start_response(status, headers, exc_info=None):
            headers = [(name, value + "; Secure")
                       if name.lower() == "set-cookie" and "; secure" not in value.lower()
                       else (name, value) for name, value in headers]
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, secure_start_response)


def check_settings(app: Flask) -> None:
    """Refuse to start with settings that are unsafe in production, saying why."""
    if os.environ.get("PRESSROOM_ENV") == "production":
        key = os.environ.get("SECRET_KEY", "")
        if key in INSECURE_KEYS or len(key) < 32:
            raise RuntimeError("PRESSROOM_ENV=production needs SECRET_KEY set to a random value "
                               "of at least 32 characters (it is missing, short or a known "
                               "default).")
    from .generation.pricing import discount_for, price_table
    from .generation.ratelimit import parse_limits
    try:
        parse_limits(app.config.get("RATE_LIMITS", ""))
        price_table(app.config)
        discount_for(app.config, "")
    except (ValueError, KeyError) as exc:
        raise RuntimeError(f"Invalid provider settings: {exc}") from exc
    from .netguard import parse_allowed
    try:
        parse_allowed(app.config.get("WEBHOOK_ALLOWED_HOSTS") or "")
    except ValueError as exc:
        raise RuntimeError(f"Invalid WEBHOOK_ALLOWED_HOSTS: {exc}") from exc
    try:
        parse_allowed(app.config.get("PUBLISH_ALLOWED_HOSTS") or "")
    except ValueError as exc:
        raise RuntimeError(f"Invalid PUBLISH_ALLOWED_HOSTS: {exc}") from exc
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    options = app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {})
    if uri.startswith("sqlite"):
        # Dozens of worker threads write here: wait for the lock rather than fail.
        options.setdefault("connect_args", {"timeout": 30})
    else:
        options.setdefault("pool_pre_ping", True)
        options.setdefault("pool_size", 20)
        options.setdefault("max_overflow", 20)


def register_extensions(app: Flask) -> None:
    db.init_app(app)
    migrate.init_app(app, db, directory=os.path.join(os.path.dirname(app.instance_path),
                                                     "migrations"))
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = _l("Please sign in to continue.")
    login_manager.login_message_category = "info"

    from .services.users import user_for_session

    @login_manager.user_loader
    def load_user(session_id: str):
        # None when the session ended: signed out, disabled, or the password changed.
        return user_for_session(session_id)

    # Sign-in attempts are counted in Redis, so the limit holds across every web process.
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["REDIS_URL"])
    app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", {
        "socket_timeout": app.config["REDIS_SOCKET_TIMEOUT"],
        "socket_connect_timeout": app.config["REDIS_SOCKET_TIMEOUT"]})
    app.config.setdefault("RATELIMIT_KEY_PREFIX", "pressroom-limits")
    # With Redis down, sign-in still works (unlimited) rather than locking everyone out.
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    limiter.init_app(app)

    @login_manager.unauthorized_handler
    def unauthorized():
        from flask import redirect, url_for
        if request.headers.get("HX-Request") == "true":
            # A poll whose session ended: send the whole page to the sign-in form.
            return "", 401, {"HX-Redirect": url_for("auth.login")}
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))

    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        with app.app_context():
            event.listen(db.engine, "connect", _sqlite_pragmas)


def register_i18n(app: Flask) -> None:
    """Pages in English, 简体中文 or 繁體中文 (webapp/i18n.py says which, and why)."""
    from flask_login import current_user

    from . import i18n
    from .services.users import remember_language

    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", i18n.TRANSLATIONS)
    app.config.setdefault("BABEL_DEFAULT_TIMEZONE", "UTC")
    babel.init_app(app, locale_selector=i18n.select_locale)

    @app.after_request
    def remember_chosen_language(response):
        chosen = i18n.from_tag(request.args.get("lang"))
        if chosen and not request.path.startswith("/api/"):
            response.set_cookie(i18n.COOKIE, i18n.tag_of(chosen), max_age=i18n.COOKIE_MAX_AGE,
                                httponly=True, samesite="Lax")
            if current_user.is_authenticated:
                remember_language(current_user, chosen)
        return response


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets the pages read while workers write; NORMAL sync is safe under WAL.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


# Ids are 32-bit in PostgreSQL and 64-bit in SQLite; a bigger number in a URL is no id at
# all, so it must not match (404) rather than overflow the database driver (500).
MAX_ID = 2**31 - 1


class IdConverter(IntegerConverter):
    def __init__(self, map, fixed_digits=0, min=None, max=MAX_ID, signed=False):
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)


def register_blueprints(app: Flask) -> None:
    # One file per first segment of the URL: /batches → batches.py, /articles → articles.py.
    from .blueprints import account, admin, api, articles, auth, batches, errors, ops, templates
    from .blueprints import views
    from .blueprints import review
    from .blueprints import bulk

    # Before any rule is added: `<int:...>` in every blueprint uses the bounded converter.
    app.url_map.converters["int"] = IdConverter

    app.register_blueprint(ops.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(account.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(batches.bp)
    app.register_blueprint(articles.bp)
    app.register_blueprint(templates.bp)
    app.register_blueprint(views.bp)
    app.register_blueprint(review.bp)
    app.register_blueprint(bulk.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(errors.bp)  # how pages answer the services' errors
    csrf.exempt(api.bp)  # bearer tokens, never cookies: no cross-site forgery possible


def register_errorhandlers(app: Flask) -> None:
    from .blueprints.api import error_response

    def wants_json() -> bool:
        return request.path.startswith("/api/")

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        message = _("The form expired or was sent from elsewhere; reload the page and try "
                    "again.")
        if wants_json():
            return error_response(400, "csrf", message)
        return render_template("error.html", code=400, message=message), 400

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if exc.response is not None:
            return exc.response  # a ready answer (a rate limit's on_breach partial)
        code = exc.code or 500
        custom = exc.description and exc.description != type(exc).description
        limit_mb = "{:g}".format((app.config.get("MAX_CONTENT_LENGTH") or 0) / (1024 * 1024))
        message = str(exc.description) if custom else {
            400: _("The request could not be understood."),
            403: _("You do not have permission to do that."),
            404: _("There is nothing here."),
            405: _("That action is not allowed here."),
            413: _("The request is too large: the limit is %(limit)s MB.",
                   limit=limit_mb),
            429: _("Too many requests; wait a moment and try again."),
        }.get(code) or _("Something went wrong.")
        if wants_json():
            return error_response(code, exc.name.lower().replace(" ", "_"), message)
        return render_template("error.html", code=code, message=message), code

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        app.logger.exception("unhandled error on %s", request.path)
        db.session.rollback()
        message = _("Something went wrong on our side; the error was logged.")
        if wants_json():
            return error_response(500, "internal", message)
        return render_template("error.html", code=500, message=message), 500


def register_input_guard(app: Flask) -> None:
    """Refuse text no database can store, naming the field, rather than fail with a 500.

    PostgreSQL refuses NUL in text, and no driver can encode an unpaired surrogate (a JSON
    "\\ud800" escape makes one); either could arrive in any form, query or JSON body.
    Runs after the CSRF check, which Flask-WTF registered first.
    """
    from .blueprints.api import error_response

    @app.before_request
    def refuse_unstorable_text():
        try:
            field = _unstorable_field()
        except RecursionError:  # what json.loads raises (not ValueError) for deep nesting
            field = _("(body)")
            message = _("The JSON body is nested too deeply to be read.")
        else:
            if field is None:
                return None
            message = _("The field “%(field)s” contains a character that cannot be stored (a "
                        "NUL or an unpaired surrogate). Remove it and try again.", field=field)
        if request.path.startswith("/api/"):
            return error_response(400, "invalid_text", message, {field: [message]})
        return render_template("error.html", code=400, message=message), 400


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")  # fails on an unpaired surrogate, at C speed
    except UnicodeEncodeError:
        return False
    return True


def _unstorable_field() -> str | None:
    """The name of the first field holding unstorable text, or None."""
    sources = [request.args]
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        sources.append(request.form)
    for source in sources:
        for name, value in source.items(multi=True):
            if not _storable(name) or not _storable(value):
                return name if _storable(name) else _("(field name)")
    if request.is_json:
        return _unstorable_in_json(request.get_json(silent=True), "")
    return None


def _unstorable_in_json(body, path: str) -> str | None:
    # A loop, not recursion: json.loads accepts nesting nearly as deep as the stack.
    pending = [(body, path)]
    while pending:
        value, path = pending.pop()
        if isinstance(value, str):
            if not _storable(value):
                return path or _("(body)")
        elif isinstance(value, dict):
            for key, item in value.items():
                if not _storable(str(key)):
                    return path or _("(field name)")
                pending.append((item, f"{path}.{key}" if path else str(key)))
        elif isinstance(value, list):
            pending.extend((item, f"{path}[{i}]") for i, item in enumerate(value))
    return None


# Pages that show a password or token once: no browser cache or proxy may keep a copy.
SHOWN_ONCE = frozenset({"secret_once.html"})
HSTS = "max-age=31536000; includeSubDomains"


def register_headers(app: Flask) -> None:
    def note_shown_once(sender, template, context, **extra):
        if template.name in SHOWN_ONCE:
            g.no_store = True

    # Whichever view renders such a page. weak=False: the app holds this local function.
    template_rendered.connect(note_shown_once, app, weak=False)

    @app.after_request
    def security_headers(response):
        if g.get("no_store"):
            response.headers["Cache-Control"] = "no-store"
        if request.is_secure:
            # Only over HTTPS (directly, or from a proxy trusted through PROXY_FIX_HOPS): a
            # site still served over plain http must not tell browsers to refuse http.
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response


def register_commands(app: Flask) -> None:
    from . import cli
    cli.register(app)


def register_template_helpers(app: Flask) -> None:
    from flask_login import current_user

    from flask_babel import get_locale

    from . import i18n, theme
    from .labels import label, stored
    from .rendering import render_markdown
    from .services.users import permissions

    @app.context_processor
    def what_the_user_may_do():
        # Pages offer what the person may do from this, never from their role.
        return {"perms": permissions(current_user)}

    app.jinja_env.filters["markdown"] = render_markdown
    app.jinja_env.filters["duration"] = i18n.duration
    app.jinja_env.filters["number"] = i18n.number
    app.jinja_env.filters["money"] = i18n.money
    app.jinja_env.filters["when"] = i18n.when
    app.jinja_env.filters["day"] = i18n.day
    # A note, error or reason stored in English, in the page's language (labels.stored).
    app.jinja_env.filters["stored"] = stored
    app.jinja_env.filters["dict_without_page"] = lambda d: {k: v for k, v in d.items()
                                                            if k != "page"}
    app.jinja_env.globals["poll_interval"] = lambda: app.config["POLL_INTERVAL"]
    app.jinja_env.globals["html_lang"] = lambda: i18n.tag_of(get_locale())
    app.jinja_env.globals["languages"] = [(tag, name) for tag, name in i18n.LANGUAGES.values()]
    app.jinja_env.globals["language_url"] = i18n.language_url
    app.jinja_env.globals["page_theme"] = theme.page_theme
    app.jinja_env.globals["theme_switch"] = theme.switch_state
    app.jinja_env.globals["label"] = label
    app.jinja_env.globals["role_label"] = lambda code: label("role", code)
