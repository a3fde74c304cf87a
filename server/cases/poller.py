"""Background scan of InfluxDB that opens a case for every negative rating.

Every `cases.poll_s` it reads the negative ratings with a point time from its stored
watermark minus `cases.overlap_s` up to a little after now, opens the missing cases
(idempotent: `cases.rating_id` is unique) and stores now as the new watermark. Every
`cases.sweep_s` it also reads the last `cases.lookback_h` hours, for ratings that reached
InfluxDB late (a kiosk's outbox after an outage keeps the press time), and flags the
cases that became overdue. The watermark lives in the database, so a restarted server
resumes where it stopped. A case and its webhook rows (the outbox of `server.cases.webhook`)
are committed in one transaction.
"""

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.cases.models import Case, CasePoller
from server.cases.service import NegativeRating, case_payload, flag_overdue, local_date, open_cases
from server.cases.webhook import WebhookSender
from server.db.engine import Database
from server.scores.policy import Policy, active_policy
from server.settings import ServerSettings
from storage import queries
from storage.client import InfluxClient, InfluxError

log = logging.getLogger(__name__)

POLLER_NAME = "negative-ratings"
# Points up to this far ahead of the server's clock are read (the gateway accepts +5 min).
FUTURE = timedelta(minutes=10)


def _opt(value: Any) -> str | None:
    """Return a string field, None when absent."""
    return None if value is None else str(value)


def read_negatives(
    client: InfluxClient, start: datetime, end: datetime, policy: Policy
) -> list[NegativeRating]:
    """Return the ratings that `policy` counts as negative with start <= time < end."""
    out: list[NegativeRating] = []
    for row in queries.ratings_at_levels(client, start, end, policy.negative_levels()):
        try:
            out.append(
                NegativeRating(
                    rating_id=str(row["id"]),
                    hall=row["hall"],
                    window=row["window"],
                    device=row["device"],
                    level=int(row["level"]),
                    scale=int(row["scale"]),
                    ts=datetime.fromtimestamp(int(row["time"]) / 1000, UTC),
                    staff=_opt(row["staff"]),
                    ticket=_opt(row["ticket"]),
                    item=_opt(row["item"]),
                    reasons=_opt(row["reasons"]) or "",
                )
            )
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            log.warning("skipping unreadable rating point %s: %s", row, exc)
    return out


class NegativeRatingPoller:
    """Opens cases from InfluxDB; `tick()` is one scan, `start()`/`stop()` run it in the loop."""

    def __init__(
        self,
        db: Database,
        influx: InfluxClient,
        settings: ServerSettings,
        webhooks: WebhookSender | None = None,
        policy: Policy | None = None,
    ) -> None:
        """Prepare (not start) the poller; negative per `policy`, else the one in force."""
        self.db = db
        self.policy = policy or active_policy()
        self.influx = influx
        self.settings = settings
        self.webhooks = webhooks
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
        return now - timedelta(hours=self.settings.cases.lookback_h)

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
        ratings = read_negatives(self.influx, start, end, self.policy)
        if not ratings:
            return []
        tz = self.settings.tz
        days = self.settings.cases.deadline_days
        today = local_date(datetime.now(UTC), tz)
        with self.db.session() as session:
            try:
                new = open_cases(session, ratings, tz, days, self.policy)
                payloads = [case_payload(c, today) for c in new]
                self._enqueue(session, "case.opened", payloads)
                session.commit()
            except IntegrityError:
                # Another server process opened some of them first; the next scan retries.
                session.rollback()
                log.info("cases opened concurrently elsewhere; retrying on the next scan")
                return []
        for body in payloads:
            log.info("case %s opened for rating %s", body["case_id"], body["rating_id"])
        return [int(b["case_id"]) for b in payloads]

    def _enqueue(self, session: Session, event: str, payloads: list[dict[str, Any]]) -> None:
        """Write the webhook rows of `payloads` in the caller's transaction."""
        if self.webhooks is not None:
            for body in payloads:
                self.webhooks.enqueue(session, event, body, int(body["case_id"]))

    def flag_overdue(self, now: datetime) -> list[int]:
        """Flag the cases that became overdue; return their ids."""
        today = local_date(now, self.settings.tz)
        with self.db.session() as session:
            cases = flag_overdue(session, today)
            payloads = [case_payload(c, today) for c in cases]
            self._enqueue(session, "case.overdue", payloads)
            session.commit()
        return [int(b["case_id"]) for b in payloads]

    def tick(self, now: datetime | None = None) -> list[int]:
        """Scan since the watermark (and the wide scan when due); return new case ids."""
        now = now or datetime.now(UTC)
        overlap = timedelta(seconds=self.settings.cases.overlap_s)
        new = self.scan(self._watermark(now) - overlap, now + FUTURE)
        self._save_watermark(now)
        sweep_every = timedelta(seconds=self.settings.cases.sweep_s)
        if self._last_sweep is None or now - self._last_sweep >= sweep_every:
            self._last_sweep = now
            start = now - timedelta(hours=self.settings.cases.lookback_h)
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
                await asyncio.wait_for(self._stop.wait(), timeout=self.settings.cases.poll_s)

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
