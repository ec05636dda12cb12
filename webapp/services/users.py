"""Accounts and API tokens. Passwords and tokens are only ever stored hashed."""
from __future__ import annotations

import hashlib
import secrets
from typing import Optional

from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from ..extensions import db
from ..models import ApiToken, Role, User

# Compared against when the email is unknown, so both failures take the same time.
_DUMMY_HASH = generate_password_hash("not-a-real-password")


class UserError(Exception):
    pass


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_user(email: str, role: str = Role.EDITOR, password: Optional[str] = None) -> tuple[User, str, str]:
    """Create a user with a password and a first API token; both are returned once."""
    email = (email or "").strip().lower()
    if "@" not in email or len(email) > 255 or any(c.isspace() for c in email):
        raise UserError(f"“{email}” is not an email address.")
    if role not in Role.ALL:
        raise UserError(f"Role must be one of: {', '.join(Role.ALL)}.")
    if db.session.scalar(select(User.id).where(User.email == email)):
        raise UserError(f"A user with the email {email} already exists.")
    password = password or secrets.token_urlsafe(12)
    user = User(email=email, password_hash=generate_password_hash(password), role=role)
    db.session.add(user)
    db.session.flush()
    token = issue_token(user, "default")
    db.session.commit()
    return user, password, token


def issue_token(user: User, name: str) -> str:
    token = "pr_" + secrets.token_urlsafe(32)
    db.session.add(ApiToken(user_id=user.id, name=name, token_hash=hash_token(token)))
    return token


def authenticate(email: str, password: str) -> Optional[User]:
    user = db.session.scalar(select(User).where(User.email == (email or "").strip().lower()))
    if user is None:
        check_password_hash(_DUMMY_HASH, password or "")
        return None
    if not check_password_hash(user.password_hash, password or ""):
        return None
    if user.is_disabled:
        return None
    return user


def user_for_token(token: str) -> Optional[User]:
    """The active user a bearer token belongs to (one query), or None."""
    if not token:
        return None
    row = db.session.execute(
        select(User, ApiToken).join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
    ).first()
    if row is None or row[0].is_disabled:
        return None
    return row[0]


def any_users() -> bool:
    return db.session.scalar(select(User.id).limit(1)) is not None
