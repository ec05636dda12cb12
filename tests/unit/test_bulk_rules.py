"""Bulk actions' pure rules (webapp/services/bulk.py and bulk_actions.py): ids packed into
the signed confirmation, the selection as text, the counts said in whole sentences, the form
checks."""
from __future__ import annotations

import pytest
from werkzeug.datastructures import MultiDict

from webapp.services import bulk, bulk_actions
from webapp.services.errors import Invalid


@pytest.mark.parametrize("ids, runs", [
    ([], []),
    ([7], [[7, 7]]),
    ([3, 1, 2, 2, 10, 11, 5], [[1, 3], [5, 5], [10, 11]]),
    (list(range(100, 1100)), [[100, 1099]]),
])
def test_ids_travel_as_runs_and_come_back_the_same(ids, runs):
    assert bulk.pack(ids) == runs
    assert bulk.unpack(bulk.pack(ids)) == sorted(set(ids))


def test_the_selection_is_said_as_the_filter_or_the_rows_picked():
    everything = bulk.Selection("batches", "approve", True, [], "status=failed&q=spring")
    assert bulk._describe(everything, {"status": "failed", "q": "spring"}) == \
        "all batches matching status=failed, q=spring"
    assert bulk._describe(everything, {}) == "all batches"
    queue = bulk.Selection("articles", "approve", True, [], "")
    assert bulk._describe(queue, {"batch": "4"}) == "all articles awaiting review matching batch=4"
    picked = bulk.Selection("batches", "cancel", False, list(range(1, 26)), "")
    assert bulk._describe(picked, {}) == \
        "picked batches " + ", ".join(map(str, range(1, 21))) + " and 5 more"


def test_counts_are_whole_sentences_in_singular_and_plural(bare_app):
    assert bulk.question("approve", 1) == "Approve 1 article awaiting review?"
    assert bulk.question("approve", 132) == "Approve 132 articles awaiting review?"
    assert bulk.question("cancel", 2) == "Cancel 2 batches?"
    assert bulk.question("export", 3, "zip") == "Export 3 articles as a zip of Markdown files?"
    assert bulk.skip_line(bulk.NOT_YOURS_BATCHES, 3, future=False) == \
        "3 batches belong to someone else and were skipped."
    assert bulk.skip_line(bulk.NOT_YOURS_BATCHES, 1, future=True) == \
        "1 batch belongs to someone else and will be skipped."
    assert bulk_actions.done_line("reject", 1) == "1 article rejected."


def test_publishing_a_selection_says_where_and_how(bare_app):
    assert bulk.question("publish", 1, options={"destination": "Blog"}) == \
        "Publish 1 approved article to Blog?"
    assert bulk.question("publish", 37, options={"destination": "Blog"}) == \
        "Publish 37 approved articles to Blog?"
    assert "as pending review;" in bulk.consequence("publish", {"status": "pending"})
    assert "scheduled for 2030-05-01 09:00:00 UTC" in bulk.consequence(
        "publish", {"status": "future", "publish_at": "2030-05-01T09:00:00Z"})
    assert bulk.skip_line(bulk.NOT_SENT, 2, future=False).startswith(
        "2 articles could not be sent (the destination was stopped or removed")
    assert bulk_actions.done_line("publish", 3) == "3 articles are being published."
    # The review queue lists articles awaiting a decision: none of them is publishable.
    assert "publish" in bulk.ACTIONS[bulk.BATCHES]
    assert "publish" not in bulk.ACTIONS[bulk.ARTICLES]


@pytest.mark.parametrize("form, field", [
    ({"scope": "batches", "action": "approve"}, "ids"),
    ({"scope": "batches", "action": "approve", "ids": ["1", "x"]}, "ids"),
    ({"scope": "batches", "action": "approve", "ids": ["0"]}, "ids"),
    ({"scope": "batches", "action": "approve", "ids": [str(2**31)]}, "ids"),
    ({"scope": "batches", "action": "delete", "ids": ["1"]}, "action"),
    ({"scope": "articles", "action": "cancel", "ids": ["1"]}, "action"),
    ({"scope": "users", "action": "approve", "ids": ["1"]}, "scope"),
    ({"scope": "batches", "action": "reject", "ids": ["1"], "reason": "  "}, "reason"),
    ({"scope": "batches", "action": "reject", "ids": ["1"], "reason": "x" * 2001}, "reason"),
    ({"scope": "batches", "action": "export", "ids": ["1"], "fmt": "pdf"}, "fmt"),
])
def test_the_form_is_refused_naming_the_field(bare_app, form, field):
    bare_app.config["BULK_MAX_ITEMS"] = 100
    with pytest.raises(Invalid) as refused:
        bulk.parse(MultiDict(form))
    assert field in refused.value.fields


def test_a_good_form_is_read(bare_app):
    bare_app.config["BULK_MAX_ITEMS"] = 100
    sel = bulk.parse(MultiDict([("scope", "batches"), ("action", "reject"), ("ids", "3"),
                                ("ids", "1"), ("ids", "3"), ("reason", " Off topic "),
                                ("filter", "status=failed")]))
    assert (sel.ids, sel.reason, sel.everything, sel.filter_query) == \
        ([1, 3], "Off topic", False, "status=failed")
    everything = bulk.parse(MultiDict({"scope": "articles", "action": "approve",
                                       "select": "all", "ids": "bogus"}))
    assert everything.everything and everything.ids == []
    with pytest.raises(Invalid):
        bulk.parse(MultiDict([("scope", "batches"), ("action", "approve")]
                             + [("ids", str(i)) for i in range(1, 102)]))
