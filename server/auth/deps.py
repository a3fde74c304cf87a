"""Request dependencies: the logged-in user (401 without one) and the CSRF check (403)."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from server.auth.service import find_session, same_token
from server.db.engine import Database

SESSION_COOKIE = "wr_session"
CSRF_COOKIE = "wr_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_session(request: Request) -> Iterator[Session]:
    """Yield a session of the app's database, rolled back if left uncommitted."""
    db: Database = request.app.state.db
    with db.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


@dataclass(frozen=True)
class Principal:
    """The logged-in user of a request."""

    user_id: int
    username: str
    role: str
    hall: str | None
    csrf: str

    @property
    def is_admin(self) -> bool:
        """True for an administrator."""
        return self.role == "admin"


def current_user(request: Request, session: SessionDep) -> Principal:
    """Return the logged-in user; 401 without a valid session; 403 on a bad CSRF token.

    Every request whose method is not GET, HEAD or OPTIONS must carry the `X-CSRF-Token`
    header equal to both the `wr_csrf` cookie and the token stored with the session.
    """
    token = request.cookies.get(SESSION_COOKIE)
    row = find_session(session, token) if token else None
    if row is None:
        raise HTTPException(
            status_code=401, detail="not logged in", headers={"WWW-Authenticate": "Cookie"}
        )
    user = row.user
    who = Principal(
        user_id=user.id,
        username=user.username,
        role=user.role,
        hall=None if user.hall is None else user.hall.code,
        csrf=row.csrf,
    )
    if request.method not in SAFE_METHODS:
        header = request.headers.get(CSRF_HEADER, "")
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if not header or not same_token(header, cookie) or not same_token(header, row.csrf):
            raise HTTPException(status_code=403, detail="missing or wrong X-CSRF-Token header")
    return who


UserDep = Annotated[Principal, Depends(current_user)]
