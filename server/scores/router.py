"""Scores API: `/api/scores`, export jobs under `/api/exports`, fraud flags, the `/exports` page.

Office and admin users see every hall; a hall manager only their own (another hall is
403); other roles get 403. Fraud flags are reviewed by office or admin users only.
"""

import logging
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from server.auth.deps import Principal, SessionDep, UserDep
from server.auth.service import audit
from server.db.engine import Database
from server.i18n import normalize_lang
from server.scores.engine import ScoreResult, compute_scores
from server.scores.export import manifest_path
from server.scores.jobs import ExportJob, JobBoard, JobWork, new_job_id, utc_now
from server.scores.models import RatingFlag
from server.scores.periods import Period, period_of
from server.scores.policy import Policy, load_policy
from server.scores.service import export_scores
from server.scores.settings import ScoresSettings, get_settings
from server.scores.strings import st
from storage.client import InfluxClient, InfluxError

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
SCORING_ROLES = frozenset({"admin", "office", "hall_manager"})
REVIEW_ROLES = frozenset({"admin", "office"})
Level = Literal["window", "unit", "hall", "staff", "item"]
Format = Literal["csv", "xlsx", "json"]
PeriodName = Literal["day", "week", "month", "quarter", "year"]
MEDIA = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


class ExportRequest(BaseModel):
    """What to export."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    period_from: date | None = Field(default=None, alias="from", title="First day (hall tz)")
    period_to: date | None = Field(default=None, alias="to", title="Last day, inclusive")
    period: PeriodName | None = Field(default=None, title="Instead of from/to: this period …")
    date_in: date | None = Field(default=None, alias="date", title="… containing this day")
    level: Level = Field(default="window", title="Entity level")
    format: Format = Field(default="xlsx", title="csv, xlsx or json")
    hall: str | None = Field(default=None, title="Only this hall (a hall manager: own hall)")
    lang: Literal["zh", "en"] = Field(default="zh", title="Column names")


class FlagOut(BaseModel):
    """A fraud flag as the API shows it."""

    model_config = ConfigDict(extra="forbid")

    id: int = Field(title="Flag id")
    rating_id: str = Field(title="Rating id")
    rule: str = Field(title="too_fast, top_run, while_paused or same_ticket")
    detail: str = Field(title="Why")
    day: str = Field(title="Local day")
    ts_ms: int = Field(title="Press time, ms since the epoch")
    hall: str = Field(title="Hall")
    window: str = Field(title="Window")
    device: str = Field(title="Device")
    level: int = Field(title="Rating level")
    scale: int = Field(title="Scale")
    status: str = Field(title="pending, fraud or dismissed")
    reviewed_by: str | None = Field(title="Reviewer")
    note: str = Field(title="Reviewer's note")


class Review(BaseModel):
    """A person's verdict on a flag."""

    model_config = ConfigDict(extra="forbid")

    verdict: Literal["fraud", "dismissed"] = Field(title="fraud excludes the rating")
    note: str = Field(default="", max_length=2000, title="Why")


def _flag_out(f: RatingFlag) -> FlagOut:
    """Return the API form of a flag."""
    return FlagOut(
        id=f.id, rating_id=f.rating_id, rule=f.rule, detail=f.detail, day=f.day.isoformat(),
        ts_ms=f.ts_ms, hall=f.hall, window=f.window, device=f.device, level=f.level,
        scale=f.scale, status=f.status, reviewed_by=f.reviewed_by, note=f.note,
    )  # fmt: skip


def scoped_hall(who: Principal, hall: str | None) -> str | None:
    """Return the hall a user may score (403 for others); a hall manager gets their own."""
    if who.role not in SCORING_ROLES:
        raise HTTPException(status_code=403, detail=f"role {who.role} may not see scores")
    if who.role == "hall_manager":
        if who.hall is None:
            raise HTTPException(status_code=403, detail="hall manager without a hall")
        if hall is not None and hall != who.hall:
            raise HTTPException(status_code=403, detail="hall managers see only their own hall")
        return who.hall
    return hall


FlagId = Annotated[int, PathParam(ge=1, le=2**31 - 1, description="Flag id")]


def _period(
    first: date | None,
    last: date | None,
    kind: str | None = None,
    ref: date | None = None,
) -> Period:
    """Return from … to, or the period `kind` containing `ref` (today); 422 when wrong."""
    if kind is not None:
        if first is not None or last is not None:
            raise HTTPException(status_code=422, detail="give either period or from and to")
        try:
            return period_of(kind, ref or date.today())
        except (ValueError, OverflowError) as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
    if first is None or last is None:
        raise HTTPException(status_code=422, detail="give from and to, or period")
    try:
        return Period(first, last)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc


def make_router(settings: ScoresSettings | None = None) -> APIRouter:
    """Return the scores router."""
    cfg = settings or get_settings()
    router = APIRouter(tags=["scores"])
    templates = Jinja2Templates(directory=HERE / "templates")
    board = JobBoard(cfg.export_keep, cfg.export_dir)

    def policy() -> Policy:
        return load_policy(cfg.policy_file)

    @router.get("/api/scores", response_model=ScoreResult)
    def api_scores(
        request: Request,
        who: UserDep,
        session: SessionDep,
        first: Annotated[date | None, Query(alias="from")] = None,
        last: Annotated[date | None, Query(alias="to")] = None,
        period: PeriodName | None = None,
        ref: Annotated[date | None, Query(alias="date")] = None,
        level: Level = "window",
        hall: str | None = None,
    ) -> ScoreResult | JSONResponse:
        """Scores of every entity of `level` for from … to (inclusive) or a period's days."""
        scope = scoped_hall(who, hall)
        chosen = _period(first, last, period, ref)
        try:
            return compute_scores(
                level, chosen, policy=policy(),
                tz=request.app.state.settings.tz, influx=request.app.state.influx,
                session=session, hall=scope,
            )  # fmt: skip
        except InfluxError as exc:
            return JSONResponse(status_code=503, content={"error": "influxdb", "detail": str(exc)})

    @router.post("/api/exports", status_code=202, response_model=ExportJob)
    def api_export(
        request: Request, who: UserDep, session: SessionDep, body: ExportRequest
    ) -> ExportJob:
        """Start an export job; poll `/api/exports/{id}` and fetch `/file` when done."""
        scope = scoped_hall(who, body.hall)
        period = _period(body.period_from, body.period_to, body.period, body.date_in)
        job_id = new_job_id()
        name = f"scores_{body.level}_{period.first}_{period.last}.{body.format}"
        out = board.file_of(job_id, name)
        db: Database = request.app.state.db
        influx: InfluxClient = request.app.state.influx
        tz = request.app.state.settings.tz
        pol = policy()

        def run(progress: Callable[[int, int], None]) -> tuple[Path, int, str]:
            with db.session() as session:
                _r, manifest = export_scores(
                    session=session, influx=influx, tz=tz, policy=pol, period=period,
                    level=body.level, fmt=body.format, out=out, hall=scope, lang=body.lang,
                    progress=progress,
                )  # fmt: skip
            return out, int(manifest["rows"]), str(manifest["sha256"])

        job = ExportJob(
            id=job_id, owner=who.user_id, owner_name=who.username, state="queued",
            level=body.level, format=body.format,
            period_from=period.first.isoformat(), period_to=period.last.isoformat(),
            hall=scope, total_days=len(period.days()), created=utc_now(),
        )  # fmt: skip
        log.info("export job %s by %s: %s", job_id, who.username, name)
        audit(session, who.username, "export.start", job_id, {"file": name, "hall": scope})
        session.commit()
        return board.submit(db, job, JobWork(run))

    @router.get("/api/exports", response_model=list[ExportJob])
    def api_exports(
        request: Request,
        who: UserDep,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[ExportJob]:
        """Export jobs, newest first: the user's own (an admin: everyone's), from the database."""
        scoped_hall(who, None)
        return board.list(request.app.state.db, None if who.is_admin else who.user_id, limit)

    def own_job(request: Request, who: Principal, job_id: str) -> ExportJob:
        job = board.get(request.app.state.db, job_id)
        if job is None or (job.owner != who.user_id and not who.is_admin):
            raise HTTPException(status_code=404, detail="no such export")
        return job

    @router.get("/api/exports/{job_id}", response_model=ExportJob)
    def api_export_status(request: Request, who: UserDep, job_id: str) -> ExportJob:
        """The state and progress of an export job (its owner or an admin)."""
        return own_job(request, who, job_id)

    def job_file(request: Request, who: Principal, job_id: str) -> Path:
        job = own_job(request, who, job_id)
        path = board.path(request.app.state.db, job_id)
        if job.state != "done" or path is None:
            raise HTTPException(status_code=409, detail=f"export is {job.state}")
        if not path.is_file():
            raise HTTPException(
                status_code=404,
                detail="导出文件已不存在，请重新导出 / the export's file is gone: start it again",
            )
        return path

    @router.get("/api/exports/{job_id}/file")
    def api_export_file(request: Request, who: UserDep, job_id: str) -> FileResponse:
        """The data file of a finished export."""
        path = job_file(request, who, job_id)
        fmt = path.suffix.lstrip(".")
        return FileResponse(path, media_type=MEDIA[fmt], filename=path.name)

    @router.get("/api/exports/{job_id}/manifest")
    def api_export_manifest(request: Request, who: UserDep, job_id: str) -> FileResponse:
        """The manifest of a finished export."""
        path = manifest_path(job_file(request, who, job_id))
        return FileResponse(path, media_type="application/json", filename=path.name)

    @router.get("/api/scores/flags", response_model=list[FlagOut])
    def api_flags(
        who: UserDep,
        session: SessionDep,
        status: Literal["pending", "fraud", "dismissed"] | None = None,
        hall: str | None = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    ) -> list[FlagOut]:
        """Ratings the fraud detectors flagged (never deleted), oldest first."""
        scope = scoped_hall(who, hall)
        q = select(RatingFlag).order_by(RatingFlag.ts_ms, RatingFlag.id).limit(limit)
        if status is not None:
            q = q.where(RatingFlag.status == status)
        if scope is not None:
            q = q.where(RatingFlag.hall == scope)
        return [_flag_out(f) for f in session.scalars(q)]

    @router.post("/api/scores/flags/{flag_id}/review", response_model=FlagOut)
    def api_review(who: UserDep, session: SessionDep, flag_id: FlagId, body: Review) -> FlagOut:
        """Review a flag: `fraud` excludes the rating from scores, `dismissed` keeps it."""
        if who.role not in REVIEW_ROLES:
            raise HTTPException(status_code=403, detail="only office or admin users review flags")
        flag = session.get(RatingFlag, flag_id)
        if flag is None:
            raise HTTPException(status_code=404, detail="no such flag")
        flag.status, flag.note = body.verdict, body.note
        flag.reviewed_by, flag.reviewed_at = who.username, datetime.now(UTC)
        audit(session, who.username, "flag.review", f"rating {flag.rating_id}", body.verdict)
        session.commit()
        return _flag_out(flag)

    @router.get("/exports", response_class=HTMLResponse)
    def exports_page(request: Request, lang: str | None = None) -> HTMLResponse:
        """The export page: choose a period and level, watch the progress, download."""
        lg = normalize_lang(lang)
        context = {"lang": lg, "t": lambda key: st(key, lg), "today": date.today().isoformat()}
        return templates.TemplateResponse(request, "exports.html", context)

    return router
