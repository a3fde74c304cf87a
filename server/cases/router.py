"""Cases API (`/api/cases`), holiday calendar API (`/api/calendar`) and the case pages (`/cases`).

Reading: an admin or the office sees every hall, a hall manager only their hall, a viewer
their hall if they have one (else every hall); a case outside the reader's rights answers
404 as if missing. Writing: see server.cases.service. Webhooks are queued after commit.
"""

import logging
from collections.abc import Callable
from datetime import UTC, date, datetime
from enum import Enum
from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from protocol.scales import level_label
from server.auth.deps import Principal, SessionDep, UserDep, current_user
from server.auth.service import audit
from server.cases import calendar as cal
from server.cases import schemas as s
from server.cases import service as svc
from server.cases.models import Case, Holiday
from server.cases.strings import ct
from server.i18n import Lang, normalize_lang
from server.settings import ServerSettings

log = logging.getLogger(__name__)

TEMPLATES = FsPath(__file__).resolve().parent.parent / "templates"
CaseId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Case number")]
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Not logged in"},
    403: {"model": s.CaseError, "description": "Not allowed, or no X-CSRF-Token header"},
    404: {"model": s.CaseError, "description": "No such case (or not visible to this user)"},
    409: {"model": s.CaseError, "description": "Not possible in the case's current state"},
}


def allowed(who: Principal, case: Case) -> list[str]:
    """Return what `who` may do with `case` now."""
    out: list[str] = []
    if svc.may_work(who, case.hall) and case.state != "closed":
        out.append(svc.NEXT_STATE[case.state])
        if case.appeal_state is None:
            out.append("appeal")
    if svc.may_decide(who) and case.appeal_state == "pending":
        out += ["approve", "reject"]
    if svc.may_work(who, case.hall) or svc.may_decide(who):
        out.append("note")
    return out


def case_out(case: Case, who: Principal, today: date) -> s.CaseOut:
    """Return the API form of a case."""
    return s.CaseOut(
        id=case.id,
        rating_id=case.rating_id,
        hall=case.hall,
        window=case.window,
        device=case.device,
        level=case.level,
        scale=case.scale,
        staff=case.staff,
        ticket=case.ticket,
        item=case.item,
        reasons=case.reasons,
        rating_ts=case.rating_ts,
        opened=case.opened,
        due=case.due,
        overdue=svc.is_overdue(case, today),
        state=case.state,
        appeal_kind=case.appeal_kind,
        appeal_reason=case.appeal_reason,
        appeal_state=case.appeal_state,
        appeal_by=case.appeal_by,
        appeal_decided_by=case.appeal_decided_by,
        closed=case.closed,
        notes=case.notes,
        allowed=allowed(who, case),
    )


def case_detail(case: Case, who: Principal, today: date) -> s.CaseDetail:
    """Return the API form of a case with its history."""
    events = [
        s.CaseEventOut(
            at=e.at,
            actor=e.actor,
            action=e.action,
            from_state=e.from_state,
            to_state=e.to_state,
            note=e.note,
        )
        for e in case.events
    ]
    return s.CaseDetail(**case_out(case, who, today).model_dump(), events=events)


def _refuse(exc: svc.CaseError) -> JSONResponse:
    """Return the error response of a refused request."""
    body = s.CaseError(error=exc.error, detail=exc.detail).model_dump()
    return JSONResponse(status_code=exc.status, content=body)


def _enqueue(request: Request, session: Session, event: str, body: dict[str, Any]) -> None:
    """Write a webhook row in the caller's transaction (when the app has a sender)."""
    sender = getattr(request.app.state, "case_webhooks", None)
    if sender is not None:
        sender.enqueue(session, event, body, int(body["case_id"]))


def make_router(settings: ServerSettings) -> APIRouter:
    """Return the cases, calendar and case page routes."""
    router = APIRouter()
    tz = settings.tz
    days = settings.cases.deadline_days
    templates = Jinja2Templates(directory=TEMPLATES)

    def today() -> date:
        """Return today in the hall's time zone."""
        return svc.local_date(datetime.now(UTC), tz)

    def change(
        request: Request,
        session: Session,
        who: Principal,
        case_id: CaseId,
        act: Callable[[Case], str],
    ) -> Any:
        """Load the case, apply `act` (returns the webhook event), commit with its webhook."""
        try:
            case = svc.get_case(session, case_id, who)
            event = act(case)
        except svc.CaseError as exc:
            session.rollback()
            return _refuse(exc)
        now = today()
        session.flush()
        _enqueue(request, session, event, {**svc.case_payload(case, now), "actor": who.username})
        session.commit()
        return case_detail(svc.get_case(session, case_id, who), who, now)

    tags_cases: list[str | Enum] = ["cases"]

    @router.get("/api/cases", response_model=s.CaseList, responses=ERRORS, tags=tags_cases)
    def list_cases(
        session: SessionDep,
        who: UserDep,
        state: Annotated[s.State | None, Query(description="Only this state")] = None,
        overdue: Annotated[bool | None, Query(description="Only overdue (or not)")] = None,
        hall: Annotated[str | None, Query(max_length=64, description="Only this hall")] = None,
        appeal_state: Annotated[s.AppealState | None, Query(description="Appeal state")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    ) -> s.CaseList:
        """List the cases the user may read, newest rating first."""
        now = today()
        total, rows = svc.list_cases(
            session, who, now, state=state, overdue=overdue, hall=hall,
            appeal_state=appeal_state, limit=limit, offset=offset,
        )  # fmt: skip
        return s.CaseList(total=total, cases=[case_out(c, who, now) for c in rows])

    @router.get(
        "/api/cases/summary", response_model=s.CaseSummary, responses=ERRORS, tags=tags_cases
    )
    def case_summary(session: SessionDep, who: UserDep) -> s.CaseSummary:
        """Counts for the board's alert, over the cases the user may read."""
        now = today()
        unclosed = sum(
            svc.list_cases(session, who, now, state=st, limit=1)[0]
            for st in ("open", "contacted", "rectified")
        )
        overdue, _ = svc.list_cases(session, who, now, overdue=True, limit=1)
        _, newest = svc.list_cases(session, who, now, state="open", limit=1)
        return s.CaseSummary(
            unclosed=unclosed,
            overdue=overdue,
            newest=case_out(newest[0], who, now) if newest else None,
        )

    @router.get(
        "/api/cases/{case_id}", response_model=s.CaseDetail, responses=ERRORS, tags=tags_cases
    )
    def get_case(case_id: CaseId, session: SessionDep, who: UserDep) -> Any:
        """Return a case with its history."""
        try:
            return case_detail(svc.get_case(session, case_id, who), who, today())
        except svc.CaseError as exc:
            return _refuse(exc)

    @router.post(
        "/api/cases/{case_id}/transition",
        response_model=s.CaseDetail,
        responses=ERRORS,
        tags=tags_cases,
    )
    def transition(
        case_id: CaseId, body: s.TransitionIn, request: Request, session: SessionDep, who: UserDep
    ) -> Any:
        """Move the case one step: open → contacted (回访) → rectified (整改) → closed."""

        def act(case: Case) -> str:
            svc.transition(session, case, body.to, who, body.note)
            return "case.state_changed"

        return change(request, session, who, case_id, act)

    @router.post(
        "/api/cases/{case_id}/notes", response_model=s.CaseDetail, responses=ERRORS, tags=tags_cases
    )
    def add_note(
        case_id: CaseId, body: s.NoteIn, request: Request, session: SessionDep, who: UserDep
    ) -> Any:
        """Add a note to the case."""

        def act(case: Case) -> str:
            svc.add_note(session, case, who, body.note)
            return "case.note"

        return change(request, session, who, case_id, act)

    @router.post(
        "/api/cases/{case_id}/appeal",
        response_model=s.CaseDetail,
        responses=ERRORS,
        tags=tags_cases,
    )
    def appeal(
        case_id: CaseId, body: s.AppealIn, request: Request, session: SessionDep, who: UserDep
    ) -> Any:
        """File an appeal: the rating was mistaken (误评) or malicious (恶意差评)."""

        def act(case: Case) -> str:
            svc.file_appeal(session, case, body.kind, body.reason, who)
            return "case.appeal_filed"

        return change(request, session, who, case_id, act)

    @router.post(
        "/api/cases/{case_id}/decision",
        response_model=s.CaseDetail,
        responses=ERRORS,
        tags=tags_cases,
    )
    def decide(
        case_id: CaseId, body: s.DecisionIn, request: Request, session: SessionDep, who: UserDep
    ) -> Any:
        """Approve or reject the pending appeal (office or admin only)."""

        def act(case: Case) -> str:
            svc.decide_appeal(session, case, body.approve, body.note, who)
            return "case.appeal_approved" if body.approve else "case.appeal_rejected"

        return change(request, session, who, case_id, act)

    # --- holiday calendar ------------------------------------------------------------------

    tags_cal: list[str | Enum] = ["calendar"]

    def holiday_out(row: Holiday) -> s.HolidayOut:
        """Return the API form of a calendar row."""
        return s.HolidayOut(date=row.date, hall=row.hall, working=row.working, name=row.name)

    def calendar_writer(who: Principal) -> None:
        """Raise 403 unless `who` may change the calendar."""
        if not svc.may_edit_calendar(who):
            raise HTTPException(status_code=403, detail="only the office or an admin")

    @router.get("/api/calendar/holidays", response_model=list[s.HolidayOut], tags=tags_cal)
    def list_holidays(
        session: SessionDep,
        who: UserDep,
        start: Annotated[date | None, Query(description="From this day")] = None,
        end: Annotated[date | None, Query(description="Until this day")] = None,
        hall: Annotated[str | None, Query(max_length=64, description="With this hall's")] = None,
    ) -> list[s.HolidayOut]:
        """List the holidays and make-up working days (general ones, and a hall's if asked)."""
        return [holiday_out(r) for r in cal.list_holidays(session, start, end, hall)]

    @router.put(
        "/api/calendar/holidays",
        response_model=s.HolidayOut,
        responses={403: {"description": "Not the office or an admin"}},
        tags=tags_cal,
    )
    def put_holiday(body: s.HolidayIn, session: SessionDep, who: UserDep) -> s.HolidayOut:
        """Add or replace a calendar day; the deadlines of open cases are recomputed."""
        calendar_writer(who)
        row, created = cal.put_holiday(session, body.date, body.hall, body.working, body.name)
        changed = svc.recompute_dues(session, tz, days)
        audit(
            session, who.username, "calendar.put", f"holiday:{body.date}",
            {**body.model_dump(mode="json"), "created": created, "dues_changed": changed},
        )  # fmt: skip
        session.commit()
        return holiday_out(row)

    @router.delete(
        "/api/calendar/holidays/{day}",
        status_code=204,
        response_class=Response,
        responses={403: {"description": "Not the office or an admin"}, 404: {}},
        tags=tags_cal,
    )
    def delete_holiday(
        day: date,
        session: SessionDep,
        who: UserDep,
        hall: Annotated[str | None, Query(max_length=64)] = None,
    ) -> Response:
        """Remove a calendar day; the deadlines of open cases are recomputed."""
        calendar_writer(who)
        row = cal.find_holiday(session, day, hall)
        if row is None:
            raise HTTPException(status_code=404, detail=f"no calendar row for {day}")
        session.delete(row)
        session.flush()
        changed = svc.recompute_dues(session, tz, days)
        audit(session, who.username, "calendar.delete", f"holiday:{day}",
              {"hall": hall, "dues_changed": changed})  # fmt: skip
        session.commit()
        return Response(status_code=204)

    @router.post(
        "/api/calendar/holidays/import",
        response_model=s.HolidayImport,
        responses={403: {"description": "Not the office or an admin"}, 422: {}},
        tags=tags_cal,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"text/csv": {"schema": {"type": "string"}}},
                "description": "CSV with header `date,working,name` (UTF-8, BOM allowed)",
            }
        },
    )
    async def import_holidays(
        request: Request,
        who: UserDep,
        session: SessionDep,
        hall: Annotated[str | None, Query(max_length=64, description="Rows for this hall")] = None,
    ) -> Any:
        """Import calendar rows from CSV (`date,working,name`); all or nothing."""
        calendar_writer(who)
        raw = await request.body()
        try:
            rows = cal.parse_holiday_csv(raw.decode("utf-8"))
        except (UnicodeDecodeError, cal.CalendarError) as exc:
            return JSONResponse(
                status_code=422, content=s.CaseError(error="bad_csv", detail=str(exc)).model_dump()
            )
        for day, working, name in rows:
            cal.put_holiday(session, day, hall, working, name)
        changed = svc.recompute_dues(session, tz, days)
        audit(session, who.username, "calendar.import", f"holidays:{len(rows)}",
              {"hall": hall, "dues_changed": changed})  # fmt: skip
        session.commit()
        return s.HolidayImport(rows=len(rows), recomputed=changed)

    # --- pages -----------------------------------------------------------------------------

    def page_user(request: Request, session: Session) -> Principal | None:
        """Return the logged-in user of a page request, None when not logged in."""
        try:
            return current_user(request, session)
        except HTTPException:
            return None

    def render(request: Request, name: str, lg: Lang, status: int = 200, **ctx: Any) -> Any:
        """Render a case template with the translation helpers."""

        def tr(key: str, **fmt: object) -> str:
            return ct(key, lg, **fmt)

        def label(scale: int, level: int) -> str:
            return level_label(scale, level, lg)

        def local(moment: datetime | None) -> str:
            return "" if moment is None else moment.astimezone(tz).strftime("%Y-%m-%d %H:%M")

        context = {"lang": lg, "t": tr, "label": label, "local": local, **ctx}
        return templates.TemplateResponse(request, name, context, status_code=status)

    @router.get("/cases", response_class=HTMLResponse, tags=["pages"])
    def cases_page(
        request: Request,
        session: SessionDep,
        lang: Annotated[str | None, Query(description="zh (default) or en")] = None,
        state: Annotated[s.State | None, Query()] = None,
        overdue: Annotated[bool | None, Query()] = None,
        hall: Annotated[str | None, Query(max_length=64)] = None,
    ) -> Any:
        """Render the case list."""
        lg = normalize_lang(lang)
        who = page_user(request, session)
        if who is None:
            return render(request, "cases_login.html", lg, status=401)
        now = today()
        total, rows = svc.list_cases(
            session, who, now, state=state, overdue=overdue, hall=hall, limit=500
        )
        cases = [case_out(c, who, now) for c in rows]
        return render(
            request, "cases_list.html", lg, who=who, total=total, cases=cases,
            state=state, overdue=overdue, hall=hall, states=[*svc.NEXT_STATE, "closed"],
        )  # fmt: skip

    @router.get("/cases/{case_id}", response_class=HTMLResponse, tags=["pages"])
    def case_page(
        case_id: CaseId,
        request: Request,
        session: SessionDep,
        lang: Annotated[str | None, Query(description="zh (default) or en")] = None,
    ) -> Any:
        """Render a case with its history and the buttons the user may press."""
        lg = normalize_lang(lang)
        who = page_user(request, session)
        if who is None:
            return render(request, "cases_login.html", lg, status=401)
        try:
            case = svc.get_case(session, case_id, who)
        except svc.CaseError:
            raise HTTPException(status_code=404, detail=f"no case {case_id}") from None
        return render(
            request, "cases_detail.html", lg, who=who, case=case_detail(case, who, today())
        )

    return router
