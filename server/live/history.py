"""One window's charts from InfluxDB: today's timeline, hour × weekday heatmap, daily trend."""

import logging
from collections import Counter
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from server.influx import (
    MEASUREMENT,
    SCALES,
    DatabaseNotFoundError,
    InfluxClient,
    WindowCount,
    _ns,
    _string_literal,
    day_bounds,
)

log = logging.getLogger(__name__)

HEATMAP_DAYS = 28
TREND_DAYS = 30
TIMELINE_LIMIT = 5000


class TimelinePoint(BaseModel):
    """One rating of today."""

    model_config = ConfigDict(extra="forbid")

    ts: int = Field(title="Press time, ms since the epoch")
    scale: int = Field(title="Keys of the device")
    level: int = Field(title="Level pressed, 1 = worst")


class TrendDay(BaseModel):
    """One day's numbers of the window."""

    model_config = ConfigDict(extra="forbid")

    date: str = Field(title="Local date, YYYY-MM-DD")
    ratings: int = Field(title="Ratings")
    satisfaction_rate: float | None = Field(title="Share at 基本满意 or better, 0–1")
    score: float | None = Field(title="Mean rating index, 0–100")


class WindowHistory(BaseModel):
    """Everything the window page draws."""

    model_config = ConfigDict(extra="forbid")

    hall: str = Field(title="Hall")
    window: str = Field(title="Window")
    date: str = Field(title="Today, YYYY-MM-DD")
    timeline: list[TimelinePoint] = Field(title="Today's ratings in time order")
    heatmap: list[list[int]] = Field(
        title=f"[weekday 0=Mon, hour, ratings] over the last {HEATMAP_DAYS} days"
    )
    trend: list[TrendDay] = Field(title=f"The last {TREND_DAYS} days, oldest first")


def _where(hall: str, window: str, start: datetime, end: datetime) -> str:
    """Return the WHERE clause of one window and time range."""
    return (
        f'"hall" = {_string_literal(hall)} AND "window" = {_string_literal(window)} '
        f"AND time >= {_ns(start)} AND time < {_ns(end)}"
    )


def _tz_clause(tz: ZoneInfo) -> str:
    """Return InfluxQL's tz() clause for `tz`."""
    return f"tz({_string_literal(str(tz.key))})"


def window_history(
    client: InfluxClient, tz: ZoneInfo, hall: str, window: str, now: datetime | None = None
) -> WindowHistory:
    """Query the window's timeline, heatmap and trend."""
    today, start, end = day_bounds(tz, now)
    try:
        timeline = _timeline(client, _where(hall, window, start, end))
        heatmap = _heatmap(
            client, tz, _where(hall, window, end - timedelta(days=HEATMAP_DAYS), end)
        )
        trend = _trend(client, tz, _where(hall, window, end - timedelta(days=TREND_DAYS), end))
    except DatabaseNotFoundError:
        timeline, heatmap, trend = [], [], []
    return WindowHistory(
        hall=hall,
        window=window,
        date=today.isoformat(),
        timeline=timeline,
        heatmap=heatmap,
        trend=trend,
    )


def _timeline(client: InfluxClient, where: str) -> list[TimelinePoint]:
    """Return today's ratings (time, scale, level)."""
    q = f'SELECT "scale", "level" FROM "{MEASUREMENT}" WHERE {where} LIMIT {TIMELINE_LIMIT}'
    out: list[TimelinePoint] = []
    for stmt in client.query(q):
        for series in stmt.series:
            cols = series.columns
            for values in series.values:
                row = dict(zip(cols, values, strict=False))
                try:
                    out.append(
                        TimelinePoint(
                            ts=int(row["time"]), scale=int(row["scale"]), level=int(row["level"])
                        )
                    )
                except (KeyError, TypeError, ValueError):
                    continue
    return sorted(out, key=lambda p: p.ts)


def _heatmap(client: InfluxClient, tz: ZoneInfo, where: str) -> list[list[int]]:
    """Return [weekday, hour, count] cells with ratings."""
    q = (
        f'SELECT count("seq") FROM "{MEASUREMENT}" WHERE {where} '
        f"GROUP BY time(1h) fill(none) {_tz_clause(tz)}"
    )
    cells: Counter[tuple[int, int]] = Counter()
    for stmt in client.query(q):
        for series in stmt.series:
            for t_ms, n in series.values:
                local = datetime.fromtimestamp(int(t_ms) / 1000, tz)
                cells[(local.weekday(), local.hour)] += int(n)
    return [[wd, hour, n] for (wd, hour), n in sorted(cells.items())]


def _trend(client: InfluxClient, tz: ZoneInfo, where: str) -> list[TrendDay]:
    """Return the daily count, satisfaction and score of the days with ratings."""
    days: dict[str, WindowCount] = {}
    for scale in SCALES:
        q = (
            f'SELECT count("seq") FROM "{MEASUREMENT}" WHERE {where} AND "scale" = {scale} '
            f'GROUP BY time(1d), "level" fill(none) {_tz_clause(tz)}'
        )
        for stmt in client.query(q):
            for series in stmt.series:
                try:
                    level = int(series.tags.get("level", ""))
                except ValueError:
                    continue
                for t_ms, n in series.values:
                    day = datetime.fromtimestamp(int(t_ms) / 1000, tz).date().isoformat()
                    wc = days.setdefault(day, WindowCount(hall="", window=""))
                    wc.counts[(scale, level)] += int(n)
    return [
        TrendDay(
            date=day,
            ratings=wc.ratings,
            satisfaction_rate=wc.satisfaction_rate,
            score=wc.score,
        )
        for day, wc in sorted(days.items())
    ]
