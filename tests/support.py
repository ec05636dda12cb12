"""The suite's shared settings and process plumbing: where things are, the test accounts,
the app's test config, starting and stopping our own processes.

Tests and conftest files import these from here, not from a conftest: conftest files hold
fixtures, which pytest finds by itself, and a test that imports one takes a dependency on
the fixture layout of another directory.
"""
from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
WORKER_NAME = f"pressroom-test-{os.getpid()}@localhost"
WEBHOOK_WORKER_NAME = f"pressroom-test-webhooks-{os.getpid()}@localhost"
PUBLISHER_WORKER_NAME = f"pressroom-test-publisher-{os.getpid()}@localhost"
SECRET_KEY = "test-secret-key-for-the-pressroom-suite"
# Retries wait this long at first (doubled per attempt), so the retry tests take a second.
RETRY_BASE = 0.05
# Seconds between the first questions about an economy part (see economy.next_check_in).
ECONOMY_POLL_SECONDS = 0.2
# The tests' fake WordPress (tests/fakewp.py) listens on 127.0.0.1, a private address that
# publishing refuses unless named here (as WEBHOOK_ALLOWED_HOSTS names the webhook receivers).
# Other private addresses (localhost, 127.0.0.2, 10.x) stay refused.
PUBLISH_ALLOWED_HOSTS = "127.0.0.1"
# Each request to a site ends within this (the tests' hanging sites are cut quickly), and
# publishing's retries start this soon (doubled per attempt).
PUBLISH_TIMEOUT = 3.0
PUBLISH_RETRY_BASE = 0.2

ACCOUNTS = {
    "editor": ("editor@example.test", "editor-password-1"),
    "admin": ("admin@example.test", "admin-password-1"),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """Terminate our own child; kill it if it does not stop within `grace` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def app_config(database_url: str, redis_url: str, fake_url: str, **overrides) -> dict:
    config = {
        "TESTING": True,
        "SECRET_KEY": SECRET_KEY,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "REDIS_URL": redis_url,
        "OPENAI_API_KEY": "test",
        "OPENAI_BASE_URL": fake_url,
        "OPENAI_MODEL": "gpt-4o-mini",
        "POLL_INTERVAL": 0.2,
        "GENERATION_RETRY_BASE": RETRY_BASE,
        "ECONOMY_POLL_SECONDS": ECONOMY_POLL_SECONDS,
        "ECONOMY_POLL_MAX_SECONDS": 1.0,
        "PUBLISH_ALLOWED_HOSTS": PUBLISH_ALLOWED_HOSTS,
        "PUBLISH_TIMEOUT": PUBLISH_TIMEOUT,
        "PUBLISH_RETRY_BASE": PUBLISH_RETRY_BASE,
        # WTF_CSRF_ENABLED is deliberately left at its default (on): tests send tokens.
    }
    config.update(overrides)
    return config


def migrate_and_seed(app) -> None:
    """The real migrations, then the suite's accounts (their API tokens in TEST_TOKENS)."""
    from flask_migrate import upgrade

    from webapp.models import Role
    from webapp.services import users

    with app.app_context():
        upgrade()
        tokens = {}
        for role, (email, password) in ACCOUNTS.items():
            _, _, tokens[role] = users.create_user(
                email, Role.ADMIN if role == "admin" else Role.EDITOR, password=password)
        app.config["TEST_TOKENS"] = tokens


def activate_celery(app) -> None:
    """Make `app`'s Celery the process's current one. @shared_task proxies (generate_article)
    resolve through the current Celery app, so after building a second app, requests to the
    first would otherwise publish through the second one's settings."""
    celery = app.extensions["celery"]
    celery.set_default()
    celery.set_current()


def worker_idle(worker, redis_client, fake_server) -> bool:
    """Nothing queued, nothing reserved or running (acks are late, so a message stays in
    kombu's `unacked` hash until its task has ended and stored its result). `worker` is
    conftest's Worker."""
    worker.check_alive()
    pipe = redis_client.pipeline(transaction=False)
    pipe.llen("generation").llen("celery").llen("webhooks").llen("publishing").hlen("unacked")
    queued_generation, queued_default, queued_hooks, queued_publishing, unacked = pipe.execute()
    return (queued_generation == 0 and queued_default == 0 and queued_hooks == 0
            and queued_publishing == 0 and unacked == 0 and fake_server.in_flight == 0)
