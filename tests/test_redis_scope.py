"""Redis state belongs to its database.

Cancel a batch, then start over with an empty database on the same Redis: the new batch
with the same id runs normally, because every key that names a batch or an article carries
the installation key made with the schema. The same for a database restored from a backup
taken before a cancelled batch: the restored ids are given a new key.
"""
from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

from tests.support import activate_celery, migrate_and_seed
from tests.dedicated import Dedicated, redis_db_url
from tests.helpers import FINISH_TIMEOUT, status_counts, wait_batch_final, wait_until
from webapp.extensions import db
from webapp.models import Installation

DB_INDEX = 9
TITLES = [f"Scoped story {i}" for i in range(1, 6)]


@pytest.fixture
def scoped(tmp_path, _app, app, make_app, redis_url, fake_server, artifacts):
    """Fresh SQLite databases with workers of their own, on one private Redis database."""
    started: list[Dedicated] = []

    def database(name: str) -> str:
        url = f"sqlite:///{tmp_path / name}.sqlite3"
        migrate_and_seed(make_app(SQLALCHEMY_DATABASE_URI=url,
                                  REDIS_URL=redis_db_url(redis_url, DB_INDEX)))
        return url

    def start(name: str, url: str) -> Dedicated:
        dedicated = Dedicated(name, _app, url, redis_url, fake_server, artifacts,
                              db_index=DB_INDEX, settings={}, flush=not started)
        started.append(dedicated)
        activate_celery(dedicated.app)
        return dedicated

    yield database, start
    fake_server.reset(restore_settings=True)
    for dedicated in started:
        if dedicated.procs[0].poll() is None:
            dedicated.wait_idle()
        dedicated.stop()
    activate_celery(_app)


def _token(dedicated: Dedicated) -> dict:
    from webapp.services import users

    with dedicated.app.app_context():
        user = users.authenticate("editor@example.test", "editor-password-1")
        token = users.issue_token(user, "scope test")
        db.session.commit()
    return {"Authorization": f"Bearer {token}"}


def _submit(dedicated: Dedicated, headers: dict, name: str) -> int:
    response = dedicated.app.test_client().post(
        "/api/v1/batches", headers=headers, json={"name": name, "titles": TITLES,
                                                  "target_words": 200})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def _submit_and_cancel(dedicated: Dedicated, headers: dict, fake) -> int:
    fake.latency = 30.0  # still running when the cancel comes
    batch_id = _submit(dedicated, headers, "Cancelled")
    wait_until(lambda: fake.in_flight >= 1, FINISH_TIMEOUT, "an article to be running")
    response = dedicated.app.test_client().post(f"/api/v1/batches/{batch_id}/cancel",
                                                headers=headers)
    assert response.status_code == 202, response.get_json()
    assert wait_batch_final(dedicated.app, batch_id)["status"] == "cancelled"
    fake.reset(restore_settings=True)
    dedicated.wait_idle()
    return batch_id


def _cancel_flags(dedicated: Dedicated, batch_id: int) -> list[bytes]:
    return list(dedicated.redis.scan_iter(match=f"pressroom:*:cancel:batch:{batch_id}"))


def _copy(source_path, target_path) -> None:
    """SQLite's online backup: a consistent copy while the source is in use."""
    with closing(sqlite3.connect(source_path)) as source, \
            closing(sqlite3.connect(target_path)) as target:
        source.backup(target)


def _key(dedicated: Dedicated) -> str:
    with dedicated.app.app_context():
        return db.session.get(Installation, 1).key


def test_an_empty_database_on_the_same_redis_runs_its_batch_one(scoped, fake):
    database, start = scoped
    first = start("scope-a", database("first"))
    cancelled = _submit_and_cancel(first, _token(first), fake)
    assert _cancel_flags(first, cancelled), "the cancel flag should be in Redis"
    first.stop()

    second = start("scope-b", database("second"))
    assert _key(second) != _key(first)
    batch_id = _submit(second, _token(second), "Starts over")
    assert batch_id == cancelled  # the same id, in a new database
    assert wait_batch_final(second.app, batch_id)["status"] == "succeeded"
    assert status_counts(second.app, batch_id) == {"succeeded": len(TITLES)}
    # The old flag is still there; it is simply not this database's.
    assert _cancel_flags(second, cancelled)


def test_a_restored_backup_does_not_inherit_the_state_of_later_batches(scoped, fake, tmp_path):
    database, start = scoped
    path = database("live").removeprefix("sqlite:///")
    live = start("scope-live", f"sqlite:///{path}")
    headers = _token(live)
    kept = _submit(live, headers, "Before the backup")
    assert wait_batch_final(live.app, kept)["status"] == "succeeded"
    live.wait_idle()
    backup = tmp_path / "backup.sqlite3"
    _copy(path, backup)
    cancelled = _submit_and_cancel(live, headers, fake)
    key_before = _key(live)
    live.stop()

    # Restore the backup (into a file of its own: overwriting a SQLite file that other
    # connections have open is not something anyone should do), then start again.
    restored_path = tmp_path / "restored.sqlite3"
    _copy(backup, restored_path)
    url = f"sqlite:///{restored_path}"
    restored = start("scope-restored", url)
    batch_id = _submit(restored, headers, "After the restore")
    assert batch_id == cancelled
    assert wait_batch_final(restored.app, batch_id)["status"] == "succeeded"
    assert status_counts(restored.app, batch_id) == {"succeeded": len(TITLES)}
    assert _key(restored) != key_before
