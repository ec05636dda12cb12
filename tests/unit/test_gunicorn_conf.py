"""gunicorn.conf.py, as every way of running the web process reads it."""
from __future__ import annotations

import gc
import runpy
from pathlib import Path

CONF = Path(__file__).resolve().parents[2] / "gunicorn.conf.py"


def test_workers_fork_from_a_frozen_heap():
    """What the app made at import is frozen before each fork, so the collector's full
    passes in a worker skip it (they cost a poll tens of milliseconds now and then)."""
    settings = runpy.run_path(str(CONF))
    assert settings["preload_app"] is True  # the app is made in the master, before forking
    gc.unfreeze()
    made = [object() for _ in range(10)]  # noqa: F841 (alive while frozen)
    try:
        settings["pre_fork"](None, None)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
