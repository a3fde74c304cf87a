"""The kiosk's durable outbox: SQLite (WAL, fsync on commit) holding ratings until PUBACK.

On an SD card the files stay small: the WAL is checkpointed every `WAL_AUTOCHECKPOINT_PAGES`
pages and cut back to `WAL_SIZE_LIMIT` bytes, delivered rows are purged after the resend
window, and freed pages go back to the file system (incremental vacuum). When the disk is
full a new rating is refused (`StorageFull`) before it is half-stored, while the reserve file
is given up so that the ratings already in the outbox can still be marked delivered.
"""

import errno
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uuid6

log = logging.getLogger(__name__)

# Free space under which a new rating is refused (the rest is for delivery bookkeeping).
MIN_FREE_BYTES = 4 * 1024 * 1024
# A file given up when the disk fills, so acknowledgements can still be written.
RESERVE_BYTES = 2 * 1024 * 1024
RESERVE_FILE = "outbox.reserve"
WAL_AUTOCHECKPOINT_PAGES = 256  # 1 MiB of 4 KiB pages
WAL_SIZE_LIMIT = 1024 * 1024  # the WAL is cut back to this after a checkpoint
VACUUM_FREE_PAGES = 32  # free pages (128 KiB) before they are given back to the file system
_STORAGE_RECHECK_S = 1.0

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


class StorageFull(Exception):
    """The outbox's disk has no room for a new rating: nothing was stored."""


def _is_full(exc: BaseException) -> bool:
    """True if `exc` says the disk (or the database) is full."""
    if isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class Outbox:
    """SQLite outbox; every write is committed and fsynced before the call returns."""

    def __init__(
        self,
        path: Path,
        *,
        min_free_bytes: int = MIN_FREE_BYTES,
        reserve_bytes: int = RESERVE_BYTES,
    ) -> None:
        """Open (or create) the outbox at `path`."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.min_free_bytes = min_free_bytes
        self.reserve_bytes = reserve_bytes
        self.reserve_path = self.path.parent / RESERVE_FILE
        self._lock = threading.Lock()
        self._space_lock = threading.Lock()
        self._full = False
        self._checked = 0.0
        try:
            self._db = self._open()
        except (sqlite3.OperationalError, OSError) as exc:
            # Started on a full disk: the reserve makes room to open (and deliver) the outbox.
            if not _is_full(exc) or not self._give_up_reserve():
                raise
            self._full = True
            self._db = self._open()
        self.storage_full(force=True)

    def _open(self) -> sqlite3.Connection:
        """Connect, set the pragmas, create the tables and release held presses."""
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            # Before the first table: new outboxes give freed pages back (incremental vacuum).
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is fsynced at every commit, so a committed rating survives power loss.
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            db.execute("PRAGMA cache_size=-512")  # KiB: the outbox is small (default 2 MiB)
            db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            db.executescript(_SCHEMA)
            # A press held for its follow-up reasons when the kiosk stopped goes out without them.
            db.execute("UPDATE rating SET held = 0 WHERE held = 1")
        except BaseException:
            db.close()
            raise
        return db

    # --- disk space ---

    @staticmethod
    def free_bytes_at(path: Path) -> int:
        """Bytes an unprivileged process may still write on `path`'s file system."""
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize

    def free_bytes(self) -> int:
        """Bytes an unprivileged process may still write on the outbox's file system."""
        return self.free_bytes_at(self.path.parent)

    def storage_full(self, *, force: bool = False) -> bool:
        """True while new ratings are refused for lack of space (re-checked once a second)."""
        now = time.monotonic()
        if not force and now - self._checked < _STORAGE_RECHECK_S:
            return self._full
        with self._space_lock:  # the UI, the session's ticker and the publisher all ask
            self._checked = now
            return self._check_storage()

    def _check_storage(self) -> bool:
        """Read the free space, keep the reserve and note the state (holding _space_lock)."""
        try:
            free = self.free_bytes()
        except OSError as exc:
            log.warning("cannot read free space of %s: %s", self.path.parent, exc)
            return self._full
        has_reserve = self.reserve_path.exists()
        # Hysteresis: once full, wait until the reserve fits again before taking ratings.
        need = self.min_free_bytes + (0 if has_reserve or not self._full else self.reserve_bytes)
        full = free < need
        if not full and not has_reserve and self.reserve_bytes > 0:
            full = not self._make_reserve()
        self._set_full(full, free)
        return self._full

    def _set_full(self, full: bool, free: int | None = None) -> None:
        """Note the storage state and log each change."""
        if full and not self._full:
            log.error(
                "storage full: %s bytes free on %s; new ratings are refused until space returns",
                free,
                self.path.parent,
            )
        elif self._full and not full:
            log.warning("storage available again (%s bytes free); taking ratings", free)
        self._full = full

    def _make_reserve(self) -> bool:
        """Allocate the reserve file (no data written to the card); False if there is no room."""
        try:
            with open(self.reserve_path, "wb") as f:
                os.posix_fallocate(f.fileno(), 0, self.reserve_bytes)
                os.fsync(f.fileno())
        except OSError as exc:
            log.warning("cannot write the reserve %s: %s", self.reserve_path, exc)
            self.reserve_path.unlink(missing_ok=True)
            return False
        return True

    def _give_up_reserve(self) -> bool:
        """Delete the reserve so delivery bookkeeping can write; False if there was none."""
        if not self.reserve_path.exists():
            return False
        self.reserve_path.unlink(missing_ok=True)
        log.warning(
            "disk full: gave up the %d-byte reserve to finish deliveries", self.reserve_bytes
        )
        return True

    def _write(self, fn: Callable[[sqlite3.Connection], sqlite3.Cursor]) -> int:
        """Run one bookkeeping write; on a full disk give up the reserve and retry once."""
        with self._lock:
            try:
                return int(fn(self._db).rowcount)
            except (sqlite3.OperationalError, OSError) as exc:
                if not _is_full(exc):
                    raise
                self._set_full(True)
                if not self._give_up_reserve():
                    raise StorageFull(str(exc)) from exc
            try:
                return int(fn(self._db).rowcount)
            except (sqlite3.OperationalError, OSError) as exc:
                if _is_full(exc):
                    raise StorageFull(str(exc)) from exc
                raise

    def checkpoint(self) -> None:
        """Copy the WAL into the database, truncate it and return free pages to the disk."""
        with self._lock:
            try:
                (free_pages,) = self._db.execute("PRAGMA freelist_count").fetchone()
                if free_pages >= VACUUM_FREE_PAGES:  # not at every purge: less churn on the card
                    # execute() would free one page only: sqlite3_exec runs the pragma to its end.
                    self._db.executescript("PRAGMA incremental_vacuum;")
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.OperationalError as exc:
                if not _is_full(exc):
                    raise
                log.warning("checkpoint deferred: %s", exc)

    def file_bytes(self) -> int:
        """Size of the outbox database plus its WAL on disk."""
        wal = self.path.with_name(self.path.name + "-wal")
        return sum(p.stat().st_size for p in (self.path, wal) if p.exists())

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
        if self.storage_full():
            raise StorageFull("no room for a new rating")
        if self.free_bytes() < self.min_free_bytes:  # filled within the last second
            self.storage_full(force=True)
            raise StorageFull("no room for a new rating")
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
            except BaseException as exc:
                if self._db.in_transaction:
                    cur.execute("ROLLBACK")
                if _is_full(exc):
                    self._set_full(True)
                    raise StorageFull(str(exc)) from exc
                raise
        return int(seq), rid

    def release(self, seq: int, reasons: list[str] | None = None) -> None:
        """Let a held rating go out, with the follow-up reasons chosen (if any)."""

        def run(db: sqlite3.Connection) -> sqlite3.Cursor:
            cur = db.cursor()
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
                if db.in_transaction:
                    cur.execute("ROLLBACK")
                raise
            return cur

        self._write(run)

    def add_event(self, event_id: str, payload: str) -> None:
        """Commit a fully built service event."""
        if self.storage_full():
            raise StorageFull("no room for a new event")
        self._write(
            lambda db: db.execute(
                "INSERT OR IGNORE INTO event (id, payload) VALUES (?, ?)", (event_id, payload)
            )
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
        self._write(
            lambda db: db.execute(
                "UPDATE rating SET ts = ?, clock_synced = ? WHERE seq = ? AND ts IS NULL",
                (ts, int(clock_synced), seq),
            )
        )

    def mark_attempt(self, seq: int) -> None:
        """Count a send attempt (for the operator's view of stuck ratings)."""
        self._write(
            lambda db: db.execute("UPDATE rating SET attempts = attempts + 1 WHERE seq = ?", (seq,))
        )

    def delete_rating(self, seq: int) -> None:
        """Delete a rating at once."""
        self._write(lambda db: db.execute("DELETE FROM rating WHERE seq = ?", (seq,)))

    def mark_acked(self, seq: int, now_ms: int) -> None:
        """Record the broker's PUBACK; the row is kept a while in case the broker crashes."""
        self._write(
            lambda db: db.execute("UPDATE rating SET acked_ms = ? WHERE seq = ?", (now_ms, seq))
        )

    def requeue_acked_since(self, since_ms: int) -> int:
        """Make ratings acknowledged since `since_ms` pending again; return how many."""
        return self._write(
            lambda db: db.execute(
                "UPDATE rating SET acked_ms = NULL WHERE acked_ms >= ?", (since_ms,)
            )
        )

    def purge_acked_before(self, before_ms: int) -> int:
        """Delete ratings acknowledged before `before_ms`; return how many."""
        return self._write(
            lambda db: db.execute("DELETE FROM rating WHERE acked_ms < ?", (before_ms,))
        )

    def delete_event(self, event_id: str) -> None:
        """Delete an event after the broker's PUBACK."""
        self._write(lambda db: db.execute("DELETE FROM event WHERE id = ?", (event_id,)))

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

    def held(self) -> list[int]:
        """Return the seqs of ratings held back while their reasons are asked."""
        with self._lock:
            rows = self._db.execute("SELECT seq FROM rating WHERE held = 1 ORDER BY seq").fetchall()
        return [int(seq) for (seq,) in rows]

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
