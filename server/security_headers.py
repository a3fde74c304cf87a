"""Security headers on every response (a pure ASGI middleware, so SSE streams are untouched)."""

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The pages load scripts and styles from this server only; no inline script, no framing.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# /docs: Swagger UI from this server's npm assets (server/live/assets.py); FastAPI starts it
# with an inline script, so only this page allows inline script and style.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self'; worker-src 'self' blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")
PERMISSIONS = "camera=(), microphone=(), geolocation=(), payment=(), usb=(), serial=()"
HSTS = "max-age=31536000; includeSubDomains"
SESSION_COOKIE = "wr_session"
# Prefixes of responses that may carry personal data: never stored by a browser or proxy.
PRIVATE_PREFIXES = ("/api/", "/cases", "/exports")


def _has_session(scope: Scope) -> bool:
    """True when the request carries a login cookie (its answer is personal)."""
    for name, value in scope.get("headers", ()):
        if name == b"cookie" and f"{SESSION_COOKIE}=".encode() in value:
            return True
    return False


class SecurityHeaders:
    """Add CSP, nosniff, frame, referrer and permissions headers; HSTS behind TLS; no-store."""

    def __init__(self, app: ASGIApp, *, hsts: bool = False) -> None:
        """Wrap `app`; `hsts` sends Strict-Transport-Security on every response."""
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on and add the headers to its response's start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        docs = path.startswith(DOCS_PATHS)
        private = path.startswith(PRIVATE_PREFIXES) or (
            _has_session(scope) and not path.startswith(("/static/", "/vendor/"))
        )
        hsts = self.hsts or scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            """Add the headers to `http.response.start`."""
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = DOCS_CSP if docs else PAGE_CSP
                headers["X-Content-Type-Options"] = "nosniff"
                headers["X-Frame-Options"] = "DENY"
                headers["Referrer-Policy"] = "no-referrer"
                headers["Permissions-Policy"] = PERMISSIONS
                headers["Cross-Origin-Opener-Policy"] = "same-origin"
                if hsts:
                    headers["Strict-Transport-Security"] = HSTS
                if private:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)
