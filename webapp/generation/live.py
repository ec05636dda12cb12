"""Live state kept in Redis: cancel flags, text written so far, Celery progress keys.

The database is the source of truth; everything here may vanish (a Redis restart, result
expiry) and the pages must still tell the truth from the database alone.
"""
from __future__ import annotations

import json
from typing import Iterable, Optional

import redis

from ..installation import prefix

FLAG_TTL = 24 * 3600
TEXT_TTL = 3600
# Celery's Redis result backend stores each task's state under this prefix.
RESULT_PREFIX = "celery-task-meta-"


def batch_cancel_key(batch_id: int) -> str:
    return f"{prefix()}cancel:batch:{batch_id}"


def article_cancel_key(article_id: int) -> str:
    return f"{prefix()}cancel:article:{article_id}"


def text_key(article_id: int) -> str:
    return f"{prefix()}text:{article_id}"


def result_key(task_id: str) -> str:
    return RESULT_PREFIX + task_id


def flag_batch_cancelled(client: redis.Redis, batch_id: int) -> None:
    client.set(batch_cancel_key(batch_id), "1", ex=FLAG_TTL)


def flag_articles_cancelled(client: redis.Redis, article_ids: Iterable[int]) -> None:
    pipe = client.pipeline(transaction=False)
    for article_id in article_ids:
        pipe.set(article_cancel_key(article_id), "1", ex=FLAG_TTL)
    pipe.execute()


def forget_cancel(client: redis.Redis, batch_id: Optional[int],
                  article_ids: Iterable[int]) -> None:
    """Drop old cancel flags of articles written again (and of their batch, when it was
    reopened), so that the new attempts are not cancelled by a cancel that is over."""
    keys = [article_cancel_key(a) for a in article_ids]
    if batch_id is not None:
        keys.append(batch_cancel_key(batch_id))
    if keys:
        client.delete(*keys)


def _cancel_keys(batch_id: int, article_id: int) -> tuple[str, str]:
    return batch_cancel_key(batch_id), article_cancel_key(article_id)


def queue_cancel_check(pipe, batch_id: int, article_id: int) -> None:
    """Add the cancel-flag read to a pipeline; its reply is a list, any truthy = cancel."""
    pipe.mget(*_cancel_keys(batch_id, article_id))


def cancel_requested(client: redis.Redis, batch_id: int, article_id: int) -> bool:
    return any(client.mget(*_cancel_keys(batch_id, article_id)))


def queue_progress(pipe, task, meta: dict) -> None:
    """Add a task's PROGRESS state to a pipeline, as Celery's Redis backend stores it (what
    AsyncResult(id).info and the batch page's MGET read), so that a progress report shares
    the round trip that reads the cancel flags: task.update_state would be one of its own."""
    backend = task.backend
    value = backend.encode({"status": "PROGRESS", "result": meta, "traceback": None,
                            "children": [], "date_done": None, "task_id": task.request.id})
    pipe.set(backend.get_key_for_task(task.request.id), value, ex=backend.expires)


def queue_result(pipe, task, result: dict) -> None:
    """Add a finished task's result to a pipeline: its SUCCESS state under Celery's key, and
    the publish that wakes an AsyncResult.get() waiting on it, as the backend does both."""
    backend = task.backend
    value = backend.encode({"status": "SUCCESS", "result": result, "traceback": None,
                            "children": [], "date_done": backend.app.now().isoformat(),
                            "task_id": task.request.id})
    key = backend.get_key_for_task(task.request.id)
    pipe.set(key, value, ex=backend.expires)
    pipe.publish(key, value)


def read_progress(client: redis.Redis, task_ids: list[str],
                  extra_keys: list[str]) -> tuple[dict[str, dict], list]:
    """Progress meta of many tasks, plus other small values, in one round trip (one MGET)."""
    raw = client.mget([result_key(t) for t in task_ids] + extra_keys)
    out: dict[str, dict] = {}
    for task_id, value in zip(task_ids, raw):
        meta = _decode(value)
        if meta is not None:
            out[task_id] = meta
    return out, raw[len(task_ids):]


def read_article_live(client: redis.Redis, task_id: str,
                      article_id: int) -> tuple[Optional[dict], str]:
    """Progress meta and text so far of one article, in one round trip."""
    meta_raw, text = client.mget(result_key(task_id), text_key(article_id))
    return _decode(meta_raw), (text.decode("utf-8", "replace") if text else "")


def _decode(value: Optional[bytes]) -> Optional[dict]:
    if not value:
        return None
    try:
        meta = json.loads(value)
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


def progress_words(meta: Optional[dict]) -> Optional[int]:
    """Words written so far according to a task's meta: its progress, or, if it finished
    between the poll's database read and this read, its result (never a flash back to 0)."""
    if not meta or meta.get("status") not in ("PROGRESS", "SUCCESS"):
        return None
    result = meta.get("result") or {}
    words = result.get("words") if isinstance(result, dict) else None
    return words if isinstance(words, int) else None
