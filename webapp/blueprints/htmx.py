"""What the pages' htmx requests and polls have in common."""
from __future__ import annotations

from flask import request

# htmx stops an `every` poll on this status; our load-polling stops because the final
# partial carries no trigger, and 286 tells any other client the same.
STOP_POLLING = 286


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"
