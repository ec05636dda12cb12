"""A worker entry point whose broker redelivers a message after FAULT_VISIBILITY_TIMEOUT
seconds even though an article takes longer: `celery -A tests.faults.short_visibility:celery_app`.

webapp refuses to start with a visibility timeout shorter than the longest an article can
take (OPENAI_TIMEOUT × GENERATION_MAX_ATTEMPTS), because then Redis hands a running article
to a second worker. This module builds the app with safe settings, so the start-up check
passes, and only then shortens the transport's visibility timeout: the misconfiguration
the check guards against, on purpose, to prove that the claim and lease still keep one body.
kombu's scan for overdue messages is made to run every second (instead of every 100 s) so
the redelivery happens during the article rather than after it.
"""
import os

from webapp import create_app

app = create_app()
celery_app = app.extensions["celery"]
celery_app.conf.broker_transport_options = {
    **celery_app.conf.broker_transport_options,
    "visibility_timeout": float(os.environ["FAULT_VISIBILITY_TIMEOUT"]),
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}
