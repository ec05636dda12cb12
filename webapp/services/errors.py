"""The services' error vocabulary; pages and the API each translate these in one place."""
from __future__ import annotations


class NotAllowed(Exception):
    """The user may see this but not change it."""


class Conflict(Exception):
    """The batch is not in a state where this makes sense (e.g. pausing a finished one)."""
