"""The hand-rolled server-sent-events reader: every way a real provider's body may be cut
into network reads, every legal line ending, and what a chat-completion stream carries."""
from __future__ import annotations

import json

import orjson
import pytest

from webapp.generation import sse
from webapp.generation.provider import Stream


def _chunk(content=None, finish=None, **extra) -> dict:
    delta = {} if content is None else {"content": content}
    return {"id": "c1", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


def _body(events: list, newline: str = "\n", done: bool = True) -> bytes:
    out = "".join(f"data: {json.dumps(e)}{newline}{newline}" for e in events)
    if done:
        out += f"data: [DONE]{newline}{newline}"
    return out.encode()


ANSWER = [_chunk(""), _chunk("Hello, "), _chunk("wide "), _chunk("world — ünïcode 中文"),
          _chunk(finish="stop"),
          {"id": "c1", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 5}}]


def _read(chunks) -> tuple[str, Stream]:
    stream = Stream(deltas=iter(()), close=lambda: None)
    return "".join(sse.read(chunks, stream)), stream


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_every_split_of_the_body_reads_the_same(newline):
    body = _body(ANSWER, newline)
    whole, stream = _read([body])
    assert whole == "Hello, wide world — ünïcode 中文"
    assert stream.finish_reason == "stop"
    assert (stream.usage.prompt_tokens, stream.usage.completion_tokens) == (12, 5)
    # Network reads end anywhere: inside a UTF-8 sequence, between CR and LF, mid-field.
    for cut in range(1, len(body)):
        assert _read([body[:cut], body[cut:]])[0] == whole, cut
    assert _read([body[i:i + 1] for i in range(len(body))])[0] == whole


def test_comments_other_fields_and_multiline_data():
    body = (b": keep-alive\n\nid: 7\nretry: 1000\n"
            b'data: {"choices": [{"delta": {"content": "a\\nb"},\n'
            b'data:  "finish_reason": "length"}]}\n\n')
    text, stream = _read([body])
    assert text == "a\nb" and stream.finish_reason == "length"


def test_an_event_cut_off_by_the_end_of_the_body_is_not_read():
    body = _body([_chunk("whole ")], done=False) + b'data: {"choices": [{"delta": {"content"'
    text, stream = _read([body])
    assert text == "whole " and stream.finish_reason is None


def test_done_stops_reading():
    body = _body([_chunk("one ", finish="stop")]) + _body([_chunk("after done")], done=False)
    assert _read([body])[0] == "one "


def test_refusal_is_collected_apart_from_the_text():
    refusal = {"choices": [{"delta": {"refusal": "I can't "}, "finish_reason": None}]}
    more = {"choices": [{"delta": {"refusal": "write that."}, "finish_reason": "stop"}]}
    text, stream = _read([_body([refusal, more])])
    assert text == "" and stream.refusal == "I can't write that."


@pytest.mark.parametrize("body", [
    b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n',
    b'event: error\ndata: {"message": "overloaded"}\n\n',
])
def test_an_error_in_the_stream_is_raised(body):
    with pytest.raises(sse.StreamError) as raised:
        _read([_body([_chunk("partial ")], done=False) + body])
    assert raised.value.message == "overloaded"


def test_an_event_that_is_not_json_raises_a_value_error():
    with pytest.raises(ValueError):
        _read([b"data: {not json\n\n"])
    assert issubclass(orjson.JSONDecodeError, ValueError)
