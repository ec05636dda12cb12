"""Fixtures for the unit tests: pure logic, no Redis, worker, database or browser.

tests/conftest.py is loaded too, but its fixtures start nothing unless a test asks for
them; the tests here ask only for what this file gives.
"""
from __future__ import annotations

import pytest
from flask import Flask


@pytest.fixture
def bare_app():
    """A Flask app with nothing but a config, for code that reads current_app.config."""
    app = Flask(__name__)
    with app.app_context():
        yield app
