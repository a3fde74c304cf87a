"""Background scan of InfluxDB that opens a case for every negative rating.

Every `case_poll_s` it reads the negative ratings with a point time from its stored
watermark minus `case_overlap_s` up to a little after now, opens the missing cases
(idempotent: `cases.rating_id` is unique) and stores now as the new watermark. Every
`case_sweep_s` it also reads the last `case_lookback_h` hours, for ratings that reached
InfluxDB late (a kiosk's outbox after an outage keeps the press time), and flags the
cases that became overdue. The watermark lives in the database, so a restarted server
resumes where it stopped.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from server.cases.models import Case, CasePoller
from server.cases.service import NegativeRating, case_payload, flag_overdue, local_date, open_cases
from server.db.engine import Database
from server.influx import MEASUREMENT, DatabaseNotFoundError, InfluxClient, InfluxError
from server.settings import ServerSettings

log = logging.getLogger(__name__)

POLLER_NAME = "negative-ratings"
# Points up to this far ahead of the server's clock are read (the gateway accepts +5 min).
FUTURE = timedelta(minutes=10)
FIELDS = ("id", "scale", "staff", "ticket", "item", "reasons")

Notify = Callable[[str, dict[str, Any]], None]


def _ns(moment: datetime) -> int:
    """Return nanoseconds since the Unix epoch."""
    return int(moment.timestamp()) * 10**9 + moment.microsecond * 1000


def _opt(value: Any) -> str | None:
    """Return a string field, None when absent."""
    return None if value is None else str(value)


def read_negatives(client: InfluxClient, start: datetime, end: datetime) -> list[NegativeRating]:
    """Return the ratings at level 1 or 2 with start <= time < end (the caller checks scale)."""
    cols = ", ".join(f'"{f}"' for f in FIELDS)
    q = (
        f'SELECT {cols} FROM "{MEASUREMENT}" WHERE time >= {_ns(start)} AND time < {_ns(end)} '
        """AND ("level" = '1' OR "level" = '2') GROUP BY "hall", "window", "device", "level\""""
    )
    try:
        results = client.query(q)
    except DatabaseNotFoundError:
        return []
    out: list[NegativeRating] = []
    for stmt in results:
        for series in stmt.series:
            tags = series.tags
            idx = {name: i for i, name in enumerate(series.columns)}
            for row in series.values:
                try:
                    out.append(
                        NegativeRating(
                            rating_id=str(row[idx["id"]]),
                            hall=tags["hall"],
                            window=tags["window"],
                            device=tags["device"],
                            level=int(tags["level"]),
                            scale=int(row[idx["scale"]]),
                            ts=datetime.fromtimestamp(int(row[idx["time"]]) / 1000, UTC),
                            staff=_opt(row[idx["staff"]]),
                            ticket=_opt(row[idx["ticket"]]),
                            item=_opt(row[idx["item"]]),
                            reasons=_opt(row[idx["reasons"]]) or "",
                        )
                    )
                except (KeyError, ValueError, TypeError, IndexError) as exc:
                    log.warning("skipping unreadable rating point %s %s: %s", tags, row, exc)
    return out


class NegativeRatingPoller:
    """Opens cases from InfluxDB; `tick()` is one scan, `start()`/`stop()` run it in the loop."""

    def __init__(
        self, db: Database, influx: InfluxClient, settings: ServerSettings, notify: Notify
    ) -> None:
        """Prepare (not start) the poller."""
        self.db = db
        self.influx = influx
        self.settings = settings
        self.notify = notify
        self._last_sweep: datetime | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.scans = 0

    def _watermark(self, now: datetime) -> datetime:
        """Return the stored watermark (now minus the look-back on the first run)."""
        with self.db.session() as session:
            row = session.get(CasePoller, POLLER_NAME)
            if row is not None:
                return row.watermark
        return now - timedelta(hours=self.settings.case_lookback_h)

    def _save_watermark(self, mark: datetime) -> None:
        """Store the watermark."""
        with self.db.session() as session:
            row = session.get(CasePoller, POLLER_NAME)
            if row is None:
                session.add(CasePoller(name=POLLER_NAME, watermark=mark))
            else:
                row.watermark = max(row.watermark, mark)
            session.commit()

    def scan(self, start: datetime, end: datetime) -> list[int]:
        """Open the cases of the negative ratings in [start, end); return the new case ids."""
        ratings = read_negatives(self.influx, start, end)
        if not ratings:
            return []
        tz = self.settings.tz
        days = self.settings.case_deadline_days
        today = local_date(datetime.now(UTC), tz)
        with self.db.session() as session:
            try:
                new = open_cases(session, ratings, tz, days)
                payloads = [case_payload(c, today) for c in new]
                session.commit()
            except IntegrityError:
                # Another server process opened some of them first; the next scan retries.
                session.rollback()
                log.info("cases opened concurrently elsewhere; retrying on the next scan")
                return []
        for body in payloads:
            log.info("case %s opened for rating %s", body["case_id"], body["rating_id"])
            self.notify("case.opened", body)
        return [int(b["case_id"]) for b in payloads]

    def flag_overdue(self, now: datetime) -> list[int]:
        """Flag the cases that became overdue; return their ids."""
        today = local_date(now, self.settings.tz)
        with self.db.session() as session:
            cases = flag_overdue(session, today)
            payloads = [case_payload(c, today) for c in cases]
            session.commit()
        for body in payloads:
            self.notify("case.overdue", body)
        return [int(b["case_id"]) for b in payloads]

    def tick(self, now: datetime | None = None) -> list[int]:
        """Scan since the watermark (and the wide scan when due); return new case ids."""
        now = now or datetime.now(UTC)
        overlap = timedelta(seconds=self.settings.case_overlap_s)
        new = self.scan(self._watermark(now) - overlap, now + FUTURE)
        self._save_watermark(now)
        sweep_every = timedelta(seconds=self.settings.case_sweep_s)
        if self._last_sweep is None or now - self._last_sweep >= sweep_every:
            self._last_sweep = now
            start = now - timedelta(hours=self.settings.case_lookback_h)
            new += self.scan(start, now + FUTURE)
            self.flag_overdue(now)
        self.scans += 1
        return new

    async def _run(self) -> None:
        """Tick until stopped; errors are logged and retried on the next tick."""
        while not self._stop.is_set():
            try:
                await asyncio.to_thread(self.tick)
            except InfluxError as exc:
                log.warning("case poller: InfluxDB unavailable: %s", exc)
            except Exception:
                log.exception("case poller tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.settings.case_poll_s)

    def start(self) -> None:
        """Start ticking in the running event loop."""
        self._stop.clear()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="case-poller")

    async def stop(self) -> None:
        """Stop after the current tick."""
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None


def count_cases(db: Database) -> int:
    """Return the number of cases (for logs and tests)."""
    with db.session() as session:
        return len(session.scalars(select(Case.id)).all())
