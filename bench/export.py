"""Export benchmark: a year of 1,000 windows (about 25 million ratings), timed end to end.

The year is held as it is in production: daily rollups in the server's database for the
days the rollup job has done, and raw ratings in a real influxd for the most recent days.
Setting up is not timed; the timed part is one window-level XLSX export of the whole
period (scores from rollups and raw ratings, exclusions, cases, file and manifest).
"""

import logging
import random
import shutil
import sqlite3
import tempfile
import time
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from devstack.services import Influxd
from protocol.messages import RatingEvent
from server.db.engine import Database
from server.db.models import Device, Hall, Unit, Window
from server.scores.periods import Period, day_start
from server.scores.policy import Policy
from server.scores.rollup import refresh_month
from server.scores.service import export_scores
from storage.client import InfluxClient, InfluxSettings
from storage.lineproto import rating_line

log = logging.getLogger(__name__)

TZ = ZoneInfo("Asia/Shanghai")
HALLS = 10
UNITS_PER_HALL = 10
# Level mix of a window's day: mostly satisfied, a few negatives.
WEIGHTS = (1, 2, 5, 20, 72)
STAFF_PER_WINDOW = 2


def _registry(db: Database, windows: int) -> list[tuple[str, str, str]]:
    """Create halls, units, windows and one device per window; return (hall, window, device)."""
    out = []
    with db.session() as s:
        halls = [Hall(code=f"h{h:02d}", name=f"大厅 {h}") for h in range(HALLS)]
        units = [
            Unit(hall=halls[h], code=f"u{u:02d}", name=f"部门 {u}")
            for h in range(HALLS)
            for u in range(UNITS_PER_HALL)
        ]
        s.add_all([*halls, *units])
        for w in range(windows):
            hall = halls[w % HALLS]
            unit = units[(w % HALLS) * UNITS_PER_HALL + (w // HALLS) % UNITS_PER_HALL]
            win = Window(hall=hall, unit=unit, code=f"w{w:04d}", name=f"窗口 {w}")
            s.add_all([win, Device(code=f"k-{w:04d}", hall=hall, window=win)])
            out.append((hall.code, win.code, f"k-{w:04d}"))
        s.commit()
    return out


def _day_counts(rng: random.Random, per_day: int) -> list[int]:
    """Return a day's ratings per level 1 … 5 around `per_day`."""
    n = max(0, int(rng.gauss(per_day, per_day / 6)))
    counts = [0] * 5
    for lv in rng.choices(range(5), weights=WEIGHTS, k=n):
        counts[lv] += 1
    return counts


def _rollups(path: Path, wins: list[tuple[str, str, str]], days: list[date], per_day: int) -> int:
    """Insert rollup rows for `days` straight into SQLite; return the ratings they hold."""
    rng = random.Random(1)
    total = 0
    con = sqlite3.connect(path)
    con.execute("PRAGMA synchronous=OFF")
    sql = (
        "INSERT INTO rating_daily (day, hall, window, device, staff, item, scale, level, "
        "repeat, paused, n) VALUES (?,?,?,?,?,?,5,?,?,0,?)"
    )
    for day in days:
        rows = []
        iso = day.isoformat()
        for hall, window, device in wins:
            counts = _day_counts(rng, per_day)
            for lv, n in enumerate(counts, 1):
                half = n // 2
                for k, part in enumerate((half, n - half)):
                    if part:
                        staff = f"{window}-s{k}"
                        rows.append((iso, hall, window, device, staff, f"i{k}", lv, 0, part))
                        total += part
            if counts[4] > 10:  # a couple of repeats the device flagged
                rows.append((iso, hall, window, device, f"{window}-s0", "i0", 5, 1, 2))
                total += 2
        con.executemany(sql, rows)
        con.execute(
            "INSERT INTO rollup_days (day, timezone, ratings, built) VALUES (?, ?, ?, ?)",
            (iso, TZ.key, 0, datetime.now().isoformat(sep=" ")),
        )
    con.commit()
    con.close()
    return total


def _raw(url: str, wins: list[tuple[str, str, str]], days: list[date], per_day: int) -> int:
    """Write raw ratings of `days` into influxd as the gateway does; return how many."""
    rng = random.Random(2)
    client = InfluxClient(InfluxSettings(url=url, timeout_s=120))
    lines: list[str] = []
    total = 0
    seqs: dict[str, int] = {}

    def flush() -> None:
        if lines:
            client.write(lines)
            lines.clear()

    for day in days:
        t0 = int(day_start(day, TZ).timestamp() * 1000) + 9 * 3_600_000
        for hall, window, device in wins:
            counts = _day_counts(rng, per_day)
            levels = [lv for lv, n in enumerate(counts, 1) for _ in range(n)]
            rng.shuffle(levels)
            for k, lv in enumerate(levels):
                seqs[device] = seqs.get(device, 0) + 1
                ev = RatingEvent(
                    id=uuid.UUID(int=rng.getrandbits(128)), device=device, hall=hall,
                    window=window, seq=seqs[device], ts=t0 + k * 400_000, clock_synced=True,
                    scale=5, level=lv, input="touch", prompted=True,
                    staff=f"{window}-s{k % STAFF_PER_WINDOW}", ticket=f"A{k:04d}",
                    item=f"i{k % STAFF_PER_WINDOW}",
                )  # fmt: skip
                lines.append(rating_line(ev))
                total += 1
                if len(lines) >= 20_000:
                    flush()
    flush()
    client.close()
    return total


def run_bench(windows: int = 1000, days: int = 365, raw_days: int = 2) -> dict[str, Any]:
    """Build the year, then time one window-level XLSX export of it; return the figures."""
    per_day = 25_000_000 // (1000 * 365)  # ratings per window and day at the target size
    last = date(2026, 10, 31)
    period = Period(last - timedelta(days=days - 1), last)
    all_days = period.days()
    raw_n = min(raw_days, len(all_days))
    rolled, raw = all_days[: len(all_days) - raw_n], all_days[len(all_days) - raw_n :]
    root = Path(tempfile.mkdtemp(prefix="wr-bench-export-"))
    influxd = Influxd(root / "influxd")
    try:
        influxd.start()
        db_path = root / "server.db"
        db = Database(f"sqlite:///{db_path}")
        db.upgrade()
        t = time.perf_counter()
        wins = _registry(db, windows)
        rolled_n = _rollups(db_path, wins, rolled, per_day)
        with db.session() as session:
            for month in sorted({d.replace(day=1) for d in rolled}):
                refresh_month(session, month)
            session.commit()
        raw_total = _raw(influxd.url, wins, raw, per_day)
        setup_s = time.perf_counter() - t
        influx = InfluxClient(InfluxSettings(url=influxd.url, timeout_s=300))
        out = root / "scores.xlsx"
        t = time.perf_counter()
        with db.session() as session:
            result, manifest = export_scores(
                session=session, influx=influx, tz=TZ, policy=Policy(), period=period,
                level="window", fmt="xlsx", out=out,
            )  # fmt: skip
        seconds = time.perf_counter() - t
        influx.close()
        db.close()
        counted = sum(r.ratings for r in result.rows)
        return {
            "windows": windows,
            "ratings": rolled_n + raw_total,
            "seconds": round(seconds, 3),
            "days": days,
            "rollup_days": result.rollup_days,
            "raw_days": result.raw_days,
            "raw_ratings": raw_total,
            "counted": counted,
            "excluded": sum(result.exclusions.values()),
            "rows": manifest["rows"],
            "bytes": manifest["bytes"],
            "setup_seconds": round(setup_s, 1),
            "target_seconds": 10,
        }
    finally:
        influxd.stop()
        shutil.rmtree(root, ignore_errors=True)
