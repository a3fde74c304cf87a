"""Periods (day, week, month, quarter, year, custom) as local days and their UTC bounds."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

PeriodKind = Literal["day", "week", "month", "quarter", "year", "custom"]
PERIOD_KINDS: tuple[str, ...] = ("day", "week", "month", "quarter", "year", "custom")
# Days a period may cover: InfluxDB's time range (1677–2262) with room, and no epoch sign flip.
FIRST_DAY = date(2000, 1, 1)
LAST_DAY = date(2199, 12, 31)


@dataclass(frozen=True, slots=True)
class Period:
    """Local days `first` … `last` (both inclusive) in the hall's time zone."""

    first: date
    last: date
    kind: str = "custom"

    def __post_init__(self) -> None:
        """Refuse a period that ends before it starts or lies outside FIRST_DAY … LAST_DAY."""
        if self.last < self.first:
            raise ValueError(f"period ends ({self.last}) before it starts ({self.first})")
        if self.first < FIRST_DAY or self.last > LAST_DAY:
            raise ValueError(f"a period lies within {FIRST_DAY} … {LAST_DAY}")

    def days(self) -> list[date]:
        """Return every day of the period."""
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]

    def bounds(self, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """Return [local midnight of `first`, local midnight after `last`) in UTC."""
        return day_start(self.first, tz), day_start(self.last + timedelta(days=1), tz)


def day_start(day: date, tz: ZoneInfo) -> datetime:
    """Return the local midnight that starts `day`, in UTC."""
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def local_day(ts_ms: int, tz: ZoneInfo) -> date:
    """Return the local date of a time in ms since the epoch."""
    return datetime.fromtimestamp(ts_ms / 1000, tz).date()


def period_of(kind: str, ref: date) -> Period:
    """Return the day, week (Mon–Sun), month, quarter or year that contains `ref`."""
    if kind == "day":
        return Period(ref, ref, kind)
    if kind == "week":
        first = ref - timedelta(days=ref.weekday())
        return Period(first, first + timedelta(days=6), kind)
    if kind == "month":
        first = ref.replace(day=1)
        return Period(first, _next_month(first) - timedelta(days=1), kind)
    if kind == "quarter":
        first = date(ref.year, 3 * ((ref.month - 1) // 3) + 1, 1)
        nxt = _next_month(_next_month(_next_month(first)))
        return Period(first, nxt - timedelta(days=1), kind)
    if kind == "year":
        return Period(date(ref.year, 1, 1), date(ref.year, 12, 31), kind)
    raise ValueError(f"period kind must be one of {', '.join(PERIOD_KINDS[:-1])}")


def month_of(day: date) -> Period:
    """Return the month that contains `day`."""
    return period_of("month", day)


def _next_month(first: date) -> date:
    """Return the first day of the month after the month starting at `first`."""
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)
