"""Device API, live board stream (SSE) and the window and big-screen pages.

`GET /api/devices` and `POST /api/devices/{code}/commands` need a login. The board data
(`/api/live/board`, `/api/live/stream`) is open: without a login it is the public view,
with no staff numbers; a logged-in user also sees the clerk on duty, and a hall manager
(or a viewer with a hall) only that hall.
"""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

import uuid6
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from protocol.messages import Command, TextStr, WindowStr
from protocol.scales import level_label
from server.auth.deps import SESSION_COOKIE, Principal, SessionDep, UserDep
from server.auth.service import audit, find_session
from server.db.models import Device
from server.i18n import Lang, normalize_lang, t
from server.live.devices import DeviceView
from server.live.history import WindowHistory, window_history
from server.live.hub import Subscriber
from server.live.service import LiveService
from storage.client import InfluxError

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
PRIVATE_FIELDS = ("staff",)
JS_KEYS = (
    "state_online", "state_paused", "state_offline", "state_unknown", "live_connected",
    "live_reconnecting", "last_negative", "empty", "ratings", "score", "satisfaction_rate",
    "weekdays", "hour", "timeline", "heatmap", "trend", "case_alert", "case_alert_overdue",
    "case_alert_newest",
)  # fmt: skip
ViewQuery = Annotated[
    Literal["public"] | None,
    Query(description="`public`: leave out personal data even when logged in"),
]


class CommandIn(BaseModel):
    """A command to send to a device."""

    model_config = ConfigDict(extra="forbid")

    cmd: Literal["prompt", "pause", "resume", "identify"] = Field(title="Command")
    ticket: TextStr | None = Field(default=None, title="Queue ticket (prompt only)")
    item: TextStr | None = Field(default=None, title="Service item code (prompt only)")
    staff: TextStr | None = Field(default=None, title="Clerk's staff number (prompt only)")


class CommandOut(BaseModel):
    """A command the broker accepted for delivery."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(title="Command id")
    hall: str = Field(title="Hall")
    device: str = Field(title="Device")
    cmd: str = Field(title="Command")
    sent: bool = Field(title="The broker acknowledged it")


class BoardRow(BaseModel):
    """One window on the live board."""

    model_config = ConfigDict(extra="forbid")

    hall: str = Field(title="Hall")
    window: str = Field(title="Window")
    name: str | None = Field(title="Window name from the registry")
    state: str = Field(title="Device state: online, paused, offline or unknown")
    staff: str | None = Field(default=None, title="Clerk on duty (logged-in users only)")
    ratings: int = Field(title="Ratings today")
    levels: dict[str, int] = Field(title="Ratings per `scale-level`")
    columns: list[int] = Field(title="Ratings per level label, 非常满意 first")
    satisfaction_rate: float | None = Field(title="Share at 基本满意 or better, 0–1")
    score: float | None = Field(title="Mean rating index, 0–100")
    stars: float | None = Field(title="Score as 1–5 stars")
    negatives: int = Field(title="Negative ratings today")
    last_negative: dict[str, Any] | None = Field(title="Latest negative rating (id, ts, level)")


class BoardSnapshot(BaseModel):
    """Every window of the live board."""

    model_config = ConfigDict(extra="forbid")

    date: str = Field(title="Today, YYYY-MM-DD")
    synced_at: str | None = Field(title="Last re-sync from InfluxDB")
    error: str | None = Field(title="Why the last re-sync failed, if it did")
    rows: list[BoardRow] = Field(title="Windows, by hall and window")


def optional_user(request: Request, session: SessionDep) -> Principal | None:
    """Return the logged-in user, or None without a valid session (no CSRF: reads only)."""
    token = request.cookies.get(SESSION_COOKIE)
    row = find_session(session, token) if token else None
    if row is None:
        return None
    user = row.user
    return Principal(
        user_id=user.id,
        username=user.username,
        role=user.role,
        hall=None if user.hall is None else user.hall.code,
        csrf=row.csrf,
    )


def _scope(who: Principal | None) -> tuple[str | None, bool]:
    """Return (hall to restrict to, public view) for a visitor."""
    if who is None:
        return None, True
    return (who.hall if who.role in ("hall_manager", "viewer") else None), False


def _clean(row: dict[str, Any], public: bool) -> dict[str, Any]:
    """Return the row without personal data for the public view."""
    if not public:
        return row
    return {k: (None if k in PRIVATE_FIELDS else v) for k, v in row.items()}


def _sse(event: str, data: Any) -> str:
    """Return one SSE message."""
    return (
        f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"
    )


def page_strings(lang: Lang) -> dict[str, Any]:
    """Return the strings and level labels the pages' scripts need, in `lang`."""
    return {
        "lang": lang,
        "labels": [level_label(5, lv, lang) for lv in (5, 4, 3, 2, 1)],
        "level": {
            f"{s}-{lv}": level_label(s, lv, lang) for s in (3, 4, 5) for lv in range(1, s + 1)
        },
        "text": {key: t(key, lang) for key in JS_KEYS},
    }


def make_router(live_of: Any) -> APIRouter:
    """Return the router; `live_of(request)` returns the app's LiveService."""
    router = APIRouter()
    templates = Jinja2Templates(directory=TEMPLATES)

    def svc(request: Request) -> LiveService:
        """Return the running live service or 503."""
        live: LiveService | None = live_of(request)
        if live is None:
            raise HTTPException(status_code=503, detail="live boards are disabled")
        return live

    def snapshot(live: LiveService, hall: str | None, public: bool) -> dict[str, Any]:
        """Return the board snapshot as a visitor may see it."""
        b = live.board
        return {
            "date": b.day.isoformat(),
            "synced_at": None if b.synced_at is None else b.synced_at.isoformat(),
            "error": b.error,
            "rows": [_clean(r, public) for r in b.rows(hall)],
        }

    @router.get(
        "/api/devices",
        response_model=list[DeviceView],
        responses={401: {"description": "Not logged in"}},
        tags=["devices"],
    )
    def list_devices(request: Request, who: UserDep) -> list[DeviceView]:
        """Return every device: state, last seen, outbox backlog, version, clock sync."""
        live = svc(request)
        views = live.devices.views(live.registered)
        scope, _public = _scope(who)
        if scope is not None:
            views = [v for v in views if v.hall == scope]
        return views

    @router.post(
        "/api/devices/{code}/commands",
        response_model=CommandOut,
        status_code=202,
        responses={
            401: {"description": "Not logged in"},
            403: {"description": "Viewers may not command, or no X-CSRF-Token header"},
            404: {"description": "No such registered device"},
            503: {"description": "Not connected to the broker"},
        },
        tags=["devices"],
    )
    async def send_command(
        request: Request, code: str, body: CommandIn, who: UserDep, session: SessionDep
    ) -> CommandOut:
        """Send `pause`, `resume`, `identify` or `prompt` (with ticket/item) to a device."""
        if who.role not in ("admin", "office", "hall_manager"):
            raise HTTPException(status_code=403, detail=f"role {who.role} may not send commands")
        dev = session.scalars(select(Device).where(Device.code == code)).unique().one_or_none()
        if dev is None or (who.role == "hall_manager" and dev.hall.code != who.hall):
            raise HTTPException(status_code=404, detail=f"no device {code!r}")
        hall = dev.hall.code
        live = svc(request)
        cmd = Command(
            id=uuid6.uuid7(),
            ts=int(time.time() * 1000),
            cmd=body.cmd,
            ticket=body.ticket if body.cmd == "prompt" else None,
            item=body.item if body.cmd == "prompt" else None,
            staff=body.staff if body.cmd == "prompt" else None,
        )
        sent = await run_in_threadpool(live.link.send_command, hall, code, cmd)
        if not sent:
            raise HTTPException(status_code=503, detail="the broker did not take the command")
        audit(session, who.username, "device_command", f"{hall}/{code}", body.cmd)
        session.commit()
        return CommandOut(id=str(cmd.id), hall=hall, device=code, cmd=cmd.cmd, sent=sent)

    @router.get("/api/live/board", response_model=BoardSnapshot, tags=["board"])
    def live_board(request: Request, session: SessionDep, view: ViewQuery = None) -> dict[str, Any]:
        """Return every window's live numbers today (public view without a login)."""
        hall, public = _scope(optional_user(request, session))
        public = public or view == "public"
        return snapshot(svc(request), hall, public)

    @router.get(
        "/api/live/stream",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "SSE stream"}},
        tags=["board"],
    )
    async def live_stream(
        request: Request, session: SessionDep, view: ViewQuery = None
    ) -> StreamingResponse:
        """Stream board events (SSE): `snapshot` first and after each re-sync, then `window`."""
        who = await run_in_threadpool(optional_user, request, session)
        hall, public = _scope(who)
        public = public or view == "public"
        live = svc(request)
        sub = live.hub.subscribe(hall, public)
        beat = live.live.heartbeat_s

        async def events() -> AsyncIterator[str]:
            try:
                yield "retry: 2000\n\n"
                yield _sse("snapshot", snapshot(live, hall, public))
                while True:
                    try:
                        ev = await asyncio.wait_for(sub.queue.get(), beat)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if ev is None:
                        break
                    msg = _message(live, sub, ev)
                    if msg:
                        yield msg
            finally:
                live.hub.unsubscribe(sub)

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    def _message(live: LiveService, sub: Subscriber, ev: dict[str, Any]) -> str:
        """Return the SSE text of a hub event for one subscriber."""
        if sub.overflowed:
            while not sub.queue.empty():
                sub.queue.get_nowait()
            sub.overflowed = False
            return _sse("snapshot", snapshot(live, sub.hall, sub.public))
        kind = ev.get("type")
        if kind == "resync":
            return _sse("snapshot", snapshot(live, sub.hall, sub.public))
        if kind == "window":
            data = {"row": _clean(ev["row"], sub.public)}
            if "rating" in ev:
                data["rating"] = ev["rating"]
            return _sse("window", data)
        if kind == "device" and not sub.public:
            return _sse("device", {"hall": ev.get("hall"), "device": ev.get("device")})
        return ""

    @router.get(
        "/api/live/windows/{hall}/{window}",
        response_model=WindowHistory,
        responses={503: {"description": "InfluxDB unreachable"}},
        tags=["board"],
    )
    def window_data(
        request: Request, hall: str, window: WindowStr, session: SessionDep
    ) -> WindowHistory | JSONResponse:
        """Return a window's timeline today, hour × weekday heatmap and daily trend."""
        live = svc(request)
        scope, _public = _scope(optional_user(request, session))
        if scope is not None and hall != scope:
            raise HTTPException(status_code=404, detail="no such window")
        try:
            return window_history(
                live.board.client, live.board.tz, hall, window, policy=live.board.policy
            )
        except InfluxError as exc:
            return JSONResponse(
                status_code=503, content={"error": "influxdb_unavailable", "detail": str(exc)}
            )

    def page_context(lang: Lang) -> dict[str, Any]:
        """Return what every live page's template needs."""
        return {"lang": lang, "t": lambda key, **fmt: t(key, lang, **fmt), "js": page_strings(lang)}

    @router.get("/window/{hall}/{window}", response_class=HTMLResponse, tags=["board"])
    def window_page(
        request: Request,
        hall: str,
        window: WindowStr,
        lang: Annotated[str | None, Query(description="zh (default) or en")] = None,
    ) -> HTMLResponse:
        """Render the window page: today's timeline, hour × weekday heatmap, daily trend."""
        ctx = page_context(normalize_lang(lang)) | {"hall": hall, "window": window}
        return templates.TemplateResponse(request, "window.html", ctx)

    @router.get("/screen", response_class=HTMLResponse, tags=["board"])
    def screen_page(
        request: Request,
        lang: Annotated[str | None, Query(description="zh (default) or en")] = None,
    ) -> HTMLResponse:
        """Render the public big screen: each window's stars, no personal data."""
        return templates.TemplateResponse(
            request, "screen.html", page_context(normalize_lang(lang))
        )

    return router
