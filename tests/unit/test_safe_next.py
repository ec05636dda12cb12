"""Where sign-in sends a person afterwards (webapp/blueprints/auth.py `safe_next`): only a
path on this site; anything a browser could read as another site goes to the dashboard."""
from __future__ import annotations

import pytest
from flask import Flask

from webapp import register_blueprints
from webapp.blueprints.auth import safe_next


@pytest.fixture(scope="module")
def routed_app():
    """An app with the real URL map (the fallback is the dashboard's URL) and nothing else
    set up; built once, since registering every blueprint is the slow part."""
    app = Flask(__name__)
    register_blueprints(app)
    return app


@pytest.fixture
def request_context(routed_app):
    with routed_app.test_request_context("/login"):
        yield


@pytest.mark.parametrize("target", [
    "/", "/batches/42", "/batches/42?page=2&status=failed", "/articles/7#version-3",
    "/%2F%2Fevil.example",  # percent-encoded slashes are a path, not a host
])
def test_a_local_path_is_kept(request_context, target):
    assert safe_next(target) == target


@pytest.mark.parametrize("target", [
    None, "",
    "https://evil.example/", "http://evil.example", "//evil.example/x", "///evil.example",
    "/\\evil.example", "\\\\evil.example", "javascript:alert(1)", "evil.example/batches",
    "batches/42", "/batches/1\x00", "/ /evil.example",
    # Browsers drop tabs and newlines from URLs, so these would become //evil.example.
    "/\t/evil.example", "/\n/evil.example", "/\r\n/evil.example",
])
def test_anything_else_goes_to_the_dashboard(request_context, target):
    assert safe_next(target) == "/"
