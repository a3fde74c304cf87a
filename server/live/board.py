"""Today's numbers of every window: a snapshot from InfluxDB plus ratings seen on MQTT since.

InfluxDB is the authority. The board starts from `today_counts`, adds each rating heard on
MQTT at once (deduplicated by rating id), and re-syncs from InfluxDB periodically: a rating
heard on MQTT is dropped from the pending set when InfluxDB holds it (it is then in the
counts) or when it stays missing for longer than `pending_s` (the gateway refused it).
"""

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from protocol.messages import RatingEvent
from protocol.scales import level_label
from server.counts import WindowCount, day_bounds, today_counts
from server.live.devices import DeviceTable, State
from server.live.hub import Hub
from server.scores.policy import Policy
from storage import queries
from storage.client import InfluxClient

log = logging.getLogger(__name__)

Key = tuple[str, str]
RECENT_S = 60  # ids stored this recently are looked up at each re-sync
SEEN_S = 900  # how long an id is remembered for deduplication
# The board's level columns, best first; a zh label means the same on 3-, 4- and 5-key scales.
COLUMN_LABELS: tuple[str, ...] = tuple(level_label(5, lv, "zh") for lv in (5, 4, 3, 2, 1))


@dataclass(frozen=True, slots=True)
class Pending:
    """A rating heard on MQTT that the last InfluxDB snapshot did not hold yet."""

    key: Key
    scale: int
    level: int
    ts: int
    received: float


@dataclass(frozen=True, slots=True)
class LastNegative:
    """The latest negative rating of a window."""

    id: str
    ts: int
    scale: int
    level: int


def stars(score: float | None) -> float | None:
    """Return the 1–5 star figure of a 0–100 score (one decimal)."""
    return None if score is None else round(1 + score / 25, 1)


class LiveBoard:
    """Thread-safe live numbers of today; events go to the hub."""

    def __init__(
        self,
        client: InfluxClient,
        tz: ZoneInfo,
        devices: DeviceTable,
        hub: Hub,
        *,
        hall: str | None = None,
        pending_s: float = 120.0,
        policy: Policy | None = None,
    ) -> None:
        """Start empty; resync() loads today's numbers; negative and satisfied per `policy`."""
        self.client = client
        self.policy = policy or Policy()
        self.tz = tz
        self.devices = devices
        self.hub = hub
        self.hall = hall
        self.pending_s = pending_s
        self._lock = threading.Lock()
        self._day: date = day_bounds(tz)[0]
        self._base: dict[Key, Counter[tuple[int, int]]] = {}
        self._pending: dict[str, Pending] = {}
        self._pending_counts: dict[Key, Counter[tuple[int, int]]] = {}
        # Ids counted or known stored, by when they were noted (monotonic s): dedupe of MQTT.
        self._seen: dict[str, float] = {}
        self._last_neg: dict[Key, LastNegative] = {}
        self.names: dict[Key, str] = {}
        self.synced_at: datetime | None = None
        self.error: str | None = None
        self.duplicates = 0

    # --- input ---

    def _roll_day(self) -> None:
        """Start a new, empty day when the local date changed (lock held)."""
        today = day_bounds(self.tz)[0]
        if today != self._day:
            log.info("new day %s: board cleared until the next re-sync", today)
            self._day = today
            self._base.clear()
            self._pending.clear()
            self._pending_counts.clear()
            self._seen.clear()
            self._last_neg.clear()

    def add_rating(self, ev: RatingEvent) -> None:
        """Count a rating heard on MQTT once (by id) if it was pressed today; publish the row."""
        if self.hall is not None and ev.hall != self.hall:
            return
        rid = str(ev.id)
        key = (ev.hall, ev.window)
        with self._lock:
            self._roll_day()
            _day, start, end = day_bounds(self.tz)
            if not start.timestamp() * 1000 <= ev.ts < end.timestamp() * 1000:
                return
            if rid in self._seen:
                self.duplicates += 1
                return
            self._seen[rid] = time.monotonic()
            self._add_pending(rid, Pending(key, ev.scale, ev.level, ev.ts, time.monotonic()))
            negative = self.policy.negative(ev.scale, ev.level)
            if negative:
                old = self._last_neg.get(key)
                if old is None or ev.ts >= old.ts:
                    self._last_neg[key] = LastNegative(rid, ev.ts, ev.scale, ev.level)
            row = self._row(key)
        rating = {
            "id": rid,
            "ts": ev.ts,
            "scale": ev.scale,
            "level": ev.level,
            "negative": negative,
        }
        self.hub.publish({"type": "window", "hall": ev.hall, "row": row, "rating": rating})

    def _add_pending(self, rid: str, p: Pending) -> None:
        """Hold a rating as pending (lock held)."""
        self._pending[rid] = p
        self._pending_counts.setdefault(p.key, Counter())[(p.scale, p.level)] += 1

    def _drop_pending(self, rid: str) -> None:
        """Forget a pending rating (lock held)."""
        p = self._pending.pop(rid, None)
        if p is None:
            return
        counts = self._pending_counts[p.key]
        counts[(p.scale, p.level)] -= 1
        if counts[(p.scale, p.level)] <= 0:
            del counts[(p.scale, p.level)]
        if not counts:
            del self._pending_counts[p.key]

    def device_changed(self, hall: str, window: str | None) -> None:
        """Publish the row of a window whose device changed state or clerk."""
        if window is None or (self.hall is not None and hall != self.hall):
            return
        with self._lock:
            row = self._row((hall, window))
        self.hub.publish({"type": "window", "hall": hall, "row": row})

    # --- InfluxDB ---

    def _last_negatives(self, start: datetime, end: datetime) -> dict[Key, LastNegative]:
        """Return each window's latest negative rating stored today."""
        found = queries.last_rating_at_levels(
            self.client, start, end, self.policy.negative_levels(), self.hall
        )
        out: dict[Key, LastNegative] = {}
        for key, row in found.items():
            try:
                out[key] = LastNegative(
                    str(row["id"]), int(row["time"]), int(row["scale"]), int(row["level"])
                )
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("skipping last negative of %s: %s", key, exc)
        return out

    def resync(self) -> None:
        """Reload today's counts from InfluxDB, settle the pending ratings, publish a snapshot."""
        _today, start, end = day_bounds(self.tz)
        counts = today_counts(self.client, self.tz, hall=self.hall, policy=self.policy)
        # The ids stored recently (and since the oldest pending rating): a rating the gateway
        # stored before the server heard it is then known, not counted twice.
        recent = int(time.time() * 1000 - RECENT_S * 1000)
        with self._lock:
            self._roll_day()
            oldest = min((p.ts for p in self._pending.values()), default=recent)
        stored = queries.rating_ids_since(self.client, min(oldest, recent), self.hall)
        negatives = self._last_negatives(start, end)
        now = time.monotonic()
        with self._lock:
            self._base = {(wc.hall, wc.window): wc.counts for wc in counts}
            for rid in stored:
                self._drop_pending(rid)
                self._seen.setdefault(rid, now)
            horizon = now - max(self.pending_s, SEEN_S)
            self._seen = {rid: at for rid, at in self._seen.items() if at >= horizon}
            for rid, p in list(self._pending.items()):
                if now - p.received > self.pending_s:
                    log.warning("rating %s heard on MQTT is not in InfluxDB: dropped", rid)
                    self._drop_pending(rid)
            for key, ln in negatives.items():
                old = self._last_neg.get(key)
                if old is None or ln.ts >= old.ts:
                    self._last_neg[key] = ln
            self.synced_at = datetime.now(self.tz)
            self.error = None
        self.hub.publish({"type": "resync"})

    # --- output ---

    def _counts(self, key: Key) -> WindowCount:
        """Return the displayed counts of a window: stored plus pending (lock held)."""
        counts: Counter[tuple[int, int]] = Counter(self._base.get(key, Counter()))
        counts.update(self._pending_counts.get(key, Counter()))
        return WindowCount(hall=key[0], window=key[1], counts=counts, policy=self.policy)

    def _row(
        self,
        key: Key,
        wc: WindowCount | None = None,
        states: dict[Key, tuple[State, str | None]] | None = None,
    ) -> dict[str, Any]:
        """Return the board row of a window (lock held)."""
        wc = wc or self._counts(key)
        states = self.devices.by_window() if states is None else states
        state, staff = states.get(key, ("unknown", None))
        ln = self._last_neg.get(key)
        score = wc.score
        rate = wc.satisfaction_rate
        labels = wc.label_counts()
        return {
            "hall": key[0],
            "window": key[1],
            "name": self.names.get(key),
            "state": state,
            "staff": staff,
            "ratings": wc.ratings,
            "levels": {f"{s}-{lv}": n for (s, lv), n in sorted(wc.counts.items())},
            "columns": [labels.get(label, 0) for label in COLUMN_LABELS],
            "satisfaction_rate": None if rate is None else round(rate, 4),
            "score": None if score is None else round(score, 2),
            "stars": stars(score),
            "negatives": wc.negatives,
            "last_negative": None
            if ln is None
            else {"id": ln.id, "ts": ln.ts, "scale": ln.scale, "level": ln.level},
        }

    def rows(self, hall: str | None = None) -> list[dict[str, Any]]:
        """Return the rows of every window known today (optionally of one hall), sorted."""
        with self._lock:
            states = self.devices.by_window()
            keys = set(self._base) | set(self._pending_counts) | set(self.names) | set(states)
            if self.hall is not None:
                keys = {k for k in keys if k[0] == self.hall}
            if hall is not None:
                keys = {k for k in keys if k[0] == hall}
            wcs = {k: self._counts(k) for k in keys}
            return [self._row(k, wcs[k], states) for k in sorted(keys)]

    def window_counts(self) -> list[WindowCount]:
        """Return the displayed counts of every window that has ratings today."""
        with self._lock:
            keys = set(self._base) | set(self._pending_counts)
            return [self._counts(k) for k in sorted(keys)]

    @property
    def day(self) -> date:
        """The local date the board counts."""
        return self._day
