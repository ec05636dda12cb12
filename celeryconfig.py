"""Every Celery setting, lower-case, read from the environment.

The broker and result backend URLs are set from the app's REDIS_URL in
webapp/celery_app.py; everything else lives here.
"""
import os


def _num(name, default, cast=float):
    value = os.environ.get(name)
    return cast(value) if value not in (None, "") else default


# Only JSON crosses the wire: no pickle, so a message can never run code.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

# A task is acknowledged only when it ends, and a worker that dies gives it back:
# the task is idempotent (guarded updates and a claim), so a second delivery is harmless.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
# "Running" is the article's claim in the database; a STARTED state in Redis would be one
# more write per article that nothing reads.
task_track_started = False

# Task events (what Flower shows) cost several broker messages per task: off unless
# CELERY_TASK_EVENTS=1. Flower turns them on in the running workers while it runs (its
# enable_events option, on by default), so `make run FLOWER=1` still shows every task.
_task_events = os.environ.get("CELERY_TASK_EVENTS", "0").strip().lower() not in (
    "", "0", "false", "no", "off")
worker_send_task_events = _task_events
task_send_sent_event = _task_events
result_expires = _num("CELERY_RESULT_EXPIRES", 24 * 3600, int)

task_default_queue = "celery"
# Webhook deliveries have their own small worker (Procfile `webhooks`): a slow receiver
# then holds one of its threads, never a generation thread.
# Publishing to WordPress has its own worker too (Procfile `publisher`): requests to a slow
# or rate-limiting site wait there, never on a generation thread, and its concurrency per
# destination is kept in Redis (generation/publishing.py), whatever the worker count.
# Bulk actions are quick database work, like the housekeeping tasks: the default queue.
task_routes = {"webapp.tasks.generate_article": {"queue": "generation"},
               "webapp.webhooks.deliver": {"queue": "webhooks"},
               "webapp.publishing.run": {"queue": "publishing"},
               "webapp.bulk.run": {"queue": "celery"}}

# Threads suit this I/O-bound work: dozens of streams at once in one process.
worker_pool = "threads"
worker_concurrency = _num("CELERY_CONCURRENCY", 16, int)
worker_hijack_root_logger = False

# The longest an article can take is one client timeout per attempt. An unacknowledged
# message is redelivered after the visibility timeout, so it must be longer than that;
# webapp checks this at start-up.
_openai_timeout = _num("OPENAI_TIMEOUT", 120.0)
_attempts = _num("GENERATION_MAX_ATTEMPTS", 3, int)
visibility_timeout = _num(
    "CELERY_VISIBILITY_TIMEOUT", max(3600, int(_openai_timeout * _attempts * 2) + 600), int
)

# Fail fast when Redis is down or frozen, instead of hanging a web request.
_socket_timeout = _num("REDIS_SOCKET_TIMEOUT", 2.0)
broker_connection_timeout = _socket_timeout
broker_connection_retry_on_startup = True
broker_transport_options = {
    "visibility_timeout": visibility_timeout,
    "socket_timeout": _socket_timeout,
    "socket_connect_timeout": _socket_timeout,
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
# No publish retry: against a frozen Redis each retry costs another socket timeout, and a
# dispatch that fails is recorded and sent again by the reconciler anyway.
task_publish_retry = True
task_publish_retry_policy = {
    "max_retries": 0,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
redis_socket_timeout = _socket_timeout
redis_socket_connect_timeout = _socket_timeout
redis_retry_on_timeout = False
result_backend_transport_options = {"retry_policy": {"max_retries": 1, "timeout": 2.0}}

# The reconciler brings the database and Redis back in line (lost workers, lost messages,
# batches left open). Beat runs it; it is safe to run more often or twice.
beat_schedule = {
    "reconcile": {
        "task": "webapp.housekeeping.reconcile",
        "schedule": _num("RECONCILE_EVERY", 10.0),
        "options": {"expires": 60},
    },
}
