"""The server keeps the rollups current by itself: missing days built, recent days rebuilt.

Late ratings (a kiosk offline for a day or two) land in days already rolled up, so the last
`recheck_days` completed days are rebuilt on every run; older late arrivals are what
`windowrate scores check` reports. Each built day also runs the fraud detectors.
"""

import logging
import threading
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from server.db.engine import Database
from server.scores.models import RollupDay
from server.scores.policy import PolicyError, load_policy
from server.scores.rollup import build_day, refresh_month
from server.scores.settings import ScoresSettings
from storage.client import InfluxClient, InfluxError

log = logging.getLogger(__name__)


def due_days(have: set[date], today: date, recheck: int, catchup: int) -> list[date]:
    """Completed days to (re)build: any missing in the catch-up window, the last `recheck`."""
    days = [today - timedelta(days=n) for n in range(catchup, 0, -1)]
    recent = set(days[-recheck:]) if recheck else set()
    return [d for d in days if d not in have or d in recent]


class RollupScheduler:
    """A thread that runs `run_once()` every `rollup_interval_s`."""

    def __init__(
        self, db: Database, influx: InfluxClient, tz: ZoneInfo, cfg: ScoresSettings
    ) -> None:
        """Prepare (call start())."""
        self.db, self.influx, self.tz, self.cfg = db, influx, tz, cfg
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rollups", daemon=True)

    def run_once(self, today: date | None = None) -> list[date]:
        """Build the due days; return them."""
        policy = load_policy(self.cfg.policy_file)
        today = today or datetime.now(self.tz).date()
        with self.db.session() as session:
            have = set(session.scalars(select(RollupDay.day)))
            days = due_days(have, today, self.cfg.rollup_recheck_days, self.cfg.rollup_catchup_days)
            for day in days:
                if self._stop.is_set():
                    break
                build_day(session, self.influx, day, self.tz, policy, refresh=False)
            for month in sorted({d.replace(day=1) for d in days}):
                refresh_month(session, month)
            session.commit()
        if days:
            log.info("rolled up %d days (%s … %s)", len(days), days[0], days[-1])
        return days

    def _run(self) -> None:
        """Run after the first delay, then every interval, until stopped; failures are retried."""
        self._stop.wait(self.cfg.rollup_first_s)
        while not self._stop.is_set():
            try:
                self.run_once()
            except (InfluxError, PolicyError, OSError) as exc:
                log.warning(
                    "rollup run failed, retrying in %.0f s: %s", self.cfg.rollup_retry_s, exc
                )
                self._stop.wait(self.cfg.rollup_retry_s)
                continue
            except Exception:
                log.exception("rollup run failed")
            self._stop.wait(self.cfg.rollup_interval_s)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop and wait for the current day to finish."""
        self._stop.set()
        self._thread.join(60)
