"""How long a worker waits: the retry backoff (tasks.backoff_delay), the provider's
x-ratelimit-* reset headers and the shared hold-off they set (ratelimit.py), and the
RATE_LIMITS setting."""
from __future__ import annotations

import random

import pytest

from webapp.generation import ratelimit
from webapp.generation.tasks import backoff_delay

SAMPLES = 400


def _delays(attempt, retry_after, base):
    random.seed(1234)
    return [backoff_delay(attempt, retry_after, base) for _ in range(SAMPLES)]


@pytest.mark.parametrize("attempt, low, high", [(1, 0.5, 1.0), (2, 1.0, 2.0), (4, 4.0, 8.0)])
def test_without_retry_after_the_delay_doubles_per_attempt_with_jitter(attempt, low, high):
    delays = _delays(attempt, None, 1.0)
    assert all(low <= d <= high for d in delays), (min(delays), max(delays))
    # Jitter: workers that failed together do not all come back together.
    assert max(delays) - min(delays) > (high - low) / 2
    assert all(d == round(d, 2) for d in delays)


def test_the_base_scales_the_backoff():
    delays = _delays(3, None, 0.05)
    assert all(0.1 <= d <= 0.2 for d in delays), (min(delays), max(delays))


def test_the_backoff_is_capped_at_five_minutes():
    delays = _delays(30, None, 1.0)
    assert all(150.0 <= d <= 300.0 for d in delays), (min(delays), max(delays))


@pytest.mark.parametrize("retry_after, jitter", [(2.0, 0.3), (30.0, 1.0), (0.0, 0.1)])
def test_the_providers_retry_after_is_kept_plus_a_little_jitter(retry_after, jitter):
    # Whatever the attempt: the provider said when, so the exponential backoff is not used
    # (a zero Retry-After is an answer too, not a missing one).
    delays = _delays(9, retry_after, 1.0)
    assert all(retry_after <= d <= retry_after + jitter for d in delays), (min(delays), max(delays))
    assert max(delays) > min(delays)


@pytest.mark.parametrize("text, seconds", [
    ("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3s", 3723.0), ("0.5s", 0.5),
    ("1m30.5s", 90.5), ("2.5", 2.5), ("12", 12.0),
])
def test_reset_headers_in_openais_duration_format(text, seconds):
    assert ratelimit.parse_reset(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "-"])
def test_a_reset_header_that_says_nothing_usable_is_none(text):
    assert ratelimit.parse_reset(text) is None


class _Redis:
    """Stand-in for the two Redis commands the hold-off uses, answering as Redis does
    (PTTL is -2 for a missing key)."""

    def __init__(self, ttls=None):
        self.ttls = dict(ttls or {})

    def pttl(self, key):
        return self.ttls.get(key, -2)

    def set(self, key, value, px):
        self.ttls[key] = px


def test_no_requests_left_holds_every_worker_off_until_the_reset():
    client = _Redis()
    wait = ratelimit.adapt_to_headers(client, "gpt-4o-mini", {
        "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s",
        "x-ratelimit-remaining-tokens": "1200", "x-ratelimit-reset-tokens": "40s"})
    assert wait == 1.5  # the tokens are not used up, so their reset does not count
    assert client.ttls == {ratelimit.holdoff_key("gpt-4o-mini"): 1500}


def test_when_both_run_out_the_later_reset_decides():
    client = _Redis()
    wait = ratelimit.adapt_to_headers(client, "m", {
        "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m",
        "x-ratelimit-remaining-tokens": "0.0", "x-ratelimit-reset-tokens": "200ms"})
    assert wait == 60.0
    assert client.ttls == {ratelimit.holdoff_key("m"): 60_000}


@pytest.mark.parametrize("headers", [
    {},
    {"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "1s"},
    {"x-ratelimit-remaining-requests": "lots", "x-ratelimit-reset-requests": "1s"},
    {"x-ratelimit-remaining-requests": "0"},  # no reset given: no guess
])
def test_headers_that_leave_room_or_say_nothing_set_no_hold_off(headers):
    client = _Redis()
    assert ratelimit.adapt_to_headers(client, "m", headers) is None
    assert client.ttls == {}


def test_a_hold_off_is_never_shortened():
    key = ratelimit.holdoff_key("m")
    client = _Redis({key: 5000})
    ratelimit.hold_off(client, "m", 1.0)
    assert client.ttls[key] == 5000
    ratelimit.hold_off(client, "m", 8.0)
    assert client.ttls[key] == 8000


def test_rate_limits_per_model_with_headroom_on_minute_windows():
    limits = ratelimit.parse_limits(
        '{"gpt-4o-mini": {"requests": "500/minute", "tokens": "200000/minute"},'
        ' "*": {"requests": "5/second"}}')
    mini = limits["gpt-4o-mini"]
    # The request window is a little longer than the provider's minute (HEADROOM_S).
    assert (mini.requests.amount, mini.requests.get_expiry()) == (500, 60 + ratelimit.HEADROOM_S)
    assert (mini.tokens.amount, mini.tokens.get_expiry()) == (200_000, 60)
    assert (limits["*"].requests.amount, limits["*"].requests.get_expiry()) == (5, 1)
    assert limits["*"].tokens is None
    assert ratelimit.parse_limits("") == {}


@pytest.mark.parametrize("raw, words", [
    ("{not json", "RATE_LIMITS is not valid JSON"),
    ('{"gpt-4o": "500/minute"}', "RATE_LIMITS['gpt-4o'] must be an object"),
])
def test_a_bad_rate_limits_setting_says_what_is_wrong(raw, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        ratelimit.parse_limits(raw)
