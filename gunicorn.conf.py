"""gunicorn settings for Pressroom, read from the environment.

Every way of running the web process uses this file: the Procfile (`make run`), the
Dockerfile, docker-compose.yml and deploy/systemd/pressroom-web.service:

    gunicorn -c gunicorn.conf.py wsgi:app

A --bind (or any other flag) on the command line overrides the value here.
"""
import gc
import os


def _int(name, default):
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


wsgi_app = "wsgi:app"

# BIND is a full address (host:port or unix:/path); without it, PORT on loopback. gunicorn's
# own default would be 0.0.0.0:$PORT whenever PORT is set, which would put a development
# server on the network; reaching it from elsewhere should be a decision (BIND=0.0.0.0:8000,
# as the Docker image does), normally with a reverse proxy in front.
bind = os.environ.get("BIND") or f"127.0.0.1:{_int('PORT', 8000)}"

# Sync workers: a request is a short database read plus one Redis round trip (progress is
# polled by htmx, nothing is held open), so one request per process is enough and a stuck
# one is killed by the timeout below. Sync workers must sit behind a buffering proxy
# (nginx) so that slow clients cannot tie them up.
worker_class = "sync"
workers = _int("WEB_CONCURRENCY", 2)

# No page should take more than a fraction of a second; a request still running after 30 s
# is stuck (a hung database or Redis), and the worker is restarted rather than left blocked.
timeout = 30
# On SIGTERM or a reload, requests in flight get this long to finish.
graceful_timeout = 30

# Restart each worker now and then (about every 20,000 requests) so that slow leaks cannot grow
# without bound; the jitter spreads the restarts so the workers never all restart at once.
max_requests = 20000
max_requests_jitter = 2000

# X-Forwarded-Proto and friends are believed only from these addresses (the reverse proxy).
# The app's own ProxyFix (PROXY_FIX_HOPS) decides what Flask sees; this is gunicorn's half.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

# Logs go to the process's output, where honcho, journald and Docker collect them.
accesslog = "-"
errorlog = "-"

# The worker heartbeat file is touched constantly; in a container /tmp may be an overlay on
# disk, which can block a worker, so use memory when it is there (gunicorn's own advice).
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"

# gunicorn's control socket lives in $HOME by default, shared by every gunicorn of one user
# and unwritable in a hardened unit or a read-only container. Nothing here uses gunicornc:
# systemd and Docker manage the process with signals (HUP reloads, TERM stops).
control_socket_disable = True

# Load the app once in the master and fork it: a worker (re)start then costs no import,
# and nothing connects at import time (database and Redis clients are made on first use).
preload_app = True


def pre_fork(server, worker):
    # Everything the app made at import (modules, templates, SQLAlchemy's tables) lives as
    # long as the worker: frozen, the garbage collector's full passes no longer walk it, so
    # they stop costing a request tens of milliseconds now and then; and the forked workers
    # share those pages with the master instead of copying them when the collector marks
    # them.
    gc.freeze()
