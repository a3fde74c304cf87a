"""Daily rollups of the raw ratings (with fraud detection), and their check against raw data."""

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, insert, literal, select
from sqlalchemy.orm import Session

from server.scores.engine import cells_of
from server.scores.fraud import detect
from server.scores.models import RatingDaily, RatingFlag, RatingMonthly, RollupDay
from server.scores.periods import Period, day_start, local_day, month_of
from server.scores.policy import Policy
from server.scores.source import RawRating, read_day_ratings
from storage.client import InfluxClient

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DayBuilt:
    """What building one day's rollup did."""

    day: date
    ratings: int
    cells: int
    new_flags: int


def refresh_month(session: Session, month: date) -> None:
    """Recompute the monthly rollup of the month starting at `month` from its daily rollups."""
    last = month_of(month).last
    session.execute(delete(RatingMonthly).where(RatingMonthly.month == month))
    rd = RatingDaily
    dims = [rd.hall, rd.window, rd.device, rd.staff, rd.item, rd.scale, rd.level]
    dims += [rd.repeat, rd.paused]
    sums = (
        select(literal(month), *dims, func.sum(rd.n))
        .where(rd.day >= month, rd.day <= last)
        .group_by(*dims)
    )
    rm = RatingMonthly
    cols = ["month", "hall", "window", "device", "staff", "item", "scale", "level"]
    cols += ["repeat", "paused", "n"]
    session.execute(insert(rm).from_select(cols, sums))


def build_day(
    session: Session,
    influx: InfluxClient,
    day: date,
    tz: ZoneInfo,
    policy: Policy,
    refresh: bool = True,
) -> DayBuilt:
    """Replace the rollup of `day` from the raw ratings and add new fraud flags (committed).

    With `refresh` the monthly rollup of the day's month is recomputed too.
    """
    ratings = read_day_ratings(influx, day_start(day, tz), day_start(day + timedelta(days=1), tz))
    cells = cells_of(ratings)
    session.execute(delete(RatingDaily).where(RatingDaily.day == day))
    session.add_all(
        RatingDaily(
            day=day,
            hall=h,
            window=w,
            device=d,
            staff=s,
            item=i,
            scale=sc,
            level=lv,
            repeat=rep,
            paused=pau,
            n=n,
        )
        for (h, w, d, s, i, sc, lv, rep, pau), n in sorted(cells.items())
    )
    row = session.get(RollupDay, day)
    if row is None:
        session.add(RollupDay(day=day, timezone=str(tz), ratings=len(ratings)))
    else:
        row.timezone, row.ratings = str(tz), len(ratings)
        row.built = datetime.now(UTC)
    new = record_flags(session, ratings, policy, tz)
    if refresh:
        refresh_month(session, day.replace(day=1))
    session.commit()
    log.info(
        "rollup of %s: %d ratings in %d cells, %d new flags", day, len(ratings), len(cells), new
    )
    return DayBuilt(day, len(ratings), len(cells), new)


def record_flags(session: Session, ratings: list[RawRating], policy: Policy, tz: ZoneInfo) -> int:
    """Store the detectors' flags not stored yet (reviews are kept); return how many are new."""
    flags = detect(ratings, policy.fraud)
    if not flags:
        return 0
    ids = sorted({f.rating.id for f in flags})
    have = {
        (rid, rule)
        for rid, rule in session.execute(
            select(RatingFlag.rating_id, RatingFlag.rule).where(RatingFlag.rating_id.in_(ids))
        )
    }
    new = 0
    for f in flags:
        r = f.rating
        if (r.id, f.rule) in have:
            continue
        have.add((r.id, f.rule))
        session.add(
            RatingFlag(
                rating_id=r.id,
                rule=f.rule,
                detail=f.detail,
                day=local_day(r.ts_ms, tz),
                ts_ms=r.ts_ms,
                hall=r.hall,
                window=r.window,
                device=r.device,
                staff=r.staff,
                item=r.item,
                ticket=r.ticket,
                scale=r.scale,
                level=r.level,
                repeat=r.repeat,
                paused=r.paused,
                status="pending",
            )
        )
        new += 1
    return new


def build_rollups(
    session: Session,
    influx: InfluxClient,
    period: Period,
    tz: ZoneInfo,
    policy: Policy,
    progress: Callable[[int, int], None] | None = None,
) -> list[DayBuilt]:
    """Build the rollups of every day of `period`."""
    days = period.days()
    out = []
    for n, day in enumerate(days, 1):
        out.append(build_day(session, influx, day, tz, policy, refresh=False))
        if progress:
            progress(n, len(days))
    for month in sorted({d.replace(day=1) for d in days}):
        refresh_month(session, month)
    session.commit()
    return out


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A day and window where the rollup and the raw ratings disagree."""

    day: str
    hall: str
    window: str
    level: int
    rollup: int
    raw: int


def check_rollups(
    session: Session, influx: InfluxClient, period: Period, tz: ZoneInfo
) -> tuple[int, list[Mismatch]]:
    """Compare each rolled-up day's counts per (hall, window, level) with the raw ratings.

    Returns the number of days checked and every mismatch (a day not rolled up is skipped).
    """
    days = session.scalars(
        select(RollupDay.day).where(
            RollupDay.day >= period.first,
            RollupDay.day <= period.last,
            RollupDay.timezone == str(tz),
        )
    ).all()
    problems: list[Mismatch] = []
    for day in days:
        rolled: Counter[tuple[str, str, int]] = Counter()
        q = (
            select(RatingDaily.hall, RatingDaily.window, RatingDaily.level, func.sum(RatingDaily.n))
            .where(RatingDaily.day == day)
            .group_by(RatingDaily.hall, RatingDaily.window, RatingDaily.level)
        )
        for h, w, lv, n in session.execute(q):
            rolled[(h, w, int(lv))] += int(n)
        start, end = day_start(day, tz), day_start(day + timedelta(days=1), tz)
        raw: Counter[tuple[str, str, int]] = Counter(
            (r.hall, r.window, r.level) for r in read_day_ratings(influx, start, end)
        )
        for key in sorted(set(rolled) | set(raw)):
            if rolled[key] != raw[key]:
                problems.append(Mismatch(day.isoformat(), *key, rolled[key], raw[key]))
    return len(days), problems
