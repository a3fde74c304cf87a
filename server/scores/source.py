"""Raw ratings and pause periods read from InfluxDB (named queries, streamed in chunks)."""

import bisect
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from protocol.messages import FLAG_REPEAT
from storage import queries
from storage.client import InfluxClient

log = logging.getLogger(__name__)

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


def read_ratings(
    client: InfluxClient, start: datetime, end: datetime, hall: str | None = None
) -> list[RawRating]:
    """Return the ratings with start <= time < end, sorted by time (pause not yet set)."""
    out: list[RawRating] = []
    for row in queries.rating_rows(client, start, end, hall):
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
    since = start - PAUSE_LOOKBACK
    changes: list[tuple[int, str, bool]] = []
    for row in queries.pause_events(client, since, end):
        changes.append((int(row["time"]), str(row["device"]), row["type"] == "pause"))
    for row in queries.status_states(client, since, end):
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
