"""Named InfluxQL queries: every read of InfluxDB by the gateway and the server is one of these."""

import logging
from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from protocol.scales import SCALES, check_level
from storage.client import InfluxClient, Series
from storage.schema import (
    MEASUREMENT_EVENT,
    MEASUREMENT_RATING,
    MEASUREMENT_STATUS,
    literal,
    ns,
)

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (hall, window) or (hall, device)
LevelCounts = Counter[tuple[int, int]]  # (scale, level) → ratings
# Levels per scale, e.g. the negative levels of a scoring policy: {5: {1, 2}, 4: {1}, 3: {1}}.
Levels = Mapping[int, Collection[int]]


def _between(start: datetime, end: datetime, hall: str | None = None) -> str:
    """Return a WHERE condition on start <= time < end (and one hall)."""
    where = f"time >= {ns(start)} AND time < {ns(end)}"
    if hall is not None:
        where += f' AND "hall" = {literal(hall)}'
    return where


def _window(hall: str, window: str, start: datetime, end: datetime) -> str:
    """Return the WHERE condition of one window and time range."""
    return f'"window" = {literal(window)} AND {_between(start, end, hall)}'


def _tz(tz: ZoneInfo) -> str:
    """Return InfluxQL's tz() clause for `tz`."""
    return f"tz({literal(str(tz.key))})"


def levels_condition(levels: Levels) -> str:
    """Return a condition matching ratings at the given levels of each scale (false if none)."""
    parts = []
    for scale in sorted(levels):
        lv = sorted(levels[scale])
        if lv:
            ors = " OR ".join(f'"level" = {literal(str(v))}' for v in lv)
            parts.append(f'("scale" = {int(scale)} AND ({ors}))')
    return "(" + " OR ".join(parts) + ")" if parts else "\"level\" = 'none'"


def _flat(series: list[Series]) -> Iterator[dict[str, Any]]:
    """Yield the rows of grouped series with their tags merged in."""
    for s in series:
        for row in s.rows():
            yield {**s.tags, **row}


# --- live board, today's numbers, window history ---


def rating_counts(
    client: InfluxClient, start: datetime, end: datetime, hall: str | None = None
) -> dict[Key, LevelCounts]:
    """Count ratings per (hall, window) and (scale, level) with start <= time < end."""
    where = _between(start, end, hall)
    out: dict[Key, LevelCounts] = {}
    # One request per scale (`scale` is a field, not a tag, so it cannot be grouped by).
    # Not one multi-statement request: InfluxDB 1.6 then reports a missing database
    # only as "not executed".
    for scale in sorted(SCALES, reverse=True):
        q = (
            f'SELECT count("seq") FROM "{MEASUREMENT_RATING}" WHERE {where} '
            f'AND "scale" = {scale} GROUP BY "hall", "window", "level"'
        )
        for s in client.series(q):
            key = (s.tags.get("hall", ""), s.tags.get("window", ""))
            try:
                level = int(s.tags.get("level", ""))
                check_level(scale, level)
                count = int(s.values[0][s.columns.index("count")])
            except (ValueError, IndexError, TypeError) as exc:
                log.warning("skipping series %s of %s: %s", s.tags, key, exc)
                continue
            out.setdefault(key, Counter())[(scale, level)] += count
    return out


def rating_ids_since(client: InfluxClient, ts_ms: int, hall: str | None = None) -> set[str]:
    """Return the ids of the ratings stored with a press time at or after `ts_ms`."""
    where = f"time >= {ts_ms * 10**6}"
    if hall is not None:
        where += f' AND "hall" = {literal(hall)}'
    return {
        str(row["id"])
        for s in client.series(f'SELECT "id" FROM "{MEASUREMENT_RATING}" WHERE {where}')
        for row in s.rows()
    }


def last_rating_at_levels(
    client: InfluxClient, start: datetime, end: datetime, levels: Levels, hall: str | None = None
) -> dict[Key, dict[str, Any]]:
    """Return each window's latest rating at `levels` (time, id, scale, level) in [start, end)."""
    q = (
        f'SELECT "id", "scale", "level" FROM "{MEASUREMENT_RATING}" '
        f"WHERE {_between(start, end, hall)} AND {levels_condition(levels)} "
        'GROUP BY "hall", "window" ORDER BY time DESC LIMIT 1'
    )
    out: dict[Key, dict[str, Any]] = {}
    for s in client.series(q):
        if s.values:
            out[(s.tags.get("hall", ""), s.tags.get("window", ""))] = next(s.rows())
    return out


def window_timeline(
    client: InfluxClient, hall: str, window: str, start: datetime, end: datetime, limit: int
) -> list[dict[str, Any]]:
    """Return a window's ratings (time, scale, level) in [start, end), at most `limit`."""
    q = (
        f'SELECT "scale", "level" FROM "{MEASUREMENT_RATING}" '
        f"WHERE {_window(hall, window, start, end)} LIMIT {int(limit)}"
    )
    return [row for s in client.series(q) for row in s.rows()]


def window_hourly_counts(
    client: InfluxClient, hall: str, window: str, start: datetime, end: datetime, tz: ZoneInfo
) -> list[tuple[int, int]]:
    """Return (hour start ms, ratings) of a window's hours with ratings in [start, end)."""
    where = _window(hall, window, start, end)
    q = (
        f'SELECT count("seq") FROM "{MEASUREMENT_RATING}" WHERE {where} '
        f"GROUP BY time(1h) fill(none) {_tz(tz)}"
    )
    return [(int(t), int(n)) for s in client.series(q) for t, n in s.values]


def window_daily_counts(
    client: InfluxClient, hall: str, window: str, start: datetime, end: datetime, tz: ZoneInfo
) -> list[tuple[int, int, int, int]]:
    """Return (local day start ms, scale, level, ratings) of a window's days in [start, end)."""
    out: list[tuple[int, int, int, int]] = []
    for scale in sorted(SCALES, reverse=True):
        q = (
            f'SELECT count("seq") FROM "{MEASUREMENT_RATING}" '
            f'WHERE {_window(hall, window, start, end)} AND "scale" = {scale} '
            f'GROUP BY time(1d), "level" fill(none) {_tz(tz)}'
        )
        for s in client.series(q):
            try:
                level = int(s.tags.get("level", ""))
            except ValueError:
                continue
            out.extend((int(t), scale, level, int(n)) for t, n in s.values)
    return out


# --- cases ---


def ratings_at_levels(
    client: InfluxClient, start: datetime, end: datetime, levels: Levels
) -> list[dict[str, Any]]:
    """Return the ratings at `levels` in [start, end): tags, time and the case fields."""
    cols = ", ".join(f'"{f}"' for f in ("id", "scale", "staff", "ticket", "item", "reasons"))
    q = (
        f'SELECT {cols} FROM "{MEASUREMENT_RATING}" WHERE {_between(start, end)} '
        f'AND {levels_condition(levels)} GROUP BY "hall", "window", "device", "level"'
    )
    return list(_flat(client.series(q)))


# --- scores ---


def rating_rows(
    client: InfluxClient, start: datetime, end: datetime, hall: str | None = None
) -> Iterator[dict[str, Any]]:
    """Stream every rating of [start, end) with the fields scoring needs (time in ms)."""
    q = (
        'SELECT "id", "scale", "staff", "item", "ticket", "prompted", "reasons", '
        f'"hall", "window", "device", "level" FROM "{MEASUREMENT_RATING}" '
        f"WHERE {_between(start, end, hall)}"
    )
    return client.rows(q)


def pause_events(client: InfluxClient, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
    """Stream the pause and resume events (time, device, type) of [start, end)."""
    q = (
        f'SELECT "id", "type", "device" FROM "{MEASUREMENT_EVENT}" WHERE {_between(start, end)} '
        "AND (\"type\" = 'pause' OR \"type\" = 'resume')"
    )
    return client.rows(q)


def status_states(client: InfluxClient, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
    """Stream the device status points (time, device, state) of [start, end)."""
    q = f'SELECT "state", "device" FROM "{MEASUREMENT_STATUS}" WHERE {_between(start, end)}'
    return client.rows(q)


# --- gateway: seq gaps ---


def device_last_status(client: InfluxClient) -> dict[Key, tuple[int | None, int | None]]:
    """Per (hall, device), the last reported (last_seq, backlog)."""
    out: dict[Key, tuple[int | None, int | None]] = {}
    q = (
        'SELECT last("last_seq") AS last_seq, last("backlog") AS backlog '
        f'FROM "{MEASUREMENT_STATUS}" GROUP BY "hall", "device"'
    )
    for s in client.series(q):
        _t, last_seq, backlog = s.values[0]
        key = (s.tags.get("hall", ""), s.tags.get("device", ""))
        out[key] = (
            None if last_seq is None else int(last_seq),
            None if backlog is None else int(backlog),
        )
    return out


def device_seq_stats(client: InfluxClient) -> dict[Key, tuple[int, int, int]]:
    """Per (hall, device), the stored ratings: (points, distinct seqs, highest seq)."""
    out: dict[Key, tuple[int, int, int]] = {}
    q = (
        'SELECT count("seq"), count(distinct("seq")), max("seq") '
        f'FROM "{MEASUREMENT_RATING}" GROUP BY "hall", "device"'
    )
    for s in client.series(q):
        _t, count, distinct, max_seq = s.values[0]
        out[(s.tags.get("hall", ""), s.tags.get("device", ""))] = (
            int(count),
            int(distinct),
            int(max_seq),
        )
    return out


def device_seqs(client: InfluxClient, hall: str, device: str) -> Iterator[int]:
    """Stream every stored seq of one device (repeats included)."""
    q = (
        f'SELECT "seq" FROM "{MEASUREMENT_RATING}" '
        f'WHERE "hall" = {literal(hall)} AND "device" = {literal(device)}'
    )
    return (int(row["seq"]) for row in client.rows(q))


# --- doctor ---


def device_latest_status(client: InfluxClient) -> dict[Key, dict[str, Any]]:
    """Per (hall, device), its latest status point: time (received, ms), state, device_ts, clock."""
    q = (
        f'SELECT "state", "device_ts", "clock_synced" FROM "{MEASUREMENT_STATUS}" '
        'GROUP BY "hall", "device" ORDER BY time DESC LIMIT 1'
    )
    return {
        (s.tags.get("hall", ""), s.tags.get("device", "")): next(s.rows())
        for s in client.series(q)
        if s.values
    }


def device_latest_rating_clock(client: InfluxClient, since: datetime) -> dict[Key, dict[str, Any]]:
    """Per (hall, device), its latest rating since `since`: time (ms) and clock_synced."""
    q = (
        f'SELECT "clock_synced" FROM "{MEASUREMENT_RATING}" WHERE time >= {ns(since)} '
        'GROUP BY "hall", "device" ORDER BY time DESC LIMIT 1'
    )
    return {
        (s.tags.get("hall", ""), s.tags.get("device", "")): next(s.rows())
        for s in client.series(q)
        if s.values
    }
