"""Raw ratings and pause periods read from InfluxDB (v1 `/query`, chunked)."""

import bisect
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson

from protocol.messages import FLAG_REPEAT
from protocol.storage import MEASUREMENT_EVENT, MEASUREMENT_RATING, MEASUREMENT_STATUS
from server.influx import InfluxClient, InfluxError, InfluxUnavailableError

log = logging.getLogger(__name__)

CHUNK = 20_000
# How far back a pause that is still running at the start of a period is looked for.
PAUSE_LOOKBACK = timedelta(days=7)


@dataclass(slots=True)
class RawRating:
    """One stored rating with what scoring and fraud detection need."""

    id: str
    ts_ms: int
    hall: str
    window: str
    device: str
    scale: int
    level: int
    staff: str
    item: str
    ticket: str
    prompted: bool
    repeat: bool
    paused: bool = False


@dataclass(slots=True)
class PauseIntervals:
    """Per device, sorted [start, end) ms intervals in which the window was paused."""

    starts: dict[str, list[int]] = field(default_factory=dict)
    ends: dict[str, list[int]] = field(default_factory=dict)

    def paused(self, device: str, ts_ms: int) -> bool:
        """Return True if `device` was paused at `ts_ms`."""
        starts = self.starts.get(device)
        if not starts:
            return False
        i = bisect.bisect_right(starts, ts_ms) - 1
        return i >= 0 and ts_ms < self.ends[device][i]


def ns(moment: datetime) -> int:
    """Return nanoseconds since the epoch of an aware datetime."""
    return int(moment.timestamp()) * 10**9 + moment.microsecond * 1000


def _rows(client: InfluxClient, q: str) -> Iterator[dict[str, Any]]:
    """Yield the rows of an InfluxQL query as dicts (chunked, times in ms)."""
    params = {"db": client.database, "q": q, "epoch": "ms", "chunked": "true"}
    params["chunk_size"] = str(CHUNK)
    http: httpx.Client = client._http
    try:
        with http.stream("GET", "/query", params=params) as resp:
            if resp.status_code != 200:
                resp.read()
                raise InfluxError(f"/query answered {resp.status_code}: {resp.text[:200]}")
            for line in resp.iter_lines():
                if not line.strip():
                    continue
                doc = orjson.loads(line)
                for stmt in doc.get("results", []):
                    err = stmt.get("error")
                    if err:
                        if err.startswith("database not found"):
                            return
                        raise InfluxError(f"query failed: {err}")
                    for series in stmt.get("series", []):
                        cols = series["columns"]
                        for values in series.get("values", []):
                            yield dict(zip(cols, values, strict=True))
    except httpx.HTTPError as exc:
        raise InfluxUnavailableError(f"{client.url} unreachable: {exc}") from exc


def _literal(value: str) -> str:
    """Quote `value` as an InfluxQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def read_ratings(
    client: InfluxClient, start: datetime, end: datetime, hall: str | None = None
) -> list[RawRating]:
    """Return the ratings with start <= time < end, sorted by time (pause not yet set)."""
    where = f"time >= {ns(start)} AND time < {ns(end)}"
    if hall is not None:
        where += f' AND "hall" = {_literal(hall)}'
    q = (
        'SELECT "id", "scale", "staff", "item", "ticket", "prompted", "reasons", '
        f'"hall", "window", "device", "level" FROM "{MEASUREMENT_RATING}" WHERE {where}'
    )
    out: list[RawRating] = []
    for row in _rows(client, q):
        reasons = row.get("reasons") or ""
        out.append(
            RawRating(
                id=str(row["id"]),
                ts_ms=int(row["time"]),
                hall=str(row["hall"]),
                window=str(row["window"]),
                device=str(row["device"]),
                scale=int(row["scale"]),
                level=int(row["level"]),
                staff=row.get("staff") or "",
                item=row.get("item") or "",
                ticket=row.get("ticket") or "",
                prompted=bool(row.get("prompted")),
                repeat=FLAG_REPEAT in reasons.split(","),
            )
        )
    out.sort(key=lambda r: (r.ts_ms, r.device, r.id))
    return out


def read_pauses(client: InfluxClient, start: datetime, end: datetime) -> PauseIntervals:
    """Return when each device was paused, from pause/resume events and device status points.

    A pause starts with a `pause` event or a `paused` status and ends with a `resume`
    event or an `online` status; `offline` changes nothing.
    """
    since, until = ns(start - PAUSE_LOOKBACK), ns(end)
    changes: list[tuple[int, str, bool]] = []
    q_events = (
        f'SELECT "id", "type", "device" FROM "{MEASUREMENT_EVENT}" WHERE time >= {since} '
        f"AND time < {until} AND (\"type\" = 'pause' OR \"type\" = 'resume')"
    )
    for row in _rows(client, q_events):
        changes.append((int(row["time"]), str(row["device"]), row["type"] == "pause"))
    q_status = (
        f'SELECT "state", "device" FROM "{MEASUREMENT_STATUS}" WHERE time >= {since} '
        f"AND time < {until}"
    )
    for row in _rows(client, q_status):
        if row["state"] in ("paused", "online"):
            changes.append((int(row["time"]), str(row["device"]), row["state"] == "paused"))
    changes.sort()
    out = PauseIntervals()
    open_since: dict[str, int] = {}
    for t, device, pause in changes:
        if pause and device not in open_since:
            open_since[device] = t
        elif not pause and device in open_since:
            out.starts.setdefault(device, []).append(open_since.pop(device))
            out.ends.setdefault(device, []).append(t)
    for device, t in open_since.items():
        out.starts.setdefault(device, []).append(t)
        out.ends.setdefault(device, []).append(2**62)
    return out


def read_day_ratings(
    client: InfluxClient, start: datetime, end: datetime, hall: str | None = None
) -> list[RawRating]:
    """Return the ratings of [start, end) with their `paused` state set."""
    ratings = read_ratings(client, start, end, hall)
    if ratings:
        pauses = read_pauses(client, start, end)
        for r in ratings:
            r.paused = pauses.paused(r.device, r.ts_ms)
    return ratings
