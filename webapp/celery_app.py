"""Celery wiring: tasks run inside an app context (Flask's documented pattern)."""
from __future__ import annotations

import logging

from celery import Celery, Task
from celery.signals import worker_init, worker_ready
from flask import Flask

from . import workerstate


def celery_init_app(app: Flask) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object("celeryconfig")
    # One Redis for broker and results, named by the app's REDIS_URL unless overridden.
    celery_app.conf.broker_url = app.config.get("CELERY_BROKER_URL") or app.config["REDIS_URL"]
    celery_app.conf.result_backend = (
        app.config.get("CELERY_RESULT_BACKEND") or app.config["REDIS_URL"]
    )
    if celery_app.conf.broker_url.startswith("redis://"):
        # kombu's Redis transport with one client per channel (see broker.py); a TLS or
        # other broker keeps kombu's own.
        celery_app.conf.broker_transport = "webapp.broker:Transport"
    check_visibility_timeout(app, celery_app)

    @worker_init.connect(weak=False)
    def _load_token_encodings(**_):
        # tiktoken parses its encoding files on first use (a few tenths of a second of
        # CPU, under a lock); done here, before the worker takes tasks, rather than by the
        # first batch's articles, which would all wait for it.
        from .generation.tokencount import encoding_for
        for model in {app.config["OPENAI_MODEL"],
                      *filter(None, (m.strip() for m in app.config["OPENAI_MODELS"].split(",")))}:
            encoding_for(model)

    @worker_init.connect(weak=False)
    def _quiet_task_lines(**_):
        # Failures are still logged (ERROR by Celery, WARNING by the task itself).
        if not app.config["CELERY_TASK_LOG"]:
            for name in ("celery.app.trace", "celery.worker.strategy"):
                logging.getLogger(name).setLevel(logging.WARNING)

    @worker_ready.connect(weak=False)
    def _start_heartbeat(sender=None, **_):
        # The signal's sender is the worker's consumer; the worker itself is its controller.
        worker = getattr(sender, "controller", sender)
        pool = getattr(worker, "pool", None)
        pool_name = type(pool).__module__.rsplit(".", 1)[-1] if pool else "?"
        workerstate.start_heartbeat(app.config["REDIS_URL"], worker.hostname, pool_name,
                                    getattr(worker, "concurrency", 0) or 0)

    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


def check_visibility_timeout(app: Flask, celery_app: Celery) -> None:
    """Refuse to start when Redis could hand a running article to a second worker.

    Redis redelivers a message that is not acknowledged within the visibility timeout; an
    article may take one full client timeout per attempt, so the timeout must be longer.
    """
    visibility = celery_app.conf.broker_transport_options.get("visibility_timeout", 3600)
    longest = app.config["OPENAI_TIMEOUT"] * app.config["GENERATION_MAX_ATTEMPTS"]
    if visibility <= longest:
        raise RuntimeError(
            f"CELERY_VISIBILITY_TIMEOUT ({visibility:g} s) must be longer than OPENAI_TIMEOUT × "
            f"GENERATION_MAX_ATTEMPTS ({longest:g} s), or Redis may deliver a running article "
            "to a second worker.")
