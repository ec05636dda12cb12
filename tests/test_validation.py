"""Invalid input, through the form and through the API: 400, field-level messages, nothing
stored."""
from __future__ import annotations

import html as htmllib
import re

import pytest

from tests.helpers import row_counts, submit_form

GOOD = {"name": "Valid name", "titles": "First title\nSecond title", "target_words": "300",
        "tone": "neutral"}

# (case id, fields changed from GOOD, field that must carry the error, words of its message)
CASES = [
    ("empty-name", {"name": "   "}, "name", "required"),
    ("no-titles", {"titles": "\n   \n\n"}, "titles", "at least one title"),
    ("too-many-titles", {"titles": "\n".join(f"Title {i}" for i in range(1001))}, "titles",
     "at most 1000"),
    ("title-too-long", {"titles": "Fine title\n" + "x" * 301}, "titles", "300 characters"),
    ("duplicate-titles", {"titles": "Same title\nOther\nsame TITLE"}, "titles", "Duplicate"),
    ("words-not-a-number", {"target_words": "many"}, "target_words", "whole number"),
    ("words-out-of-range", {"target_words": "10"}, "target_words", "between"),
    ("bad-tone", {"tone": "furious"}, "tone", "Tone must be one of"),
]


def _field_errors(page: str, field: str) -> list[str]:
    return [htmllib.unescape(m) for m in
            re.findall(rf'<p class="field-error" id="{field}-error">(.*?)</p>', page, re.S)]


@pytest.mark.parametrize("changes, field, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_form(app, client, fake, changes, field, words):
    before = row_counts(app)
    data = dict(GOOD, **changes)
    response = submit_form(client, data.pop("name"), data.pop("titles"), **data)
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "Nothing was stored" in page
    messages = _field_errors(page, field)
    assert any(words in m for m in messages), (field, messages)
    # Only the field that is wrong is marked.
    others = [f for f in ("name", "titles", "target_words", "tone") if f != field]
    assert all(not _field_errors(page, f) for f in others)
    assert row_counts(app) == before
    assert fake.request_count() == 0


@pytest.mark.parametrize("changes, field, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_api(app, client, api_headers, fake, changes, field, words):
    before = row_counts(app)
    data = dict(GOOD, **changes)
    data["titles"] = data["titles"].split("\n")  # the API takes a list of titles too
    response = client.post("/api/v1/batches", json=data, headers=api_headers)
    assert response.status_code == 400
    assert response.is_json
    error = response.get_json()["error"]
    assert error["code"] == "invalid" and error["message"]
    assert set(error["fields"]) == {field}
    assert any(words in m for m in error["fields"][field]), error["fields"]
    assert row_counts(app) == before
    assert fake.request_count() == 0


def test_api_rejects_non_object_body(app, client, api_headers):
    before = row_counts(app)
    response = client.post("/api/v1/batches", data="not json", headers=api_headers,
                           content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_json"
    assert row_counts(app) == before
