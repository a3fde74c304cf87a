"""Login API under `/api/auth`: login, logout and the current user.

A login sets two cookies: `wr_session` (HttpOnly, SameSite=Strict, Secure when
`cookie_secure` is set) and `wr_csrf` (readable by the page's script); every
state-changing request must echo the latter in the `X-CSRF-Token` header.
After 5 failed logins within 15 minutes for a username or a client address,
logins are refused with 429 and Retry-After (counted in the database: a restart of the
server does not reset them).
"""

import logging
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from server.auth.deps import CSRF_COOKIE, SESSION_COOKIE, Principal, SessionDep, UserDep
from server.auth.service import (
    MIN_PASSWORD,
    LoginThrottle,
    audit,
    authenticate,
    close_session,
    create_user,
    list_audit,
    list_users,
    open_session,
    set_active,
    set_password,
)
from server.auth.service import AuthError as AuthServiceError
from server.db.models import User
from server.settings import ServerSettings

log = logging.getLogger(__name__)


class LoginIn(BaseModel):
    """Credentials."""

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class Me(BaseModel):
    """The logged-in user."""

    username: str
    role: str = Field(title="admin, office, hall_manager or viewer")
    hall: str | None = Field(title="The hall of a hall manager")
    csrf_token: str = Field(title="Send as X-CSRF-Token on POST, PATCH and DELETE")


class AuthError(BaseModel):
    """A refused login."""

    error: str
    detail: str


def _refuse(status: int, error: str, detail: str, **headers: str) -> JSONResponse:
    """Return an error response."""
    body = AuthError(error=error, detail=detail).model_dump()
    return JSONResponse(status_code=status, content=body, headers=headers or None)


def make_router(settings: ServerSettings) -> APIRouter:
    """Return the login router; failed logins are counted in the database."""
    router = APIRouter(prefix="/api/auth", tags=["auth"])
    limiter = LoginThrottle()
    lifetime = timedelta(hours=settings.session_hours)

    @router.post(
        "/login",
        response_model=Me,
        responses={
            401: {"model": AuthError, "description": "Wrong username or password"},
            429: {"model": AuthError, "description": "Too many failed logins; see Retry-After"},
        },
    )
    def login(body: LoginIn, request: Request, session: SessionDep) -> Any:
        """Check the password and start a session (cookies `wr_session` and `wr_csrf`)."""
        ip = request.client.host if request.client else "unknown"
        keys = (f"user:{body.username}", f"ip:{ip}")
        wait = limiter.retry_after(session, *keys)
        if wait:
            audit(session, None, "auth.login_limited", body.username, {"ip": ip})
            session.commit()
            log.warning("login of %r from %s refused: too many failures", body.username, ip)
            return _refuse(
                429, "too_many_attempts", "too many failed logins", **{"Retry-After": str(wait)}
            )
        user = authenticate(session, body.username, body.password)
        if user is None:
            limiter.fail(session, *keys)
            audit(session, None, "auth.login_failed", body.username, {"ip": ip})
            session.commit()
            return _refuse(401, "bad_credentials", "wrong username or password")
        limiter.reset(session, keys[0])
        token, csrf = open_session(session, user, lifetime)
        audit(session, user.username, "auth.login", user.username, {"ip": ip})
        session.commit()
        hall = None if user.hall is None else user.hall.code
        resp = JSONResponse(
            Me(username=user.username, role=user.role, hall=hall, csrf_token=csrf).model_dump()
        )
        max_age = int(lifetime.total_seconds())
        secure = settings.cookie_secure
        resp.set_cookie(
            SESSION_COOKIE, token, max_age=max_age, httponly=True, samesite="strict",
            secure=secure, path="/",
        )  # fmt: skip
        resp.set_cookie(
            CSRF_COOKIE, csrf, max_age=max_age, httponly=False, samesite="strict",
            secure=secure, path="/",
        )  # fmt: skip
        return resp

    @router.post("/logout", status_code=204, response_class=Response)
    def logout(who: UserDep, request: Request, session: SessionDep) -> Response:
        """End the session (needs the X-CSRF-Token header)."""
        close_session(session, request.cookies.get(SESSION_COOKIE, ""))
        audit(session, who.username, "auth.logout", who.username)
        session.commit()
        resp = Response(status_code=204)
        resp.delete_cookie(SESSION_COOKIE, path="/")
        resp.delete_cookie(CSRF_COOKIE, path="/")
        return resp

    @router.get("/me", response_model=Me, responses={401: {"description": "Not logged in"}})
    def me(who: UserDep) -> Me:
        """Return the logged-in user."""
        return Me(username=who.username, role=who.role, hall=who.hall, csrf_token=who.csrf)

    outer = APIRouter()
    outer.include_router(router)
    outer.include_router(_users_router())
    return outer


class UserOut(BaseModel):
    """A user account (never the password hash)."""

    username: str = Field(title="Login name")
    role: str = Field(title="admin, office, hall_manager or viewer")
    hall: str | None = Field(title="Own hall (a hall manager's, optionally a viewer's)")
    active: bool = Field(title="May log in")
    created: datetime = Field(title="When the account was made (UTC)")


class UserIn(BaseModel):
    """A new user."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64, title="Login name")
    password: str = Field(min_length=MIN_PASSWORD, max_length=1024, title="Initial password")
    role: Literal["admin", "office", "hall_manager", "viewer"] = Field(title="Role")
    hall: str | None = Field(default=None, max_length=64, title="Own hall")


class PasswordIn(BaseModel):
    """A new password."""

    model_config = ConfigDict(extra="forbid")

    password: str = Field(min_length=MIN_PASSWORD, max_length=1024, title="New password")


class AuditOut(BaseModel):
    """One audited action."""

    id: int = Field(title="Row number")
    at: datetime = Field(title="When (UTC)")
    actor: str | None = Field(title="Who (None: anonymous or the system)")
    action: str = Field(title="What, e.g. case.closed or registry.update")
    target: str = Field(title="On what")
    detail: str = Field(title="Details (JSON)")


class AuditPage(BaseModel):
    """One page of the audit log."""

    total: int = Field(title="Matching rows")
    rows: list[AuditOut] = Field(title="This page, newest first")


def _user_out(user: User) -> UserOut:
    """Return the API form of a user."""
    hall = None if user.hall is None else user.hall.code
    return UserOut(
        username=user.username, role=user.role, hall=hall, active=user.active, created=user.created
    )


def _only(who: Principal, *roles: str) -> None:
    """Raise 403 unless `who` has one of `roles`."""
    if who.role not in roles:
        raise HTTPException(status_code=403, detail=f"only for: {', '.join(roles)}")


def _users_router() -> APIRouter:
    """Return the user management (admin) and audit log (admin, office) routes."""
    router = APIRouter(tags=["users"])
    errors: dict[int | str, dict[str, Any]] = {
        401: {"description": "Not logged in"},
        403: {"description": "Not an admin, or no X-CSRF-Token header"},
    }
    not_found: dict[int | str, dict[str, Any]] = {**errors, 404: {"model": AuthError}}

    @router.get("/api/users", response_model=list[UserOut], responses=errors)
    def list_(who: UserDep, session: SessionDep) -> list[UserOut]:
        """List every user (admin)."""
        _only(who, "admin")
        return [_user_out(u) for u in list_users(session)]

    @router.post(
        "/api/users",
        response_model=UserOut,
        status_code=201,
        responses={**errors, 409: {"model": AuthError}},
    )
    def create(body: UserIn, who: UserDep, session: SessionDep) -> Any:
        """Create a user (admin)."""
        _only(who, "admin")
        try:
            user = create_user(session, body.username, body.password, body.role, body.hall)
        except AuthServiceError as exc:
            session.rollback()
            return _refuse(409, "refused", str(exc))
        audit(session, who.username, "user.create", user.username,
              {"role": body.role, "hall": body.hall})  # fmt: skip
        session.commit()
        return _user_out(user)

    def _toggle(who: Principal, session: Session, username: str, active: bool) -> Any:
        """Activate or deactivate a user."""
        _only(who, "admin")
        if username == who.username and not active:
            return _refuse(409, "refused", "an admin cannot deactivate themself")
        try:
            user = set_active(session, username, active)
        except AuthServiceError as exc:
            return _refuse(404, "not_found", str(exc))
        audit(session, who.username, "user.activate" if active else "user.deactivate", username)
        session.commit()
        return _user_out(user)

    @router.post("/api/users/{username}/deactivate", response_model=UserOut, responses=not_found)
    def deactivate(username: str, who: UserDep, session: SessionDep) -> Any:
        """Deactivate a user (admin); their sessions end at once."""
        return _toggle(who, session, username, False)

    @router.post("/api/users/{username}/activate", response_model=UserOut, responses=not_found)
    def activate(username: str, who: UserDep, session: SessionDep) -> Any:
        """Activate a user again (admin)."""
        return _toggle(who, session, username, True)

    @router.post(
        "/api/users/{username}/password",
        status_code=204,
        response_class=Response,
        response_model=None,
        responses=not_found,
    )
    def reset_password(username: str, body: PasswordIn, who: UserDep, session: SessionDep) -> Any:
        """Set a new password (admin); the user's sessions end."""
        _only(who, "admin")
        try:
            set_password(session, username, body.password)
        except AuthServiceError as exc:
            return _refuse(404, "not_found", str(exc))
        audit(session, who.username, "user.password_reset", username)
        session.commit()
        return Response(status_code=204)

    @router.get("/api/audit", response_model=AuditPage, tags=["audit"], responses=errors)
    def audit_log(
        who: UserDep,
        session: SessionDep,
        actor: Annotated[str | None, Query(max_length=64, description="Only this user")] = None,
        action: Annotated[
            str | None, Query(max_length=64, description="Actions starting with this")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    ) -> AuditPage:
        """List the audit log, newest first (admin or office)."""
        _only(who, "admin", "office")
        total, rows = list_audit(session, actor=actor, action=action, limit=limit, offset=offset)
        out = [
            AuditOut(
                id=r.id, at=r.at, actor=r.actor, action=r.action, target=r.target, detail=r.detail
            )
            for r in rows
        ]
        return AuditPage(total=total, rows=out)

    return router
