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

# Append-only: no UNIQUE index on the random ids, which cost 13 µs per rating to keep up
# (100,000 ratings in batches of 5,000, 2 cores); on load a later row wins over an earlier one.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS stored_rating (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    hall TEXT NOT NULL,
    device TEXT NOT NULL,
    window TEXT NOT NULL,
    seq INTEGER NOT NULL,
    level INTEGER NOT NULL,
    ts INTEGER NOT NULL
);
"""
# The table as it was (a UNIQUE id): its rows are carried over once, then it is dropped.
_OLD_TABLE = "recent_rating"
_COLUMNS = "id, hall, device, window, seq, level, ts"


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
        self._carry_over()
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM stored_rating ORDER BY n DESC LIMIT ?", (cap,)
        ).fetchall()
        for rid, hall, device, window, seq, level, ts in reversed(rows):
            fp = (device, int(seq), int(level), int(ts))
            self._add(rid, fp, (hall, device, window, int(level), rating_time_ns(ts, seq)))

    def _carry_over(self) -> None:
        """Move the rows of the former table (UNIQUE id) into this one, in their order."""
        old = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_OLD_TABLE,)
        ).fetchone()
        if old is None:
            return
        self._db.execute("BEGIN")
        self._db.execute(
            f"INSERT INTO stored_rating ({_COLUMNS}) SELECT {_COLUMNS} FROM {_OLD_TABLE} ORDER BY n"
        )
        self._db.execute(f"DROP TABLE {_OLD_TABLE}")
        self._db.execute("COMMIT")

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

    def reserve(self, fresh: list[tuple[str, RatingEvent]]) -> None:
        """Remember ratings `(str(id), rating)` in memory, before their write, within the cap.

        The writer reserves a batch while the one before it is still being written, so the
        next batch already sees its ids; `persist` writes them to disk once they are stored.
        """
        if self.cap == 0:
            return
        for rid, r in fresh:
            self._add(rid, fingerprint(r), slot_of(r))
        while len(self.ids) > self.cap:
            rid, (_fp, slot) = self.ids.popitem(last=False)
            if self.slots.get(slot) == rid:
                del self.slots[slot]

    def persist(self, fresh: list[tuple[str, RatingEvent]]) -> None:
        """Write reserved ratings to disk (one transaction), keeping the last `cap` rows."""
        if self.cap == 0 or not fresh:
            return
        rows = [(rid, r.hall, r.device, r.window, r.seq, r.level, r.ts) for rid, r in fresh]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                f"INSERT INTO stored_rating ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", rows
            )
            self._db.execute(
                "DELETE FROM stored_rating WHERE n <= (SELECT max(n) FROM stored_rating) - ?",
                (self.cap,),
            )
            self._db.execute("COMMIT")

    def remember(self, fresh: list[tuple[str, RatingEvent]]) -> None:
        """Reserve and persist at once."""
        self.reserve(fresh)
        self.persist(fresh)

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()
