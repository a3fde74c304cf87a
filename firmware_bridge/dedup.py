"""The serial bridge's duplicate table: the last press taken per (board, boot), fsynced.

Duplicates are recognised by (board, boot, press) against this small SQLite table (kept
next to the identity's outbox), so neither a retransmission nor a bridge restart counts a
press twice.
"""

import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from kiosk.core.outbox import now_ms

log = logging.getLogger(__name__)

STATE_FILE = "bridge-state.sqlite"
STATE_FILES = (STATE_FILE, f"{STATE_FILE}-wal", f"{STATE_FILE}-shm")
BOOTS_KEPT = 32  # per board, in the duplicate table

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    board TEXT NOT NULL,
    boot INTEGER NOT NULL,
    last INTEGER NOT NULL DEFAULT 0,
    firmware TEXT,
    buttons INTEGER,
    pending INTEGER,
    witness INTEGER,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (board, boot)
);
"""


@dataclass(frozen=True, slots=True)
class BoardInfo:
    """A board as its HELLO described it."""

    ident: str
    boot: int
    firmware: str
    buttons: int


# Before recording press n the bridge writes (pending=n, witness=outbox.last_seq()); after
# Recorder.record returned it sets last=n. If the process dies between the two, `recover`
# compares the outbox's seq with the witness: a higher seq means the press was committed.
# This holds because the board is the only input recording ratings into its identity's
# outbox (service events do not move the seq).
class DedupStore:
    """Last press taken per (board, boot), fsynced; an intent row covers a crash mid-press."""

    def __init__(self, path: Path) -> None:
        """Open (or create) the table at `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def last(self, board: str, boot: int) -> int:
        """The last press taken from this board and boot (0: none)."""
        with self._lock:
            row = self._db.execute(
                "SELECT last FROM seen WHERE board = ? AND boot = ?", (board, boot)
            ).fetchone()
        return 0 if row is None else int(row[0])

    def note_board(self, info: BoardInfo) -> None:
        """Remember a board's HELLO, so that its boot is known after a reopen or restart."""
        with self._lock:
            self._db.execute(
                "INSERT INTO seen (board, boot, firmware, buttons, updated_ms)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (board, boot) DO UPDATE SET"
                " firmware = excluded.firmware, buttons = excluded.buttons,"
                " updated_ms = excluded.updated_ms",
                (info.ident, info.boot, info.firmware, info.buttons, now_ms()),
            )

    def board_for_boot(self, boot: int) -> BoardInfo | None:
        """The board that introduced `boot` earlier, if exactly one did."""
        with self._lock:
            rows = self._db.execute(
                "SELECT board, firmware, buttons FROM seen WHERE boot = ? AND firmware IS NOT NULL",
                (boot,),
            ).fetchall()
        if len(rows) != 1:
            return None
        board, firmware, buttons = rows[0]
        return BoardInfo(str(board), boot, str(firmware), int(buttons))

    def begin(self, board: str, boot: int, press: int, witness: int) -> None:
        """Note that press `press` is about to be recorded; `witness` is the outbox's last seq."""
        with self._lock:
            self._db.execute(
                "INSERT INTO seen (board, boot, last, pending, witness, updated_ms)"
                " VALUES (?, ?, 0, ?, ?, ?) ON CONFLICT (board, boot) DO UPDATE SET"
                " pending = excluded.pending, witness = excluded.witness,"
                " updated_ms = excluded.updated_ms",
                (board, boot, press, witness, now_ms()),
            )

    def commit(self, board: str, boot: int, press: int) -> None:
        """Press `press` was taken: duplicates of it and of earlier presses are dropped."""
        self.advance(board, boot, press)

    def abort(self, board: str, boot: int) -> None:
        """Recording failed before anything was committed: forget the intent."""
        with self._lock:
            self._db.execute(
                "UPDATE seen SET pending = NULL, witness = NULL WHERE board = ? AND boot = ?",
                (board, boot),
            )

    def advance(self, board: str, boot: int, through: int) -> bool:
        """Take every press up to `through` as done; return True if that moved the mark."""
        with self._lock:
            row = self._db.execute(
                "SELECT last FROM seen WHERE board = ? AND boot = ?", (board, boot)
            ).fetchone()
            self._db.execute(
                "INSERT INTO seen (board, boot, last, updated_ms) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (board, boot) DO UPDATE SET last = max(last, excluded.last),"
                " pending = NULL, witness = NULL, updated_ms = excluded.updated_ms",
                (board, boot, through, now_ms()),
            )
        return through > (0 if row is None else int(row[0]))

    def recover(self, outbox_last_seq: int) -> int:
        """Settle intents left by a crash; return how many turned out recorded."""
        done = 0
        with self._lock:
            rows = self._db.execute(
                "SELECT board, boot, pending, witness FROM seen WHERE pending IS NOT NULL"
            ).fetchall()
        for board, boot, pending, witness in rows:
            if witness is not None and outbox_last_seq > int(witness):
                log.warning(
                    "press %s of board %s boot %08x was recorded before a crash; marked taken",
                    pending,
                    board,
                    boot,
                )
                self.advance(board, boot, int(pending))
                done += 1
            else:
                self.abort(board, boot)
        return done

    def prune(self, board: str, keep: int = BOOTS_KEPT) -> None:
        """Keep only the `keep` most recently used boots of a board."""
        with self._lock:
            self._db.execute(
                "DELETE FROM seen WHERE board = ? AND boot NOT IN (SELECT boot FROM seen"
                " WHERE board = ? ORDER BY updated_ms DESC LIMIT ?)",
                (board, board, keep),
            )
