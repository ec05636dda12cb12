"""LLM providers: the official openai SDK, or an offline stand-in when no key is set.

A provider turns a prompt into a stream of text deltas. Errors come out as ProviderError,
already classified, so the task decides retry or fail in one place.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, Optional
from urllib.parse import urlparse

import httpx2 as httpx  # the HTTP library the openai SDK is built on (its errors mid-body)
import openai

from . import sse
from .lengths import Length, is_short

OFFLINE = "offline"


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Stream:
    """Iterates text deltas; after the loop, finish_reason and usage are filled in."""

    deltas: Iterator[str]
    close: callable
    finish_reason: Optional[str] = None
    usage: Usage = field(default_factory=Usage)
    refusal: str = ""
    headers: dict = field(default_factory=dict)

    def __iter__(self):
        return self.deltas


class ProviderError(Exception):
    """A classified provider failure. `label` is the short form an article shows while a
    retry waits ("The answer was cut off — retry 2 of 3 in 4 s")."""

    def __init__(self, message: str, *, retryable: bool, retry_after: Optional[float] = None,
                 kind: str = "error", label: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.kind = kind
        self.label = label or message.rstrip(".")


CUT_OFF = "The answer was cut off"


def cut_off(why: str) -> ProviderError:
    """An answer that did not arrive whole. Never stored as written: the attempt is retried
    like any transient error, and the article fails with this reason if none succeeds."""
    return ProviderError(f"{CUT_OFF}: {why}.", retryable=True, kind="cut_off", label=CUT_OFF)


def require_finish(stream: "Stream") -> None:
    """The completeness rule for every provider: a stream is whole only when a choice
    carried a finish_reason. A response that simply ends (no finish chunk, no [DONE]) is
    clean at the HTTP level, so the SDK raises nothing; this is where it is caught."""
    if stream.finish_reason is None:
        raise cut_off("the stream ended before the provider said the answer was finished")


@dataclass
class Prompt:
    title: str
    words: int
    user_text: str

    def messages(self) -> list[dict]:
        system = (
            "You are a staff writer for an editorial team. Write complete, factual, "
            "well-structured articles in Markdown."
        )
        return [{"role": "system", "content": system}, {"role": "user", "content": self.user_text}]

    def max_tokens(self) -> int:
        # Roughly 1.4 tokens a word in English, with room for headings.
        return int(self.words * 2) + 200


def provider_label(config) -> str:
    """What the UI shows as the provider of a batch submitted now."""
    if not config.get("OPENAI_API_KEY"):
        return OFFLINE
    base = config.get("OPENAI_BASE_URL")
    if not base:
        return "openai"
    return f"openai-compatible ({urlparse(base).netloc or base})"


def get_provider(config, label: str):
    """The provider for a batch; the label was fixed when the batch was submitted."""
    if label == OFFLINE:
        return OfflineProvider(delay=config.get("OFFLINE_DELAY", 3.0))
    if not config.get("OPENAI_API_KEY"):
        raise ProviderError(
            "This batch was submitted for an OpenAI provider, but OPENAI_API_KEY is not set "
            "on the worker.", retryable=False, kind="config")
    return OpenAIProvider(config)


_clients: dict[tuple, openai.OpenAI] = {}


class OpenAIProvider:
    def __init__(self, config):
        key = (config["OPENAI_API_KEY"], config.get("OPENAI_BASE_URL") or None,
               config.get("OPENAI_TIMEOUT", 120.0), config.get("OPENAI_SDK_RETRIES", 0),
               config.get("OPENAI_STREAM_IDLE_TIMEOUT", 60.0))
        client = _clients.get(key)
        if client is None:
            # The SDK's own retries stay at 0 by default: the task retries with backoff, and
            # two layers of retries would multiply the requests sent.
            # The read timeout bounds each silence between two chunks (and the wait for the
            # first); the task bounds the whole answer with OPENAI_TIMEOUT.
            idle = min(config.get("OPENAI_STREAM_IDLE_TIMEOUT", 60.0), key[2])
            client = openai.OpenAI(api_key=key[0], base_url=key[1],
                                   timeout=openai.Timeout(key[2], read=idle), max_retries=key[3])
            _clients[key] = client
        self.client = client

    def stream(self, prompt: Prompt, model: str) -> Stream:
        try:
            # The SDK's low-level post (its documented way to call any endpoint) makes the
            # request: its auth, retries and status errors stay, without building typed
            # parameters, and it answers with the HTTP response unread, headers and all
            # (the provider's x-ratelimit-* headers). The body is read here (see sse.py):
            # a fraction of the CPU per chunk of the SDK's stream of models.
            http = self.client.post("/chat/completions", cast_to=httpx.Response, stream=True,
                                    body={"model": model, "messages": prompt.messages(),
                                          "max_tokens": prompt.max_tokens(), "stream": True,
                                          "stream_options": {"include_usage": True}})
        except openai.APIError as exc:
            raise classify(exc) from exc
        result = Stream(deltas=iter(()), close=http.close,
                        headers={k.lower(): v for k, v in http.headers.items()})

        idle = self.client.timeout.read if isinstance(self.client.timeout, openai.Timeout) else None

        def deltas():
            try:
                body = http.iter_bytes()
                yield from sse.read(body, result)
                finish_body(http, body)
            # Once the answer has started, a timeout or a lost connection means a partial
            # answer, whatever the transport calls it.
            except httpx.TimeoutException as exc:
                raise cut_off(f"the provider sent nothing for more than {idle or 0:g} s") from exc
            except (httpx.TransportError, httpx.StreamError) as exc:
                raise cut_off("the connection to the provider was lost mid-answer") from exc
            except ValueError as exc:  # orjson.JSONDecodeError: an event that is not JSON
                raise cut_off("the provider sent a chunk that could not be read") from exc
            except sse.StreamError as exc:  # an error event inside the stream
                raise classify(openai.APIError(exc.message, http.request, body=exc.body)) from exc
            except Exception as exc:  # any other transport failure mid-answer
                raise cut_off(f"the answer stopped with {type(exc).__name__}") from exc

        result.deltas = deltas()
        return result


# After [DONE], what is left of an HTTP/1.1 body is the chunked encoding's last few bytes.
# Reading them hands the connection back to the SDK's pool for the next article; closing
# the response before its end drops the connection, and every article would open a new
# one (with a real provider, a TLS handshake each: round trips and CPU). The SDK's own
# sync stream closes early; its async one reads on for up to 0.1 s, as this does.
FINISH_WAIT_S = 0.1
FINISH_MAX_BYTES = 64 * 1024


def finish_body(http: httpx.Response, body: Iterator[bytes]) -> None:
    """Read the rest of an answered response's body, waiting at most FINISH_WAIT_S for it;
    a provider that holds the body open, or sends more, costs that wait and a new
    connection, never the answer (nothing here raises)."""
    net = http.extensions.get("network_stream")
    if net is None or http.http_version != "HTTP/1.1":
        return  # HTTP/2 ends the stream alone and keeps the connection
    # httpcore reads with the request's read timeout (the stream idle timeout, a minute):
    # for these last reads, the network stream of this response waits FINISH_WAIT_S. The
    # last read hands the connection back to the pool before this function ends, so
    # another thread may already be using it: the short wait is this thread's alone, and
    # only this override is removed (another thread may have put its own over it).
    me = threading.get_ident()
    read = type(net).read.__get__(net)

    def short_read(max_bytes, timeout=None):
        return read(max_bytes, FINISH_WAIT_S if threading.get_ident() == me else timeout)
    net.read = short_read
    deadline = time.monotonic() + FINISH_WAIT_S
    left = FINISH_MAX_BYTES
    try:
        for chunk in body:
            left -= len(chunk)
            if left < 0 or time.monotonic() > deadline:
                return  # close() drops the connection
    except Exception:  # a timeout or a reset after a whole answer: only the connection is lost
        return
    finally:
        if vars(net).get("read") is short_read:
            del net.read  # the connection's own read again, for whoever uses it next


def _retry_after(exc: openai.APIStatusError) -> Optional[float]:
    headers = exc.response.headers if exc.response is not None else {}
    try:
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000.0
        if headers.get("retry-after"):
            return float(headers["retry-after"])
    except ValueError:
        return None
    return None


def _code(exc: openai.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    err = body.get("error", body) if isinstance(body, dict) else {}
    if not isinstance(err, dict):
        return ""
    return str(err.get("code") or err.get("type") or "")


def classify(exc: Exception) -> ProviderError:
    """One place that decides what every provider failure means."""
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError("The provider did not answer in time.", retryable=True, kind="timeout")
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError("Could not connect to the provider.", retryable=True,
                             kind="connection")
    if isinstance(exc, openai.APIStatusError):
        status, code = exc.status_code, _code(exc)
        if status == 429 and code == "insufficient_quota":
            return ProviderError("The provider account has run out of quota or credit.",
                                 retryable=False, kind="quota")
        if status == 429:
            return ProviderError("Rate limited by the provider.", retryable=True,
                                 retry_after=_retry_after(exc), kind="rate_limit")
        if status in (408, 409) or status >= 500:
            return ProviderError(f"The provider had a temporary error (HTTP {status}).",
                                 retryable=True, retry_after=_retry_after(exc), kind="server")
        if status == 401:
            return ProviderError("The API key was rejected by the provider (HTTP 401). "
                                 "Check OPENAI_API_KEY.", retryable=False, kind="auth")
        if status == 403:
            return ProviderError("The provider refused access (HTTP 403).", retryable=False,
                                 kind="auth")
        if status == 404:
            return ProviderError("The provider does not know this model (HTTP 404).",
                                 retryable=False, kind="model")
        return ProviderError(f"The provider rejected the request (HTTP {status}): {exc.message}",
                             retryable=False, kind="rejected")
    return ProviderError(f"Unexpected provider error: {exc}", retryable=False)


class OfflineProvider:
    """Writes clearly labelled placeholder articles, with a realistic delay, for free."""

    def __init__(self, delay: float = 3.0, chunks: int = 12):
        self.delay = max(0.0, float(delay))
        self.chunks = chunks

    def stream(self, prompt: Prompt, model: str) -> Stream:
        words = _placeholder_words(prompt)
        per_chunk = max(1, -(-len(words) // self.chunks))
        pieces = [words[i:i + per_chunk] for i in range(0, len(words), per_chunk)]
        stopped = []
        result = Stream(deltas=iter(()), close=lambda: stopped.append(True))
        pause = self.delay / max(1, len(pieces))

        def deltas():
            yield offline_header(prompt.title)
            for piece in pieces:
                if stopped:
                    return
                if pause:
                    time.sleep(pause)
                yield " ".join(piece) + " "
            result.finish_reason = "stop"
            result.usage = Usage(sum(len(m["content"].split()) for m in prompt.messages()),
                                 len(words))

        result.deltas = deltas()
        return result


def offline_header(title: str) -> str:
    return (f"# {title}\n\n> **Offline placeholder.** Pressroom wrote this without an LLM "
            "because no OPENAI_API_KEY is set.\n\n")


def offline_text(prompt: Prompt) -> str:
    """The whole placeholder article the offline provider writes for a prompt."""
    return offline_header(prompt.title) + " ".join(_placeholder_words(prompt)) + " "


def review_flag(refusal: str, text: str, finish_reason: Optional[str],
                length: Optional[Length] = None, target: Optional[int] = None) -> Optional[str]:
    """Why a complete answer must not pass as a plain success (None when it may): the
    same rule for a streamed answer and a Batch API result. "short" (the answer's
    `length` under half its `target`) comes last: a cut-off or filtered answer is short
    because of that, and its flag says so."""
    if refusal:
        return "refused"
    if finish_reason in ("length", "content_filter"):
        return finish_reason  # says why, even when it left nothing
    if not text.strip():
        return "empty"
    if length is not None and is_short(length, target):
        return "short"
    return None


_FILLER = ("editors readers story draft source context detail example evidence point "
           "summary angle headline paragraph outline research quote background theme").split()


def _placeholder_words(prompt: Prompt) -> list[str]:
    rng = random.Random(prompt.title)
    count = max(20, min(prompt.words, 400))
    return [rng.choice(_FILLER) for _ in range(count)]
