"""Generation: everything that turns a stored batch into written articles.

tasks (the Celery task per article), provider (the openai SDK or the offline stand-in),
prompts (an article's prompt; editors' templates are checked by template_check and rendered
with budgets by templating), tokencount and pricing (estimates and cost), ratelimit
(shared limits, the first-request probe, per-batch slots), dispatch (sending to the queue),
reconciler (the periodic repair job), webhooks (telling others a batch finished), live
(state in Redis), lengths (words, or characters for Chinese and Japanese) and lifecycle
(the one writer of status).

Imports flow one way: blueprints → services → generation → models → extensions.
Celery task names are explicit (`webapp.tasks.generate_article`, …) and stay what they were
before this package existed, so messages queued by an older release are still consumed.
"""
