"""Fixtures for the unit tests: pure logic, no Redis, worker or browser; a database only
in memory (db_app).

tests/conftest.py is loaded too, but its fixtures start nothing unless a test asks for
them; the tests here ask only for what this file gives.
"""
from __future__ import annotations

import pytest
from flask import Flask


@pytest.fixture
def bare_app():
    """A Flask app with nothing but a config (and Flask-Babel, which every app has: messages
    are made through it), for code that reads current_app.config."""
    from flask_babel import Babel
    app = Flask(__name__)
    Babel(app)
    with app.app_context():
        yield app


@pytest.fixture
def db_app():
    """The real app on an in-memory SQLite database with the tables made, in an app context.

    Nothing listens on its Redis address: metrics writes fail quietly, as they do when
    Redis is down, so the code under test runs without any service."""
    from webapp import create_app
    from webapp.extensions import db

    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": "sqlite://",
                      "REDIS_URL": "redis://127.0.0.1:1/0", "REDIS_SOCKET_TIMEOUT": 0.2})
    with app.app_context():
        db.create_all()
        yield app
        db.session.remove()
        db.drop_all()
