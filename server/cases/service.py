"""Case rules: opening from negative ratings, the workflow, appeals, deadlines and rights.

Workflow: open → contacted (回访) → rectified (整改) → closed, one step at a time, by an
admin or the manager of the case's hall. An appeal (误评 `mistaken` / 恶意差评 `malicious`)
is filed by the same people while the case is not closed, once; only the office or an
admin approves or rejects it. An approved appeal closes the case and excludes its rating
from the scores (see `excluded_rating_ids`). Every change is written to the case's history
(`case_events`) and to the audit log; the caller commits.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session, selectinload

from server.auth.deps import Principal
from server.auth.service import audit
from server.cases.calendar import due_date
from server.cases.models import APPEAL_KINDS, Case, CaseEvent
from server.db.models import Device, utcnow
from server.scores.policy import Policy

log = logging.getLogger(__name__)

NEXT_STATE = {"open": "contacted", "contacted": "rectified", "rectified": "closed"}
APPEAL_EXCLUSION_REASON = {"mistaken": "appeal_mistaken", "malicious": "appeal_malicious"}


class CaseError(Exception):
    """A request the case rules refuse; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        """Keep the status, a short code and a message."""
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


@dataclass(frozen=True)
class NegativeRating:
    """A negative rating read from InfluxDB."""

    rating_id: str
    hall: str
    window: str
    device: str
    level: int
    scale: int
    ts: datetime
    staff: str | None = None
    ticket: str | None = None
    item: str | None = None
    reasons: str = ""


# --- rights --------------------------------------------------------------------------------


def read_scope(who: Principal) -> str | None:
    """Return the only hall `who` may read (None: every hall)."""
    if who.role in ("admin", "office"):
        return None
    return who.hall if who.role in ("hall_manager", "viewer") else None


def may_read(who: Principal, hall: str) -> bool:
    """Return True if `who` may read the cases of `hall`."""
    scope = read_scope(who)
    if who.role == "hall_manager" and scope is None:
        return False
    return scope is None or scope == hall


def may_work(who: Principal, hall: str) -> bool:
    """Return True if `who` may move a case of `hall` along or file an appeal."""
    return who.is_admin or (who.role == "hall_manager" and who.hall == hall)


def may_decide(who: Principal) -> bool:
    """Return True if `who` may approve or reject appeals (the office or an admin)."""
    return who.role in ("admin", "office")


def may_edit_calendar(who: Principal) -> bool:
    """Return True if `who` may change the holiday calendar."""
    return who.role in ("admin", "office")


# --- deadlines -----------------------------------------------------------------------------


def local_date(moment: datetime, tz: ZoneInfo) -> date:
    """Return the date of `moment` in `tz`."""
    return moment.astimezone(tz).date()


def is_overdue(case: Case, today: date) -> bool:
    """Return True if the case is not closed and its deadline has passed."""
    return case.state != "closed" and today > case.due


def recompute_dues(session: Session, tz: ZoneInfo, days: int) -> int:
    """Recompute the deadline of every case not closed (after a calendar change); return count."""
    n = 0
    for case in session.scalars(select(Case).where(Case.state != "closed")):
        due = due_date(session, case.hall, local_date(case.rating_ts, tz), days)
        if due != case.due:
            case.due = due
            n += 1
    return n


# --- history -------------------------------------------------------------------------------


def _event(
    session: Session,
    case: Case,
    actor: str | None,
    action: str,
    from_state: str | None,
    note: str = "",
) -> None:
    """Add a history row and an audit row for a change of `case`."""
    now = utcnow()
    case.updated = now
    session.add(
        CaseEvent(
            case=case,
            at=now,
            actor=actor,
            action=action,
            from_state=from_state,
            to_state=case.state,
            note=note,
        )
    )
    audit(
        session,
        actor,
        f"case.{action}",
        f"case:{case.id}",
        {"rating_id": case.rating_id, "from": from_state, "to": case.state, "note": note},
    )


# --- opening -------------------------------------------------------------------------------


def _test_devices(session: Session, codes: Iterable[str]) -> set[str]:
    """Return the codes among `codes` registered as test devices."""
    wanted = set(codes)
    if not wanted:
        return set()
    q = select(Device.code).where(Device.code.in_(wanted), Device.test_device.is_(True))
    return set(session.scalars(q))


def open_cases(
    session: Session,
    ratings: Iterable[NegativeRating],
    tz: ZoneInfo,
    days: int,
    policy: Policy | None = None,
) -> list[Case]:
    """Open a case for every negative rating without one (flushed); return the new cases.

    Ratings that `policy` (default: the default policy) does not count as negative, or
    that come from a registered test device, are skipped.
    """
    pol = policy or Policy()
    todo = {r.rating_id: r for r in ratings if pol.negative(r.scale, r.level)}
    if not todo:
        return []
    have: set[str] = set()
    ids = list(todo)
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        have.update(session.scalars(select(Case.rating_id).where(Case.rating_id.in_(chunk))))
    tests = _test_devices(session, {r.device for r in todo.values()})
    new: list[Case] = []
    for rid, r in todo.items():
        if rid in have or r.device in tests:
            continue
        case = Case(
            rating_id=rid,
            hall=r.hall,
            window=r.window,
            device=r.device,
            level=r.level,
            scale=r.scale,
            staff=r.staff,
            ticket=r.ticket,
            item=r.item,
            reasons=r.reasons[:500],
            rating_ts=r.ts,
            opened=utcnow(),
            due=due_date(session, r.hall, local_date(r.ts, tz), days),
            state="open",
            notes="",
        )
        session.add(case)
        session.flush()
        _event(session, case, None, "opened", None)
        new.append(case)
    session.flush()
    return new


# --- workflow ------------------------------------------------------------------------------


def transition(session: Session, case: Case, to_state: str, who: Principal, note: str) -> None:
    """Move `case` one step along the workflow."""
    if not may_work(who, case.hall):
        raise CaseError(403, "forbidden", "only an admin or this hall's manager may do this")
    if NEXT_STATE.get(case.state) != to_state:
        raise CaseError(
            409, "bad_transition", f"a case in state {case.state} cannot go to {to_state}"
        )
    before = case.state
    case.state = to_state
    if to_state == "closed":
        case.closed = utcnow()
    _event(session, case, who.username, to_state, before, note)


def add_note(session: Session, case: Case, who: Principal, note: str) -> None:
    """Append a note to the case (its state stays)."""
    if not may_work(who, case.hall) and not may_decide(who):
        raise CaseError(403, "forbidden", "not allowed to write on this case")
    stamp = utcnow().isoformat(timespec="seconds")
    case.notes = f"{case.notes}\n[{stamp} {who.username}] {note}".strip()
    _event(session, case, who.username, "note", case.state, note)


def file_appeal(session: Session, case: Case, kind: str, reason: str, who: Principal) -> None:
    """File the case's appeal as mistaken (误评) or malicious (恶意差评)."""
    if not may_work(who, case.hall):
        raise CaseError(403, "forbidden", "only an admin or this hall's manager may appeal")
    if kind not in APPEAL_KINDS:
        raise CaseError(422, "bad_kind", f"appeal kind must be one of {', '.join(APPEAL_KINDS)}")
    if case.state == "closed":
        raise CaseError(409, "closed", "a closed case cannot be appealed")
    if case.appeal_state is not None:
        raise CaseError(409, "appealed", f"the case has an appeal already ({case.appeal_state})")
    case.appeal_kind = kind
    case.appeal_reason = reason
    case.appeal_state = "pending"
    case.appeal_by = who.username
    case.appeal_filed = utcnow()
    _event(session, case, who.username, "appeal_filed", case.state, f"{kind}: {reason}")


def decide_appeal(session: Session, case: Case, approve: bool, note: str, who: Principal) -> None:
    """Approve (closes the case, excludes the rating) or reject the pending appeal."""
    if not may_decide(who):
        raise CaseError(403, "forbidden", "only the office or an admin decides appeals")
    if case.appeal_state != "pending":
        raise CaseError(409, "no_pending_appeal", "the case has no pending appeal")
    before = case.state
    case.appeal_state = "approved" if approve else "rejected"
    case.appeal_decided_by = who.username
    case.appeal_decided = utcnow()
    if approve and case.state != "closed":
        case.state = "closed"
        case.closed = case.appeal_decided
    action = "appeal_approved" if approve else "appeal_rejected"
    _event(session, case, who.username, action, before, note)


def flag_overdue(session: Session, today: date) -> list[Case]:
    """Mark the overdue cases not yet flagged (history, audit); return them (flushed)."""
    rows = session.scalars(
        select(Case).where(
            Case.state != "closed", Case.due < today, Case.overdue_notified.is_(None)
        )
    ).all()
    for case in rows:
        case.overdue_notified = utcnow()
        _event(session, case, None, "overdue", case.state, f"due {case.due.isoformat()}")
    session.flush()
    return list(rows)


# --- reading -------------------------------------------------------------------------------


def get_case(session: Session, case_id: int, who: Principal) -> Case:
    """Return a case `who` may read, with its history; 404 otherwise (as if missing)."""
    case = session.scalars(
        select(Case).where(Case.id == case_id).options(selectinload(Case.events))
    ).one_or_none()
    if case is None or not may_read(who, case.hall):
        raise CaseError(404, "not_found", f"no case {case_id}")
    return case


def list_cases(
    session: Session,
    who: Principal,
    today: date,
    *,
    state: str | None = None,
    overdue: bool | None = None,
    hall: str | None = None,
    appeal_state: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[int, list[Case]]:
    """Return the total and one page of the cases `who` may read, newest first."""
    conds: list[ColumnElement[bool]] = []
    scope = read_scope(who)
    if who.role == "hall_manager" and scope is None:
        return 0, []
    if scope is not None:
        if hall is not None and hall != scope:
            return 0, []
        hall = scope
    if hall is not None:
        conds.append(Case.hall == hall)
    if state is not None:
        conds.append(Case.state == state)
    if appeal_state is not None:
        conds.append(Case.appeal_state == appeal_state)
    late = and_(Case.state != "closed", Case.due < today)
    if overdue is True:
        conds.append(late)
    elif overdue is False:
        conds.append(or_(Case.state == "closed", Case.due >= today))
    where = and_(*conds) if conds else and_(True)
    total = session.scalar(select(func.count()).select_from(Case).where(where)) or 0
    rows = session.scalars(
        select(Case).where(where).order_by(Case.rating_ts.desc(), Case.id.desc())
        .limit(limit).offset(offset)
    ).all()  # fmt: skip
    return int(total), list(rows)


def excluded_rating_ids(session: Session, start: datetime, end: datetime) -> dict[str, str]:
    """Return {rating id: reason} of the ratings in [start, end) excluded by an approved appeal.

    The reason is `appeal_mistaken` (误评) or `appeal_malicious` (恶意差评). Scores and exports
    leave these ratings out and list them as exclusions. `start` and `end` are aware datetimes
    compared with the rating's press time.
    """
    rows = session.execute(
        select(Case.rating_id, Case.appeal_kind).where(
            Case.appeal_state == "approved", Case.rating_ts >= start, Case.rating_ts < end
        )
    ).all()
    return {rid: APPEAL_EXCLUSION_REASON.get(kind or "", "appeal") for rid, kind in rows}


def case_payload(case: Case, today: date) -> dict[str, Any]:
    """Return the webhook body of a case (no personal data: only codes and states)."""
    return {
        "case_id": case.id,
        "rating_id": case.rating_id,
        "hall": case.hall,
        "window": case.window,
        "device": case.device,
        "level": case.level,
        "scale": case.scale,
        "rating_ts": case.rating_ts.isoformat(),
        "state": case.state,
        "due": case.due.isoformat(),
        "overdue": is_overdue(case, today),
        "appeal_kind": case.appeal_kind,
        "appeal_state": case.appeal_state,
    }


def lookback_start(now: datetime, hours: float) -> datetime:
    """Return `now` minus `hours`."""
    return now - timedelta(hours=hours)
