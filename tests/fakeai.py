"""A local, OpenAI-compatible HTTP server for tests and benchmarks.

FakeAI stands in for ``https://api.openai.com/v1``: point an ``openai.OpenAI``
client at ``fake.base_url`` and it answers ``POST /v1/chat/completions``
(streaming and non-streaming) and ``GET /v1/models``, and the Batch API's
``/v1/files`` and ``/v1/batches`` through ``fake.batches`` (tests/fakeai_batches.py).

The generated "article" is Markdown: ``# <title>`` followed by ``words`` words
of filler paragraphs.  The title comes from the last user message: a line
``Title: <x>`` if there is one, otherwise the message's first line.  A test
can give one title a text of its own instead (``fake.answer(title, text)``),
e.g. an answer in Chinese.

Settings (``latency``, ``chunks``, ``words``) can be changed while it runs, and
faults (rate limits, server errors, hangs, cut streams, ...) can be queued,
made the default, or applied to a random fraction of requests.  Every chat
completion request is logged as a :class:`RequestRecord` in ``fake.requests``.

In-process use::

    with FakeAI(latency=0.2) as fake:
        client = openai.OpenAI(base_url=fake.base_url, api_key="test")
        fake.script(Fault.rate_limit(retry_after=0))
        ...

As a separate process (prints the base URL as the first stdout line)::

    python -m tests.fakeai --port 0 --latency 0.5 --fail-429-rate 0.1

Standard library only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from tests.fakeserver import (DISCONNECT_ERRORS, ClientGone, FakeHandler, FakeHTTPServer,
                              FakeServer, Stopping)

if TYPE_CHECKING:
    from tests.fakeai_batches import FakeBatchAPI

__all__ = ["FakeAI", "Fault", "RequestRecord", "DEFAULT_MODELS"]

DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o")


# --------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------


@dataclass
class Fault:
    """Something to do instead of (or to) a normal answer.

    ``kind`` decides the behaviour:

    * any fault with ``status`` set (rate_limit, quota, server_error,
      unauthorized, not_found_model, bad_request, error): answer with that
      status, ``headers`` and an OpenAI-shaped error body, without delay;
    * ``hang``: read the request, send nothing for ``seconds``, then close;
    * ``cut_stream``: start answering, close the connection after
      ``after_chunks`` content chunks (no finish chunk, no ``[DONE]``);
    * ``early_end``: after ``after_chunks`` content chunks, end the HTTP
      response *cleanly* (the chunked body's terminator is sent) with no
      finish chunk and no ``[DONE]``: the SDK raises nothing;
    * ``malformed_chunk``: after ``after_chunks`` content chunks, send one
      event whose data is not JSON, then carry on as normal;
    * ``silence``: after ``after_chunks`` content chunks, send nothing for
      ``seconds`` (the connection stays open), then carry on as normal;
    * ``finish``: normal text, but ``finish_reason`` is ``finish_reason``;
    * ``empty``: a normal 200 answer whose content is ``""``;
    * ``linger``: a whole streamed answer, ``[DONE]`` and all, after which the
      body is held open for ``seconds`` before its terminating chunk (a
      server or proxy slow to end the response).

    Use the constructors below rather than building these by hand.
    """

    kind: str
    status: int | None = None
    headers: dict[str, str] | None = None
    after_chunks: int | None = None
    message: str | None = None
    error_type: str | None = None
    error_code: str | None = None
    seconds: float | None = None
    finish_reason: str | None = None

    @classmethod
    def error(
        cls,
        status: int,
        message: str = "Error",
        error_type: str | None = "invalid_request_error",
        error_code: str | None = None,
        headers: dict[str, str] | None = None,
        kind: str = "error",
    ) -> Fault:
        """Any HTTP error answer with an OpenAI-shaped body."""
        return cls(
            kind=kind,
            status=status,
            headers=dict(headers or {}),
            message=message,
            error_type=error_type,
            error_code=error_code,
        )

    @classmethod
    def rate_limit(cls, retry_after: float = 1.0) -> Fault:
        """429 with ``Retry-After`` (seconds) and ``retry-after-ms`` headers."""
        return cls.error(
            429,
            message=(
                "Rate limit reached for requests per min (RPM): Limit 3, Used 3, "
                f"Requested 1. Please try again in {retry_after:g}s."
            ),
            error_type="requests",
            error_code="rate_limit_exceeded",
            headers={
                "Retry-After": f"{retry_after:g}",
                "retry-after-ms": str(int(round(retry_after * 1000))),
            },
            kind="rate_limit",
        )

    @classmethod
    def quota(cls) -> Fault:
        """429 insufficient_quota: retrying will not help."""
        return cls.error(
            429,
            message=(
                "You exceeded your current quota, please check your plan and "
                "billing details."
            ),
            error_type="insufficient_quota",
            error_code="insufficient_quota",
            kind="quota",
        )

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        return cls.error(
            status,
            message="The server had an error while processing your request. Sorry about that!",
            error_type="server_error",
            error_code=None,
            kind="server_error",
        )

    @classmethod
    def unauthorized(cls) -> Fault:
        return cls.error(
            401,
            message=(
                "Incorrect API key provided. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
            ),
            error_type="invalid_request_error",
            error_code="invalid_api_key",
            kind="unauthorized",
        )

    @classmethod
    def not_found_model(cls) -> Fault:
        # message=None: filled in with the requested model at answer time.
        return cls(
            kind="not_found_model",
            status=404,
            headers={},
            message=None,
            error_type="invalid_request_error",
            error_code="model_not_found",
        )

    @classmethod
    def bad_request(cls, message: str = "Invalid request.") -> Fault:
        return cls.error(
            400,
            message=message,
            error_type="invalid_request_error",
            error_code=None,
            kind="bad_request",
        )

    @classmethod
    def hang(cls, seconds: float = 30.0) -> Fault:
        """Accept the request, send nothing for ``seconds``, then close.

        Ends early if the client disconnects or the server is stopped.
        """
        return cls(kind="hang", seconds=seconds)

    @classmethod
    def cut_stream(cls, after_chunks: int = 3) -> Fault:
        """Close the connection after ``after_chunks`` content chunks.

        For a non-stream request, half of the JSON body is sent before closing.
        """
        return cls(kind="cut_stream", after_chunks=after_chunks)

    @classmethod
    def early_end(cls, after_chunks: int = 3) -> Fault:
        """End the response cleanly after ``after_chunks`` content chunks, with no
        finish reason and no ``[DONE]`` (a proxy or server that gave up quietly)."""
        return cls(kind="early_end", after_chunks=after_chunks)

    @classmethod
    def malformed_chunk(cls, after_chunks: int = 2) -> Fault:
        """One undecodable event after ``after_chunks`` content chunks."""
        return cls(kind="malformed_chunk", after_chunks=after_chunks)

    @classmethod
    def silence(cls, seconds: float, after_chunks: int = 2) -> Fault:
        """A long pause mid-stream, after ``after_chunks`` content chunks."""
        return cls(kind="silence", after_chunks=after_chunks, seconds=seconds)

    @classmethod
    def finish(cls, reason: str = "length") -> Fault:
        """Normal text with ``finish_reason`` = reason ('length', 'content_filter')."""
        return cls(kind="finish", finish_reason=reason)

    @classmethod
    def empty(cls) -> Fault:
        """A 200 answer whose content is the empty string."""
        return cls(kind="empty")

    @classmethod
    def linger(cls, seconds: float) -> Fault:
        """A whole answer whose HTTP body stays open ``seconds`` after ``[DONE]``."""
        return cls(kind="linger", seconds=seconds)


# --------------------------------------------------------------------------
# Request log
# --------------------------------------------------------------------------


@dataclass
class RequestRecord:
    """One ``POST /v1/chat/completions`` request.  Times are time.monotonic()."""

    start: float
    model: str | None
    title: str | None
    stream: bool
    fault: str | None  # Fault.kind, or None for a normal answer
    end: float | None = None  # None while in flight
    status: int | None = None  # None if no status line was sent (hang)
    client_disconnected: bool = False
    disconnected_at: float | None = None
    chunks_sent: int = 0  # content chunks written (stream only)
    client_port: int | None = None  # the client's end of the connection: reuse shows here
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    max_tokens: int | None = None
    messages: list[Any] = field(default_factory=list, repr=False)
    body: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def done(self) -> bool:
        return self.end is not None

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start


# --------------------------------------------------------------------------
# Text generation helpers
# --------------------------------------------------------------------------

_VOCAB = (
    "the press room filed a story about local news while editors checked "
    "every fact and source before the evening deadline so readers could "
    "trust what they read in print and online across the city today"
).split()
_WORDS_PER_SENTENCE = 10
_WORDS_PER_PARAGRAPH = 40
_TITLE_LINE = re.compile(r"^\s*title\s*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


def _content_text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a parts list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return ""


def extract_title(messages: list[Any]) -> str:
    """Title from the last user message: a ``Title: x`` line, else its first line."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            text = _content_text(message.get("content"))
            match = _TITLE_LINE.search(text)
            if match:
                return match.group(1)
            for line in text.splitlines():
                if line.strip():
                    return line.strip().lstrip("#").strip()
            return ""
    return ""


def count_prompt_tokens(messages: list[Any]) -> int:
    return sum(
        len(_content_text(m.get("content")).split()) for m in messages if isinstance(m, dict)
    )


def _filler_pieces(words: int) -> list[str]:
    """``words`` filler words, each with its trailing separator.

    Joining the pieces gives paragraphs of sentences; splitting the list gives
    stream chunks that concatenate back to exactly the same text.
    """
    pieces = []
    for i in range(words):
        word = _VOCAB[i % len(_VOCAB)]
        if i % _WORDS_PER_SENTENCE == 0:
            word = word.capitalize()
        last = i == words - 1
        if last or i % _WORDS_PER_SENTENCE == _WORDS_PER_SENTENCE - 1:
            word += "."
        if last:
            sep = ""
        elif (i + 1) % _WORDS_PER_PARAGRAPH == 0:
            sep = "\n\n"
        else:
            sep = " "
        pieces.append(word + sep)
    return pieces


def build_chunks(title: str, words: int, chunks: int) -> list[str]:
    """The article split into exactly ``chunks`` pieces (some may be empty)."""
    pieces = _filler_pieces(words)
    size, extra = divmod(len(pieces), chunks)
    out, pos = [], 0
    for i in range(chunks):
        n = size + (1 if i < extra else 0)
        out.append("".join(pieces[pos : pos + n]))
        pos += n
    header = f"# {title}\n\n" if words else f"# {title}\n"
    out[0] = header + out[0]
    return out


# --------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------


class _Server(FakeHTTPServer):
    # Benchmarks open many connections at once; a smaller backlog
    # would make bursts see connection resets or SYN-retry delays.
    request_queue_size = 256
    fake: FakeAI


class _Handler(FakeHandler):
    server_version = "FakeAI/1.0"
    server: _Server

    # -- routing ---------------------------------------------------------

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        fake = self.server.fake
        if path.startswith(_BATCH_PATHS):
            self._batch_api("GET")
        elif path == "/v1/models":
            created = int(time.time())
            data = [
                {"id": m, "object": "model", "created": created, "owned_by": "fakeai"}
                for m in fake.models
            ]
            self._send_json(200, {"object": "list", "data": data})
        elif path.startswith("/v1/models/"):
            model = path[len("/v1/models/") :]
            if model in fake.models:
                self._send_json(
                    200,
                    {"id": model, "object": "model", "created": int(time.time()),
                     "owned_by": "fakeai"},
                )
            else:
                self._send_error_body(
                    404, _model_not_found_message(model),
                    "invalid_request_error", "model_not_found",
                )
        else:
            self._send_error_body(404, f"Unknown path {path}", "invalid_request_error", None)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        body_bytes = self._read_body()
        if path.startswith(_BATCH_PATHS):
            self._batch_api("POST", body_bytes)
            return
        if path != "/v1/chat/completions":
            self._send_error_body(404, f"Unknown path {path}", "invalid_request_error", None)
            return
        try:
            body = json.loads(body_bytes or b"{}")
        except ValueError:
            self._send_error_body(
                400, "We could not parse the JSON body of your request.",
                "invalid_request_error", None,
            )
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._send_error_body(
                400, "'messages' is a required property", "invalid_request_error", None,
            )
            return
        self._chat_completion(body)

    def do_DELETE(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        body_bytes = self._read_body()
        if path.startswith(_BATCH_PATHS):
            self._batch_api("DELETE", body_bytes)
        else:
            self._send_error_body(404, f"Unknown path {path}", "invalid_request_error", None)

    def _batch_api(self, method: str, body: bytes = b"") -> None:
        """Files and Batches calls are answered by fake.batches (tests/fakeai_batches.py)."""
        batches = self.server.fake.batches
        status, payload = batches.handle(
            method, self.path, self.headers.get("Content-Type", ""), body,
        )
        request_id = self.server.fake._next_ids()["request"]
        try:
            if not isinstance(payload, bytes):
                self._send_json(status, payload, request_id=request_id)
                return
            # File content is sent in pieces: an output file can be tens of MB.
            self._send_head(status, "application/octet-stream",
                            {"Content-Length": str(len(payload))}, request_id)
            step = batches.content_chunk
            for start in range(0, len(payload), step):
                self._write(payload[start : start + step])
        except (ClientGone, Stopping):
            self.close_connection = True

    # -- chat completions -------------------------------------------------

    def _chat_completion(self, body: dict[str, Any]) -> None:
        fake = self.server.fake
        messages = body["messages"]
        model = body.get("model")
        stream = bool(body.get("stream"))
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        record = RequestRecord(
            start=time.monotonic(),
            model=model,
            title=extract_title(messages),
            stream=stream,
            fault=None,
            prompt_tokens=count_prompt_tokens(messages),
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            messages=messages,
            body=body,
            client_port=self.client_address[1] if self.client_address else None,
        )
        # Choose the fault, snapshot settings, log the record and count it as
        # in flight, all in one step so tests never see a half-registered request.
        fault, settings = fake._begin(record)
        with self._answering(record):
            self._answer(record, fault, settings)

    def _answer(self, record: RequestRecord, fault: Fault | None, settings: dict[str, Any]) -> None:
        fake = self.server.fake
        latency, chunks, words = settings["latency"], settings["chunks"], settings["words"]

        if fault is not None and fault.status is not None:
            message = fault.message
            if message is None and fault.kind == "not_found_model":
                message = _model_not_found_message(record.model or "")
            self._send_error_body(
                fault.status, message or "Error", fault.error_type, fault.error_code,
                headers=fault.headers, record=record,
            )
            return

        if fault is not None and fault.kind == "hang":
            # Nothing at all is sent; the client sees its read timeout, or a
            # connection closed without a response if it waits longer.
            self._pause_until(time.monotonic() + (fault.seconds or 0.0))
            self.close_connection = True
            return

        finish_reason = "stop"
        answer = settings["answer"]
        if answer is not None:
            # A text given by the test: whole, with a token a character (as Chinese is).
            words = len(answer)
        elif record.max_tokens is not None and 0 <= record.max_tokens < words:
            words, finish_reason = record.max_tokens, "length"
        if fault is not None and fault.kind == "finish":
            finish_reason = fault.finish_reason or "length"
        if fault is not None and fault.kind == "empty":
            pieces, words = [""], 0
        elif answer is not None:
            size = -(-len(answer) // chunks) or 1
            pieces = [answer[i:i + size] for i in range(0, len(answer), size)] or [""]
        else:
            pieces = build_chunks(record.title or "", words, chunks)
        record.completion_tokens = words
        record.finish_reason = finish_reason
        usage = {
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": words,
            "total_tokens": record.prompt_tokens + words,
        }
        ids = fake._next_ids()
        cut_after = fault.after_chunks if fault is not None and fault.kind == "cut_stream" else None

        if record.stream:
            include_usage = bool((record.body.get("stream_options") or {}).get("include_usage"))
            self._stream(record, pieces, latency, finish_reason, usage, include_usage, ids, fault)
        else:
            self._pause_until(record.start + latency)
            payload = {
                "id": ids["completion"],
                "object": "chat.completion",
                "created": int(time.time()),
                "model": record.model,
                "system_fingerprint": "fp_fakeai",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": "".join(pieces),
                            "refusal": None,
                        },
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": usage,
            }
            if cut_after is not None:
                # Promise the full length, send half, close: the client sees a
                # truncated body.
                data = json.dumps(payload).encode()
                self._send_head(
                    200, "application/json", {"Content-Length": str(len(data))}, ids["request"],
                )
                record.status = 200
                self._write(data[: len(data) // 2])
                record.finish_reason = None
                self.close_connection = True
                return
            self._send_json(200, payload, request_id=ids["request"], record=record)

    def _stream(
        self,
        record: RequestRecord,
        pieces: list[str],
        latency: float,
        finish_reason: str,
        usage: dict[str, int],
        include_usage: bool,
        ids: dict[str, str],
        fault: Fault | None,
    ) -> None:
        kind = fault.kind if fault is not None else None
        at = fault.after_chunks if fault is not None else None
        self._send_head(
            200, "text/event-stream; charset=utf-8",
            {"Transfer-Encoding": "chunked", "Cache-Control": "no-cache"}, ids["request"],
        )
        record.status = 200
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            c: dict[str, Any] = {
                "id": ids["completion"],
                "object": "chat.completion.chunk",
                "created": created,
                "model": record.model,
                "system_fingerprint": "fp_fakeai",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish},
                ],
            }
            if include_usage:
                c["usage"] = None  # the real API sends usage: null until the last chunk
            return c

        n = len(pieces)
        shift = 0.0  # a silence pushes the rest of the schedule back
        for i, text in enumerate(pieces):
            if kind in ("cut_stream", "early_end") and i >= at:
                break
            if i == at and kind == "malformed_chunk":
                self._write_chunk(b'data: {"id": "' + ids["completion"].encode()
                                  + b'", "choices": [{"delta": {"content": "brok\n\n')
            if i == at and kind == "silence":
                self._pause_until(time.monotonic() + (fault.seconds or 0.0))
                shift = fault.seconds or 0.0
            # Absolute schedule (not sleep(latency/n) each time) so the total
            # does not drift upwards; first chunk at latency/n after the start.
            self._pause_until(record.start + shift + latency * (i + 1) / n)
            delta = {"role": "assistant", "content": text} if i == 0 else {"content": text}
            self._send_event(chunk(delta, None))
            record.chunks_sent += 1
        if kind == "cut_stream":
            # Close without the terminating zero-length chunk: the client gets
            # "incomplete chunked read", like a dropped upstream connection.
            record.finish_reason = None
            self.close_connection = True
            return
        if kind == "early_end":
            # A clean end of the body: nothing at the HTTP level says it was cut.
            record.finish_reason = None
            self._write(b"0\r\n\r\n")
            return
        self._send_event(chunk({}, finish_reason))
        if include_usage:
            final = chunk({}, None)
            final["choices"] = []
            final["usage"] = usage
            self._send_event(final)
        self._write_chunk(b"data: [DONE]\n\n")
        if kind == "linger":
            self._pause_until(time.monotonic() + (fault.seconds or 0.0))
        self._write(b"0\r\n\r\n")

    # -- low-level writing ------------------------------------------------

    def _send_head(
        self, status: int, content_type: str, headers: dict[str, str] | None, request_id: str | None
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            if request_id:
                self.send_header("x-request-id", request_id)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
        except DISCONNECT_ERRORS as exc:
            raise ClientGone() from exc

    def _send_json(
        self,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
        request_id: str | None = None,
        record: RequestRecord | None = None,
    ) -> None:
        data = json.dumps(payload).encode()
        all_headers = {"Content-Length": str(len(data))}
        all_headers.update(headers or {})
        if record is not None:
            record.status = status
        self._send_head(status, "application/json", all_headers, request_id)
        self._write(data)

    def _send_error_body(
        self,
        status: int,
        message: str,
        error_type: str | None,
        code: str | None,
        headers: dict[str, str] | None = None,
        record: RequestRecord | None = None,
    ) -> None:
        payload = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
        self._send_json(
            status, payload, headers=headers,
            request_id=self.server.fake._next_ids()["request"], record=record,
        )

    def _send_event(self, payload: dict[str, Any]) -> None:
        self._write_chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")

    def _write_chunk(self, data: bytes) -> None:
        # One HTTP chunk per SSE event.  wfile is unbuffered, so each write
        # goes straight to the socket; the client sees events as they happen.
        self._write(b"%X\r\n%s\r\n" % (len(data), data))

    def _write(self, data: bytes) -> None:
        if self.server.fake._stopping.is_set():
            raise Stopping()
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except DISCONNECT_ERRORS as exc:
            raise ClientGone() from exc


_BATCH_PATHS = ("/v1/files", "/v1/batches")


def _model_not_found_message(model: str) -> str:
    return f"The model `{model}` does not exist or you do not have access to it."


# --------------------------------------------------------------------------
# The public object
# --------------------------------------------------------------------------


class FakeAI(FakeServer[RequestRecord]):
    """An OpenAI-compatible server on 127.0.0.1, run in a daemon thread.

    All public attributes are safe to read and set from other threads.
    """

    _server_class = _Server
    _handler_class = _Handler

    def __init__(
        self,
        latency: float = 0.0,
        chunks: int = 10,
        words: int = 120,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        seed: int = 0,
        models: tuple[str, ...] | list[str] = DEFAULT_MODELS,
    ) -> None:
        super().__init__(host, port, threading.Lock())
        self._seed = seed
        self.models = tuple(models)
        self._defaults = {"latency": latency, "chunks": chunks, "words": words}
        self._latency = self._chunks = self._words = None  # set just below
        self.latency, self.chunks, self.words = latency, chunks, words
        self._ids = itertools.count(1)
        self._reset_state()
        # Imported here: fakeai_batches uses this module's text helpers.
        from tests.fakeai_batches import FakeBatchAPI

        self.batches: FakeBatchAPI = FakeBatchAPI(self)

    def _reset_state(self) -> None:
        # Caller holds the lock (or we are in __init__).
        self._clear_log()
        self._script: list[Fault] = []
        self._answers: dict[str, str] = {}
        self._default_fault: Fault | None = None
        self._fail_rate = 0.0
        self._fail_fault: Fault | None = None
        self._random = random.Random(self._seed)

    # -- lifecycle (start, stop, port: FakeServer) ------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}/v1"

    def _banner(self) -> Iterable[str]:
        return [self.base_url]

    # -- settings ---------------------------------------------------------

    @property
    def latency(self) -> float:
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, value: float) -> None:
        if value < 0:
            raise ValueError("latency must be >= 0")
        with self._lock:
            self._latency = float(value)

    @property
    def chunks(self) -> int:
        with self._lock:
            return self._chunks

    @chunks.setter
    def chunks(self, value: int) -> None:
        if value < 1:
            raise ValueError("chunks must be >= 1")
        with self._lock:
            self._chunks = int(value)

    @property
    def words(self) -> int:
        with self._lock:
            return self._words

    @words.setter
    def words(self, value: int) -> None:
        if value < 0:
            raise ValueError("words must be >= 0")
        with self._lock:
            self._words = int(value)

    # -- faults -----------------------------------------------------------

    def script(self, *faults: Fault | None) -> None:
        """Queue faults, used one per chat completion request, in arrival
        order.  ``None`` in the queue means "answer this one normally"."""
        with self._lock:
            self._script.extend(faults)

    def answer(self, title: str, text: str) -> None:
        """Answer requests for ``title`` with ``text`` (streamed in ``chunks``
        pieces) instead of filler, until reset()."""
        with self._lock:
            self._answers[title] = text

    def set_default_fault(self, fault: Fault | None) -> None:
        """Fault for every request not covered by script() or fail_rate()."""
        with self._lock:
            self._default_fault = fault

    def fail_rate(self, rate: float, fault: Fault | None = None, seed: int | None = None) -> None:
        """Apply ``fault`` (default: a 429 with Retry-After: 0) to a random
        ``rate`` fraction of requests.  The random generator is seeded (with
        ``seed``, else the constructor's seed) so runs repeat.  rate=0 turns it off."""
        if not 0 <= rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        with self._lock:
            self._fail_rate = rate
            self._fail_fault = fault if fault is not None else Fault.rate_limit(retry_after=0)
            self._random = random.Random(self._seed if seed is None else seed)

    # -- observability (also requests, in_flight, wait_for: FakeServer) ---

    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    def requests_for(self, title: str) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self._requests if r.title == title]

    def reset(self, restore_settings: bool = False) -> None:
        """Clear the log, queued/default/random faults and counters.  With
        ``restore_settings``, also put latency/chunks/words back to the
        constructor values."""
        with self._lock:
            self._reset_state()
            if restore_settings:
                self._latency = float(self._defaults["latency"])
                self._chunks = int(self._defaults["chunks"])
                self._words = int(self._defaults["words"])
            self._changed.notify_all()
        self.batches.reset(restore_settings)  # outside our lock: it takes its own, then ours

    # -- called by the handler -------------------------------------------

    def _begin(self, record: RequestRecord) -> tuple[Fault | None, dict[str, Any]]:
        with self._lock:
            if self._script:
                fault = self._script.pop(0)
            elif self._fail_rate and self._random.random() < self._fail_rate:
                fault = self._fail_fault
            else:
                fault = self._default_fault
            record.fault = fault.kind if fault is not None else None
            self._log(record)
            settings = {"latency": self._latency, "chunks": self._chunks, "words": self._words,
                        "answer": self._answers.get(record.title)}
            self._changed.notify_all()
            return fault, settings

    def _mark_disconnected(self, record: RequestRecord) -> None:
        with self._lock:
            record.client_disconnected = True
            record.disconnected_at = time.monotonic()
            self._changed.notify_all()

    def _next_ids(self) -> dict[str, str]:
        n = next(self._ids)  # itertools.count is atomic under the GIL
        return {"completion": f"chatcmpl-fake{n:06d}", "request": f"req_fake{n:06d}"}


# --------------------------------------------------------------------------
# Command line: python -m tests.fakeai --port 0 --latency 0.5
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakeai", description=__doc__.split("\n")[0],
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port (default)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per completion")
    parser.add_argument("--chunks", type=int, default=10, help="content chunks per stream")
    parser.add_argument("--words", type=int, default=120, help="filler words per article")
    parser.add_argument(
        "--fail-429-rate", type=float, default=0.0,
        help="fraction of requests answered 429 with Retry-After: 0",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    fake = FakeAI(
        latency=args.latency, chunks=args.chunks, words=args.words,
        host=args.host, port=args.port, seed=args.seed,
    )
    if args.fail_429_rate:
        fake.fail_rate(args.fail_429_rate, Fault.rate_limit(retry_after=0))
    fake.serve_until_interrupted()


if __name__ == "__main__":
    main()
