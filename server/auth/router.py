"""Login API under `/api/auth`: login, logout and the current user.

A login sets two cookies: `wr_session` (HttpOnly, SameSite=Strict, Secure when
`cookie_secure` is set) and `wr_csrf` (readable by the page's script); every
state-changing request must echo the latter in the `X-CSRF-Token` header.
After 5 failed logins within 15 minutes for a username or a client address,
logins are refused with 429 and Retry-After (counted in memory, per process).
"""

import logging
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from server.auth.deps import CSRF_COOKIE, SESSION_COOKIE, SessionDep, UserDep
from server.auth.service import RateLimiter, audit, authenticate, close_session, open_session
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
    """Return the login router; its rate limiter lives as long as the router."""
    router = APIRouter(prefix="/api/auth", tags=["auth"])
    limiter = RateLimiter()
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
        wait = limiter.retry_after(*keys)
        if wait:
            audit(session, None, "auth.login_limited", body.username, {"ip": ip})
            session.commit()
            log.warning("login of %r from %s refused: too many failures", body.username, ip)
            return _refuse(
                429, "too_many_attempts", "too many failed logins", **{"Retry-After": str(wait)}
            )
        user = authenticate(session, body.username, body.password)
        if user is None:
            limiter.fail(*keys)
            audit(session, None, "auth.login_failed", body.username, {"ip": ip})
            session.commit()
            return _refuse(401, "bad_credentials", "wrong username or password")
        limiter.reset(keys[0])
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

    return router
