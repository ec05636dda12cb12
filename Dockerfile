# One image for every Pressroom process: the command picks web (the default), worker or beat.
# See docker-compose.yml for all of them together, and README.md "Production".
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# The processes run as an unprivileged user; root only builds the image.
RUN groupadd --system --gid 10001 pressroom \
    && useradd --system --create-home --uid 10001 --gid pressroom --shell /usr/sbin/nologin pressroom

# Dependencies first, in their own layer, so that editing the code does not reinstall them.
# Every pinned package ships wheels for this platform (psycopg[binary] brings its own libpq),
# so no compiler or system libraries are needed.
WORKDIR /app
COPY requirements.txt .
RUN python -m venv /opt/venv && pip install -r requirements.txt

COPY . .
# The interface's translations (.po) compiled to what Flask-Babel reads (.mo).
RUN pybabel -q compile -d webapp/translations
# The code stays owned by root (read-only to the app). instance/ is the one place the app
# writes: the tiktoken cache, celery beat's schedule, and a fallback secret key (production
# sets SECRET_KEY, so that one is never used there).
RUN mkdir -p instance && chown pressroom:pressroom instance

# Numeric, so that a runtime can check it is not root (Kubernetes' runAsNonRoot) without
# reading the image's /etc/passwd.
USER 10001:10001
EXPOSE 8000

# urlopen raises on a refused connection, a timeout or any non-2xx answer, so the exit
# status says whether the web process serves requests; no curl needed in the image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# Inside a container the port must be reachable from outside it; publish it only to where
# the reverse proxy is (docker-compose.yml publishes it on the host's loopback).
CMD ["gunicorn", "-c", "gunicorn.conf.py", "--bind", "0.0.0.0:8000", "wsgi:app"]
