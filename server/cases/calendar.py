"""Working-day calendar: weekends, holidays and make-up working days (调休), per hall or general."""

import csv
import io
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from server.cases.models import Holiday

# A deadline never needs more than this many calendar days per working day (safety bound).
_MAX_SPAN_PER_DAY = 10


class CalendarError(ValueError):
    """A holiday row cannot be stored as given."""


@dataclass(frozen=True)
class Calendar:
    """Which days are worked: Monday–Friday unless a calendar row says otherwise."""

    overrides: dict[date, bool]

    def is_working(self, day: date) -> bool:
        """Return True if `day` is a working day."""
        found = self.overrides.get(day)
        if found is not None:
            return found
        return day.weekday() < 5

    def add_working_days(self, start: date, days: int) -> date:
        """Return the `days`-th working day after `start` (`start` itself does not count)."""
        day = start
        left = days
        for _ in range(days * _MAX_SPAN_PER_DAY + 31):
            if left <= 0:
                return day
            day += timedelta(days=1)
            if self.is_working(day):
                left -= 1
        raise CalendarError(f"no {days} working days after {start} in the calendar")


def load_calendar(session: Session, hall: str | None, start: date, end: date) -> Calendar:
    """Return the calendar of `hall` for start..end: a hall's own row wins over a general one."""
    rows = session.scalars(
        select(Holiday).where(
            Holiday.date >= start,
            Holiday.date <= end,
            or_(Holiday.hall.is_(None), Holiday.hall == hall) if hall else Holiday.hall.is_(None),
        )
    ).all()
    general = {r.date: r.working for r in rows if r.hall is None}
    own = {r.date: r.working for r in rows if r.hall is not None}
    return Calendar({**general, **own})


def due_date(session: Session, hall: str | None, start: date, days: int) -> date:
    """Return the deadline `days` working days after `start` in `hall`'s calendar."""
    end = start + timedelta(days=days * _MAX_SPAN_PER_DAY + 31)
    return load_calendar(session, hall, start, end).add_working_days(start, days)


def find_holiday(session: Session, day: date, hall: str | None) -> Holiday | None:
    """Return the calendar row of `day` for `hall` (None: the general row)."""
    cond = Holiday.hall.is_(None) if hall is None else Holiday.hall == hall
    return session.scalars(select(Holiday).where(Holiday.date == day, cond)).one_or_none()


def put_holiday(
    session: Session, day: date, hall: str | None, working: bool, name: str
) -> tuple[Holiday, bool]:
    """Add or replace the row of (`day`, `hall`); return it and whether it is new (flushed)."""
    row = find_holiday(session, day, hall)
    created = row is None
    if row is None:
        row = Holiday(date=day, hall=hall, working=working, name=name)
        session.add(row)
    else:
        row.working = working
        row.name = name
    session.flush()
    return row, created


def list_holidays(
    session: Session, start: date | None, end: date | None, hall: str | None
) -> list[Holiday]:
    """Return the rows between `start` and `end`: the general ones and those of `hall` if given."""
    q = select(Holiday)
    if start is not None:
        q = q.where(Holiday.date >= start)
    if end is not None:
        q = q.where(Holiday.date <= end)
    q = q.where(
        or_(Holiday.hall.is_(None), Holiday.hall == hall) if hall else Holiday.hall.is_(None)
    )
    return list(session.scalars(q.order_by(Holiday.date, Holiday.hall)))


def parse_holiday_csv(text: str) -> list[tuple[date, bool, str]]:
    """Parse `date,working,name` rows (header required; working: 1/0, true/false, 是/否)."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    if reader.fieldnames is None or "date" not in reader.fieldnames:
        raise CalendarError("the CSV needs a header with at least the column 'date'")
    out: list[tuple[date, bool, str]] = []
    for n, row in enumerate(reader, start=2):
        try:
            day = date.fromisoformat((row.get("date") or "").strip())
        except ValueError as exc:
            raise CalendarError(f"line {n}: bad date {row.get('date')!r}") from exc
        flag = (row.get("working") or "").strip().lower()
        if flag not in {"", "0", "1", "true", "false", "yes", "no", "是", "否"}:
            raise CalendarError(f"line {n}: bad working flag {flag!r}")
        working = flag in {"1", "true", "yes", "是"}
        out.append((day, working, (row.get("name") or "").strip()[:200]))
    return out
