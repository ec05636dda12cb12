"""The provider's Batch API (OpenAI's /v1/files and /v1/batches), or the offline stand-in
that imitates it, behind the few calls economy mode makes.

Errors come out as BatchAPIError, which says whether trying again later may help.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Optional

import httpx2 as httpx  # what the openai SDK is built on (errors mid-body)
import openai

from ..extensions import get_redis
from ..installation import prefix
from .provider import OFFLINE, OpenAIProvider, Prompt, offline_text

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
PROBE_TIMEOUT = 5.0
WINDOW = "24h"
# Where a provider batch's metadata names the part of a Pressroom batch it holds: how a
# provider batch made just before a crash is found again rather than made twice.
TAG = "pressroom_part"


class BatchAPIError(Exception):
    def __init__(self, message: str, *, retryable: bool, status: Optional[int] = None):
        super().__init__(message)
        self.message, self.retryable, self.status = message, retryable, status

    @property
    def unsupported(self) -> bool:
        """The server has no such route (or no longer knows the batch)."""
        return self.status in (404, 405)


@dataclass(frozen=True)
class RemoteBatch:
    """What the provider says of one of its batches."""
    id: str
    status: str
    total: int
    completed: int
    failed: int
    expires_at: Optional[datetime]
    output_file_id: Optional[str]
    error_file_id: Optional[str]
    errors: Optional[str] = None


def _when(seconds) -> Optional[datetime]:
    if not seconds:
        return None
    return datetime.fromtimestamp(int(seconds), timezone.utc).replace(tzinfo=None)


def client_for(config, provider_label: str):
    """The Batch API of the provider a batch was submitted for."""
    if provider_label == OFFLINE:
        return OfflineBatches(config)
    return OpenAIBatches(config)


def _failure(exc: Exception) -> BatchAPIError:
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        try:
            detail = (exc.body or {}).get("message") if isinstance(exc.body, dict) else None
        except AttributeError:
            detail = None
        message = f"The provider's Batch API answered {status}: {detail or exc.message}"
        return BatchAPIError(message, retryable=status in (408, 409, 429) or status >= 500,
                             status=status)
    # Connection errors, timeouts, and a body that broke off mid-file.
    return BatchAPIError(f"The provider's Batch API could not be reached ({type(exc).__name__}).",
                         retryable=True)


class OpenAIBatches:
    def __init__(self, config):
        self.client = OpenAIProvider(config).client

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (openai.APIError, httpx.HTTPError, httpx.StreamError) as exc:
            raise _failure(exc) from exc

    def probe(self) -> None:
        """Raises BatchAPIError (`unsupported`: 404 or 405) when the server has no Batch
        API. Asked with a short timeout: a page waits for the answer."""
        quick = self.client.with_options(timeout=PROBE_TIMEOUT)
        self._call(quick.files.list, limit=1)
        self._call(quick.batches.list, limit=1)

    def upload(self, path: Path) -> str:
        with path.open("rb") as handle:
            return self._call(self.client.files.create, file=(path.name, handle),
                              purpose="batch").id

    def create(self, file_id: str, tag: str, batch_id: int) -> RemoteBatch:
        return _remote(self._call(self.client.batches.create, input_file_id=file_id,
                                  endpoint=ENDPOINT, completion_window=WINDOW,
                                  metadata={TAG: tag, "pressroom_batch": str(batch_id)}))

    def find(self, tag: str, look_at: int = 300) -> Optional[RemoteBatch]:
        """A recent provider batch tagged `tag` (made just before a crash), or None."""
        def look() -> Optional[RemoteBatch]:
            page = self.client.batches.list(limit=100)
            for n, remote in enumerate(page):  # the SDK fetches later pages as needed
                if (remote.metadata or {}).get(TAG) == tag:
                    return _remote(remote)
                if n >= look_at:
                    break
            return None
        return self._call(look)

    def retrieve(self, provider_batch_id: str) -> RemoteBatch:
        return _remote(self._call(self.client.batches.retrieve, provider_batch_id))

    def cancel(self, provider_batch_id: str) -> RemoteBatch:
        return _remote(self._call(self.client.batches.cancel, provider_batch_id))

    def lines(self, file_id: str) -> Iterator[dict]:
        """A result file's lines, read as they arrive (never the whole file at once)."""
        try:
            with self.client.files.with_streaming_response.content(file_id) as response:
                for n, line in enumerate(response.iter_lines(), 1):
                    if not line.strip():
                        continue
                    try:
                        yield json.loads(line)
                    except ValueError:  # its article gets no result, and can be sent again
                        log.warning("line %d of provider file %s is not JSON; skipped", n,
                                    file_id)
        except (openai.APIError, httpx.HTTPError, httpx.StreamError) as exc:
            raise _failure(exc) from exc

    def delete(self, file_id: str) -> None:
        self._call(self.client.files.delete, file_id)


def _remote(batch) -> RemoteBatch:
    counts = batch.request_counts
    errors = None
    if getattr(batch, "errors", None) and batch.errors.data:
        errors = "; ".join(
            (f"line {e.line}: " if e.line else "") + (e.message or e.code or "invalid")
            for e in batch.errors.data[:5])
    return RemoteBatch(batch.id, batch.status, counts.total if counts else 0,
                       counts.completed if counts else 0, counts.failed if counts else 0,
                       _when(batch.expires_at), batch.output_file_id, batch.error_file_id,
                       errors)


class OfflineBatches:
    """The Batch API imitated without a provider (no key set): a batch validates, writes
    its placeholder articles one after another, finalizes and completes, with a realistic
    pace. Its state is a few Redis keys, so the web and the workers see the same batch."""

    TTL = 2 * 24 * 3600

    def __init__(self, config):
        self.stage = float(config.get("OFFLINE_BATCH_STAGE_SECONDS", 3.0))
        self.per_request = float(config.get("OFFLINE_BATCH_SECONDS_PER_REQUEST", 0.3))

    def _key(self, kind: str, ident: str) -> str:
        return f"{prefix()}offline-batches:{kind}:{ident}"

    def _load(self, kind: str, ident: str) -> dict:
        raw = get_redis().get(self._key(kind, ident))
        if raw is None:
            raise BatchAPIError(f"The offline provider has no {kind} {ident}.", retryable=False)
        return json.loads(raw)

    def _save(self, kind: str, ident: str, value: dict) -> None:
        get_redis().set(self._key(kind, ident), json.dumps(value), ex=self.TTL)

    def probe(self) -> None:
        return None

    def upload(self, path: Path) -> str:
        file_id = f"file-offline-{uuid.uuid4().hex[:16]}"
        requests = []
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                item = json.loads(line)
                requests.append([item["custom_id"], item["body"]["messages"][-1]["content"],
                                 item["body"].get("max_tokens", 1000)])
        self._save("file", file_id, {"requests": requests})
        return file_id

    def create(self, file_id: str, tag: str, batch_id: int) -> RemoteBatch:
        n = len(self._load("file", file_id)["requests"])
        ident = f"batch-offline-{uuid.uuid4().hex[:16]}"
        self._save("batch", ident, {"file": file_id, "n": n, "created": time.time(),
                                    "cancelled": None})
        get_redis().set(self._key("tag", tag), ident, ex=self.TTL)
        return self.retrieve(ident)

    def find(self, tag: str) -> Optional[RemoteBatch]:
        ident = get_redis().get(self._key("tag", tag))
        return self.retrieve(ident.decode()) if ident else None

    def _progress(self, state: dict) -> tuple[str, int]:
        """(status, requests written) at this moment."""
        n, created, cancelled = state["n"], state["created"], state["cancelled"]
        now = time.time()
        written = lambda at: max(0, min(n, int((at - created - self.stage) / self.per_request)))  # noqa: E731
        if cancelled is not None:
            return ("cancelling" if now < cancelled + self.stage else "cancelled",
                    written(cancelled))
        if now < created + self.stage:
            return "validating", 0
        if written(now) < n:
            return "in_progress", written(now)
        if now < created + 2 * self.stage + n * self.per_request:
            return "finalizing", n
        return "completed", n

    def retrieve(self, provider_batch_id: str) -> RemoteBatch:
        state = self._load("batch", provider_batch_id)
        status, done = self._progress(state)
        ended = status in ("completed", "cancelled")
        return RemoteBatch(provider_batch_id, status, state["n"], done, 0,
                           _when(state["created"] + 24 * 3600),
                           f"{provider_batch_id}:output" if ended and done else None,
                           f"{provider_batch_id}:errors" if ended and done < state["n"]
                           else None)

    def cancel(self, provider_batch_id: str) -> RemoteBatch:
        state = self._load("batch", provider_batch_id)
        if self._progress(state)[0] in ("completed", "cancelled"):
            raise BatchAPIError("This batch has already ended.", retryable=False)
        state["cancelled"] = state["cancelled"] or time.time()
        self._save("batch", provider_batch_id, state)
        return self.retrieve(provider_batch_id)

    def lines(self, file_id: str) -> Iterator[dict]:
        provider_batch_id, _, kind = file_id.partition(":")
        state = self._load("batch", provider_batch_id)
        done = self._progress(state)[1]
        requests = self._load("file", state["file"])["requests"]
        for n, (custom_id, user_text, max_tokens) in enumerate(requests):
            if kind == "output" and n < done:
                yield _offline_answer(custom_id, user_text, max_tokens)
            elif kind == "errors" and n >= done:
                yield {"custom_id": custom_id, "response": None,
                       "error": {"code": "batch_cancelled",
                                 "message": "The batch was cancelled before this request ran."}}

    def delete(self, file_id: str) -> None:
        get_redis().delete(self._key("file", file_id))


def _offline_answer(custom_id: str, user_text: str, max_tokens: int) -> dict:
    lines = user_text.splitlines() or [""]
    title = next((line.partition(":")[2].strip() for line in lines
                  if line.lower().startswith("title:")), lines[0][:200])
    # The prompt's words, from its max_tokens (Prompt.max_tokens is 2 a word + 200).
    words = max(20, (int(max_tokens) - 200) // 2)
    text = offline_text(Prompt(title=title, words=words, user_text=user_text))
    return {"custom_id": custom_id, "error": None, "response": {"status_code": 200, "body": {
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": len(user_text.split()),
                  "completion_tokens": len(text.split())}}}}
