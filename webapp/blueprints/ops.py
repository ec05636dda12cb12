"""Endpoints for machines: load balancers and monitors. No login, no secrets."""
from __future__ import annotations

from flask import Blueprint, jsonify

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    """The process is alive and serving requests."""
    return jsonify({"status": "ok"})
