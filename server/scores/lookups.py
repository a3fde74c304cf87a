"""What scoring reads from SQL: the registry, confirmed fraud, approved appeals and cases.

The cases tables belong to `server/cases/`; they are read with plain SQL and every
reader answers "nothing" when the table does not exist, so scores work without them.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Date, Integer, String, column, inspect, select, table
from sqlalchemy.orm import Session

from protocol.messages import FLAG_REPEAT
from server.db.models import Device, Hall, ServiceItem, Staff, Unit, UtcDateTime, Window
from server.scores.models import RatingFlag

log = logging.getLogger(__name__)

# The columns of `server/cases/`' table that scoring reads, typed like the writer's.
CASES = table(
    "cases",
    column("rating_id", String),
    column("rating_ts", UtcDateTime),
    column("hall", String),
    column("window", String),
    column("device", String),
    column("staff", String),
    column("item", String),
    column("scale", Integer),
    column("level", Integer),
    column("reasons", String),
    column("appeal_state", String),
    column("state", String),
    column("due", Date),
    column("closed", UtcDateTime),
)


@dataclass(slots=True)
class Registry:
    """Names and relations scoring needs from the registry."""

    unit_of_window: dict[tuple[str, str], str] = field(default_factory=dict)
    test_devices: set[str] = field(default_factory=set)
    names: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def name(self, level: str, hall: str, key: str) -> str:
        """Return the registry name of an entity ("" when unknown)."""
        return self.names.get((level, hall, key), "")


def load_registry(session: Session) -> Registry:
    """Read halls, units, windows, test devices, staff and items."""
    reg = Registry()
    for h in session.scalars(select(Hall)):
        reg.names[("hall", h.code, h.code)] = h.name
    for u in session.scalars(select(Unit)):
        reg.names[("unit", u.hall.code, u.code)] = u.name
    for w in session.scalars(select(Window)):
        reg.names[("window", w.hall.code, w.code)] = w.name
        reg.unit_of_window[(w.hall.code, w.code)] = w.unit.code if w.unit else ""
    for d in session.scalars(select(Device).where(Device.test_device.is_(True))):
        reg.test_devices.add(d.code)
    for s in session.scalars(select(Staff)):
        reg.names[("staff", s.hall.code, s.number)] = s.name
    for i in session.scalars(select(ServiceItem)):
        reg.names[("item", "", i.code)] = i.name
    return reg


@dataclass(frozen=True, slots=True)
class ExcludedRating:
    """A single rating excluded by a person's decision, with where it was counted."""

    id: str
    reason: str  # "fraud" or "appeal"
    ts_ms: int
    hall: str
    window: str
    device: str
    staff: str
    item: str
    scale: int
    level: int
    repeat: bool


def _has_table(session: Session, name: str) -> bool:
    """Return True if the database has table `name`."""
    return inspect(session.get_bind()).has_table(name)


def _ms(moment: datetime) -> int:
    """Return ms since the epoch."""
    return int(moment.timestamp() * 1000)


def confirmed_fraud(session: Session, start: datetime, end: datetime) -> list[ExcludedRating]:
    """Return the ratings reviewed as fraud with start <= time < end (one per rating)."""
    rows = session.scalars(
        select(RatingFlag)
        .where(RatingFlag.status == "fraud")
        .where(RatingFlag.ts_ms >= _ms(start), RatingFlag.ts_ms < _ms(end))
        .order_by(RatingFlag.rating_id, RatingFlag.id)
    )
    out: dict[str, ExcludedRating] = {}
    for f in rows:
        out.setdefault(
            f.rating_id,
            ExcludedRating(
                f.rating_id,
                "fraud",
                f.ts_ms,
                f.hall,
                f.window,
                f.device,
                f.staff,
                f.item,
                f.scale,
                f.level,
                f.repeat,
            ),
        )
    return list(out.values())


def approved_appeals(session: Session, start: datetime, end: datetime) -> list[ExcludedRating]:
    """Return the ratings whose case has an approved appeal (none without the cases table)."""
    if not _has_table(session, "cases"):
        return []
    c = CASES.c
    q = (
        select(CASES)
        .where(c.appeal_state == "approved", c.rating_ts >= start, c.rating_ts < end)
        .order_by(c.rating_id)
    )
    out: list[ExcludedRating] = []
    for row in session.execute(q):
        ts_ms = _ms(row.rating_ts)
        out.append(
            ExcludedRating(
                str(row.rating_id),
                "appeal",
                ts_ms,
                row.hall,
                row.window,
                row.device,
                row.staff or "",
                row.item or "",
                int(row.scale),
                int(row.level),
                FLAG_REPEAT in (row.reasons or "").split(","),
            )
        )
    return out


def excluded_rating_ids(session: Session, start: datetime, end: datetime) -> dict[str, str]:
    """Return {rating id: reason} of ratings excluded by review (fraud) or appeal."""
    out = {e.id: e.reason for e in approved_appeals(session, start, end)}
    out.update({e.id: e.reason for e in confirmed_fraud(session, start, end)})
    return out


def paused_rating_ids(session: Session, ids: list[str]) -> set[str]:
    """Return those of `ids` the detector saw made while paused."""
    if not ids:
        return set()
    q = select(RatingFlag.rating_id).where(
        RatingFlag.rule == "while_paused", RatingFlag.rating_id.in_(ids)
    )
    return set(session.scalars(q))


@dataclass(slots=True)
class CaseCounts:
    """Cases of an entity's negative ratings in the period."""

    cases: int = 0
    closed: int = 0
    closed_on_time: int = 0


@dataclass(frozen=True, slots=True)
class CaseRow:
    """One case as scoring sees it."""

    hall: str
    window: str
    staff: str
    item: str
    closed: bool
    on_time: bool


def read_cases(
    session: Session, start: datetime, end: datetime, tz: ZoneInfo
) -> list[CaseRow] | None:
    """Return the cases of ratings with start <= time < end; None without the cases table."""
    if not _has_table(session, "cases"):
        return None
    c = CASES.c
    q = select(c.hall, c.window, c.staff, c.item, c.state, c.due, c.closed).where(
        c.rating_ts >= start, c.rating_ts < end
    )
    out: list[CaseRow] = []
    for row in session.execute(q):
        is_closed = row.state == "closed"
        closed_at = row.closed
        on_time = is_closed and closed_at is not None and closed_at.astimezone(tz).date() <= row.due
        out.append(
            CaseRow(row.hall, row.window, row.staff or "", row.item or "", is_closed, on_time)
        )
    return out


def count_cases(
    rows: list[CaseRow], key: Callable[[CaseRow], tuple[str, str]]
) -> dict[tuple[str, str], CaseCounts]:
    """Return the case counts per entity key."""
    out: dict[tuple[str, str], CaseCounts] = {}
    for r in rows:
        c = out.setdefault(key(r), CaseCounts())
        c.cases += 1
        c.closed += int(r.closed)
        c.closed_on_time += int(r.on_time)
    return out
