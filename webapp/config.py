"""Settings read from the environment, with defaults that work on a fresh machine."""
from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def _float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def _secret_key(instance_path: str) -> str:
    """SECRET_KEY from the environment, else a random key kept in instance/ (made once).

    A key in a file survives restarts, so sessions do too; production sets SECRET_KEY.
    """
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    path = Path(instance_path) / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key)
        return key
    except OSError:
        return ""


def load_config(instance_path: str) -> dict:
    """Build the Flask config mapping. Every key here is documented in README.md."""
    default_db = "sqlite:///" + str(Path(instance_path) / "pressroom.sqlite3")
    return {
        "SECRET_KEY": _secret_key(instance_path),
        "SQLALCHEMY_DATABASE_URI": os.environ.get("DATABASE_URL", default_db),
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        # The provider: with no key, the offline provider writes placeholders.
        "OPENAI_API_KEY": os.environ.get("OPENAI_API_KEY", ""),
        "OPENAI_BASE_URL": os.environ.get("OPENAI_BASE_URL", ""),
        "OPENAI_MODEL": os.environ.get("OPENAI_MODEL", "gpt-4o-mini"),
        "OPENAI_MODELS": os.environ.get("OPENAI_MODELS", ""),
        # A worker logs a line per task received and per task ended only when asked: at a
        # few hundred articles a second they cost CPU and say what the batch page says.
        "CELERY_TASK_LOG": os.environ.get("CELERY_TASK_LOG", "0").strip().lower()
        not in ("", "0", "false", "no", "off"),
        "OPENAI_TIMEOUT": _float("OPENAI_TIMEOUT", 120.0),
        # The longest silence allowed inside a streamed answer (and before its first byte);
        # past it the answer counts as cut off and is retried.
        "OPENAI_STREAM_IDLE_TIMEOUT": _float("OPENAI_STREAM_IDLE_TIMEOUT", 60.0),
        "OPENAI_SDK_RETRIES": _int("OPENAI_SDK_RETRIES", 0),
        "GENERATION_MAX_ATTEMPTS": _int("GENERATION_MAX_ATTEMPTS", 3),
        # Attempts when the provider only says "slow down" (429 rate limit).
        "RATE_LIMIT_MAX_ATTEMPTS": _int("RATE_LIMIT_MAX_ATTEMPTS", 8),
        "GENERATION_RETRY_BASE": _float("GENERATION_RETRY_BASE", 2.0),
        # Articles of one batch in flight at once, across all workers (0: no cap).
        "BATCH_MAX_CONCURRENCY": _int("BATCH_MAX_CONCURRENCY", 32),
        # Batches larger than this are sent to the queue by a worker, not the web request.
        "DISPATCH_INLINE_MAX": _int("DISPATCH_INLINE_MAX", 500),
        # Queued articles untouched this long, with nothing running and an empty queue, are
        # sent again by the reconciler (their messages were lost).
        "STALL_AFTER": _int("STALL_AFTER", 300),
        # /metrics: a bearer token, and/or client addresses allowed without one.
        "METRICS_TOKEN": os.environ.get("METRICS_TOKEN", ""),
        "METRICS_ALLOW": os.environ.get("METRICS_ALLOW", "127.0.0.1/32,::1/128"),
        # Shared provider limits per model, JSON; see README "Provider limits and cost".
        "RATE_LIMITS": os.environ.get("RATE_LIMITS", ""),
        "PRICE_TABLE": os.environ.get("PRICE_TABLE", ""),
        # Default budget per batch in US dollars (empty: no cap).
        "DEFAULT_BUDGET_USD": _float("DEFAULT_BUDGET_USD", 0.0) or None,
        "REDIS_SOCKET_TIMEOUT": _float("REDIS_SOCKET_TIMEOUT", 2.0),
        "OFFLINE_DELAY": _float("OFFLINE_DELAY", 3.0),
        # Economy mode (the provider's Batch API); see README "Economy mode".
        # The price of a Batch API token against a live one, and per-model exceptions
        # (JSON: {"model": 0.5}).
        "BATCH_DISCOUNT": _float("BATCH_DISCOUNT", 0.5),
        "BATCH_DISCOUNTS": os.environ.get("BATCH_DISCOUNTS", ""),
        # OpenAI's limits per input file: 50,000 requests, 200 MB (a margin kept).
        "ECONOMY_MAX_REQUESTS": _int("ECONOMY_MAX_REQUESTS", 50_000),
        "ECONOMY_MAX_FILE_BYTES": _int("ECONOMY_MAX_FILE_BYTES", 190 * 1024 * 1024),
        # How often a provider batch is asked about: every ECONOMY_POLL_SECONDS, twice as
        # long after each answer that brought no news, never rarer than the maximum.
        "ECONOMY_POLL_SECONDS": _float("ECONOMY_POLL_SECONDS", 30.0),
        "ECONOMY_POLL_MAX_SECONDS": _float("ECONOMY_POLL_MAX_SECONDS", 600.0),
        # Delete the provider's input, output and error files once the results are in.
        "ECONOMY_DELETE_FILES": os.environ.get("ECONOMY_DELETE_FILES", "1").strip().lower()
        not in ("0", "false", "no", "off"),
        # How long the answer to "does this server have a Batch API?" is remembered.
        "ECONOMY_PROBE_TTL": _int("ECONOMY_PROBE_TTL", 24 * 3600),
        # The offline provider's imitation of a Batch API.
        "OFFLINE_BATCH_STAGE_SECONDS": _float("OFFLINE_BATCH_STAGE_SECONDS", 3.0),
        "OFFLINE_BATCH_SECONDS_PER_REQUEST": _float("OFFLINE_BATCH_SECONDS_PER_REQUEST", 0.3),
        "POLL_INTERVAL": _float("POLL_INTERVAL", 1.0),
        # Bulk actions (dashboard, review queue): up to this many items run in the request,
        # more on a worker with a progress bar; at most BULK_MAX_ITEMS at once.
        "BULK_SYNC_LIMIT": _int("BULK_SYNC_LIMIT", 50),
        "BULK_MAX_ITEMS": _int("BULK_MAX_ITEMS", 20_000),
        "BATCHES_PER_PAGE": _int("BATCHES_PER_PAGE", 20),
        # The review queue's list: a decision refills it from the next page, so an editor
        # reviews page after page without loading one.
        "REVIEW_PER_PAGE": _int("REVIEW_PER_PAGE", 50),
        "MAX_TITLES": 1000,
        # Imports (CSV or JSON) may be larger than what one types into the form.
        "IMPORT_MAX_ROWS": _int("IMPORT_MAX_ROWS", 10_000),
        # What a batch may grow to, 10,000 rows at a time, through the API.
        "BATCH_MAX_ARTICLES": _int("BATCH_MAX_ARTICLES", 100_000),
        "IMPORT_MAX_BYTES": _int("IMPORT_MAX_BYTES", 2 * 1024 * 1024),
        "WEBHOOK_SECRET": os.environ.get("WEBHOOK_SECRET", ""),
        "WEBHOOK_MAX_ATTEMPTS": _int("WEBHOOK_MAX_ATTEMPTS", 5),
        # One deadline for a whole delivery attempt (lookup, connect, send, response).
        "WEBHOOK_TIMEOUT": _float("WEBHOOK_TIMEOUT", 10.0),
        # Internal receivers let past the public-address rule: "host" or "host:port", commas.
        "WEBHOOK_ALLOWED_HOSTS": os.environ.get("WEBHOOK_ALLOWED_HOSTS", ""),
        # Publishing to WordPress (README "Publishing to WordPress"): sites on private or
        # local addresses allowed anyway ("host" or "host:port", commas), the deadline of
        # each request, requests in flight per destination, attempts on 429/5xx/timeouts,
        # the first backoff (doubled per attempt) and the longest Retry-After waited.
        "PUBLISH_ALLOWED_HOSTS": os.environ.get("PUBLISH_ALLOWED_HOSTS", ""),
        "PUBLISH_TIMEOUT": _float("PUBLISH_TIMEOUT", 15.0),
        "PUBLISH_CONCURRENCY": _int("PUBLISH_CONCURRENCY", 2),
        "PUBLISH_MAX_ATTEMPTS": _int("PUBLISH_MAX_ATTEMPTS", 5),
        "PUBLISH_RETRY_BASE": _float("PUBLISH_RETRY_BASE", 5.0),
        "PUBLISH_RETRY_MAX": _float("PUBLISH_RETRY_MAX", 600.0),
        "MAX_TITLE_LENGTH": 300,
        # Characters one prompt template may produce for one row, counted while it renders.
        "TEMPLATE_OUTPUT_BUDGET": _int("TEMPLATE_OUTPUT_BUDGET", 20_000),
        # Template previews, and new-batch estimates, per user (Flask-Limiter syntax).
        "TEMPLATE_PREVIEW_LIMIT": os.environ.get("TEMPLATE_PREVIEW_LIMIT", "60 per minute"),
        # How long a running article's claim lasts without renewal; a worker that dies
        # stops renewing, so another delivery may take the article over.
        "ARTICLE_LEASE_SECONDS": _int("ARTICLE_LEASE_SECONDS", 30),
        "WTF_CSRF_TIME_LIMIT": None,
        # Failed sign-ins allowed per client address, and per account from one client address
        # (Flask-Limiter syntax): strangers' guesses never lock an account's owner out.
        "LOGIN_LIMIT_IP": os.environ.get("LOGIN_LIMIT_IP", "20 per 10 minutes"),
        "LOGIN_LIMIT_ACCOUNT": os.environ.get("LOGIN_LIMIT_ACCOUNT", "5 per 10 minutes"),
        # Number of reverse proxies in front of the app whose X-Forwarded-* to trust.
        "PROXY_FIX_HOPS": _int("PROXY_FIX_HOPS", 0),
        # "Keep me signed in" lasts a month (Flask-Login's default is a year); signing out
        # ends it on the server at once either way.
        "REMEMBER_COOKIE_DURATION": timedelta(days=_int("REMEMBER_DAYS", 30)),
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "MAX_CONTENT_LENGTH": _int("MAX_CONTENT_LENGTH", 4 * 1024 * 1024),
    }
