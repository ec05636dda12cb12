"""The services' error vocabulary; pages and the API each translate these in one place.

Services raise these and never return error strings. A page shows NotAllowed as 403 and
NotFound as 404, flashes a Conflict (or an Invalid it does not re-render) and goes back; the
API answers each with its JSON error body (see blueprints/errors.py and blueprints/api.py).
"""
from __future__ import annotations

from typing import Optional, Union

FieldErrors = dict[str, Union[str, list[str]]]


class ServiceError(Exception):
    """What a service refuses, said for the person who asked."""

    def __init__(self, message: str = ""):
        super().__init__(message)
        self.message = message


class NotAllowed(ServiceError):
    """The user may see this but not change it."""


class NotFound(ServiceError):
    """There is no such thing (or none this user may know of)."""


class Conflict(ServiceError):
    """The thing is not in a state where this makes sense (e.g. pausing a finished batch)."""


class Invalid(ServiceError):
    """The input is wrong; `fields` names each field at fault with its message(s)."""

    def __init__(self, fields: FieldErrors, message: Optional[str] = None):
        super().__init__(message or " ".join(_messages(fields)))
        self.fields = fields


class Unavailable(Invalid):
    """The input is well formed, but this installation cannot do what it asks (economy mode
    with a provider that has no Batch API); `fields` says why."""


def _messages(fields: FieldErrors) -> list[str]:
    out: list[str] = []
    for value in fields.values():
        out.extend([value] if isinstance(value, str) else value)
    return out
