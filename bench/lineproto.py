"""Line protocol benchmark: the hand-written `rating_line` against influxdb_client's Point.

Both build the same points from the same ratings in one run; the JSON result (last line of
`windowrate bench lineproto`) gives each one's microseconds per point and their ratio.
"""

import time
import uuid
from typing import Any

from influxdb_client.client.write.point import Point
from influxdb_client.domain.write_precision import WritePrecision

from protocol.messages import RatingEvent
from storage.lineproto import rating_line
from storage.schema import MEASUREMENT_RATING, rating_time_ns

START_MS = 1_763_880_000_000


def point_line(ev: RatingEvent) -> str:
    """The rating point built with influxdb_client's Point."""
    p = (
        Point(MEASUREMENT_RATING)  # type: ignore[no-untyped-call]
        .tag("device", ev.device)
        .tag("hall", ev.hall)
        .tag("level", ev.level)
        .tag("window", ev.window)
        .field("seq", ev.seq)
        .field("id", str(ev.id))
        .field("scale", ev.scale)
        .field("input", ev.input)
        .field("prompted", ev.prompted)
        .field("clock_synced", ev.clock_synced)
    )
    for name in ("staff", "ticket", "item"):
        value = getattr(ev, name)
        if value is not None:
            p = p.field(name, value)
    if ev.reasons:
        p = p.field("reasons", ",".join(ev.reasons))
    if ev.project is not None:
        p = p.field("project", ev.project)
    p = p.time(rating_time_ns(ev.ts, ev.seq), WritePrecision.NS)
    return str(p.to_line_protocol())


def ratings(n: int) -> list[RatingEvent]:
    """`n` varied ratings of 50 devices, some with staff, ticket, item and reasons."""
    out = []
    for i in range(n):
        level = i % 5 + 1
        out.append(
            RatingEvent(
                id=uuid.UUID(int=i + 1),
                device=f"k-{i % 50:04d}",
                hall="hz-civic",
                window=f"a{i % 50}",
                seq=i // 50 + 1,
                ts=START_MS + i,
                clock_synced=True,
                scale=5,
                level=level,
                input="touch",
                prompted=i % 2 == 0,
                staff="0457" if i % 3 else None,
                ticket=f"A{i % 1000:04d}" if i % 4 else None,
                item="330100-001",
                reasons=["slow", "rude"] if level <= 2 else [],
                project=f"330100{i:012d}" if i % 5 == 0 else None,
            )
        )
    return out


def _time(fn: Any, events: list[RatingEvent]) -> float:
    """Seconds `fn` takes over every event."""
    started = time.perf_counter()
    for ev in events:
        fn(ev)
    return time.perf_counter() - started


def run_bench(points: int = 100_000) -> dict[str, Any]:
    """Time both builders over the same ratings (after a warm-up) and check they agree."""
    events = ratings(points)
    warm = events[: min(1000, points)]
    _time(rating_line, warm)
    _time(point_line, warm)
    ours = _time(rating_line, events)
    theirs = _time(point_line, events)
    same_count = sum(
        1 for ev in warm if rating_line(ev).rsplit(" ", 1)[1] == point_line(ev).rsplit(" ", 1)[1]
    )
    return {
        "points": points,
        "hand_written_us_per_point": round(ours / points * 1e6, 3),
        "influxdb_client_point_us_per_point": round(theirs / points * 1e6, 3),
        "point_over_hand_written": round(theirs / ours, 2) if ours else None,
        "same_point_time": same_count == len(warm),
    }
