"""OpenAI's Batch API for tests/fakeai.py: ``/v1/files`` and ``/v1/batches``, in memory.

FakeAI holds one :class:`FakeBatchAPI` as ``fake.batches``; its handler passes
every Files/Batches call to :meth:`FakeBatchAPI.handle`.  Batch requests are
kept here, not in ``fake.requests``, so tests that count chat requests are not
disturbed by batches.

Time: each batch has its own clock (seconds since it was created) and its
state is worked out from that clock whenever it is read, so no thread is
needed.  ``validating`` lasts ``validate_seconds``; then one request completes
every ``seconds_per_request``; then ``finalizing`` lasts ``finalize_seconds``.
A cancel spends ``cancel_seconds`` in ``cancelling``.  The settings are read
as the clock passes each step, so changing them affects what is still to come.
``hold()`` freezes clocks and ``advance()`` moves them, for tests that must
decide exactly when a batch moves on.  Timestamps in the batch object are
``created_at`` plus the clock time of each step.

Standard library only.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qs, urlsplit

from tests.fakeai import build_chunks, count_prompt_tokens, extract_title

if TYPE_CHECKING:
    from tests.fakeai import FakeAI

__all__ = ["FakeBatchAPI", "FakeBatch", "FakeFile", "BatchCall", "OUTCOMES"]

ENDPOINT = "/v1/chat/completions"
WINDOW_SECONDS = 24 * 3600
MAX_REQUESTS = 50_000  # OpenAI's limit of requests per batch
OUTCOMES = ("ok", "error", "length", "content_filter", "empty", "no_finish", "refusal")
REFUSAL = "I'm sorry, but I can't help with that request."
_EPS = 1e-9  # clock steps are sums of floats: 0.2 + 3 * 0.01 must reach 0.23
_ROUTE = re.compile(r"/v1/(files|batches)(?:/([^/]+))?(?:/(content|cancel))?")
_UNRUN = {
    "expired": ("batch_expired", "This request could not be executed before the "
                "completion window expired."),
    "cancelled": ("batch_cancelled", "This request was not executed because the batch "
                  "was cancelled."),
}

Reply = tuple[int, Any]  # (HTTP status, JSON payload or the raw bytes of a file)


@dataclass
class BatchCall:
    """One HTTP call to the Batch API.  ``time`` is time.monotonic() on arrival."""

    method: str
    path: str
    time: float
    status: int | None = None


@dataclass
class FakeFile:
    """An uploaded file, or a batch's output or error file."""

    id: str
    filename: str
    purpose: str
    created_at: int
    data: bytes = field(repr=False)
    deleted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": len(self.data),
                "created_at": self.created_at, "filename": self.filename,
                "purpose": self.purpose, "status": "processed"}

    def jsonl(self) -> list[Any]:
        """The non-blank lines parsed as JSON (None where a line is not JSON)."""
        return [_loads(line) for line in self.data.splitlines() if line.strip()]


class _Clock:
    """Seconds since a batch was created, which a test may freeze or move on."""

    def __init__(self, held: bool) -> None:
        self._offset, self._base, self.held = 0.0, time.monotonic(), held

    def now(self) -> float:
        return self._offset + (0.0 if self.held else time.monotonic() - self._base)

    def hold(self) -> None:
        self._offset, self.held = self.now(), True

    def release(self) -> None:
        if self.held:
            self._base, self.held = time.monotonic(), False

    def advance(self, seconds: float) -> None:
        self._offset += seconds


@dataclass
class FakeBatch:
    """One batch: what was asked for, its parsed input, and how far it has got."""

    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    created: float  # time.time() at creation
    lines: list[Any] = field(repr=False)  # the input's non-blank lines, parsed (None: not JSON)
    problems: list[dict[str, Any]] = field(repr=False)  # validation errors, shown once validated
    clock: _Clock = field(repr=False)
    expire_after: int | None = None
    status: str = "validating"
    mark: float = 0.0  # clock time at which the current step started
    stamps: dict[str, float] = field(default_factory=dict)  # "in_progress_at" -> clock time
    total: int = 0
    results: list[tuple[dict[str, Any], bool]] = field(default_factory=list, repr=False)
    output_file_id: str | None = None
    error_file_id: str | None = None

    @property
    def titles(self) -> list[str]:
        """Titles of the input's requests, in order (as ``extract_title`` reads them)."""
        return [extract_title(_messages(line) or []) for line in self.lines]

    @property
    def completed(self) -> int:
        return sum(1 for _, ok in self.results if ok)

    @property
    def failed(self) -> int:
        return sum(1 for _, ok in self.results if not ok)


def _loads(data: bytes | str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def _messages(line: Any) -> list[Any] | None:
    body = line.get("body") if isinstance(line, dict) else None
    messages = body.get("messages") if isinstance(body, dict) else None
    return messages if isinstance(messages, list) else None


def _error(status: int, message: str, error_type: str = "invalid_request_error") -> Reply:
    return status, {"error": {"message": message, "type": error_type, "param": None,
                              "code": None}}


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Form fields by name as (filename, bytes).  The email package reads a
    multipart body once the Content-Type header is put in front of it."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    fields: dict[str, tuple[str | None, bytes]] = {}
    if message.is_multipart():
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if isinstance(name, str):
                fields[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


class FakeBatchAPI:
    """The Files and Batches endpoints, their state, and the knobs tests turn.

    Settings and ``supported`` are plain attributes, safe to set from any thread.
    """

    def __init__(self, fake: FakeAI, validate_seconds: float = 0.2,
                 seconds_per_request: float = 0.01, finalize_seconds: float = 0.2,
                 cancel_seconds: float = 0.2) -> None:
        self._fake = fake
        self._lock = threading.Lock()
        self._ids = itertools.count(1)  # never reset: a stale id must not find a new object
        self._defaults = (validate_seconds, seconds_per_request, finalize_seconds, cancel_seconds)
        self.content_chunk = 64 * 1024  # file content is written in pieces this big
        self.reset(restore_settings=True)

    def reset(self, restore_settings: bool = False) -> None:
        """Forget files, batches, the call log, outcomes and holds; turn the API
        back on.  With ``restore_settings``, also restore the four durations."""
        with self._lock:
            self._files: dict[str, FakeFile] = {}
            self._batches: dict[str, FakeBatch] = {}
            self._calls: list[BatchCall] = []
            self._outcomes: dict[str, tuple[str, int]] = {}
            self._next_expire: int | None = None
            self._hold_new = False
            self.supported = True
            if restore_settings:
                (self.validate_seconds, self.seconds_per_request,
                 self.finalize_seconds, self.cancel_seconds) = self._defaults

    # -- scenarios ----------------------------------------------------------

    def outcome(self, title: str, kind: str = "ok", status: int = 500) -> None:
        """How requests whose title is ``title`` end: one of OUTCOMES.  ``error``
        answers ``status`` (500, or a 4xx such as 400) and goes to the error file."""
        if kind not in OUTCOMES:
            raise ValueError(f"kind must be one of {OUTCOMES}")
        with self._lock:
            self._outcomes[title] = (kind, status)

    def expire_after(self, n: int, batch_id: str | None = None) -> None:
        """Make a batch (by default the next one created) expire once ``n`` of
        its requests have run."""
        with self._lock:
            if batch_id is None:
                self._next_expire = n
            else:
                self._batches[batch_id].expire_after = n

    def hold(self, batch_id: str | None = None) -> None:
        """Freeze one batch's clock, or (no id) every batch's, including batches
        created until release()."""
        self._each_clock(batch_id, _Clock.hold, hold_new=True)

    def release(self, batch_id: str | None = None) -> None:
        """Let a held clock (or, no id, all of them) run on from where it stopped."""
        self._each_clock(batch_id, _Clock.release, hold_new=False)

    def advance(self, seconds: float, batch_id: str | None = None) -> None:
        """Move one batch's clock (or, no id, every batch's) on by ``seconds``."""
        self._each_clock(batch_id, lambda clock: clock.advance(seconds), hold_new=None)

    def _each_clock(self, batch_id: str | None, action: Callable[[_Clock], None],
                    hold_new: bool | None) -> None:
        with self._lock:
            if batch_id is not None:
                action(self._batches[batch_id].clock)
                return
            if hold_new is not None:
                self._hold_new = hold_new
            for batch in self._batches.values():
                action(batch.clock)

    # -- observability ------------------------------------------------------

    @property
    def calls(self) -> list[BatchCall]:
        """Every Files/Batches HTTP call, oldest first."""
        with self._lock:
            return list(self._calls)

    def polls(self, batch_id: str | None = None) -> int:
        """How many ``GET /v1/batches/{id}`` calls there were (for one id, or all)."""
        with self._lock:
            return sum(1 for c in self._calls if c.method == "GET" and (
                c.path == f"/v1/batches/{batch_id}" if batch_id
                else c.path.startswith("/v1/batches/")))

    @property
    def created(self) -> list[FakeBatch]:
        """Every batch created, oldest first, brought up to date."""
        with self._lock:
            for batch in self._batches.values():
                self._advance(batch)
            return list(self._batches.values())

    def batch(self, batch_id: str) -> FakeBatch:
        """One batch, brought up to date (KeyError if unknown)."""
        with self._lock:
            return self._advance(self._batches[batch_id])

    def wait_status(self, batch_id: str, *statuses: str, timeout: float = 5.0) -> FakeBatch:
        """Wait, without HTTP calls, until the batch is in one of ``statuses``."""
        def reached() -> FakeBatch | None:
            batch = self.batch(batch_id)
            return batch if batch.status in statuses else None

        return self._fake.wait_for(reached, timeout, f"batch {batch_id} not in {statuses}")

    @property
    def files(self) -> list[FakeFile]:
        """Every file uploaded or produced, deleted ones included, oldest first."""
        with self._lock:
            return list(self._files.values())

    @property
    def deleted(self) -> list[str]:
        """Ids of the files deleted through the API."""
        with self._lock:
            return [f.id for f in self._files.values() if f.deleted]

    # -- HTTP ---------------------------------------------------------------

    def handle(self, method: str, target: str, content_type: str, body: bytes) -> Reply:
        """Answer one call: (status, JSON payload), or (200, bytes) for file content."""
        path = urlsplit(target).path.rstrip("/")
        query = {k: v[-1] for k, v in parse_qs(urlsplit(target).query).items()}
        call = BatchCall(method, path, time.monotonic())
        with self._lock:
            self._calls.append(call)
            reply = self._route(method, path, query, content_type, body)
            call.status = reply[0]
        return reply

    def _route(self, method: str, path: str, query: dict[str, str], content_type: str,
               body: bytes) -> Reply:
        match = _ROUTE.fullmatch(path)
        if not self.supported or match is None:
            return _error(404, f"Unknown path {path}")
        kind, oid, action = match.groups()
        if kind == "files" and oid is None:
            if method == "POST":
                return self._upload(content_type, body)
            if method == "GET":
                return 200, self._page([f for f in self._files.values() if not f.deleted],
                                       query, FakeFile.to_json)
        elif kind == "files":
            file = self._files.get(oid)
            if file is None or file.deleted:
                return _error(404, f"No such File object: {oid}")
            if method == "GET" and action == "content":
                return 200, file.data
            if method == "GET" and action is None:
                return 200, file.to_json()
            if method == "DELETE" and action is None:
                file.deleted = True
                return 200, {"id": oid, "object": "file", "deleted": True}
        elif oid is None:
            if method == "POST":
                return self._create(body)
            if method == "GET":
                return 200, self._page(
                    [self._advance(b) for b in self._batches.values()], query, self._to_json)
        else:
            batch = self._batches.get(oid)
            if batch is None:
                return _error(404, f"No batch found with id '{oid}'.")
            self._advance(batch)
            if method == "GET" and action is None:
                return 200, self._to_json(batch)
            if method == "POST" and action == "cancel":
                return self._cancel(batch)
        return _error(404, f"Unknown path {method} {path}")

    def _page(self, items: list[Any], query: dict[str, str],
              to_json: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        """Newest first, ``limit`` (default 20) after the id ``after``."""
        items = items[::-1]
        ids = [item.id for item in items]
        start = ids.index(query["after"]) + 1 if query.get("after") in ids else 0
        limit = int(query["limit"]) if query.get("limit", "").isdigit() else 20
        data = [to_json(item) for item in items[start:start + limit]]
        return {"object": "list", "data": data, "has_more": start + limit < len(items),
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None}

    def _upload(self, content_type: str, body: bytes) -> Reply:
        if not content_type.startswith("multipart/form-data"):
            return _error(400, "The request must be multipart/form-data.")
        fields = parse_multipart(content_type, body)
        if "file" not in fields or "purpose" not in fields:
            return _error(400, "'file' and 'purpose' are required.")
        purpose = fields["purpose"][1].decode("utf-8", "replace").strip()
        file = self._add_file(fields["file"][0] or "upload", purpose, fields["file"][1])
        return 200, file.to_json()

    def _add_file(self, filename: str, purpose: str, data: bytes) -> FakeFile:
        file = FakeFile(f"file-fake{next(self._ids):06d}", filename, purpose,
                        int(time.time()), data)
        self._files[file.id] = file
        return file

    # -- batches ------------------------------------------------------------

    def _create(self, body: bytes) -> Reply:
        params = _loads(body or b"{}")
        if not isinstance(params, dict):
            return _error(400, "We could not parse the JSON body of your request.")
        if params.get("endpoint") != ENDPOINT:
            return _error(400, f"Invalid value for 'endpoint': only '{ENDPOINT}' is supported.")
        if params.get("completion_window") != "24h":
            return _error(400, "Invalid value for 'completion_window': only '24h' is supported.")
        file = self._files.get(str(params.get("input_file_id")))
        if file is None or file.deleted:
            return _error(404, f"No such File object: {params.get('input_file_id')}")
        raw = [(n, line) for n, line in enumerate(file.data.splitlines(), 1) if line.strip()]
        lines = [_loads(line) for _, line in raw]
        batch = FakeBatch(
            id=f"batch_fake{next(self._ids):06d}", input_file_id=file.id, endpoint=ENDPOINT,
            completion_window="24h", metadata=params.get("metadata"), created=time.time(),
            lines=lines, problems=self._validate([n for n, _ in raw], lines),
            clock=_Clock(held=self._hold_new), expire_after=self._next_expire,
        )
        self._next_expire = None
        self._batches[batch.id] = batch
        return 200, self._to_json(batch)

    @staticmethod
    def _validate(numbers: list[int], lines: list[Any]) -> list[dict[str, Any]]:
        """The errors that will fail the batch once ``validating`` is over."""
        def problem(code: str, message: str, param: str | None = None,
                    line: int | None = None) -> dict[str, Any]:
            return {"code": code, "message": message, "param": param, "line": line}

        if not lines:
            return [problem("empty_file", "The input file is empty.")]
        if len(lines) > MAX_REQUESTS:
            return [problem("too_many_tasks", f"The input file has {len(lines)} requests; "
                            f"a batch may have at most {MAX_REQUESTS}.")]
        problems, seen = [], set()
        for number, line in zip(numbers, lines):
            custom_id = line.get("custom_id") if isinstance(line, dict) else None
            if not isinstance(line, dict):
                problems.append(problem("invalid_json_line",
                                        "This line is not parseable as valid JSON.", None, number))
            elif not isinstance(custom_id, str) or not custom_id:
                problems.append(problem("missing_required_parameter",
                                        "Missing required parameter: 'custom_id'.",
                                        "custom_id", number))
            elif custom_id in seen:
                problems.append(problem("duplicate_custom_id", "The custom_id for this request "
                                        "is a duplicate of another request.", "custom_id", number))
            elif line.get("url") != ENDPOINT:
                problems.append(problem("url_mismatch", "The provided URL for this request does "
                                        "not match the batch endpoint.", "url", number))
            seen.add(custom_id)
        return problems

    def _cancel(self, batch: FakeBatch) -> Reply:
        if batch.status in ("validating", "in_progress", "finalizing"):
            batch.status, batch.mark = "cancelling", batch.clock.now()
            batch.stamps["cancelling_at"] = batch.mark
        elif batch.status != "cancelling":
            return _error(400, f"Cannot cancel a batch with status '{batch.status}'.")
        return 200, self._to_json(batch)

    def _to_json(self, b: FakeBatch) -> dict[str, Any]:
        def stamp(name: str) -> int | None:
            return int(b.created + b.stamps[name]) if name in b.stamps else None

        errors = {"object": "list", "data": b.problems} if b.status == "failed" else None
        return {
            "id": b.id, "object": "batch", "endpoint": b.endpoint, "errors": errors,
            "input_file_id": b.input_file_id, "completion_window": b.completion_window,
            "status": b.status, "output_file_id": b.output_file_id,
            "error_file_id": b.error_file_id, "created_at": int(b.created),
            "expires_at": int(b.created) + WINDOW_SECONDS,
            **{name: stamp(name) for name in (
                "in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
                "cancelling_at", "cancelled_at")},
            "request_counts": {"total": b.total, "completed": b.completed, "failed": b.failed},
            "metadata": b.metadata,
        }

    def _advance(self, b: FakeBatch) -> FakeBatch:
        """Bring ``b`` up to its clock's time, one step at a time (caller holds the lock)."""
        now = b.clock.now() + _EPS
        while True:
            if b.status == "validating":
                if now < b.mark + self.validate_seconds:
                    return b
                b.mark += self.validate_seconds
                if b.problems:
                    return self._finish(b, "failed")
                b.status, b.total = "in_progress", len(b.lines)
                b.stamps["in_progress_at"] = b.mark
            elif b.status == "in_progress":
                ran = len(b.results)
                if ran >= b.total:
                    b.status = "finalizing"
                    b.stamps["finalizing_at"] = b.mark
                elif (b.expire_after is not None and ran >= b.expire_after
                      or b.mark >= WINDOW_SECONDS):
                    return self._finish(b, "expired")
                elif now < b.mark + self.seconds_per_request:
                    return b
                else:
                    b.mark += self.seconds_per_request
                    b.results.append(self._run(b.lines[ran]))
            elif b.status in ("finalizing", "cancelling"):
                wait = self.finalize_seconds if b.status == "finalizing" else self.cancel_seconds
                if now < b.mark + wait:
                    return b
                b.mark += wait
                return self._finish(b, "completed" if b.status == "finalizing" else "cancelled")
            else:
                return b

    def _finish(self, b: FakeBatch, status: str) -> FakeBatch:
        b.status = status
        b.stamps[f"{status}_at"] = b.mark
        if status == "failed":
            return b
        output = [line for line, ok in b.results if ok]
        errors = [line for line, ok in b.results if not ok]
        if status in _UNRUN:
            code, message = _UNRUN[status]
            for line in b.lines[len(b.results):b.total]:
                errors.append({"id": self._request_id(), "custom_id": line.get("custom_id"),
                               "response": None, "error": {"code": code, "message": message}})
        for lines, kind in ((output, "output"), (errors, "error")):
            if lines:
                data = "".join(json.dumps(line) + "\n" for line in lines).encode()
                file = self._add_file(f"{b.id}_{kind}.jsonl", "batch_output", data)
                setattr(b, f"{kind}_file_id", file.id)
        return b

    def _request_id(self) -> str:
        return f"batch_req_fake{next(self._ids):06d}"

    def _run(self, line: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """One request of a batch: its output-file (or error-file) line and whether it ran ok."""
        ids = self._fake._next_ids()
        body, messages = line.get("body"), _messages(line)
        title = extract_title(messages or [])
        kind, status = self._outcomes.get(title, ("ok", 500))

        def answer(status: int, payload: dict[str, Any]) -> dict[str, Any]:
            return {"id": self._request_id(), "custom_id": line["custom_id"],
                    "response": {"status_code": status, "request_id": ids["request"],
                                 "body": payload}, "error": None}

        if messages is None or kind == "error":
            if messages is None:
                status, message = 400, "'messages' is a required property"
            elif status >= 500:
                message = "The server had an error while processing your request."
            else:
                message = "Invalid request."
            error_type = "server_error" if status >= 500 else "invalid_request_error"
            return answer(status, {"error": {"message": message, "type": error_type,
                                             "param": None, "code": None}}), False

        words, finish = self._fake.words, "stop"
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(max_tokens, int) and 0 <= max_tokens < words:
            words, finish = max_tokens, "length"
        if kind == "length" and finish != "length":
            words, finish = words // 2, "length"
        content: str | None = "".join(build_chunks(title, words, 1))
        refusal = None
        if kind in ("content_filter", "empty"):
            content, words = "", 0
            finish = "content_filter" if kind == "content_filter" else "stop"
        elif kind == "no_finish":
            finish = None
        elif kind == "refusal":
            content, refusal, words = None, REFUSAL, len(REFUSAL.split())
        prompt_tokens = count_prompt_tokens(messages)
        completion = {
            "id": ids["completion"], "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"), "system_fingerprint": "fp_fakeai",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content,
                                                 "refusal": refusal},
                         "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": words,
                      "total_tokens": prompt_tokens + words},
        }
        return answer(200, completion), True
