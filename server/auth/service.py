"""Users, passwords (argon2), server-side sessions and the audit log (the caller commits)."""

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from server.db.models import (
    NAME_LEN,
    ROLES,
    AuditLog,
    AuthSession,
    Hall,
    LoginFailure,
    User,
    utcnow,
)

MIN_PASSWORD = 12
_hasher = PasswordHasher()
# Verified when the username is unknown, so that both cases take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class AuthError(ValueError):
    """A user cannot be made as asked (bad role, hall, password or a taken name)."""


def hash_password(password: str) -> str:
    """Return the argon2id hash of `password`; AuthError if shorter than MIN_PASSWORD."""
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"password shorter than {MIN_PASSWORD} characters")
    return _hasher.hash(password)


def verify_password(hashed: str, password: str) -> bool:
    """Return True if `password` matches `hashed`."""
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def create_user(
    session: Session, username: str, password: str, role: str, hall: str | None = None
) -> User:
    """Add a user (flushed, not committed); a hall manager needs `hall`, the others none."""
    if role not in ROLES:
        raise AuthError(f"role must be one of {', '.join(ROLES)}")
    if not username or len(username) > 64 or username != username.strip():
        raise AuthError("bad username")
    if role == "hall_manager" and hall is None:
        raise AuthError("a hall manager needs a hall")
    if role in ("admin", "office") and hall is not None:
        raise AuthError("an admin or the office has no hall (they see every hall)")
    hall_row = None
    if hall is not None:
        hall_row = session.scalars(select(Hall).where(Hall.code == hall)).one_or_none()
        if hall_row is None:
            raise AuthError(f"no hall {hall!r}")
    if session.scalars(select(User).where(User.username == username)).first() is not None:
        raise AuthError(f"user {username!r} exists already")
    user = User(username=username, password_hash=hash_password(password), role=role, hall=hall_row)
    session.add(user)
    session.flush()
    return user


def find_user(session: Session, username: str) -> User:
    """Return the user with that name; AuthError if there is none."""
    user = session.scalars(select(User).where(User.username == username)).unique().one_or_none()
    if user is None:
        raise AuthError(f"no user {username!r}")
    return user


def list_users(session: Session) -> list[User]:
    """Return every user, by name."""
    return list(session.scalars(select(User).order_by(User.username)).unique())


def set_active(session: Session, username: str, active: bool) -> User:
    """Activate or deactivate a user; a deactivated user's logins end at once."""
    user = find_user(session, username)
    user.active = active
    if not active:
        session.execute(delete(AuthSession).where(AuthSession.user_id == user.id))
    session.flush()
    return user


def set_password(session: Session, username: str, password: str) -> User:
    """Give a user a new password (AuthError if too short); their logins end."""
    user = find_user(session, username)
    user.password_hash = hash_password(password)
    session.execute(delete(AuthSession).where(AuthSession.user_id == user.id))
    session.flush()
    return user


def list_audit(
    session: Session,
    *,
    actor: str | None = None,
    action: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[int, list[AuditLog]]:
    """Return the number of matching audit rows and one page of them, newest first."""
    q = select(AuditLog)
    if actor is not None:
        q = q.where(AuditLog.actor == actor)
    if action is not None:
        q = q.where(AuditLog.action.startswith(action, autoescape=True))
    total = session.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = session.scalars(q.order_by(AuditLog.id.desc()).limit(limit).offset(offset)).all()
    return int(total), list(rows)


def authenticate(session: Session, username: str, password: str) -> User | None:
    """Return the active user with that name and password, else None."""
    user = session.scalars(select(User).where(User.username == username)).unique().one_or_none()
    if user is None:
        verify_password(_DUMMY_HASH, password)
        return None
    if not verify_password(user.password_hash, password) or not user.active:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


def _digest(token: str) -> str:
    """Return the SHA-256 of a session token (only the digest is stored)."""
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(session: Session, user: User, lifetime: timedelta) -> tuple[str, str]:
    """Store a new login of `user`; return its session token and its CSRF token."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    now = utcnow()
    session.execute(delete(AuthSession).where(AuthSession.expires < now))
    session.add(
        AuthSession(token_hash=_digest(token), csrf=csrf, user=user, expires=now + lifetime)
    )
    session.flush()
    return token, csrf


def find_session(session: Session, token: str) -> AuthSession | None:
    """Return the unexpired login of an active user with that token, else None."""
    row = (
        session.scalars(select(AuthSession).where(AuthSession.token_hash == _digest(token)))
        .unique()
        .one_or_none()
    )
    if row is None or row.expires <= utcnow() or not row.user.active:
        return None
    return row


def close_session(session: Session, token: str) -> None:
    """Forget the login with that token."""
    session.execute(delete(AuthSession).where(AuthSession.token_hash == _digest(token)))


def same_token(a: str, b: str) -> bool:
    """Compare two tokens in constant time."""
    return hmac.compare_digest(a.encode(), b.encode())


def audit(
    session: Session, actor: str | None, action: str, target: str, detail: Any = None
) -> None:
    """Add an audit log row (written with the caller's commit)."""
    text = "" if detail is None else json.dumps(detail, ensure_ascii=False, default=str)
    session.add(AuditLog(actor=actor, action=action, target=target[:200], detail=text))


@dataclass(frozen=True)
class LoginThrottle:
    """Failed logins per key (username or client address) counted in the database.

    Stored as `login_failures` rows, so a restart (or another server process on the same
    database) sees the same counts. The caller commits.
    """

    max_failures: int = 5
    window_s: float = 15 * 60

    def retry_after(self, session: Session, *keys: str) -> int:
        """Return seconds until any of `keys` may try again (0 when none is blocked)."""
        now = utcnow()
        since = now - timedelta(seconds=self.window_s)
        wait = 0.0
        for key in keys:
            recent = session.scalars(
                select(LoginFailure.at)
                .where((LoginFailure.key == key) & (LoginFailure.at > since))
                .order_by(LoginFailure.at.desc())
                .limit(self.max_failures)
            ).all()
            if len(recent) >= self.max_failures:
                free = recent[-1] + timedelta(seconds=self.window_s)
                wait = max(wait, (free - now).total_seconds())
        return max(1, int(wait) + 1) if wait > 0 else 0

    def fail(self, session: Session, *keys: str) -> None:
        """Count a failure for each of `keys`; forget failures older than the window."""
        now = utcnow()
        session.execute(
            delete(LoginFailure).where(LoginFailure.at <= now - timedelta(seconds=self.window_s))
        )
        session.add_all(LoginFailure(key=key[:NAME_LEN], at=now) for key in keys)

    def reset(self, session: Session, key: str) -> None:
        """Forget the failures of `key` (after a successful login)."""
        session.execute(delete(LoginFailure).where(LoginFailure.key == key[:NAME_LEN]))


@dataclass
class RateLimiter:
    """Failures per key kept in memory for `window_s` (per process, lost on restart).

    For logins use LoginThrottle, whose counts survive a restart.
    """

    max_failures: int = 5
    window_s: float = 15 * 60

    def __post_init__(self) -> None:
        """Start with no failures."""
        self._fails: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        """Return the failures of `key` still inside the window (lock held)."""
        fails = self._fails.setdefault(key, deque())
        while fails and fails[0] <= now - self.window_s:
            fails.popleft()
        return fails

    def retry_after(self, *keys: str) -> int:
        """Return seconds until any of `keys` may try again (0 when none is blocked)."""
        now = time.monotonic()
        wait = 0.0
        with self._lock:
            for key in keys:
                fails = self._recent(key, now)
                if len(fails) >= self.max_failures:
                    wait = max(wait, fails[-self.max_failures] + self.window_s - now)
        return max(1, int(wait) + 1) if wait > 0 else 0

    def fail(self, *keys: str) -> None:
        """Count a failure for each of `keys`."""
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)

    def reset(self, key: str) -> None:
        """Forget the failures of `key` (after a successful login)."""
        with self._lock:
            self._fails.pop(key, None)
