"""The state machine of articles and batches (webapp/generation/lifecycle.py).

Each transition happens from each state it allows, and from any other state returns False
(or None, or 0) and changes nothing. On an in-memory SQLite database: no Redis, no worker.
The last tests hold the rule that nothing else in webapp/ writes `status`.
"""
from __future__ import annotations

import ast
import itertools
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect

from webapp.extensions import db
from webapp.generation import lifecycle
from webapp.models import (Article, ArticleStatus as A, ArticleVersion, Batch, BatchStatus as B,
                           ReviewStatus as R, User, utcnow)

LEASE = 30
_emails = itertools.count(1)


@pytest.fixture(autouse=True)
def _database(db_app):
    yield


def _batch(status: str = B.RUNNING, **values) -> int:
    user = User(email=f"editor{next(_emails)}@example.test", password_hash="x")
    db.session.add(user)
    db.session.flush()
    batch = Batch(user_id=user.id, name="Lifecycle", provider="offline", model="m",
                  target_words=100, tone="neutral", language="English", status=status, **values)
    db.session.add(batch)
    db.session.commit()
    return batch.id


def _article(batch_id: int, status: str = A.QUEUED, **values) -> int:
    article = Article(batch_id=batch_id, position=1, title="A title", status=status,
                      task_id=str(uuid.uuid4()), **values)
    db.session.add(article)
    db.session.commit()
    return article.id


def _running(batch_id: int, token: str = "owner", lapsed: bool = False, **values) -> int:
    lease = utcnow() + (timedelta(seconds=-5) if lapsed else timedelta(seconds=LEASE))
    return _article(batch_id, A.RUNNING, claim_token=token, lease_expires_at=lease, attempts=1,
                    started_at=utcnow(), **values)


def _row(model, row_id: int) -> dict:
    """Every column of a row as the database has it now."""
    db.session.expire_all()
    obj = db.session.get(model, row_id)
    return {c.key: getattr(obj, c.key) for c in inspect(model).column_attrs}


def _unchanged(model, row_id: int, transition) -> None:
    before = _row(model, row_id)
    assert not transition()
    assert _row(model, row_id) == before



# -- economy ---------------------------------------------------------------------------------

def _queued_at(batch_id: int, position: int) -> int:
    article = Article(batch_id=batch_id, position=position, title=f"Title {position}",
                      status=A.QUEUED, task_id=str(uuid.uuid4()))
    db.session.add(article)
    db.session.commit()
    return article.id


def test_claim_for_provider_takes_the_queued_articles_of_its_positions_only():
    batch = _batch()
    ids = [_queued_at(batch, p) for p in (1, 2, 3)]
    taken = _queued_at(batch, 4)
    db.session.execute(db.update(Article).where(Article.id == taken).values(
        status=A.CANCELLED))  # a test's own setup, not app code
    db.session.commit()
    until = utcnow() + timedelta(hours=48)
    assert lifecycle.claim_for_provider(batch, "part-1", 1, 2, until) == 2
    db.session.commit()
    rows = [_row(Article, i) for i in ids]
    assert [(r["status"], r["claim_token"], r["attempts"]) for r in rows] == [
        (A.RUNNING, "part-1", 1), (A.RUNNING, "part-1", 1), (A.QUEUED, None, 0)]
    assert rows[0]["lease_expires_at"] == until
    assert lifecycle.claim_for_provider(batch, "part-2", 1, 4, until) == 1  # only the 3rd
    db.session.commit()


def test_end_unanswered_fails_or_cancels_only_its_own_parts_open_articles():
    batch = _batch()
    mine, other = _running(batch, "part-1"), _running(batch, "part-2")
    written = _article(batch, A.SUCCEEDED, claim_token="part-1")
    assert lifecycle.end_unanswered(batch, "part-1", "expired") == 1
    assert (_row(Article, mine)["status"], _row(Article, mine)["error"]) == (A.FAILED, "expired")
    assert _row(Article, other)["status"] == A.RUNNING
    assert _row(Article, written)["status"] == A.SUCCEEDED
    assert lifecycle.end_unanswered(batch, "part-2", None) == 1
    assert _row(Article, other)["status"] == A.CANCELLED


def test_a_provider_batch_is_imported_once_and_not_changed_after():
    from webapp.models import ProviderBatch
    batch = _batch()
    pb = ProviderBatch(batch_id=batch, token="part-1")
    db.session.add(pb)
    db.session.commit()
    assert not lifecycle.provider_batch_imported(pb.id)  # not ended yet
    assert lifecycle.provider_batch_seen(pb.id, "completed", completed=3)
    assert lifecycle.provider_batch_imported(pb.id)
    assert not lifecycle.provider_batch_imported(pb.id)
    _unchanged(ProviderBatch, pb.id, lambda: lifecycle.provider_batch_seen(pb.id, "expired"))

# -- articles --------------------------------------------------------------------------------

def test_claim_takes_a_queued_article():
    batch = _batch()
    article = _article(batch, note="Rate limited — retry 2", error="old")
    assert lifecycle.claim(article, batch, "tok", LEASE)
    row = _row(Article, article)
    assert (row["status"], row["claim_token"], row["attempts"]) == (A.RUNNING, "tok", 1)
    assert row["lease_expires_at"] > utcnow() and row["started_at"] is not None
    assert row["note"] is None and row["error"] is None


def test_claim_takes_over_a_lapsed_lease_but_not_a_live_one():
    batch = _batch()
    live = _running(batch)
    _unchanged(Article, live, lambda: lifecycle.claim(live, batch, "second", LEASE))
    lapsed = _running(batch, lapsed=True)
    assert lifecycle.claim(lapsed, batch, "second", LEASE)
    row = _row(Article, lapsed)
    assert (row["claim_token"], row["attempts"]) == ("second", 2)


@pytest.mark.parametrize("status", [A.CANCELLING, A.SUCCEEDED, A.FAILED, A.CANCELLED])
def test_claim_refuses_other_states(status):
    batch = _batch()
    article = _article(batch, status)
    _unchanged(Article, article, lambda: lifecycle.claim(article, batch, "tok", LEASE))


def test_claim_refuses_an_article_of_a_paused_batch():
    batch = _batch(B.PAUSED)
    article = _article(batch)
    _unchanged(Article, article, lambda: lifecycle.claim(article, batch, "tok", LEASE))


def test_renew_is_the_running_owners_only():
    batch = _batch()
    article = _running(batch)
    assert lifecycle.renew(article, "owner", 600)
    assert _row(Article, article)["lease_expires_at"] > utcnow() + timedelta(seconds=500)
    _unchanged(Article, article, lambda: lifecycle.renew(article, "someone else", 600))
    cancelling = _running(batch)
    assert lifecycle.request_cancel_article(cancelling)
    _unchanged(Article, cancelling, lambda: lifecycle.renew(cancelling, "owner", 600))


def _complete(article_id: int, token: str = "owner") -> bool:
    return lifecycle.complete(article_id, token, body="Written body here", words=3,
                              prompt_tokens=10, completion_tokens=5, finish_reason="stop",
                              cost_usd=0.01, review_flag=None)


@pytest.mark.parametrize("status", [A.RUNNING, A.CANCELLING])
def test_complete_stores_one_body_with_its_version(status):
    batch = _batch()
    article = _article(batch, status, claim_token="owner",
                       lease_expires_at=utcnow() + timedelta(seconds=LEASE))
    assert _complete(article)
    row = _row(Article, article)
    assert (row["status"], row["body"], row["words"]) == (A.SUCCEEDED, "Written body here", 3)
    assert row["review_status"] == R.NEEDS_REVIEW and row["lease_expires_at"] is None
    assert [v.source for v in db.session.query(ArticleVersion).filter_by(article_id=article)] \
        == ["generated"]
    _unchanged(Article, article, lambda: _complete(article))  # a second delivery: no body


def test_complete_refuses_without_the_claim():
    batch = _batch()
    article = _running(batch)
    _unchanged(Article, article, lambda: _complete(article, "not the owner"))
    queued = _article(batch)
    _unchanged(Article, queued, lambda: _complete(queued))
    assert db.session.query(ArticleVersion).count() == 0


def test_fail_is_the_owners_and_fail_unstarted_only_from_queued():
    batch = _batch()
    article = _running(batch)
    _unchanged(Article, article, lambda: lifecycle.fail(article, "other", "boom"))
    _unchanged(Article, article, lambda: lifecycle.fail_unstarted(article, "boom"))
    assert lifecycle.fail(article, "owner", "boom", note=lifecycle.BREAKER_NOTE)
    row = _row(Article, article)
    assert (row["status"], row["error"], row["note"]) == (A.FAILED, "boom", lifecycle.BREAKER_NOTE)
    assert row["finished_at"] is not None and row["lease_expires_at"] is None

    queued = _article(batch)
    assert lifecycle.fail_unstarted(queued, "x" * 5000)
    assert _row(Article, queued)["status"] == A.FAILED
    assert len(_row(Article, queued)["error"]) == 2000
    with pytest.raises(ValueError):
        lifecycle.fail(queued, None, "an owner's transition needs the owner")


def test_fail_lost_only_a_lapsed_lease():
    batch = _batch()
    live = _running(batch)
    _unchanged(Article, live, lambda: lifecycle.fail_lost(live, "gone"))
    lapsed = _running(batch, lapsed=True)
    assert lifecycle.fail_lost(lapsed, "gone")
    assert _row(Article, lapsed)["status"] == A.FAILED


def test_release_for_retry_keeps_the_task_id_and_attempts():
    batch = _batch()
    article = _running(batch, words=40)
    task_id = _row(Article, article)["task_id"]
    _unchanged(Article, article, lambda: lifecycle.release_for_retry(article, "other", "retry"))
    assert lifecycle.release_for_retry(article, "owner", "Rate limited — retry 2 of 5")
    row = _row(Article, article)
    assert (row["status"], row["task_id"], row["attempts"]) == (A.QUEUED, task_id, 1)
    assert row["claim_token"] is None and row["lease_expires_at"] is None and row["words"] == 0


@pytest.mark.parametrize("status", A.FINAL)
def test_requeue_from_each_finished_state_starts_afresh(status):
    batch = _batch(B.SUCCEEDED)
    article = _article(batch, status, body="Old body", words=120, error="old error",
                       attempts=3, claim_token="old owner", lease_expires_at=utcnow(),
                       finish_reason="length",
                       review_flag="length", review_status=R.REJECTED, review_reason="Vague",
                       finished_at=utcnow(), extra_instructions="Shorter", cost_usd=0.5)
    old_task = _row(Article, article)["task_id"]
    task_id = lifecycle.requeue(article, "Regenerating")
    row = _row(Article, article)
    assert task_id and task_id != old_task and row["task_id"] == task_id
    assert (row["status"], row["note"], row["attempts"], row["words"]) == \
        (A.QUEUED, "Regenerating", 0, 0)
    assert all(row[c] is None for c in (
        "claim_token", "lease_expires_at", "error", "finished_at", "review_flag",
        "review_status", "review_reason", "finish_reason"))
    # The body (and what it cost) stays until the new one arrives; so do the instructions.
    assert (row["body"], row["cost_usd"], row["extra_instructions"]) == \
        ("Old body", 0.5, "Shorter")


@pytest.mark.parametrize("status", [A.QUEUED, A.RUNNING, A.CANCELLING])
def test_requeue_refuses_an_unfinished_article(status):
    batch = _batch()
    article = _article(batch, status, claim_token="owner")
    _unchanged(Article, article, lambda: lifecycle.requeue(article, "Regenerating"))


def test_requeue_many_narrows_the_states_and_returns_new_task_ids():
    batch = _batch(B.FAILED)
    failed = [_article(batch, A.FAILED, error="no") for _ in range(3)]
    written = _article(batch, A.SUCCEEDED, body="Keep me")
    before = _row(Article, written)
    pairs = lifecycle.requeue_many(failed + [written], "Re-queued by an operator.",
                                   from_states=(A.FAILED,), extra_instructions=None)
    assert [article_id for article_id, _ in pairs] == failed
    assert {task for _, task in pairs} == {_row(Article, a)["task_id"] for a in failed}
    assert all(_row(Article, a)["status"] == A.QUEUED for a in failed)
    assert _row(Article, written) == before
    with pytest.raises(ValueError):
        lifecycle.requeue_many(failed, "steal it", from_states=(A.RUNNING,))


def test_requeue_without_commit_is_part_of_the_callers_transaction():
    batch = _batch(B.SUCCEEDED)
    article = _article(batch, A.SUCCEEDED)
    before = _row(Article, article)
    assert lifecycle.requeue(article, "Regenerating", commit=False)
    assert lifecycle.reopen_batch(batch, commit=False)
    db.session.rollback()
    assert _row(Article, article) == before
    assert _row(Batch, batch)["status"] == B.SUCCEEDED


def test_requeue_lost_gives_a_new_task_id_and_keeps_the_attempts():
    batch = _batch()
    live = _running(batch)
    _unchanged(Article, live, lambda: lifecycle.requeue_lost(live, "lost"))
    lapsed = _running(batch, lapsed=True, words=40)
    old_task = _row(Article, lapsed)["task_id"]
    task_id = lifecycle.requeue_lost(lapsed, "Re-queued: the worker stopped responding.")
    row = _row(Article, lapsed)
    assert task_id and task_id != old_task and row["task_id"] == task_id
    assert (row["status"], row["attempts"], row["words"]) == (A.QUEUED, 1, 0)
    assert row["claim_token"] is None and row["lease_expires_at"] is None
    assert lifecycle.requeue_lost(lapsed, "again") is None  # queued now: not lost


@pytest.mark.parametrize("status", A.FINAL)
def test_restore_makes_a_finished_article_written_again(status):
    batch = _batch(B.SUCCEEDED)
    article = _article(batch, status, error="old", review_status=R.APPROVED)
    assert lifecycle.restore(article, "One two three four")
    row = _row(Article, article)
    assert (row["status"], row["body"], row["words"], row["error"], row["review_status"]) == \
        (A.SUCCEEDED, "One two three four", 4, None, R.NEEDS_REVIEW)


@pytest.mark.parametrize("status", [A.QUEUED, A.RUNNING, A.CANCELLING])
def test_restore_refuses_an_unfinished_article(status):
    batch = _batch()
    article = _article(batch, status)
    _unchanged(Article, article, lambda: lifecycle.restore(article, "Too early"))


def test_mark_cancelled_without_a_token_only_queued_or_cancelling():
    batch = _batch()
    for status in (A.QUEUED, A.CANCELLING):
        article = _article(batch, status, note="waiting")
        assert lifecycle.mark_cancelled(article)
        row = _row(Article, article)
        assert row["status"] == A.CANCELLED and row["note"] is None and row["finished_at"]
    running = _running(batch)
    _unchanged(Article, running, lambda: lifecycle.mark_cancelled(running))
    for status in A.FINAL:
        done = _article(batch, status)
        _unchanged(Article, done, lambda: lifecycle.mark_cancelled(done))


def test_mark_cancelled_with_a_token_is_the_owners():
    batch = _batch()
    article = _running(batch)
    _unchanged(Article, article, lambda: lifecycle.mark_cancelled(article, "other"))
    assert lifecycle.mark_cancelled(article, "owner")
    assert _row(Article, article)["status"] == A.CANCELLED


def test_cancelling_a_batchs_articles():
    batch = _batch()
    queued = [_article(batch) for _ in range(2)]
    live, lapsed = _running(batch), _running(batch, lapsed=True)
    done = _article(batch, A.SUCCEEDED)
    before = _row(Article, done)
    assert lifecycle.cancel_queued(batch, "budget reached") == 2
    assert all(_row(Article, a)["note"] == "budget reached" for a in queued)
    assert lifecycle.request_cancel_running(batch) == 2
    assert _row(Article, live)["status"] == A.CANCELLING
    assert _row(Article, lapsed)["status"] == A.CANCELLED  # no worker left to stop it
    assert _row(Article, done) == before
    assert lifecycle.cancel_queued(batch) == 0 and lifecycle.request_cancel_running(batch) == 0


def test_request_cancel_article_only_a_running_one():
    batch = _batch()
    running = _running(batch)
    assert lifecycle.request_cancel_article(running)
    assert _row(Article, running)["status"] == A.CANCELLING
    for status in (A.QUEUED, A.CANCELLING) + A.FINAL:
        article = _article(batch, status)
        _unchanged(Article, article, lambda: lifecycle.request_cancel_article(article))


# -- batches ---------------------------------------------------------------------------------

def _refused_from(states, transition) -> None:
    for status in states:
        batch = _batch(status)
        _unchanged(Batch, batch, lambda: transition(batch))


def test_mark_batch_running_only_from_queued():
    batch = _batch(B.QUEUED)
    assert lifecycle.mark_batch_running(batch)
    assert _row(Batch, batch)["status"] == B.RUNNING and _row(Batch, batch)["started_at"]
    _refused_from((B.RUNNING, B.PAUSED, B.CANCELLING) + B.FINAL, lifecycle.mark_batch_running)


def test_pause_from_queued_or_running_and_resume_from_paused():
    for status in (B.QUEUED, B.RUNNING):
        batch = _batch(status)
        assert lifecycle.pause_batch(batch, "Paused by a person.", by="user")
        assert (_row(Batch, batch)["status"], _row(Batch, batch)["paused_by"]) == \
            (B.PAUSED, "user")
        assert lifecycle.resume_batch(batch)
        row = _row(Batch, batch)
        assert (row["status"], row["paused_by"], row["paused_reason"]) == (B.RUNNING, None, None)
        assert row["started_at"] is not None
    _refused_from((B.PAUSED, B.CANCELLING) + B.FINAL,
                  lambda b: lifecycle.pause_batch(b, "again", by="user"))
    _refused_from((B.QUEUED, B.RUNNING, B.CANCELLING) + B.FINAL, lifecycle.resume_batch)


def test_request_cancel_batch_from_every_unfinished_state():
    for status in (B.QUEUED, B.RUNNING, B.PAUSED, B.CANCELLING):
        batch = _batch(status)
        assert lifecycle.request_cancel_batch(batch)
        row = _row(Batch, batch)
        assert row["status"] == B.CANCELLING and row["cancel_requested_at"] is not None
    _refused_from(B.FINAL, lifecycle.request_cancel_batch)


def test_reopen_only_a_finished_batch_forgetting_or_keeping_the_stop():
    for status in B.FINAL:
        batch = _batch(status, finished_at=utcnow(), cancel_requested_at=utcnow(),
                       stop_reason="Budget reached")
        assert lifecycle.reopen_batch(batch)
        row = _row(Batch, batch)
        assert (row["status"], row["finished_at"], row["cancel_requested_at"],
                row["stop_reason"]) == (B.RUNNING, None, None, None)
    kept = _batch(B.CANCELLED, finished_at=utcnow(), cancel_requested_at=utcnow(),
                  stop_reason="Budget reached")
    assert lifecycle.reopen_batch(kept, keep_stop=True)
    row = _row(Batch, kept)
    assert (row["status"], row["finished_at"], row["stop_reason"]) == \
        (B.RUNNING, None, "Budget reached") and row["cancel_requested_at"] is not None
    # A paused batch stays paused (its re-queued articles wait for the resume).
    _refused_from((B.QUEUED, B.RUNNING, B.PAUSED, B.CANCELLING), lifecycle.reopen_batch)


@pytest.mark.parametrize("articles, cancel_requested, final", [
    ([A.SUCCEEDED, A.SUCCEEDED], False, B.SUCCEEDED),
    ([A.SUCCEEDED, A.FAILED], False, B.FAILED),
    ([A.CANCELLED, A.CANCELLED], False, B.CANCELLED),
    ([A.SUCCEEDED, A.CANCELLED], False, B.SUCCEEDED),
    ([A.SUCCEEDED, A.CANCELLED], True, B.CANCELLED),
])
def test_finalize_closes_a_batch_with_every_article_finished(articles, cancel_requested, final):
    batch = _batch(B.RUNNING, cancel_requested_at=utcnow() if cancel_requested else None)
    for status in articles:
        _article(batch, status, cost_usd=0.25, prompt_tokens=10, completion_tokens=20)
    assert lifecycle.finalize_batch(batch) == final
    row = _row(Batch, batch)
    assert (row["status"], row["cost_usd"], row["prompt_tokens"], row["completion_tokens"]) == \
        (final, 0.5, 20, 40) and row["finished_at"] is not None
    _unchanged(Batch, batch, lambda: lifecycle.finalize_batch(batch))  # closed once


@pytest.mark.parametrize("open_status", [A.QUEUED, A.RUNNING, A.CANCELLING])
def test_finalize_leaves_a_batch_with_an_open_article(open_status):
    batch = _batch()
    _article(batch, A.SUCCEEDED)
    _article(batch, open_status)
    _unchanged(Batch, batch, lambda: lifecycle.finalize_batch(batch))


def test_enforce_budget_cancels_what_has_not_started_once():
    batch = _batch(B.RUNNING, budget_usd=1.0)
    _article(batch, A.SUCCEEDED, cost_usd=0.6)
    running, queued = _running(batch), _article(batch)
    assert not lifecycle.enforce_budget(batch)  # 0.60 of 1.00
    assert _row(Article, queued)["status"] == A.QUEUED
    _article(batch, A.SUCCEEDED, cost_usd=0.5)
    assert lifecycle.enforce_budget(batch)
    row = _row(Batch, batch)
    assert row["status"] == B.RUNNING and row["stop_reason"].startswith("Budget reached")
    assert row["cancel_requested_at"] is not None
    assert (_row(Article, queued)["status"], _row(Article, queued)["note"]) == \
        (A.CANCELLED, "budget reached")
    assert _row(Article, running)["status"] == A.RUNNING  # its tokens are spent already
    _unchanged(Batch, batch, lambda: lifecycle.enforce_budget(batch))


# -- one writer of status --------------------------------------------------------------------

WEBAPP = Path(__file__).resolve().parents[2] / "webapp"
WRITER = WEBAPP / "generation" / "lifecycle.py"
# Its sibling for publications and destinations (publishing to WordPress), in its style.
PUBLISHING_WRITER = WEBAPP / "generation" / "publishing_states.py"
WRITERS = (WRITER, PUBLISHING_WRITER)


def _has_status_key(node) -> bool:
    return any(isinstance(n, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "status"
                                               for k in n.keys)
               for n in ast.walk(node))


def status_writes(source: str) -> list[int]:
    """Lines that write a `status`: an assignment to `x.status`, `setattr(x, "status", …)`,
    `status=` (or a dict with a "status" key) in `.values(…)`, a bulk `execute(update(…),
    rows)` or a query's `.update({...})`. Creating a row in its first state (a model's
    constructor, an insert) is not a change of status and is not counted."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for t in ast.walk(target):
                    # `self.status = ...` is an object's own field (an HTTP status on an
                    # error), not a row's: rows are changed from outside.
                    if isinstance(t, ast.Attribute) and t.attr == "status" and \
                            getattr(t.value, "id", None) != "self":
                        lines.append(node.lineno)
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name == "setattr" and len(node.args) > 1 and \
                isinstance(node.args[1], ast.Constant) and node.args[1].value == "status":
            lines.append(node.lineno)
        elif name == "values" and (any(k.arg == "status" for k in node.keywords)
                                   or any(_has_status_key(a) for a in node.args)
                                   or any(k.arg is None and _has_status_key(k.value)
                                          for k in node.keywords)):
            lines.append(node.lineno)
        elif name == "execute" and len(node.args) > 1 and isinstance(node.args[0], ast.Call) \
                and getattr(node.args[0].func, "id", None) == "update" \
                and _has_status_key(node.args[1]):
            lines.append(node.lineno)
        elif name == "update" and isinstance(func, ast.Attribute) and \
                isinstance(func.value, ast.Call) and any(_has_status_key(a) for a in node.args):
            lines.append(node.lineno)
    return sorted(set(lines))


@pytest.mark.parametrize("source", [
    "article.status = 'succeeded'",
    "a.x, a.status = 1, 'failed'",
    "setattr(batch, 'status', 'running')",
    "db.session.execute(update(Article).where(Article.id == 1).values(status='queued'))",
    "stmt = update(Batch).values(\n    finished_at=None,\n    status=B.RUNNING)",
    "update(Article).values({'status': 'queued'})",
    "update(Article).values(**{'status': 'queued', 'note': None})",
    "db.session.execute(update(Article), [{'id': 1, 'status': 'failed'}])",
    "Article.query.filter_by(id=1).update({'status': 'failed'})",
])
def test_the_status_write_check_sees_every_form(source):
    assert status_writes(source), source


@pytest.mark.parametrize("source", [
    "if article.status == A.QUEUED: pass",
    "batch = Batch(name='x', status=B.QUEUED)",
    "db.session.execute(insert(Article), [{'status': A.QUEUED}])",
    "update(Article).values(review_status=R.APPROVED)",
    "article.review_status = 'approved'",
    "payload.update({'status': 'ok'})",
    "self.status, self.code = status, code",
    "metrics.count('batches_finished_total', status=status)",
])
def test_the_status_write_check_ignores_reads_creation_and_other_columns(source):
    assert status_writes(source) == [], source


def test_nothing_outside_lifecycle_writes_status():
    files = sorted(WEBAPP.rglob("*.py"))
    assert all(w in files for w in WRITERS) and len(files) > 20
    offenders = {str(path.relative_to(WEBAPP.parent)): found for path in files
                 if path not in WRITERS
                 if (found := status_writes(path.read_text(encoding="utf-8")))}
    assert offenders == {}, "status written outside generation/lifecycle.py and its sibling " \
                            "publishing_states.py (add a transition there and call it): " \
                            f"{offenders}"
    for writer in WRITERS:
        assert status_writes(writer.read_text(encoding="utf-8")), \
            f"the checker sees no writer in {writer.name}"
