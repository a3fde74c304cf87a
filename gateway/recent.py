"""Recently stored rating ids and fingerprints, on disk so that a restart still sees conflicts."""

import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path

from protocol.messages import RatingEvent
from storage.schema import rating_time_ns

Fingerprint = tuple[str, int, int, int]  # device, seq, level, ts
# Series (hall, device, window, level) and point time: two ratings in one slot are one point.
Slot = tuple[str, str, str, int, int]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS recent_rating (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    hall TEXT NOT NULL,
    device TEXT NOT NULL,
    window TEXT NOT NULL,
    seq INTEGER NOT NULL,
    level INTEGER NOT NULL,
    ts INTEGER NOT NULL
);
"""


def fingerprint(r: RatingEvent) -> Fingerprint:
    """Return what must match for a rating with a known id to be the same rating."""
    return r.device, r.seq, r.level, r.ts


def slot_of(r: RatingEvent) -> Slot:
    """Return the series and point time a rating is stored at (storage.schema)."""
    return r.hall, r.device, r.window, r.level, rating_time_ns(r.ts, r.seq)


class RecentIds:
    """The last `cap` stored rating ids in memory and in a SQLite file beside the dead letters."""

    def __init__(self, path: Path, cap: int) -> None:
        """Open (or create) the file and load what it holds."""
        self.cap = cap
        self.ids: OrderedDict[str, tuple[Fingerprint, Slot]] = OrderedDict()
        self.slots: dict[Slot, str] = {}
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        rows = self._db.execute(
            "SELECT id, hall, device, window, seq, level, ts FROM recent_rating"
            " ORDER BY n DESC LIMIT ?",
            (cap,),
        ).fetchall()
        for rid, hall, device, window, seq, level, ts in reversed(rows):
            fp = (device, int(seq), int(level), int(ts))
            self._add(rid, fp, (hall, device, window, int(level), rating_time_ns(ts, seq)))

    def get(self, rid: str) -> Fingerprint | None:
        """Return the fingerprint stored under `rid`, if remembered."""
        known = self.ids.get(rid)
        return None if known is None else known[0]

    def holder(self, slot: Slot) -> str | None:
        """Return the id of the remembered rating stored at `slot`, if any."""
        return self.slots.get(slot)

    def _add(self, rid: str, fp: Fingerprint, slot: Slot) -> None:
        """Remember one id and its slot (memory only)."""
        self.ids[rid] = (fp, slot)
        self.ids.move_to_end(rid)
        self.slots[slot] = rid

    def remember(self, fresh: list[RatingEvent]) -> None:
        """Add newly stored ratings (memory and disk), forgetting the oldest beyond the cap."""
        if self.cap == 0 or not fresh:
            return
        for r in fresh:
            self._add(str(r.id), fingerprint(r), slot_of(r))
        while len(self.ids) > self.cap:
            rid, (_fp, slot) = self.ids.popitem(last=False)
            if self.slots.get(slot) == rid:
                del self.slots[slot]
        rows = [(str(r.id), r.hall, r.device, r.window, r.seq, r.level, r.ts) for r in fresh]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO recent_rating (id, hall, device, window, seq, level, ts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._db.execute(
                "DELETE FROM recent_rating WHERE n <= (SELECT max(n) FROM recent_rating) - ?",
                (self.cap,),
            )
            self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()
