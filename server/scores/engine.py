"""The score engine: counted ratings, exclusions and scores per entity for a period."""

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.scores.lookups import (
    CaseCounts,
    CaseRow,
    ExcludedRating,
    Registry,
    approved_appeals,
    confirmed_fraud,
    count_cases,
    load_registry,
    paused_rating_ids,
    read_cases,
)
from server.scores.models import RatingDaily, RatingMonthly, RollupDay
from server.scores.periods import Period, day_start, local_day, month_of
from server.scores.policy import Policy
from server.scores.source import RawRating, read_day_ratings
from storage.client import InfluxClient

log = logging.getLogger(__name__)

EntityLevel = Literal["window", "unit", "hall", "staff", "item"]
ENTITY_LEVELS: tuple[str, ...] = ("window", "unit", "hall", "staff", "item")
# The order in which an exclusion reason is given when several apply.
REASONS: tuple[str, ...] = ("test_device", "repeat", "paused", "fraud", "appeal")
_ONE_DAY = timedelta(days=1)
LEVEL_KEYS: tuple[str, ...] = ("1", "2", "3", "4", "5")
# (hall, window, device, staff, item, scale, level, repeat, paused)
Cell = tuple[str, str, str, str, str, int, int, bool, bool]
Progress = Callable[[int, int], None]


class ScoreRow(BaseModel):
    """The numbers of one entity (window, unit, hall, staff or service item) for a period."""

    model_config = ConfigDict(extra="forbid")

    level: str = Field(title="Entity level: window, unit, hall, staff or item")
    hall: str = Field(title="Hall code (empty for service items, which span halls)")
    key: str = Field(title="Window, unit, hall, staff or item code (empty: none given)")
    name: str = Field(title="Name in the registry")
    unit: str = Field(title="Unit (部门) of the window; empty at other levels")
    ratings: int = Field(title="Counted ratings")
    levels: dict[str, int] = Field(title="Counted ratings per level number (1 = worst)")
    satisfied: int = Field(title="Counted ratings at 基本满意 or better")
    satisfaction_rate: float | None = Field(title="satisfied / ratings, 0–1")
    score: float | None = Field(title="Mean index 0–100; null when insufficient sample")
    negatives: int = Field(title="Counted negative ratings")
    status: Literal["scored", "insufficient_sample"] = Field(title="Scored or not")
    excluded: int = Field(title="Ratings not counted")
    exclusions: dict[str, int] = Field(title="Ratings not counted, per reason")
    cases: int = Field(title="Negative-rating cases opened for ratings of the period")
    cases_closed: int = Field(title="Of which closed")
    cases_closed_on_time: int = Field(title="Of which closed by their due date")
    handling_rate: float | None = Field(title="cases_closed / cases, 0–1")
    on_time_rate: float | None = Field(title="cases_closed_on_time / cases, 0–1")
    allocated_points: float = Field(title="Points the policy allocates")
    points: float | None = Field(title="Assessment points = score / 100 × allocated points")


class ExcludedItem(BaseModel):
    """A single rating excluded by a person's decision (fraud review or appeal)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(title="Rating id")
    reason: str = Field(title="fraud or appeal")
    hall: str = Field(title="Hall")
    window: str = Field(title="Window")
    device: str = Field(title="Device")
    day: str = Field(title="Local day of the rating")
    scale: int = Field(title="Scale")
    rating_level: int = Field(title="Level of the rating")


class ScoreResult(BaseModel):
    """Scores of every entity of one level for a period, and how they were made."""

    model_config = ConfigDict(extra="forbid")

    level: str = Field(title="Entity level")
    period_from: str = Field(title="First local day, YYYY-MM-DD")
    period_to: str = Field(title="Last local day (inclusive), YYYY-MM-DD")
    timezone: str = Field(title="The hall's time zone")
    hall: str | None = Field(title="Only this hall (all when null)")
    policy_name: str = Field(title="Policy name")
    policy_hash: str = Field(title="sha256 of the policy's canonical JSON")
    cases_available: bool = Field(title="Whether the cases tables exist")
    rollup_days: int = Field(title="Days read from rollups")
    raw_days: int = Field(title="Days read from raw ratings")
    exclusions: dict[str, int] = Field(title="Ratings not counted, per reason, all rows")
    excluded_ratings: list[ExcludedItem] = Field(title="Ratings excluded by review or appeal")
    rows: list[ScoreRow] = Field(title="One row per entity")


@dataclass(slots=True)
class _Acc:
    """Running counts of one entity."""

    counted: Counter[tuple[int, int]] = field(default_factory=Counter)
    excluded: Counter[str] = field(default_factory=Counter)


def _round(value: Decimal, places: int) -> float:
    """Round half up to `places` decimals."""
    return float(value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def _entity_key(level: str, reg: Registry) -> Callable[[str, str, str, str], tuple[str, str]]:
    """Return (hall, window, staff, item) → (hall, key) of the level."""
    if level == "window":
        return lambda h, w, s, i: (h, w)
    if level == "unit":
        return lambda h, w, s, i: (h, reg.unit_of_window.get((h, w), ""))
    if level == "hall":
        return lambda h, w, s, i: (h, h)
    if level == "staff":
        return lambda h, w, s, i: (h, s)
    if level == "item":
        return lambda h, w, s, i: ("", i)
    raise ValueError(f"level must be one of {', '.join(ENTITY_LEVELS)}")


def cells_of(ratings: Iterable[RawRating], staff: bool = True, item: bool = True) -> Counter[Cell]:
    """Count raw ratings per cell."""
    out: Counter[Cell] = Counter()
    for r in ratings:
        out[
            (
                r.hall,
                r.window,
                r.device,
                r.staff if staff else "",
                r.item if item else "",
                r.scale,
                r.level,
                r.repeat,
                r.paused,
            )
        ] += 1
    return out


def rolled_days(session: Session, period: Period, tz: ZoneInfo) -> set[str]:
    """Return the ISO days of `period` that have rollups built in time zone `tz`."""
    q = select(RollupDay.day).where(
        RollupDay.day >= period.first, RollupDay.day <= period.last, RollupDay.timezone == str(tz)
    )
    return {d.isoformat() for d in session.scalars(q)}


def rollup_cells(
    session: Session, period: Period, days: set[str], hall: str | None, staff: bool, item: bool
) -> Counter[Cell]:
    """Sum the rollups of `days` per cell (staff/item only when the level needs them).

    Whole months of the period whose every day is rolled up come from the monthly
    rollups, the other days from the daily ones.
    """
    out: Counter[Cell] = Counter()
    if not days:
        return out
    months: list[date] = []
    rest = set(days)
    for first in sorted({date.fromisoformat(d).replace(day=1) for d in days}):
        month = month_of(first)
        month_days = {d.isoformat() for d in month.days()}
        if month.first >= period.first and month.last <= period.last and month_days <= days:
            months.append(first)
            rest -= month_days
    if months:
        rm = RatingMonthly
        _sum_cells(session, out, rm, rm.month.in_(months), hall, staff, item)
    if rest:
        rd = RatingDaily
        where = rd.day.in_(sorted(date.fromisoformat(d) for d in rest))
        _sum_cells(session, out, rd, where, hall, staff, item)
    return out


def _sum_cells(
    session: Session,
    out: Counter[Cell],
    table: Any,
    where: Any,
    hall: str | None,
    staff: bool,
    item: bool,
) -> None:
    """Add the rows of a rollup table matching `where`, summed per cell, to `out`."""
    cols: list[Any] = [table.hall, table.window, table.device]
    cols += [table.staff] if staff else []
    cols += [table.item] if item else []
    cols += [table.scale, table.level, table.repeat, table.paused]
    q = select(*cols, func.sum(table.n)).where(where)
    if hall is not None:
        q = q.where(table.hall == hall)
    for row in session.execute(q.group_by(*cols)):
        v = list(row)
        h, w, d = v[0], v[1], v[2]
        pos = 3
        s = v[pos] if staff else ""
        pos += int(staff)
        i = v[pos] if item else ""
        pos += int(item)
        scale, lv, rep, pau, n = v[pos : pos + 5]
        out[(h, w, d, s, i, int(scale), int(lv), bool(rep), bool(pau))] += int(n)


def compute_scores(
    level: str,
    period: Period,
    *,
    policy: Policy,
    tz: ZoneInfo,
    influx: InfluxClient,
    session: Session,
    hall: str | None = None,
    progress: Progress | None = None,
    use_rollups: bool = True,
) -> ScoreResult:
    """Score every entity of `level` for `period` (rollups where built, raw ratings elsewhere)."""
    reg = load_registry(session)
    key_of = _entity_key(level, reg)
    need_staff, need_item = level == "staff", level == "item"
    days = period.days()
    rolled = rolled_days(session, period, tz) if use_rollups else set()
    cells = rollup_cells(session, period, rolled, hall, need_staff, need_item)
    raw_paused: dict[str, bool] = {}
    done = len(rolled)
    if progress:
        progress(done, len(days))
    for day in days:
        if day.isoformat() in rolled:
            continue
        start, end = day_start(day, tz), day_start(day + _ONE_DAY, tz)
        ratings = read_day_ratings(influx, start, end, hall)
        cells.update(cells_of(ratings, need_staff, need_item))
        raw_paused.update((r.id, r.paused) for r in ratings)
        done += 1
        if progress:
            progress(done, len(days))
    accs: dict[tuple[str, str], _Acc] = {}
    ex = policy.exclusions

    def cell_reason(device: str, repeat: bool, paused: bool) -> str | None:
        if ex.test_devices and device in reg.test_devices:
            return "test_device"
        if ex.repeats and repeat:
            return "repeat"
        if ex.paused and paused:
            return "paused"
        return None

    for (h, w, d, s, i, scale, lv, rep, pau), n in cells.items():
        acc = accs.setdefault(key_of(h, w, s, i), _Acc())
        reason = cell_reason(d, rep, pau)
        if reason is None:
            acc.counted[(scale, lv)] += n
        else:
            acc.excluded[reason] += n
    start, end = period.bounds(tz)
    singles: list[ExcludedRating] = []
    if ex.fraud:
        singles += confirmed_fraud(session, start, end)
    if ex.appeals:
        singles += approved_appeals(session, start, end)
    flagged_paused = paused_rating_ids(session, [e.id for e in singles if e.id not in raw_paused])
    seen: set[str] = set()
    listed: list[ExcludedItem] = []
    for e in singles:
        if e.id in seen or (hall is not None and e.hall != hall):
            continue
        seen.add(e.id)
        paused = raw_paused.get(e.id, e.id in flagged_paused)
        if cell_reason(e.device, e.repeat, paused) is not None:
            continue  # already not counted, under the reason listed first
        acc = accs.setdefault(key_of(e.hall, e.window, e.staff, e.item), _Acc())
        if acc.counted[(e.scale, e.level)] <= 0:
            log.warning("excluded rating %s not among the counted ratings; ignored", e.id)
            continue
        acc.counted[(e.scale, e.level)] -= 1
        acc.excluded[e.reason] += 1
        listed.append(
            ExcludedItem(
                id=e.id,
                reason=e.reason,
                hall=e.hall,
                window=e.window,
                device=e.device,
                day=local_day(e.ts_ms, tz).isoformat(),
                scale=e.scale,
                rating_level=e.level,
            )
        )
    if level in ("window", "unit", "hall"):
        for (lv_name, h, k), _name in reg.names.items():
            if lv_name == level and (hall is None or h == hall):
                accs.setdefault((h, k), _Acc())
    case_rows = read_cases(session, start, end, tz)
    cases: dict[tuple[str, str], CaseCounts] = {}
    if case_rows is not None:
        rows_in = [c for c in case_rows if hall is None or c.hall == hall]

        def case_key(c: CaseRow) -> tuple[str, str]:
            return key_of(c.hall, c.window, c.staff, c.item)

        cases = count_cases(rows_in, case_key)
    rows = [
        _row(level, h, k, acc, policy, reg, cases.get((h, k), CaseCounts()))
        for (h, k), acc in sorted(accs.items())
    ]
    totals: Counter[str] = Counter()
    for acc in accs.values():
        totals.update(acc.excluded)
    return ScoreResult(
        level=level,
        period_from=period.first.isoformat(),
        period_to=period.last.isoformat(),
        timezone=str(tz),
        hall=hall,
        policy_name=policy.name,
        policy_hash=policy.hash,
        cases_available=case_rows is not None,
        rollup_days=len(rolled),
        raw_days=len(days) - len(rolled),
        exclusions={r: totals[r] for r in REASONS if totals[r]},
        excluded_ratings=sorted(listed, key=lambda x: x.id),
        rows=rows,
    )


def _rate(num: int, den: int, places: int) -> float | None:
    """Return num / den rounded, or None when den is 0."""
    return _round(Decimal(num) / Decimal(den), places) if den else None


def _row(
    level: str,
    hall: str,
    key: str,
    acc: _Acc,
    policy: Policy,
    reg: Registry,
    cases: CaseCounts,
) -> ScoreRow:
    """Return the scored row of one entity."""
    counted = +acc.counted
    ratings = sum(counted.values())
    levels = dict.fromkeys(LEVEL_KEYS, 0)
    satisfied = negatives = 0
    index_sum = Decimal(0)
    for (scale, lv), n in counted.items():
        levels[str(lv)] += n
        satisfied += n if policy.satisfied(scale, lv) else 0
        negatives += n if policy.negative(scale, lv) else 0
        index_sum += Decimal(repr(policy.index(scale, lv))) * n
    rnd = policy.rounding
    scored = ratings >= policy.min_sample
    mean = index_sum / ratings if ratings else Decimal(0)
    overrides = policy.points.overrides
    allocated = overrides.get(f"{hall}/{key}", overrides.get(key, policy.points.default))
    return ScoreRow(
        level=level,
        hall=hall,
        key=key,
        name=reg.name(level, hall, key),
        unit=reg.unit_of_window.get((hall, key), "") if level == "window" else "",
        ratings=ratings,
        levels=levels,
        satisfied=satisfied,
        satisfaction_rate=_rate(satisfied, ratings, rnd.rate),
        score=_round(mean, rnd.score) if scored else None,
        negatives=negatives,
        status="scored" if scored else "insufficient_sample",
        excluded=sum(acc.excluded.values()),
        exclusions={r: acc.excluded[r] for r in REASONS if acc.excluded[r]},
        cases=cases.cases,
        cases_closed=cases.closed,
        cases_closed_on_time=cases.closed_on_time,
        handling_rate=_rate(cases.closed, cases.cases, rnd.rate),
        on_time_rate=_rate(cases.closed_on_time, cases.cases, rnd.rate),
        allocated_points=allocated,
        points=_round(mean * Decimal(repr(allocated)) / 100, rnd.points) if scored else None,
    )
