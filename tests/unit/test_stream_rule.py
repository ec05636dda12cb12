"""The completeness rule for streamed answers, on the providers' own stream objects."""
from __future__ import annotations

import pytest

from webapp.generation.provider import (OfflineProvider, Prompt, ProviderError, Stream,
                                        require_finish)


def _prompt() -> Prompt:
    return Prompt(title="Quiet libraries", words=60, user_text="Title: Quiet libraries")


def test_a_stream_without_a_finish_reason_is_cut_off():
    stream = Stream(deltas=iter(["half an ", "answer"]), close=lambda: None)
    assert "".join(stream) == "half an answer"
    with pytest.raises(ProviderError) as raised:
        require_finish(stream)
    err = raised.value
    assert err.kind == "cut_off" and err.retryable
    assert err.label == "The answer was cut off"
    assert err.message.startswith("The answer was cut off: ")


def test_a_stream_with_any_finish_reason_is_whole():
    for reason in ("stop", "length", "content_filter"):
        stream = Stream(deltas=iter(["text"]), close=lambda: None, finish_reason=reason)
        list(stream)
        require_finish(stream)  # flagged for review elsewhere, but never "cut off"


def test_the_offline_provider_follows_the_same_rule():
    whole = OfflineProvider(delay=0).stream(_prompt(), "offline")
    text = "".join(whole)
    require_finish(whole)
    assert whole.finish_reason == "stop" and "Offline placeholder" in text

    stopped = OfflineProvider(delay=0).stream(_prompt(), "offline")
    next(iter(stopped))
    stopped.close()  # what the task does on cancel or error
    list(stopped)
    with pytest.raises(ProviderError):
        require_finish(stopped)


def test_review_flag_says_why_an_answer_is_not_a_plain_success():
    from webapp.generation.provider import review_flag
    assert review_flag("", "A whole answer.", "stop") is None
    assert review_flag("I can't help with that.", "", "stop") == "refused"
    assert review_flag("", "   ", "stop") == "empty"
    assert review_flag("", "Half an ans", "length") == "length"
    # A filter that left nothing is flagged for the filter, which says why it is empty.
    assert review_flag("", "", "content_filter") == "content_filter"
