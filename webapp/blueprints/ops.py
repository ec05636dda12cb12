"""Endpoints for machines: load balancers, orchestrators and Prometheus. No secrets."""
from __future__ import annotations

from flask import Blueprint, Response, abort, jsonify, request

from ..services import system

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    """The process is alive and serving requests."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """Ready for traffic: database and Redis reachable, migrations at head."""
    checks = system.readiness()
    ready = all(c.ok for c in checks.values())
    body = {"status": "ready" if ready else "not ready",
            "checks": {name: {"ok": c.ok, "latency_ms": c.latency_ms, "detail": c.detail}
                       for name, c in checks.items()}}
    return jsonify(body), (200 if ready else 503)


@bp.get("/metrics")
def metrics():
    """Prometheus metrics; needs METRICS_TOKEN as a bearer token or an allowed address."""
    if not system.metrics_allowed(request.remote_addr, request.headers.get("Authorization", "")):
        abort(403, "Metrics need METRICS_TOKEN (as a bearer token) or an address in METRICS_ALLOW.")
    return Response(system.render_metrics(), content_type=system.METRICS_CONTENT_TYPE)
