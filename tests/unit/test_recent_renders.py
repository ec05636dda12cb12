"""A web process's copies of the current tick's shared progress renders
(webapp/services/pollcache._Recent): only the current tick's are served, a new tick drops
the old ones, and there are never more than LIMIT."""
from __future__ import annotations

from datetime import datetime

from webapp.services.pollcache import Shared, _Recent


def _render(n: int) -> Shared:
    return Shared(datetime(2026, 12, 7, 12, 0, n % 60), {"status": "running"}, f"s{n}", f"u{n}")


def test_a_copy_serves_only_its_own_tick():
    recent = _Recent()
    recent.keep("a", 10, _render(1))
    assert recent.get("a", 10) == _render(1)
    assert recent.get("b", 10) is None
    assert recent.get("a", 11) is None  # the next tick asks Redis
    assert recent.get("a", 9) is None


def test_a_new_tick_drops_the_old_copies_and_an_old_one_is_not_kept():
    recent = _Recent()
    recent.keep("a", 10, _render(1))
    recent.keep("b", 11, _render(2))
    assert recent.renders == {"b": _render(2)}
    recent.keep("c", 10, _render(3))  # made late, for a tick that has passed
    assert recent.get("c", 10) is None and recent.renders == {"b": _render(2)}


def test_never_more_than_the_limit():
    recent = _Recent()
    for n in range(_Recent.LIMIT + 5):
        recent.keep(f"k{n}", 10, _render(n))
        assert len(recent.renders) <= _Recent.LIMIT
    assert recent.get(f"k{_Recent.LIMIT + 4}", 10) == _render(_Recent.LIMIT + 4)
