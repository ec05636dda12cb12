"""What each provider failure means (webapp/generation/provider.py `classify`), built from
the openai SDK's own exception objects, shaped as the SDK makes them: the body it passes is
the `error` object of the JSON answer, and the headers are the HTTP response's."""
from __future__ import annotations

import httpx2
import openai
import pytest

from webapp.generation.provider import ProviderError, _retry_after, classify

REQUEST = httpx2.Request("POST", "http://provider.test/v1/chat/completions")

STATUS_ERRORS = {400: openai.BadRequestError, 401: openai.AuthenticationError,
                 403: openai.PermissionDeniedError, 404: openai.NotFoundError,
                 409: openai.ConflictError, 422: openai.UnprocessableEntityError,
                 429: openai.RateLimitError}


def status_error(status: int, message: str = "the provider said no", *, headers=None,
                 body=None) -> openai.APIStatusError:
    """The exception the SDK raises for an HTTP error answer with this status."""
    response = httpx2.Response(status, request=REQUEST, headers=headers or {})
    cls = STATUS_ERRORS.get(status) or (openai.InternalServerError if status >= 500
                                        else openai.APIStatusError)
    return cls(message, response=response, body=body)


def test_a_rate_limit_is_retried_after_the_providers_retry_after():
    err = classify(status_error(429, headers={"retry-after": "7"},
                                body={"message": "Rate limit reached", "type": "requests",
                                      "code": "rate_limit_exceeded"}))
    assert isinstance(err, ProviderError)
    assert (err.kind, err.retryable, err.retry_after) == ("rate_limit", True, 7.0)
    assert err.message == "Rate limited by the provider."
    assert err.label == "Rate limited by the provider"  # the short form: no full stop


def test_a_rate_limit_without_retry_after_leaves_the_wait_to_the_backoff():
    err = classify(status_error(429))
    assert (err.kind, err.retryable, err.retry_after) == ("rate_limit", True, None)


@pytest.mark.parametrize("body", [
    {"message": "You exceeded your current quota", "type": "insufficient_quota",
     "code": "insufficient_quota"},
    {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": None},
    # The whole JSON answer, as a client that does not unwrap `error` would pass it.
    {"error": {"message": "quota", "code": "insufficient_quota"}},
])
def test_an_empty_account_is_a_429_that_is_not_retried(body):
    err = classify(status_error(429, headers={"retry-after": "1"}, body=body))
    assert (err.kind, err.retryable) == ("quota", False)
    assert "run out of quota" in err.message


@pytest.mark.parametrize("body", ["<html>Too Many Requests</html>", None, {"error": "slow down"}])
def test_a_429_whose_body_is_not_an_error_object_is_a_plain_rate_limit(body):
    err = classify(status_error(429, body=body))
    assert (err.kind, err.retryable) == ("rate_limit", True)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 409])
def test_server_errors_timeouts_and_conflicts_are_temporary(status):
    err = classify(status_error(status, headers={"retry-after": "3"}))
    assert (err.kind, err.retryable, err.retry_after) == ("server", True, 3.0)
    assert err.message == f"The provider had a temporary error (HTTP {status})."


@pytest.mark.parametrize("status, kind, words", [
    (401, "auth", "Check OPENAI_API_KEY"),
    (403, "auth", "refused access (HTTP 403)"),
    (404, "model", "does not know this model (HTTP 404)"),
])
def test_key_access_and_model_errors_are_not_retried(status, kind, words):
    err = classify(status_error(status, headers={"retry-after": "3"}))
    assert (err.kind, err.retryable, err.retry_after) == (kind, False, None)
    assert words in err.message


@pytest.mark.parametrize("status", [400, 422, 413])
def test_other_client_errors_are_rejections_that_quote_the_provider(status):
    err = classify(status_error(status, "max_tokens is too large: 99999"))
    assert (err.kind, err.retryable) == ("rejected", False)
    assert err.message == (f"The provider rejected the request (HTTP {status}): "
                           "max_tokens is too large: 99999")


def test_a_timeout_is_a_timeout_not_a_connection_error():
    # APITimeoutError is a kind of APIConnectionError: the order of the checks matters.
    err = classify(openai.APITimeoutError(request=REQUEST))
    assert (err.kind, err.retryable) == ("timeout", True)
    assert err.message == "The provider did not answer in time."


def test_a_connection_error_is_retried():
    err = classify(openai.APIConnectionError(request=REQUEST))
    assert (err.kind, err.retryable) == ("connection", True)
    assert err.message == "Could not connect to the provider."


def test_anything_else_is_an_unexpected_error_that_is_not_retried():
    err = classify(RuntimeError("the SDK changed"))
    assert (err.kind, err.retryable) == ("error", False)
    assert err.message == "Unexpected provider error: the SDK changed"


@pytest.mark.parametrize("headers, expected", [
    ({"retry-after": "20"}, 20.0),
    ({"retry-after": "1.5"}, 1.5),
    ({"retry-after-ms": "250"}, 0.25),
    ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # the finer one wins
    ({"Retry-After": "4"}, 4.0),  # header names are case-insensitive
    ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),  # a date: not trusted
    ({"retry-after": "soon"}, None),
    ({"retry-after-ms": ""}, None),
    ({}, None),
])
def test_retry_after_is_read_from_the_response_headers(headers, expected):
    assert _retry_after(status_error(429, headers=headers)) == expected
