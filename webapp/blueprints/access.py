"""Role checks for views. Services check permissions too; this keeps pages honest."""
from __future__ import annotations

from functools import wraps

from flask import abort, current_app, make_response, render_template, request
from flask_login import current_user

from ..extensions import limiter

# Far past any real page or position, and small enough that an OFFSET or a comparison
# built from it fits the database's integers.
MAX_ARG = 1_000_000_000


def roles_required(*roles: str):
    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            if not current_user.is_authenticated or current_user.role not in roles:
                abort(403)
            return view(*args, **kwargs)
        return wrapper
    return decorator


def int_arg(name: str, default: int, high: int = MAX_ARG) -> int:
    """A positive whole number from the query string, clamped to [1, high]."""
    return min(max(request.args.get(name, default, type=int) or 1, 1), high)


def limited_per_user(scope: str, partial: str, message: str, **empty):
    """TEMPLATE_PREVIEW_LIMIT per user for a partial that renders editor input; over it,
    the partial itself says so (200: htmx swaps only 2xx answers)."""
    def over_limit(_request_limit):
        return make_response(render_template(partial, error=message, **empty))
    return limiter.limit(lambda: current_app.config["TEMPLATE_PREVIEW_LIMIT"],
                         key_func=lambda: f"{scope}:{current_user.id}", on_breach=over_limit)
