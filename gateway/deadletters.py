"""Dead letters: every message the gateway cannot store, kept with its reason (never discarded)."""

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letter (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ms INTEGER NOT NULL,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letter_reason ON dead_letter (reason);
"""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One kept message."""

    n: int
    received_ms: int
    topic: str
    reason: str
    detail: str
    payload: bytes


class DeadLetterStore:
    """SQLite file of dead letters; a batch is committed (fsync) before its messages are acked."""

    def __init__(self, path: Path) -> None:
        """Open or create the store."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def add_many(self, letters: list[tuple[int, str, str, str, bytes]]) -> None:
        """Commit (received_ms, topic, reason, detail, payload) rows in one transaction."""
        if not letters:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO dead_letter (received_ms, topic, reason, detail, payload)"
                " VALUES (?, ?, ?, ?, ?)",
                letters,
            )
            self._db.execute("COMMIT")

    def iter(self, reason: str | None = None) -> Iterator[DeadLetter]:
        """Yield kept letters in arrival order, optionally of one reason."""
        sql = "SELECT n, received_ms, topic, reason, detail, payload FROM dead_letter"
        args: tuple[str, ...] = ()
        if reason:
            sql += " WHERE reason = ?"
            args = (reason,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY n", args).fetchall()
        for row in rows:
            yield DeadLetter(*row)

    def counts(self) -> dict[str, int]:
        """Return the number of kept letters per reason."""
        with self._lock:
            rows = self._db.execute(
                "SELECT reason, count(*) FROM dead_letter GROUP BY reason"
            ).fetchall()
        return {r: int(c) for r, c in rows}

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
