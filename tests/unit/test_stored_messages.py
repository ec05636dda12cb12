"""Messages stored in English for later (webapp/labels.py `english` and `stored`): every one
a worker or a service writes is known to the page that shows it, reads exactly as written
in English, and is said in the reader's language."""
from __future__ import annotations

import io

import httpx2
import openai
import pytest
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.support import Translations
from flask_babel import Domain, get_locale

from webapp import labels
from webapp.generation import dispatch, economy_import, lifecycle, webhooks
from webapp.generation.economy_requests import UNSUPPORTED
from webapp.generation.provider import CUT_OFF, classify, cut_off
from webapp.labels import english, stored
from webapp.netguard import NOT_PUBLIC, NOT_VALID

from .test_catalogs import extracted

REQUEST = httpx2.Request("POST", "http://provider.test/v1/chat/completions")


def _status(status: int, code: str = "", message: str = "the provider said no"):
    response = httpx2.Response(status, request=REQUEST)
    return openai.APIStatusError(message, response=response,
                                 body={"message": message, "code": code} if code else None)


PROVIDER_ERRORS = [classify(e) for e in (
    openai.APITimeoutError(request=REQUEST), openai.APIConnectionError(request=REQUEST),
    _status(429, "insufficient_quota"), _status(429), _status(503), _status(401), _status(403),
    _status(404), _status(400), ValueError("boom"))] + [
    cut_off("the stream ended before the provider said the answer was finished"),
    cut_off("the provider sent nothing for more than 30 s"),
    cut_off("the answer stopped with RemoteProtocolError")]


def written():
    """What the writers store, as tasks.py, economy*.py, reconciler.py and the services
    write it (the f-strings of tasks.py and the others are repeated here: their shape is
    the contract with labels.PATTERNS)."""
    from webapp.services import control, review, submission
    out = [e.message for e in PROVIDER_ERRORS]
    out += [f"{e.message} Gave up after 3 attempts." for e in PROVIDER_ERRORS if e.retryable]
    retry_labels = ["Rate limited", CUT_OFF] + [  # tasks.py says "Rate limited" for a 429
        e.label for e in PROVIDER_ERRORS if e.retryable and e.kind != "rate_limit"]
    out += retry_labels + [f"{label} — retry 2 of 3 in 4 s" for label in retry_labels]
    out += [f"Paused by the circuit breaker: {e.message} Fix the provider settings, then an "
            "admin resumes the batch." for e in PROVIDER_ERRORS if e.kind in ("auth", "quota")]
    out += [lifecycle.BREAKER_NOTE, dispatch.UNREACHABLE, economy_import.EXPIRED,
            economy_import.NO_RESULT,
            cut_off("the provider's result has no finish reason, so it may be incomplete")
            .message + " Send it again.",
            "The provider's batch failed: the provider's own words",
            "The provider could not write this article: the provider's own words",
            "The prompt template cannot be used for this article. The template is empty.",
            "The worker writing this article stopped responding 3 times; giving up.",
            "Re-queued: the worker writing it stopped responding.",
            "Budget reached: $1.2500 spent of $1.0000.", "budget reached",
            "Budget: the economy estimate $2.0000 exceeds the budget $1.0000; nothing was "
            "sent.", "over budget",
            UNSUPPORTED.format(url="https://api.example.com/v1", status=404),
            "Economy mode cannot be offered right now: the provider could not be asked whether "
            "it has a Batch API (The provider's Batch API could not be reached (ConnectError).)",
            "The provider's Batch API answered 500: the provider's own words",
            webhooks.TIMED_OUT, webhooks.COULD_NOT_CONNECT, webhooks.TLS_FAILED,
            webhooks.BAD_RESPONSE, "redirect not followed (HTTP 302)", f"refused: {NOT_PUBLIC}",
            f"refused: {NOT_VALID}",
            english(control.RESUMED_NOTE), english(control.REQUEUED_NOTE),
            english(review.REGENERATING), english(submission.HELD),
            english(labels._l("Paused by %(who)s.", who="ed@example.com"))]
    out += publishing_written()
    return out


def publishing_written() -> list[str]:
    """What publishing to WordPress stores on a publication or a destination."""
    from webapp.generation import publishing, reconciler, wordpress
    from webapp.services import publishing as service

    said = " The site said: “Sorry, you are not allowed to create posts as this user.”"
    errors = [
        "The site rejected the application password (HTTP 401).",
        "The site rejected the application password (HTTP 401)." + said,
        "The site refused: this user may not do this (HTTP 403)." + said,
        "The site answered HTTP 404 for POST /wp/v2/posts/12.",
        "The site answered HTTP 404 for GET /wp/v2/posts." + said,
        "The site asked to slow down (HTTP 429).", "The site had a temporary error (HTTP 503).",
        "The site refused the request (HTTP 400).", "The site refused the request (HTTP 400)."
        + said, "The site did not answer within 3 s.", "The site did not answer within 2.5 s.",
        "Could not connect to the site.",
        "The TLS handshake with the site failed (its certificate?).",
        "The connection to the site was cut before its answer was complete.",
        "The site's answer was too large.",
        "The site answered with something that is not JSON: no WordPress REST API at this "
        "address?", "The site's answer about the post had no post id.",
        "The site's answer about a new term had no id.",
        "The site redirects (HTTP 301) to https://example.com/wp-json/wp/v2/posts; redirects "
        "are not followed: use that address.",
        f"The site's address is not allowed: {wordpress.netguard.NOT_PUBLIC} "
        "(PUBLISH_ALLOWED_HOSTS can name it).",
        publishing.TermMissing("categories", "News").message,
        publishing.TermMissing("tags", "Fresh & new").message,
        publishing.STOPPED, publishing.UNREADABLE, publishing.NOT_APPROVED,
        publishing.SCHEDULE_PASSED, reconciler.LOST_PUBLICATION, english(service.QUEUE_DOWN),
        "The worker publishing this article stopped responding 5 times; giving up.",
        "The user author may not publish posts (no publish_posts capability).",
    ]
    out = errors + [f"{e} Gave up after 5 attempts." for e in errors[5:12]]
    labels_ = list(publishing.RETRY_LABELS.values())
    out += labels_ + [f"{label} — retry 2 of 5 in 4 s" for label in labels_]
    return out


def test_every_stored_message_is_known_to_the_pages(db_app):
    """A page translates a stored message when it is a msgid of the catalog (extracted as
    `make messages` extracts them), or has the shape of one of labels.PATTERNS."""
    msgids = set(extracted())
    unknown = [text for text in written() if text not in msgids
               and not any(p.fullmatch(text) for p, _say in labels.PATTERNS)]
    assert not unknown


def test_in_english_a_stored_message_reads_as_written(db_app):
    with db_app.test_request_context("/?lang=en"):
        for text in written():
            assert stored(text) == text
    assert stored(None) is None and stored("") == ""
    assert stored("Something a provider said.") == "Something a provider said."


def _translations(pairs: dict[str, str]) -> Translations:
    catalog = Catalog(locale="zh_Hans")
    for msgid, msgstr in pairs.items():
        catalog.add(msgid, msgstr)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer)


def test_a_page_says_a_stored_message_in_its_language(db_app, monkeypatch):
    chinese = _translations({
        "The provider had a temporary error (HTTP %(status)s).":
            "服务商暂时出错（HTTP %(status)s）。",
        "%(problem)s Gave up after %(n)s attempts.": "%(problem)s已尝试 %(n)s 次，放弃。",
        "Paused by %(who)s.": "由 %(who)s 暂停。",
        "Rate limited": "被限流",
        "%(problem)s — retry %(n)s of %(of)s in %(s)s s":
            "%(problem)s — %(s)s 秒后第 %(n)s/%(of)s 次重试",
        "Stopped by the circuit breaker.": "已被熔断器停止。",
    })
    real = Domain.get_translations

    def translations(self):
        return chinese if str(get_locale()) == "zh_Hans" else real(self)

    monkeypatch.setattr(Domain, "get_translations", translations)
    with db_app.test_request_context("/?lang=zh-Hans"):
        assert stored("Stopped by the circuit breaker.") == "已被熔断器停止。"
        assert stored("Rate limited — retry 2 of 3 in 4 s") == "被限流 — 4 秒后第 2/3 次重试"
        assert stored("The provider had a temporary error (HTTP 503). Gave up after 3 "
                      "attempts.") == "服务商暂时出错（HTTP 503）。已尝试 3 次，放弃。"
        # Written in English whatever the language of the request that wrote it.
        reason = english(labels._l("Paused by %(who)s.", who="ed@example.com"))
        assert reason == "Paused by ed@example.com."
        assert stored(reason) == "由 ed@example.com 暂停。"
        # A provider's own words stay as it wrote them.
        assert stored("Unexpected provider error: boom") == "Unexpected provider error: boom"


@pytest.mark.parametrize("text", ["Paused by the circuit breaker: x", "refused:", "—"])
def test_a_near_miss_is_shown_as_it_is(db_app, text):
    with db_app.test_request_context("/"):
        assert stored(text) == text
