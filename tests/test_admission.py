"""The admission script (webapp/generation/admission.py) against a real Redis: cancel
flags, places in flight, the first-request probe, the hold-off and the provider limits,
decided in one call. Time is passed in, so windows are crossed without waiting."""
from __future__ import annotations

import itertools

import pytest

from webapp.generation import admission, live, ratelimit

_ids = itertools.count(1000)


@pytest.fixture
def ctx(_app, redis_client):
    """An app context with RATE_LIMITS of the test's choosing (parsed per app)."""
    saved_limits = _app.extensions.pop("pressroom_rate_limits", None)
    saved_cap = _app.config["BATCH_MAX_CONCURRENCY"]
    with _app.app_context():
        def limits(raw: str, cap: int = saved_cap):
            _app.extensions["pressroom_rate_limits"] = ratelimit.parse_limits(raw)
            _app.config["BATCH_MAX_CONCURRENCY"] = cap
        limits("")
        yield limits
    _app.config["BATCH_MAX_CONCURRENCY"] = saved_cap
    _app.extensions.pop("pressroom_rate_limits", None)
    if saved_limits is not None:
        _app.extensions["pressroom_rate_limits"] = saved_limits


def _model() -> str:
    return f"model-{next(_ids)}"  # a model of its own: no limit counted by another test


def _go(redis_client, batch, article, model, tokens=0, now=None, passed=True):
    verdict = admission.admit(redis_client, batch, article, model, tokens, now=now)
    if passed and verdict.word == "probe":
        ratelimit.probe_passed(redis_client, batch)
    return verdict


def test_a_cancel_flag_answers_cancelled_and_takes_nothing(ctx, redis_client):
    batch, article, model = next(_ids), next(_ids), _model()
    live.flag_articles_cancelled(redis_client, [article])
    assert admission.admit(redis_client, batch, article, model, 0).word == "cancelled"
    assert redis_client.zcard(ratelimit.slots_key(batch)) == 0
    assert redis_client.get(ratelimit.probe_key(batch)) is None  # nobody probes for it


def test_places_in_flight_are_capped_per_batch(ctx, redis_client):
    ctx("", cap=2)
    batch, model = next(_ids), _model()
    a, b, c = next(_ids), next(_ids), next(_ids)
    assert _go(redis_client, batch, a, model).place == 1
    assert _go(redis_client, batch, b, model).place == 1
    busy = _go(redis_client, batch, c, model)
    assert (busy.word, busy.place) == ("busy", 0)
    # The same article again (a second delivery, or the same one looking again) holds its place.
    assert _go(redis_client, batch, a, model).place == 2
    ratelimit.release_slot(redis_client, batch, a)
    assert _go(redis_client, batch, c, model).place == 1


def test_one_probe_per_batch_until_the_provider_accepted_one(ctx, redis_client):
    batch, model = next(_ids), _model()
    first = admission.admit(redis_client, batch, next(_ids), model, 0)
    assert first.word == "probe"
    assert admission.admit(redis_client, batch, next(_ids), model, 0).word == "wait"
    ratelimit.probe_passed(redis_client, batch)
    assert admission.admit(redis_client, batch, next(_ids), model, 0).word == "go"
    ratelimit.probe_failed(redis_client, batch, tripped=True)
    assert admission.admit(redis_client, batch, next(_ids), model, 0).word == "tripped"


def test_a_hold_off_makes_everyone_wait_and_counts_nothing(ctx, redis_client):
    ctx('{"*": {"requests": "1/minute"}}')
    batch, model = next(_ids), _model()
    ratelimit.hold_off(redis_client, model, 3.0)
    held = _go(redis_client, batch, next(_ids), model)
    assert held.word == "wait" and 2.0 < held.wait_s <= 3.0
    redis_client.delete(ratelimit.holdoff_key(model))
    # The wait did not use the one request the minute allows.
    assert _go(redis_client, batch, next(_ids), model).word in ("go", "probe")


def test_requests_per_window_are_a_moving_window(ctx, redis_client):
    ctx('{"*": {"requests": "3/second"}}')
    batch, model, t0 = next(_ids), _model(), 1_000_000.0
    for i in range(3):
        assert _go(redis_client, batch, next(_ids), model, now=t0 + i * 0.1).word in ("go", "probe")
    full = _go(redis_client, batch, next(_ids), model, now=t0 + 0.5)
    # The oldest request leaves the window at t0 + 1 s: half a second from now.
    assert full.word == "wait" and full.wait_s == pytest.approx(0.5, abs=0.01)
    assert _go(redis_client, batch, next(_ids), model, now=t0 + 1.01).word == "go"
    assert _go(redis_client, batch, next(_ids), model, now=t0 + 1.02).word == "wait"


def test_tokens_per_window_are_a_sliding_window_counter(ctx, redis_client):
    ctx('{"*": {"tokens": "1000/minute"}}')
    batch, model = next(_ids), _model()
    start = 60.0 * 20_000_000  # the start of a minute
    assert _go(redis_client, batch, next(_ids), model, 600, now=start + 1).word in ("go", "probe")
    over = _go(redis_client, batch, next(_ids), model, 600, now=start + 2)
    assert over.word == "wait" and 0.05 <= over.wait_s <= 5.0
    # Half way into the next minute the previous one counts half: 300 + 600 <= 1000.
    assert _go(redis_client, batch, next(_ids), model, 600, now=start + 90).word == "go"
    assert _go(redis_client, batch, next(_ids), model, 200, now=start + 91).word == "wait"


def test_tokens_over_the_whole_limit_are_capped_to_it(ctx, redis_client):
    ctx('{"*": {"tokens": "1000/minute"}}')
    batch, model = next(_ids), _model()
    # A prompt bigger than the limit could never go; it takes the whole window instead.
    assert _go(redis_client, batch, next(_ids), model, 5000, now=120.0 * 1e6 + 1).word in (
        "go", "probe")
