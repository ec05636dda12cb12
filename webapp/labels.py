"""What a page calls the codes it shows: statuses, roles, modes, tones, review flags, audit
actions and where a version came from.

The database, the API and the logs keep the codes (`succeeded`, `content_filter`); a page
shows these words, in its own language. A code without a label is shown as it is. Messages
stored in English for later are translated the same way, when a page shows them (`stored`).
"""
from __future__ import annotations

import re

from flask_babel import force_locale, gettext as _, lazy_gettext as _l

STATUS = {
    "queued": _l("queued"),
    "running": _l("running"),
    "paused": _l("paused"),
    "cancelling": _l("cancelling"),
    "succeeded": _l("succeeded"),
    "failed": _l("failed"),
    "cancelled": _l("cancelled"),
    # A provider batch's own states (economy mode).
    "preparing": _l("preparing"),
    "validating": _l("validating"),
    "in_progress": _l("in progress"),
    "finalizing": _l("finalizing"),
    "completed": _l("completed"),
    "expired": _l("expired"),
    # A publication's states (publishing to WordPress).
    "publishing": _l("publishing"),
    "published": _l("sent"),
    "unpublished": _l("unpublished"),
}

# A post's own status on a WordPress site.
REMOTE = {
    "draft": _l("draft"),
    "pending": _l("pending review"),
    "future": _l("scheduled"),
    "publish": _l("published"),
    "private": _l("private"),
    "trash": _l("in the trash"),
}

# A destination's state, and where its provenance note goes.
DESTINATION = {
    "ok": _l("ok"),
    "needs_credentials": _l("needs credentials"),
}

PROVENANCE = {
    "none": _l("no provenance note"),
    "footer": _l("a footer paragraph"),
    "meta": _l("post meta fields"),
}

ROLE = {
    "admin": _l("admin"),
    "editor": _l("editor"),
    "viewer": _l("viewer"),
}

MODE = {
    "standard": _l("Standard"),
    "economy": _l("Economy"),
}

FLAG = {
    "refused": _l("refused"),
    "length": _l("cut off at the length limit"),
    "content_filter": _l("stopped by the content filter"),
    "empty": _l("empty"),
    "short": _l("short"),
}

REVIEW = {
    "needs_review": _l("needs review"),
    "pending": _l("awaiting review"),
    "approved": _l("approved"),
    "rejected": _l("rejected"),
}

AUDIT = {
    "article_cancelled": _l("article cancelled"),
    "article_edited": _l("article edited"),
    "article_regenerated": _l("article regenerated"),
    "article_reviewed": _l("article reviewed"),
    "articles_published": _l("articles published"),
    "articles_unpublished": _l("articles unpublished"),
    "batch_cancelled": _l("batch cancelled"),
    "batch_dispatched": _l("batch dispatched"),
    "batch_duplicated": _l("batch duplicated"),
    "batch_exported": _l("batch exported"),
    "batch_paused": _l("batch paused"),
    "batch_resumed": _l("batch resumed"),
    "batch_submitted": _l("batch submitted"),
    "bulk_approved": _l("approved in bulk"),
    "bulk_cancelled": _l("cancelled in bulk"),
    "bulk_exported": _l("exported in bulk"),
    "bulk_published": _l("published in bulk"),
    "bulk_regenerated": _l("written again in bulk"),
    "bulk_rejected": _l("rejected in bulk"),
    "bulk_retried": _l("failed articles retried in bulk"),
    "destination_added": _l("destination added"),
    "destination_changed": _l("destination changed"),
    "destination_removed": _l("destination removed"),
    "password_reset": _l("password reset"),
    "sign_in": _l("signed in"),
    "sign_in_failed": _l("sign-in failed"),
    "sign_out": _l("signed out"),
    "template_archived": _l("template archived"),
    "template_created": _l("template created"),
    "template_edited": _l("template edited"),
    "template_restored": _l("template restored"),
    "token_created": _l("API token created"),
    "token_revoked": _l("API token revoked"),
    "user_created": _l("user created"),
    "user_disabled": _l("user disabled"),
    "user_enabled": _l("user enabled"),
    "user_role_changed": _l("role changed"),
    "version_restored": _l("version restored"),
}

TONE = {
    "neutral": _l("neutral"),
    "friendly": _l("friendly"),
    "formal": _l("formal"),
    "persuasive": _l("persuasive"),
    "playful": _l("playful"),
    "authoritative": _l("authoritative"),
}

# Where a version of an article came from ("restored v3" is handled in label()).
VERSION = {
    "generated": _l("generated"),
    "edited": _l("edited"),
    "economy (after cancel)": _l("economy (after cancel)"),
}
_RESTORED = "restored v"

# Which provider wrote a batch: "offline", "openai" or "openai-compatible (<host>)".
PROVIDER = {
    "offline": _l("offline (placeholder articles)"),
    "openai": "OpenAI",
}
_COMPATIBLE = "openai-compatible ("

# The pages whose filters a person can save as a view (services/saved_views.py).
PAGE = {
    "dashboard": _l("Batches"),
    "review": _l("Review queue"),
}

KINDS = {"status": STATUS, "role": ROLE, "mode": MODE, "flag": FLAG, "review": REVIEW,
         "audit": AUDIT, "tone": TONE, "version": VERSION, "provider": PROVIDER,
         "page": PAGE, "remote": REMOTE, "destination": DESTINATION,
         "provenance": PROVENANCE}


def label(kind: str, code) -> str:
    """The page's word for a code of the given kind (`status`, `role`, `tone`, …)."""
    if code is None:
        return ""
    code = str(code)
    found = KINDS[kind].get(code)
    if found is not None:
        return str(found)
    if kind == "version" and code.startswith(_RESTORED):
        return _("restored v%(number)s", number=code[len(_RESTORED):])
    if kind == "provider" and code.startswith(_COMPATIBLE) and code.endswith(")"):
        return _("OpenAI-compatible server %(host)s", host=code[len(_COMPATIBLE):-1])
    return code


# ---------------------------------------------------------------- stored messages
#
# What is written into the database for later (an article's note or error, a batch's pause
# or stop reason, why the queue or the provider did not take a batch) is written in English,
# for everyone: a worker has no reader, and the API and the logs speak English. A page
# translates it when it shows it (`stored`, the `stored` filter): the English is the msgid.
# A provider's own words (its error text, an exception's name) stay as the provider wrote
# them, inside the translated sentence.


def english(message) -> str:
    """A message as it is stored: in English, whatever the language of the request."""
    with force_locale("en"):
        return str(message)


# The stored messages without values, as their writers write them (listed so that `make
# messages` extracts them; tests/unit/test_stored_messages.py checks they still match).
STORED = (
    # generation/provider.py: what a provider's failure means (classify, cut_off).
    _l("The provider did not answer in time."),
    _l("Could not connect to the provider."),
    _l("The provider account has run out of quota or credit."),
    _l("Rate limited by the provider."),
    _l("The API key was rejected by the provider (HTTP 401). Check OPENAI_API_KEY."),
    _l("The provider refused access (HTTP 403)."),
    _l("The provider does not know this model (HTTP 404)."),
    _l("This batch was submitted for an OpenAI provider, but OPENAI_API_KEY is not set on "
       "the worker."),
    _l("The provider did not finish the answer in time."),
    # ...and what an article shows while a retry waits (a ProviderError's label).
    _l("Rate limited"),
    _l("The answer was cut off"),
    _l("The provider did not answer in time"),
    _l("Could not connect to the provider"),
    _l("The provider did not finish the answer in time"),
    # Why an answer was cut off (provider.cut_off's reasons).
    _l("the stream ended before the provider said the answer was finished"),
    _l("the connection to the provider was lost mid-answer"),
    _l("the provider sent a chunk that could not be read"),
    _l("the provider's result has no finish reason, so it may be incomplete"),
    # generation/lifecycle.py, economy.py, economy_import.py, reconciler.py, dispatch.py.
    _l("Stopped by the circuit breaker."),
    _l("budget reached"),
    _l("over budget"),
    _l("The provider's batch expired (its 24-hour window ran out) before this article was "
       "written. Send it again."),
    _l("The provider returned no result for this article. Send it again."),
    _l("Re-queued: the worker writing it stopped responding."),
    _l("The task queue (Redis) is unreachable, so generation has not started. The batch is "
       "saved; it is sent automatically when the queue is back, or use “Retry dispatch”."),
    # generation/webhooks.py: why a delivery failed; netguard.py: why an address is refused.
    _l("timed out"),
    _l("could not connect"),
    _l("TLS handshake failed"),
    _l("invalid HTTP response"),
    _l("not a public address"),
    _l("not a valid URL"),
    # generation/publishing.py and wordpress.py: why a publication failed or waits.
    _l("Stopped: the destination's credentials were rejected; fix them on the Destinations "
       "page, then publish again."),
    _l("The stored application password can no longer be read (SECRET_KEY changed?); an "
       "admin enters it again on the Destinations page."),
    _l("The article is not approved (any more); nothing was sent."),
    _l("The scheduled time passed before the post could be sent; publish it again with a new "
       "time."),
    _l("The site asked to slow down (HTTP 429)."),
    _l("Could not connect to the site."),
    _l("The TLS handshake with the site failed (its certificate?)."),
    _l("The connection to the site was cut before its answer was complete."),
    _l("The site's answer was too large."),
    _l("The site answered with something that is not JSON: no WordPress REST API at this "
       "address?"),
    _l("The site's answer about the user was not a user."),
    _l("The site's answer about a new term had no id."),
    _l("The site's answer about the post had no post id."),
    _l("Rate limited by the site"),
    _l("The site had an error"),
    _l("The site did not answer in time"),
    _l("Could not connect to the site"),
    _l("Sent again: the worker publishing it stopped responding."),
    # services/publishing.py: the queue could not take the publications.
    _l("The queue (Redis) could not be reached: the publications are stored and are sent "
       "when it is back."),
)

# The stored messages with values in them: the English as a pattern, and the sentence a
# page shows. Tried in order, after the plain ones; the first whole match wins. A value
# that is itself a stored message (a provider error inside "Gave up after…") is translated
# in turn.
PATTERNS = (
    (re.compile(r"(?P<problem>.+) — retry (?P<n>\d+) of (?P<of>\d+) in (?P<s>\d+) s"),
     lambda m: _("%(problem)s — retry %(n)s of %(of)s in %(s)s s", problem=stored(
         m["problem"]), n=m["n"], of=m["of"], s=m["s"])),
    (re.compile(r"(?P<problem>.+) Gave up after (?P<n>\d+) attempts\."),
     lambda m: _("%(problem)s Gave up after %(n)s attempts.", problem=stored(m["problem"]),
                 n=m["n"])),
    (re.compile(r"Paused by the circuit breaker: (?P<problem>.+) Fix the provider settings, "
                r"then an admin resumes the batch\."),
     lambda m: _("Paused by the circuit breaker: %(problem)s Fix the provider settings, then "
                 "an admin resumes the batch.", problem=stored(m["problem"]))),
    (re.compile(r"Paused by (?P<who>\S+)\."),
     lambda m: _("Paused by %(who)s.", who=m["who"])),
    (re.compile(r"The answer was cut off: (?P<why>.+)\. Send it again\."),
     lambda m: _("The answer was cut off: %(why)s. Send it again.", why=stored(m["why"]))),
    (re.compile(r"The answer was cut off: the provider sent nothing for more than "
                r"(?P<s>[\d.]+) s\."),
     lambda m: _("The answer was cut off: the provider sent nothing for more than %(s)s s.",
                 s=m["s"])),
    (re.compile(r"The answer was cut off: the answer stopped with (?P<error>\w+)\."),
     lambda m: _("The answer was cut off: the answer stopped with %(error)s.",
                 error=m["error"])),
    (re.compile(r"The answer was cut off: (?P<why>.+)\."),
     lambda m: _("The answer was cut off: %(why)s.", why=stored(m["why"]))),
    (re.compile(r"The provider had a temporary error \(HTTP (?P<status>\d+)\)\."),
     lambda m: _("The provider had a temporary error (HTTP %(status)s).", status=m["status"])),
    (re.compile(r"The provider had a temporary error \(HTTP (?P<status>\d+)\)"),
     lambda m: _("The provider had a temporary error (HTTP %(status)s)", status=m["status"])),
    (re.compile(r"The provider rejected the request \(HTTP (?P<status>\d+)\): (?P<detail>.*)",
                re.S),
     lambda m: _("The provider rejected the request (HTTP %(status)s): %(detail)s",
                 status=m["status"], detail=m["detail"])),
    (re.compile(r"Unexpected provider error: (?P<detail>.*)", re.S),
     lambda m: _("Unexpected provider error: %(detail)s", detail=m["detail"])),
    (re.compile(r"The prompt template cannot be used for this article\. (?P<why>.*)", re.S),
     lambda m: _("The prompt template cannot be used for this article. %(why)s",
                 why=stored(m["why"]))),
    (re.compile(r"The provider's batch failed: (?P<detail>.*)", re.S),
     lambda m: _("The provider's batch failed: %(detail)s", detail=m["detail"])),
    (re.compile(r"The provider could not write this article: (?P<detail>.*)", re.S),
     lambda m: _("The provider could not write this article: %(detail)s", detail=m["detail"])),
    (re.compile(r"The worker writing this article stopped responding (?P<n>\d+) times; "
                r"giving up\."),
     lambda m: _("The worker writing this article stopped responding %(n)s times; giving up.",
                 n=m["n"])),
    (re.compile(r"Budget reached: \$(?P<spent>[\d.,]+) spent of \$(?P<budget>[\d.,]+)\."),
     lambda m: _("Budget reached: $%(spent)s spent of $%(budget)s.", spent=m["spent"],
                 budget=m["budget"])),
    (re.compile(r"Budget: the economy estimate \$(?P<estimate>[\d.,]+) exceeds the budget "
                r"\$(?P<budget>[\d.,]+); nothing was sent\."),
     lambda m: _("Budget: the economy estimate $%(estimate)s exceeds the budget $%(budget)s; "
                 "nothing was sent.", estimate=m["estimate"], budget=m["budget"])),
    # Why economy mode is not offered (generation/economy_requests.py, kept in Redis).
    (re.compile(r"Economy mode is not available: the provider at (?P<url>\S+) has no Batch "
                r"API \(/v1/files or /v1/batches answered (?P<status>\w+)\)\."),
     lambda m: _("Economy mode is not available: the provider at %(url)s has no Batch API "
                 "(/v1/files or /v1/batches answered %(status)s).", url=m["url"],
                 status=m["status"])),
    (re.compile(r"Economy mode cannot be offered right now: the provider could not be asked "
                r"whether it has a Batch API \((?P<problem>.*)\)", re.S),
     lambda m: _("Economy mode cannot be offered right now: the provider could not be asked "
                 "whether it has a Batch API (%(problem)s)", problem=stored(m["problem"]))),
    # A provider batch's error (generation/batchapi.py).
    (re.compile(r"The provider's Batch API answered (?P<status>\d+): (?P<detail>.*)", re.S),
     lambda m: _("The provider's Batch API answered %(status)s: %(detail)s",
                 status=m["status"], detail=m["detail"])),
    (re.compile(r"The provider's Batch API could not be reached \((?P<error>\w+)\)\."),
     lambda m: _("The provider's Batch API could not be reached (%(error)s).",
                 error=m["error"])),
    # A webhook delivery's failure (generation/webhooks.py).
    (re.compile(r"redirect not followed \(HTTP (?P<status>\d+)\)"),
     lambda m: _("redirect not followed (HTTP %(status)s)", status=m["status"])),
    (re.compile(r"refused: (?P<why>.+)"),
     lambda m: _("refused: %(why)s", why=stored(m["why"]))),
    # Publishing to WordPress (generation/wordpress.py, publishing.py): the site's own words
    # stay as the site wrote them.
    (re.compile(r"(?P<problem>.+\.) The site said: “(?P<said>.*)”", re.S),
     lambda m: stored(m["problem"]) + " " + _("The site said: “%(message)s”",
                                               message=m["said"])),
    (re.compile(r"The site rejected the application password \(HTTP 401\)\."),
     lambda m: _("The site rejected the application password (HTTP 401).")),
    (re.compile(r"The site refused: this user may not do this \(HTTP 403\)\."),
     lambda m: _("The site refused: this user may not do this (HTTP 403).")),
    (re.compile(r"The site answered HTTP 404 for (?P<what>.+)\."),
     lambda m: _("The site answered HTTP 404 for %(what)s.", what=m["what"])),
    (re.compile(r"The site did not answer within (?P<s>[\d.]+) s\."),
     lambda m: _("The site did not answer within %(s)s s.", s=m["s"])),
    (re.compile(r"The site had a temporary error \(HTTP (?P<status>\d+)\)\."),
     lambda m: _("The site had a temporary error (HTTP %(status)s).", status=m["status"])),
    (re.compile(r"The site refused the request \(HTTP (?P<status>\d+)\)\."),
     lambda m: _("The site refused the request (HTTP %(status)s).", status=m["status"])),
    (re.compile(r"The site redirects \(HTTP (?P<status>\d+)\) to (?P<location>.*); redirects "
                r"are not followed: use that address\.", re.S),
     lambda m: _("The site redirects (HTTP %(status)s) to %(location)s; redirects are not "
                 "followed: use that address.", status=m["status"], location=m["location"])),
    (re.compile(r"The site's address is not allowed: (?P<why>.+) \(PUBLISH_ALLOWED_HOSTS can "
                r"name it\)\."),
     lambda m: _("The site's address is not allowed: %(why)s (PUBLISH_ALLOWED_HOSTS can name "
                 "it).", why=stored(m["why"]))),
    (re.compile(r"The category “(?P<name>.*)” does not exist on the site, and this destination "
                r"does not create new categories and tags\.", re.S),
     lambda m: _("The category “%(name)s” does not exist on the site, and this destination "
                 "does not create new categories and tags.", name=m["name"])),
    (re.compile(r"The tag “(?P<name>.*)” does not exist on the site, and this destination "
                r"does not create new categories and tags\.", re.S),
     lambda m: _("The tag “%(name)s” does not exist on the site, and this destination does "
                 "not create new categories and tags.", name=m["name"])),
    (re.compile(r"The worker publishing this article stopped responding (?P<n>\d+) times; "
                r"giving up\."),
     lambda m: _("The worker publishing this article stopped responding %(n)s times; giving "
                 "up.", n=m["n"])),
    (re.compile(r"The user (?P<name>.+) may not publish posts \(no publish_posts "
                r"capability\)\."),
     lambda m: _("The user %(name)s may not publish posts (no publish_posts capability).",
                 name=m["name"])),
)


def stored(text):
    """A stored English message in the page's language; as it is when it is none of ours."""
    if not text:
        return text
    translated = _(text)  # a message without values is its own msgid (see STORED)
    if translated != text:
        return translated
    for pattern, say in PATTERNS:
        found = pattern.fullmatch(text)
        if found:
            return say(found)
    return text
