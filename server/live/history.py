"""One window's charts from InfluxDB: today's timeline, hour × weekday heatmap, daily trend."""

import logging
from collections import Counter
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from server.counts import WindowCount, day_bounds
from server.scores.policy import Policy
from storage import queries
from storage.client import InfluxClient

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


def window_history(
    client: InfluxClient,
    tz: ZoneInfo,
    hall: str,
    window: str,
    now: datetime | None = None,
    policy: Policy | None = None,
) -> WindowHistory:
    """Query the window's timeline, heatmap and trend (satisfaction and score per `policy`)."""
    today, start, end = day_bounds(tz, now)
    pol = policy or Policy()
    rows = queries.window_timeline(client, hall, window, start, end, TIMELINE_LIMIT)
    timeline: list[TimelinePoint] = []
    for row in rows:
        try:
            timeline.append(
                TimelinePoint(ts=int(row["time"]), scale=int(row["scale"]), level=int(row["level"]))
            )
        except (KeyError, TypeError, ValueError):
            continue
    timeline.sort(key=lambda p: p.ts)
    cells: Counter[tuple[int, int]] = Counter()
    since = end - timedelta(days=HEATMAP_DAYS)
    for t_ms, n in queries.window_hourly_counts(client, hall, window, since, end, tz):
        local = datetime.fromtimestamp(t_ms / 1000, tz)
        cells[(local.weekday(), local.hour)] += n
    days: dict[str, WindowCount] = {}
    since = end - timedelta(days=TREND_DAYS)
    for t_ms, scale, level, n in queries.window_daily_counts(client, hall, window, since, end, tz):
        day = datetime.fromtimestamp(t_ms / 1000, tz).date().isoformat()
        wc = days.setdefault(day, WindowCount(hall=hall, window=window, policy=pol))
        wc.counts[(scale, level)] += n
    return WindowHistory(
        hall=hall,
        window=window,
        date=today.isoformat(),
        timeline=timeline,
        heatmap=[[wd, hour, n] for (wd, hour), n in sorted(cells.items())],
        trend=[
            TrendDay(
                date=day,
                ratings=wc.ratings,
                satisfaction_rate=wc.satisfaction_rate,
                score=wc.score,
            )
            for day, wc in sorted(days.items())
        ],
    )
