"""Reading a chat-completion stream straight from the HTTP body.

The SDK turns every server-sent event into a pydantic model (about 0.3 ms of CPU each); a
real article streams about a thousand of them. Here the SDK still makes the request (so
its status errors, timeouts and retries are unchanged) and this module reads the body:
server-sent events split by hand, each event's JSON decoded with orjson, and only the
three things Pressroom uses taken out of it — the text, the finish reason, the usage.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Optional

import orjson

DONE = b"[DONE]"


class StreamError(Exception):
    """An error the provider sent inside the stream (an `error` event or object)."""

    def __init__(self, message: str, body: object):
        super().__init__(message)
        self.message, self.body = message, body


def events(chunks: Iterable[bytes]) -> Iterator[tuple[Optional[bytes], bytes]]:
    """(event name or None, data) of each server-sent event in a byte stream.

    Lines end in LF, CRLF or CR (all three are legal); a blank line ends an event; lines
    starting with ':' are comments (keep-alives); `id:` and `retry:` are of no use here.
    An event cut off by the end of the body is not yielded: it was never finished.
    """
    pending = b""
    name: Optional[bytes] = None
    data: list[bytes] = []
    for chunk in chunks:
        if not chunk:
            continue
        pending += chunk
        if b"\r" in pending:
            # A CR at the very end may be the first half of a CRLF: wait for the next chunk.
            keep_cr = pending.endswith(b"\r")
            body = pending[:-1] if keep_cr else pending
            lines = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
            pending = lines.pop() + (b"\r" if keep_cr else b"")
        else:
            lines = pending.split(b"\n")
            pending = lines.pop()
        for line in lines:
            if not line:
                if data:
                    yield name, b"\n".join(data)
                name, data = None, []
                continue
            field, sep, value = line.partition(b":")
            if not field:
                continue  # a comment
            if sep and value.startswith(b" "):
                value = value[1:]
            if field == b"data":
                data.append(value)
            elif field == b"event":
                name = value


def read(chunks: Iterable[bytes], result) -> Iterator[str]:
    """The text deltas of a chat-completion stream; fills result.finish_reason,
    result.usage's two counts and result.refusal as they arrive.

    Raises StreamError for an error the provider reports in the stream and
    orjson.JSONDecodeError (a ValueError) for an event that is not JSON.
    """
    for name, data in events(chunks):
        if data.startswith(DONE):
            return
        obj = orjson.loads(data)
        if name == b"error" or (isinstance(obj, dict) and obj.get("error")):
            error = obj.get("error", obj) if isinstance(obj, dict) else obj
            message = error.get("message") if isinstance(error, dict) else None
            raise StreamError(str(message or "The provider sent an error mid-answer."), error)
        usage = obj.get("usage")
        if usage:
            result.usage.prompt_tokens = usage.get("prompt_tokens") or 0
            result.usage.completion_tokens = usage.get("completion_tokens") or 0
        for choice in obj.get("choices") or ():
            if choice.get("finish_reason"):
                result.finish_reason = choice["finish_reason"]
            delta = choice.get("delta")
            if not delta:
                continue
            if delta.get("refusal"):
                result.refusal += delta["refusal"]
            content = delta.get("content")
            if content:
                yield content
