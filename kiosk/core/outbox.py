"""The kiosk's durable outbox: SQLite (WAL, fsync on commit) holding ratings until PUBACK."""

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uuid6

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('last_seq', 0);
CREATE TABLE IF NOT EXISTS rating (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    draft TEXT NOT NULL,
    press_wall_ms INTEGER NOT NULL,
    press_mono_ns INTEGER NOT NULL,
    press_boot TEXT NOT NULL,
    press_synced INTEGER NOT NULL,
    ts INTEGER,
    clock_synced INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    acked_ms INTEGER,
    held INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS rating_acked ON rating (acked_ms);
CREATE TABLE IF NOT EXISTS event (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class PressTime:
    """The clocks read at the moment of a press."""

    wall_ms: int
    mono_ns: int
    boot: str
    synced: bool


@dataclass(frozen=True, slots=True)
class OutboxRating:
    """A rating waiting in the outbox."""

    seq: int
    id: str
    draft: dict[str, Any]
    press: PressTime
    ts: int | None
    clock_synced: bool | None


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """A service event waiting in the outbox (fully built payload)."""

    n: int
    id: str
    payload: str


class Outbox:
    """SQLite outbox; every write is committed and fsynced before the call returns."""

    def __init__(self, path: Path) -> None:
        """Open (or create) the outbox at `path`."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsynced at every commit, so a committed rating survives power loss.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        # A press held for its follow-up reasons when the kiosk stopped goes out without them.
        self._db.execute("UPDATE rating SET held = 0 WHERE held = 1")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def add_rating(
        self, draft: dict[str, Any], press: PressTime, *, held: bool = False
    ) -> tuple[int, str]:
        """Assign the next seq and a UUIDv7 id, commit the rating, and return (seq, id).

        A held rating is safe on disk but not sent until release() (its reasons are asked).
        """
        rid = str(uuid6.uuid7())
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                (seq,) = cur.execute(
                    "UPDATE meta SET value = value + 1 WHERE key = 'last_seq' RETURNING value"
                ).fetchone()
                cur.execute(
                    "INSERT INTO rating (seq, id, draft, press_wall_ms, press_mono_ns,"
                    " press_boot, press_synced, held) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        seq,
                        rid,
                        json.dumps(draft, ensure_ascii=False),
                        press.wall_ms,
                        press.mono_ns,
                        press.boot,
                        int(press.synced),
                        int(held),
                    ),
                )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return int(seq), rid

    def release(self, seq: int, reasons: list[str] | None = None) -> None:
        """Let a held rating go out, with the follow-up reasons chosen (if any)."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                row = cur.execute("SELECT draft FROM rating WHERE seq = ?", (seq,)).fetchone()
                if row is not None and reasons:
                    draft = json.loads(row[0])
                    draft["reasons"] = list(dict.fromkeys([*draft.get("reasons", []), *reasons]))
                    cur.execute(
                        "UPDATE rating SET draft = ? WHERE seq = ?",
                        (json.dumps(draft, ensure_ascii=False), seq),
                    )
                cur.execute("UPDATE rating SET held = 0 WHERE seq = ?", (seq,))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    def add_event(self, event_id: str, payload: str) -> None:
        """Commit a fully built service event."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO event (id, payload) VALUES (?, ?)", (event_id, payload)
            )

    def pending_ratings(self, limit: int, skip: set[int]) -> list[OutboxRating]:
        """Return up to `limit` waiting ratings in seq order, leaving out those in `skip`."""
        out: list[OutboxRating] = []
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, id, draft, press_wall_ms, press_mono_ns, press_boot, press_synced,"
                " ts, clock_synced FROM rating WHERE acked_ms IS NULL AND held = 0"
                " ORDER BY seq LIMIT ?",
                (limit + len(skip),),
            ).fetchall()
        for seq, rid, draft, wall, mono, boot, synced, ts, csync in rows:
            if seq in skip:
                continue
            out.append(
                OutboxRating(
                    seq=seq,
                    id=rid,
                    draft=json.loads(draft),
                    press=PressTime(wall, mono, boot, bool(synced)),
                    ts=ts,
                    clock_synced=None if csync is None else bool(csync),
                )
            )
            if len(out) >= limit:
                break
        return out

    def pending_events(self, limit: int, skip: set[str]) -> list[OutboxEvent]:
        """Return up to `limit` waiting events in order, leaving out those in `skip`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT n, id, payload FROM event ORDER BY n LIMIT ?", (limit + len(skip),)
            ).fetchall()
        return [OutboxEvent(n, i, p) for n, i, p in rows if i not in skip][:limit]

    def fix_ts(self, seq: int, ts: int, clock_synced: bool) -> None:
        """Fix a rating's ts at its first send attempt; it never changes afterwards."""
        with self._lock:
            self._db.execute(
                "UPDATE rating SET ts = ?, clock_synced = ? WHERE seq = ? AND ts IS NULL",
                (ts, int(clock_synced), seq),
            )

    def mark_attempt(self, seq: int) -> None:
        """Count a send attempt (for the operator's view of stuck ratings)."""
        with self._lock:
            self._db.execute("UPDATE rating SET attempts = attempts + 1 WHERE seq = ?", (seq,))

    def delete_rating(self, seq: int) -> None:
        """Delete a rating at once."""
        with self._lock:
            self._db.execute("DELETE FROM rating WHERE seq = ?", (seq,))

    def mark_acked(self, seq: int, now_ms: int) -> None:
        """Record the broker's PUBACK; the row is kept a while in case the broker crashes."""
        with self._lock:
            self._db.execute("UPDATE rating SET acked_ms = ? WHERE seq = ?", (now_ms, seq))

    def requeue_acked_since(self, since_ms: int) -> int:
        """Make ratings acknowledged since `since_ms` pending again; return how many."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE rating SET acked_ms = NULL WHERE acked_ms >= ?", (since_ms,)
            )
        return int(cur.rowcount)

    def purge_acked_before(self, before_ms: int) -> int:
        """Delete ratings acknowledged before `before_ms`; return how many."""
        with self._lock:
            cur = self._db.execute("DELETE FROM rating WHERE acked_ms < ?", (before_ms,))
        return int(cur.rowcount)

    def delete_event(self, event_id: str) -> None:
        """Delete an event after the broker's PUBACK."""
        with self._lock:
            self._db.execute("DELETE FROM event WHERE id = ?", (event_id,))

    def last_seq(self) -> int:
        """Return the highest seq ever assigned (0 before the first rating)."""
        with self._lock:
            (value,) = self._db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
        return int(value)

    def backlog(self) -> int:
        """Return how many ratings wait for their PUBACK."""
        with self._lock:
            (n,) = self._db.execute("SELECT count(*) FROM rating WHERE acked_ms IS NULL").fetchone()
        return int(n)

    def oldest_pending_ms(self) -> int | None:
        """Return the press time of the oldest waiting rating, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT min(press_wall_ms) FROM rating WHERE acked_ms IS NULL"
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])


def now_ms() -> int:
    """Wall time in ms (for log lines and events)."""
    return time.time_ns() // 1_000_000
