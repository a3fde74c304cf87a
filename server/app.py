"""FastAPI application: board (`/`), `/api/today`, `/health`, `/api/auth`, `/api/registry`."""

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field

from protocol.scales import level_label
from server.admin.router import make_router as admin_router
from server.auth.router import make_router as auth_router
from server.cases.router import make_router as cases_router
from server.cases.runtime import start_cases, stop_cases
from server.counts import WindowCount, day_bounds, today_counts
from server.db.engine import Database
from server.health import HealthReport, check_all
from server.i18n import Lang, normalize_lang, t
from server.live.assets import PublicStatic
from server.live.assets import make_router as assets_router
from server.live.router import make_router as live_router
from server.live.router import page_strings
from server.live.serve import serve
from server.live.service import LiveService
from server.log_redact import install as redact_logged_urls
from server.provisioning.router import make_router as provisioning_router
from server.registry.router import make_router as registry_router
from server.scores.jobs import fail_interrupted
from server.scores.router import make_router as scores_router
from server.scores.scheduler import RollupScheduler
from server.scores.settings import get_settings as scores_settings
from server.security_headers import SecurityHeaders
from server.settings import ServerSettings, get_settings
from storage.client import InfluxClient, InfluxError

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
REFRESH_S = 5
# Board columns, best first; the same zh label means the same on 3-, 4- and 5-key scales.
BOARD_LEVELS: tuple[int, ...] = (5, 4, 3, 2, 1)


class TodayWindow(BaseModel):
    """Today's numbers of one window."""

    hall: str
    window: str
    ratings: int = Field(title="Ratings today")
    levels: dict[str, int] = Field(title="Ratings per level (1 = worst)")
    scales: list[int] = Field(title="Scales the ratings were given on")
    satisfaction_rate: float | None = Field(title="Share at 基本满意 or better, 0–1")
    score: float | None = Field(title="Mean rating index, 0–100")
    negatives: int = Field(title="Negative ratings")


class TodayResponse(BaseModel):
    """Today's numbers of every window that has ratings."""

    date: str = Field(title="Today in the hall's time zone, YYYY-MM-DD")
    timezone: str
    windows: list[TodayWindow]


class ErrorResponse(BaseModel):
    """An error the client can act on."""

    error: str
    detail: str


def _window_json(wc: WindowCount) -> TodayWindow:
    """Return the API form of a window's counts."""
    top = max(wc.scales, default=5)
    levels = wc.levels
    return TodayWindow(
        hall=wc.hall,
        window=wc.window,
        ratings=wc.ratings,
        levels={str(lv): levels.get(lv, 0) for lv in range(1, top + 1)},
        scales=wc.scales,
        satisfaction_rate=wc.satisfaction_rate,
        score=wc.score,
        negatives=wc.negatives,
    )


def _board_row(wc: WindowCount) -> dict[str, Any]:
    """Return the formatted cells of one board row."""
    labels = wc.label_counts()
    rate = wc.satisfaction_rate
    score = wc.score
    return {
        "hall": wc.hall,
        "window": wc.window,
        "ratings": wc.ratings,
        "levels": [labels.get(level_label(5, lv, "zh"), 0) for lv in BOARD_LEVELS],
        "rate": "–" if rate is None else f"{rate * 100:.1f}%",
        "score": "–" if score is None else f"{score:.1f}",
        "negatives": wc.negatives,
    }


def _total(windows: list[WindowCount]) -> WindowCount:
    """Return all windows' counts added up."""
    counts: Counter[tuple[int, int]] = Counter()
    for wc in windows:
        counts.update(wc.counts)
    return WindowCount(hall="", window="", counts=counts)


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """Return the server application for `settings` (read from the environment when None)."""
    cfg = settings or get_settings()
    tz = cfg.tz
    templates = Jinja2Templates(directory=HERE / "templates")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        """Migrate the registry database and open the InfluxDB client for the app's lifetime."""
        await run_in_threadpool(app.state.db.upgrade)
        await run_in_threadpool(fail_interrupted, app.state.db)  # export jobs a crash left
        app.state.influx = InfluxClient(cfg.influx)
        log.info("server using InfluxDB %s database %s", cfg.influx.url, cfg.influx.database)
        app.state.live = None
        if cfg.live.enabled:
            app.state.live = LiveService(cfg, app.state.db, app.state.influx)
            app.state.live.start(asyncio.get_running_loop())
        start_cases(app, cfg)
        app.state.rollups = None
        scores_cfg = scores_settings()
        if scores_cfg.rollup_interval_s > 0:
            app.state.rollups = RollupScheduler(app.state.db, app.state.influx, tz, scores_cfg)
            app.state.rollups.start()
        try:
            yield
        finally:
            if app.state.rollups is not None:
                await run_in_threadpool(app.state.rollups.stop)
            if app.state.live is not None:
                await run_in_threadpool(app.state.live.stop)
            await stop_cases(app)
            app.state.influx.close()
            app.state.db.close()

    app = FastAPI(
        title="WindowRate server",
        description="Live boards and health of the WindowRate satisfaction system.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served by server.live.assets with Swagger UI from npm (no CDN)
        redoc_url=None,
    )
    app.state.settings = cfg
    app.state.db = Database(cfg.database_url)
    app.add_middleware(SecurityHeaders, hsts=cfg.cookie_secure)
    redact_logged_urls()
    app.include_router(auth_router(cfg))
    app.include_router(registry_router())
    app.include_router(provisioning_router(cfg.provisioning))
    app.include_router(scores_router())
    app.include_router(cases_router(cfg))
    app.include_router(admin_router())
    app.include_router(live_router(lambda request: request.app.state.live))
    app.include_router(assets_router())
    app.mount("/static", PublicStatic(directory=HERE / "static"), name="static")

    def influx_of(request: Request) -> InfluxClient:
        """Return the app's InfluxDB client."""
        client: InfluxClient = request.app.state.influx
        return client

    @app.get(
        "/api/today",
        response_model=TodayResponse,
        responses={503: {"model": ErrorResponse, "description": "InfluxDB unreachable"}},
        tags=["board"],
    )
    def api_today(request: Request) -> TodayResponse | JSONResponse:
        """Return today's ratings per window (local day in the hall's time zone)."""
        today, _start, _end = day_bounds(tz)
        try:
            windows = today_counts(influx_of(request), tz, hall=cfg.hall)
        except InfluxError as exc:
            log.warning("today's counts unavailable: %s", exc)
            body = ErrorResponse(error="influxdb_unavailable", detail=str(exc))
            return JSONResponse(status_code=503, content=body.model_dump())
        return TodayResponse(
            date=today.isoformat(),
            timezone=cfg.timezone,
            windows=[_window_json(wc) for wc in windows],
        )

    @app.get("/", response_class=HTMLResponse, tags=["board"])
    def board(
        request: Request,
        lang: Annotated[str | None, Query(description="zh (default) or en")] = None,
    ) -> HTMLResponse:
        """Render today's board of the hall's windows."""
        lg: Lang = normalize_lang(lang)
        today, _start, _end = day_bounds(tz)
        error: str | None = None
        windows: list[WindowCount] = []
        try:
            windows = today_counts(influx_of(request), tz, hall=cfg.hall)
        except InfluxError as exc:
            log.warning("board without data: %s", exc)
            error = str(exc)
        context = {
            "lang": lg,
            "t": lambda key, **fmt: t(key, lg, **fmt),
            "refresh_s": REFRESH_S,
            "date": today.isoformat(),
            "updated": datetime.now(tz).strftime("%H:%M:%S"),
            "timezone": cfg.timezone,
            "hall": cfg.hall,
            "level_labels": [level_label(5, lv, lg) for lv in BOARD_LEVELS],
            "rows": [_board_row(wc) for wc in windows],
            "total": _board_row(_total(windows)) if len(windows) > 1 else None,
            "error": error,
            "influx_url": cfg.influx.url,
            "live": request.app.state.live is not None,
            "js": page_strings(lg),
        }
        return templates.TemplateResponse(
            request, "board.html", context, status_code=503 if error else 200
        )

    @app.get(
        "/health",
        response_model=HealthReport,
        responses={503: {"model": HealthReport, "description": "A component is down"}},
        tags=["health"],
    )
    async def health(request: Request) -> JSONResponse:
        """Check InfluxDB, the MQTT broker and the gateways; 200 when all are up, else 503."""
        report = await check_all(cfg, influx_of(request))
        return JSONResponse(
            status_code=200 if report.status == "ok" else 503, content=report.model_dump()
        )

    return app


def run(settings: ServerSettings | None = None) -> None:
    """Serve the app with uvicorn on `settings.host`:`settings.port` until stopped."""
    cfg = settings or get_settings()
    log.info("WindowRate server on http://%s:%s", cfg.host, cfg.port)
    serve(create_app(cfg), cfg.host, cfg.port)  # ends the SSE streams on SIGINT/SIGTERM
