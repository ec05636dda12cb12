"""Accounts and API tokens. Passwords and tokens are only ever stored hashed."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional

from flask_babel import gettext as _
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import make_transient_to_detached
from werkzeug.security import check_password_hash, generate_password_hash

from ..extensions import db
from ..models import ApiToken, Role, User, UserSession, utcnow
from . import audit
from .errors import Conflict, Invalid, NotFound

# Compared against when the email is unknown, so both failures take the same time.
_DUMMY_HASH = generate_password_hash("not-a-real-password")
# Last use of a token or a session is written at most this often, so reads stay read-only.
_TOUCH_EVERY = timedelta(minutes=1)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _clean_email(email: str) -> str:
    email = (email or "").strip().lower()
    if "@" not in email or len(email) > 255 or any(c.isspace() for c in email) \
            or email.startswith("@") or email.endswith("@"):
        raise Invalid({"email": _("“%(email)s” is not an email address.", email=email)})
    return email


def create_user(email: str, role: str = Role.EDITOR,
                password: Optional[str] = None) -> tuple[User, str, str]:
    """Create a user with a password and a first API token; both are returned once."""
    email = _clean_email(email)
    if role not in Role.ALL:
        raise Invalid({"role": _("Role must be one of: %(roles)s.", roles=", ".join(Role.ALL))})
    if db.session.scalar(select(User.id).where(User.email == email)):
        raise Invalid({"email": _("A user with the email %(email)s already exists.",
                                  email=email)})
    password = password or secrets.token_urlsafe(12)
    user = User(email=email, password_hash=generate_password_hash(password), role=role)
    db.session.add(user)
    db.session.flush()
    token = issue_token(user, "default")
    audit.record("user_created", target=f"user:{user.id}", detail=f"{email} as {role}",
                 commit=False)
    db.session.commit()
    return user, password, token


def issue_token(user: User, name: str) -> str:
    token = "pr_" + secrets.token_urlsafe(32)
    db.session.add(ApiToken(user_id=user.id, name=name, token_hash=hash_token(token)))
    return token


def create_token(user: User, name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise Invalid({"name": _("Give the token a name of 1 to 100 characters.")})
    token = issue_token(user, name)
    audit.record("token_created", user=user, target=f"user:{user.id}", detail=name, commit=False)
    db.session.commit()
    return token


def tokens_of(user: User) -> list[ApiToken]:
    return db.session.scalars(select(ApiToken).where(ApiToken.user_id == user.id)
                              .order_by(ApiToken.id.desc())).all()


def revoke_token(user: User, token_id: int) -> None:
    tok = db.session.get(ApiToken, token_id)
    if tok is None or tok.user_id != user.id:
        raise NotFound(_("No such token."))
    if tok.revoked_at is None:
        tok.revoked_at = utcnow()
        audit.record("token_revoked", user=user, target=f"user:{user.id}", detail=tok.name,
                     commit=False)
        db.session.commit()


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


def sign_in(email: str, password: str) -> User:
    """The active user with this email and password; a failure is audited and raises
    Invalid with one message for an unknown email and a wrong password alike."""
    user = authenticate(email, password)
    if user is None:
        audit.record("sign_in_failed", actor=(email or "").strip().lower()[:255])
        wrong = _("Wrong email or password.")
        raise Invalid({"password": wrong}, wrong)
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
    user, tok = row
    now = utcnow()
    if tok.last_used_at is None or now - tok.last_used_at > _TOUCH_EVERY:
        db.session.execute(update(ApiToken).where(ApiToken.id == tok.id).values(last_used_at=now))
        db.session.commit()
    return user


def start_session(user: User, user_agent: str = "", ip: str = "") -> None:
    """Sign `user` in: open a server-side session, which `user.get_id()` then names."""
    secret = secrets.token_urlsafe(32)
    row = UserSession(user_id=user.id, secret_hash=hash_token(secret),
                      user_agent=(user_agent or "")[:200], ip=(ip or "")[:64])
    db.session.add(row)
    audit.record("sign_in", user=user, commit=False)
    db.session.commit()
    user.session_secret, user.session_row_id = secret, row.id


# Built once: every signed-in request runs it, and building and keying a statement costs
# more CPU than running it. Plain columns, not ORM entities, on a connection of its own:
# the ORM session's transaction and identity map cost more than the query itself (an
# in-process poll measured ~215 µs through the session against ~90 µs like this).
_USER_COLUMNS = tuple(User.__table__.columns)
_OPEN_SESSION = (select(*_USER_COLUMNS, UserSession.id, UserSession.last_seen_at)
                 .join(UserSession, UserSession.user_id == User.id)
                 .where(User.id == bindparam("user_id"),
                        UserSession.secret_hash == bindparam("secret_hash"),
                        UserSession.ended_at.is_(None)))


def user_for_session(session_id: str) -> Optional[User]:
    """The active user of an open session (one query: the page polls call this), or None.

    `session_id` is what User.get_id() made: "<user id>.<session secret>.<fingerprint>".
    The user comes back detached from the ORM session, as a snapshot of its row for this
    request: views read it and pass its id on; whatever changes a user loads it again
    (`db.session.get`), as the admin pages and the sign-in do.
    """
    user_id, _, rest = (session_id or "").partition(".")
    secret, _, fingerprint = rest.partition(".")
    if not (user_id.isascii() and user_id.isdigit()) or len(user_id) > 10 or not secret:
        return None  # not an id that get_id() made
    with db.engine.connect() as conn:
        row = conn.execute(_OPEN_SESSION, {"user_id": int(user_id),
                                           "secret_hash": hash_token(secret)}).first()
        if row is None:
            # Signed out, ended by a password reset or a disable, or an id from before
            # sessions were kept on the server ("<user id>.<fingerprint>"): that person
            # signs in again.
            return None
        user = User(**{c.key: value for c, value in zip(_USER_COLUMNS, row)})
        live_id, last_seen_at = row[-2], row[-1]
        if user.is_disabled or not hmac.compare_digest(fingerprint.encode(),
                                                       user.session_fingerprint().encode()):
            return None
        now = utcnow()
        if now - last_seen_at > _TOUCH_EVERY:
            conn.execute(update(UserSession).where(UserSession.id == live_id)
                         .values(last_seen_at=now))
            conn.commit()
    make_transient_to_detached(user)
    user.session_secret, user.session_row_id = secret, live_id
    return user


def remember_language(user: User, locale: str) -> None:
    """Keep the interface language a person chose, for every device they sign in on."""
    if user.ui_language == locale:
        return
    db.session.execute(update(User).where(User.id == user.id).values(ui_language=locale))
    db.session.commit()
    user.ui_language = locale


# What the header's theme switch offers; "system" keeps no choice (the CSS then follows the
# browser's prefers-color-scheme).
THEMES = ("light", "dark")
SYSTEM_THEME = "system"


def choose_theme(user: Optional[User], choice: str) -> Optional[str]:
    """The theme a person chose: "light", "dark", or None to follow the system; kept on
    their profile when signed in (None clears it), so every device they use shows it."""
    choice = (choice or "").strip()
    if choice not in THEMES and choice != SYSTEM_THEME:
        raise Invalid({"theme": _("Choose a theme: light, dark or system.")})
    theme = choice if choice in THEMES else None
    if user is not None and user.theme != theme:
        db.session.execute(update(User).where(User.id == user.id).values(theme=theme))
        db.session.commit()
        user.theme = theme
    return theme


def end_session(user: User) -> None:
    """Sign out: the session (and any copy of its cookies) no longer signs anyone in."""
    audit.record("sign_out", user=user, commit=False)
    if user.session_row_id is not None:
        db.session.execute(update(UserSession).where(UserSession.id == user.session_row_id,
                                                     UserSession.ended_at.is_(None))
                           .values(ended_at=utcnow()))
    db.session.commit()


def _end_all_sessions(user: User) -> None:
    db.session.execute(update(UserSession).where(UserSession.user_id == user.id,
                                                 UserSession.ended_at.is_(None))
                       .values(ended_at=utcnow()))


def _revoke_all_tokens(user: User) -> int:
    """Revoke every active token of `user`; returns how many there were."""
    result = db.session.execute(update(ApiToken).where(ApiToken.user_id == user.id,
                                                       ApiToken.revoked_at.is_(None))
                                .values(revoked_at=utcnow()))
    return result.rowcount


def any_users() -> bool:
    return db.session.scalar(select(User.id).limit(1)) is not None


def all_users() -> list[User]:
    return db.session.scalars(select(User).order_by(User.email)).all()


def _get(user_id: int) -> User:
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound(_("No such user."))
    return user


def set_role(admin: User, user_id: int, role: str) -> User:
    user = _get(user_id)
    if role not in Role.ALL:
        raise Invalid({"role": _("Role must be one of: %(roles)s.", roles=", ".join(Role.ALL))})
    if user.id == admin.id and role != Role.ADMIN:
        raise Conflict(_("You cannot take away your own admin role."))
    if user.role != role:
        audit.record("user_role_changed", target=f"user:{user.id}",
                     detail=f"{user.email}: {user.role} → {role}", commit=False)
        user.role = role
        db.session.commit()
    return user


def set_disabled(admin: User, user_id: int, disabled: bool) -> User:
    """A disabled user's session and tokens stop working on their next request."""
    user = _get(user_id)
    if user.id == admin.id and disabled:
        raise Conflict(_("You cannot disable your own account."))
    if user.is_disabled != disabled:
        user.is_disabled = disabled
        if disabled:
            # Ends the user's sessions for good: enabling the account again later does
            # not bring them back, whoever kept a copy of the cookie.
            user.session_version += 1
            _end_all_sessions(user)
        audit.record("user_disabled" if disabled else "user_enabled", target=f"user:{user.id}",
                     detail=user.email, commit=False)
        db.session.commit()
    return user


def reset_password(admin: User, user_id: int) -> tuple[User, str]:
    """A new random password (returned once). The account may be in someone else's hands,
    so its sessions end and its API tokens are revoked too."""
    user = _get(user_id)
    password = secrets.token_urlsafe(12)
    user.password_hash = generate_password_hash(password)
    _end_all_sessions(user)
    revoked = _revoke_all_tokens(user)
    audit.record("password_reset", target=f"user:{user.id}", detail=user.email, commit=False)
    if revoked:
        audit.record("token_revoked", target=f"user:{user.id}",
                     detail=f"all {revoked} API tokens of {user.email} (password reset)",
                     commit=False)
    db.session.commit()
    return user, password


def revoke_all_tokens(admin: User, user_id: int) -> tuple[User, int]:
    """An admin revokes every API token of a user at once; returns the user and the count."""
    user = _get(user_id)
    revoked = _revoke_all_tokens(user)
    audit.record("token_revoked", target=f"user:{user.id}",
                 detail=f"all {revoked} API tokens of {user.email} (by an admin)", commit=False)
    db.session.commit()
    return user, revoked


def emails_of(user_ids) -> dict[int, str]:
    ids = [i for i in user_ids if i]
    if not ids:
        return {}
    return dict(db.session.execute(select(User.id, User.email).where(User.id.in_(ids))).all())


@dataclass(frozen=True)
class Permissions:
    """What a person may do, so that pages offer only that (the services check it again)."""
    can_write: bool = False  # submit batches, write templates, review articles
    is_admin: bool = False


def permissions(user) -> Permissions:
    """For the signed-in `user`, or nobody (an anonymous visitor has no role)."""
    role = getattr(user, "role", None) if getattr(user, "is_authenticated", False) else None
    return Permissions(can_write=role in (Role.ADMIN, Role.EDITOR), is_admin=role == Role.ADMIN)
