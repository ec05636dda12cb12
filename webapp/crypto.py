"""Secrets kept in the database that Pressroom must read back: destination passwords.

A WordPress application password has to be sent as it is, so it cannot be hashed like a
sign-in password; it is encrypted with Fernet (AES-128-CBC and HMAC-SHA256, from the
`cryptography` package) under a key derived from SECRET_KEY with HKDF-SHA256. The key is
never the SECRET_KEY itself, and other uses of SECRET_KEY (sessions, webhook signatures)
never share it.

Rotating SECRET_KEY makes every stored password unreadable: `decrypt` raises Unreadable,
and the destination asks an admin to enter its password again (README, "Rotating
SECRET_KEY").

No Flask: the key is passed in, so any layer may use it.
"""
from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

INFO = b"pressroom destinations"


class Unreadable(Exception):
    """The stored secret cannot be decrypted with this SECRET_KEY (it changed, or the
    stored text was damaged)."""


def fernet_for(secret_key: str) -> Fernet:
    if not secret_key:
        raise ValueError("SECRET_KEY is empty: no key to encrypt with")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=INFO).derive(secret_key.encode("utf-8"))
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt(plain: str, secret_key: str) -> str:
    """The Fernet token (ASCII) of `plain`; a new random IV each time."""
    return fernet_for(secret_key).encrypt(plain.encode("utf-8")).decode("ascii")


def decrypt(token: str, secret_key: str) -> str:
    try:
        return fernet_for(secret_key).decrypt((token or "").encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError, ValueError) as exc:
        raise Unreadable("the stored password cannot be decrypted with this SECRET_KEY") from exc
