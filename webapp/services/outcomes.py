"""How a finished action went, for the person who asked.

An action that was done but whose articles could not be sent (the queue is unreachable) is
not an error: it is stored, the batch records why it waits, and the page says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..labels import stored


@dataclass(frozen=True)
class Outcome:
    message: str
    level: str = "success"  # a flash category: success, info or error

    @classmethod
    def sent(cls, done: str, dispatch_error: Optional[str], level: str = "success") -> "Outcome":
        """`done`, unless sending the articles failed: then why they wait (stored in English
        with the batch, said in the page's language)."""
        return cls(stored(dispatch_error), "error") if dispatch_error else cls(done, level)
