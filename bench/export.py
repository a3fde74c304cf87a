"""Export benchmark: a year of 1,000 windows (about 25 million ratings), timed cold, end to end.

The year is held as in production (see `bench.export_data`): daily rollups in the server's
database, raw ratings in a real influxd for the days not rolled up, with cases, appeals,
fraud reviews, `x-repeat` flags, pauses and test devices. Two periods are exported at
window level as XLSX, each after influxd was restarted and with a fresh database engine:

- unaligned: 17 Nov → 16 Nov, whose partial months at both ends are summed from daily
  rollups, and whose first and last days are raw (the last not rolled up yet, the first
  waiting for a rebuild after a late upload), read from influxd with their pauses;
- aligned: twelve whole months (1 Nov → 31 Oct), exported after that rebuild, so read
  from the monthly rollups only (the best case).

The rollup job's own cost is timed apart (setup the user pays, each night): `build_day`
from raw ratings for a few days, plus the monthly rollups of the year. Writing the
synthetic year is setup nobody pays and is only printed.
"""

import logging
import shutil
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bench.export_data import TEST_DEVICE_EVERY, Writer, registry
from devstack.services import Influxd
from server.db.engine import Database
from server.scores.periods import Period
from server.scores.policy import Policy
from server.scores.rollup import build_day, refresh_month
from server.scores.service import export_scores
from storage.client import InfluxClient, InfluxSettings

log = logging.getLogger(__name__)

TZ = ZoneInfo("Asia/Shanghai")
LAST = date(2026, 11, 16)  # the day before "today"


def _export(db_url: str, influxd: Influxd, period: Period, out: Path) -> dict[str, Any]:
    """Restart influxd, open a fresh engine, export `period`; return its figures."""
    t = time.perf_counter()
    influxd.restart()
    restart_s = time.perf_counter() - t
    db = Database(db_url)
    influx = InfluxClient(InfluxSettings(url=influxd.url, timeout_s=300))
    try:
        t = time.perf_counter()
        with db.session() as session:
            result, manifest = export_scores(
                session=session, influx=influx, tz=TZ, policy=Policy(), period=period,
                level="window", fmt="xlsx", out=out,
            )  # fmt: skip
        seconds = time.perf_counter() - t
    finally:
        influx.close()
        db.close()
    return {
        "from": period.first.isoformat(),
        "to": period.last.isoformat(),
        "seconds": round(seconds, 3),
        "rollup_days": result.rollup_days,
        "raw_days": result.raw_days,
        "counted": sum(r.ratings for r in result.rows),
        "exclusions": result.exclusions,
        "excluded_by_review": len(result.excluded_ratings),
        "cases": sum(r.cases for r in result.rows),
        "rows": manifest["rows"],
        "bytes": manifest["bytes"],
        "influxd_restart_s": round(restart_s, 2),
    }


def run_bench(
    windows: int = 1000, raw_days: int = 2, raw_head_days: int = 1, built_days: int = 2
) -> dict[str, Any]:
    """Build the year, time the rollup job, then export both periods cold; return the figures."""
    per_day = 25_000_000 // (1000 * 365)  # ratings per window and day at the target size
    unaligned = Period(LAST - timedelta(days=364), LAST)  # 17 Nov → 16 Nov
    aligned = Period(date(LAST.year - 1, 11, 1), date(LAST.year, 10, 31))  # 1 Nov → 31 Oct
    days = Period(aligned.first, LAST).days()
    head = unaligned.days()[:raw_head_days]
    tail = days[len(days) - raw_days :]
    built = days[len(days) - raw_days - built_days : len(days) - raw_days]
    raw_set = set(head) | set(tail) | set(built)
    synthetic = [d for d in days if d not in raw_set]
    root = Path(tempfile.mkdtemp(prefix="wr-bench-export-"))
    influxd = Influxd(root / "influxd")
    db_url = f"sqlite:///{root / 'server.db'}"
    try:
        influxd.start()
        db = Database(db_url)
        db.upgrade()
        influx = InfluxClient(InfluxSettings(url=influxd.url, timeout_s=300))
        t = time.perf_counter()
        wins = registry(db, windows)
        writer = Writer(db, wins, TZ, per_day)
        writer.rollup_days(synthetic)
        raw_ratings = writer.raw_days(influx, sorted(raw_set))
        setup_s = time.perf_counter() - t
        # The rollup job, as it runs each night: build days from raw, then the months.
        t = time.perf_counter()
        with db.session() as session:
            for day in built:
                build_day(session, influx, day, TZ, Policy(), refresh=False)
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        with db.session() as session:
            for month in sorted({d.replace(day=1) for d in days}):
                refresh_month(session, month)
            session.commit()
        months_s = time.perf_counter() - t
        influx.close()
        db.close()
        cold_unaligned = _export(db_url, influxd, unaligned, root / "unaligned.xlsx")
        # The rebuild of the first days lands (timed with the rollup job), so the aligned
        # year is read from monthly rollups only: the best case.
        db = Database(db_url)
        influx = InfluxClient(InfluxSettings(url=influxd.url, timeout_s=300))
        t = time.perf_counter()
        with db.session() as session:
            for day in head:
                build_day(session, influx, day, TZ, Policy(), refresh=True)
        build_s += time.perf_counter() - t
        influx.close()
        db.close()
        cold_aligned = _export(db_url, influxd, aligned, root / "aligned.xlsx")
        b = writer.built
        n_built = len(built) + len(head)
        return {
            "windows": windows,
            "ratings": b.ratings,
            "unaligned": cold_unaligned,
            "aligned": cold_aligned,
            "raw_ratings": raw_ratings,
            "cases": b.cases,
            "appeals_approved": b.appeals,
            "fraud_reviewed": b.frauds,
            "repeats_flagged": b.repeats,
            "paused_window_days": b.paused_window_days,
            "test_devices": -(-windows // TEST_DEVICE_EVERY),
            "rollup_build_days": n_built,
            "rollup_build_s": round(build_s, 2),
            "rollup_build_s_per_day": round(build_s / n_built, 2) if n_built else None,
            "rollup_months_s": round(months_s, 2),
            "setup_s": round(setup_s, 1),
            "cold": "influxd restarted and a new database engine before each export; "
            "the OS page cache is not dropped",
            "target_seconds": 10,
        }
    finally:
        influxd.stop()
        shutil.rmtree(root, ignore_errors=True)
