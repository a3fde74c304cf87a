"""The server's rollup scheduler: missing days built, recent days rebuilt for late ratings."""

import json
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import func, select

from devstack.services import Influxd
from protocol.messages import RatingEvent
from server.db.engine import Database
from server.scores.models import RatingDaily, RollupDay
from server.scores.scheduler import RollupScheduler, due_days
from server.scores.settings import ScoresSettings
from storage.client import InfluxClient, InfluxSettings
from storage.lineproto import rating_line
from tests.support import rating_doc

TZ = ZoneInfo("Asia/Shanghai")
TODAY = date(2026, 11, 20)


def test_due_days_are_the_missing_ones_and_the_last_few() -> None:
    """Built days are skipped unless they are among the last `recheck` completed days."""
    have = {TODAY - timedelta(days=n) for n in (1, 2, 4, 5)}
    got = due_days(have, TODAY, recheck=2, catchup=6)
    assert got == [TODAY - timedelta(days=n) for n in (6, 3, 2, 1)]
    assert due_days(set(), TODAY, recheck=0, catchup=2) == [
        TODAY - timedelta(2),
        TODAY - timedelta(1),
    ]


def _write(influx: Influxd, day: date, seqs: range, level: int = 5) -> None:
    """Ratings pressed at noon of `day` (hall time)."""
    noon = int(datetime.combine(day, time(12), TZ).timestamp() * 1000)
    lines = [
        rating_line(
            RatingEvent.model_validate_json(
                json.dumps(rating_doc("hz", "k-1", s, ts=noon + s, level=level))
            )
        )
        for s in seqs
    ]
    r = httpx.post(
        f"{influx.url}/write",
        params={"db": "windowrate", "precision": "ns"},
        content="\n".join(lines),
    )
    assert r.status_code == 204, r.text


def test_scheduler_builds_missing_days_and_catches_late_ratings(tmp_path: Path) -> None:
    """A first run builds every missing day; a late rating two days back is in the next run."""
    influx = Influxd(tmp_path / "influxd")
    influx.start()
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    client = InfluxClient(InfluxSettings(url=influx.url))
    try:
        httpx.post(f"{influx.url}/query", params={"q": "CREATE DATABASE windowrate"})
        db.upgrade()
        _write(influx, TODAY - timedelta(days=2), range(1, 11))
        _write(influx, TODAY - timedelta(days=5), range(11, 14), level=1)
        cfg = ScoresSettings(rollup_recheck_days=3, rollup_catchup_days=7)
        sched = RollupScheduler(db, client, TZ, cfg)

        def counted() -> dict[date, int]:
            with db.session() as s:
                rows = s.execute(
                    select(RatingDaily.day, func.sum(RatingDaily.n)).group_by(RatingDaily.day)
                )
                return {d: int(n) for d, n in rows}

        assert len(sched.run_once(TODAY)) == 7
        with db.session() as s:
            assert len(list(s.scalars(select(RollupDay.day)))) == 7
        assert counted() == {TODAY - timedelta(days=2): 10, TODAY - timedelta(days=5): 3}
        _write(influx, TODAY - timedelta(days=2), range(14, 16))  # a kiosk back from offline
        assert sched.run_once(TODAY) == [TODAY - timedelta(days=n) for n in (3, 2, 1)]
        assert counted()[TODAY - timedelta(days=2)] == 12
    finally:
        client.close()
        db.close()
        influx.stop()
