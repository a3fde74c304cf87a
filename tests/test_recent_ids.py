"""The gateway's id cache: it survives a restart, keeps its cap, and takes over the old table."""

import sqlite3
from pathlib import Path

from gateway.recent import RecentIds, Stored
from storage.schema import rating_time_ns


def _stored(i: int) -> Stored:
    """The cache entry of rating number `i`."""
    ts = 1_700_000_000_000 + i
    return (f"id-{i}", ("d1", i, 3, ts), ("h1", "d1", "a1", 3, rating_time_ns(ts, i)))


def test_ids_and_slots_survive_a_reopen(tmp_path: Path) -> None:
    """What was persisted is known again after a restart, the same tuples as before."""
    cache = RecentIds(tmp_path / "r.sqlite", 100)
    cache.remember([_stored(i) for i in range(1, 11)])
    cache.close()
    again = RecentIds(tmp_path / "r.sqlite", 100)
    rid, fp, slot = _stored(7)
    assert again.get(rid) == fp and again.holder(slot) == rid
    assert again.get("id-11") is None


def test_reserved_but_not_persisted_is_forgotten_on_restart(tmp_path: Path) -> None:
    """Reserve is memory only: a batch never stored is not remembered after a crash."""
    cache = RecentIds(tmp_path / "r.sqlite", 100)
    cache.reserve([_stored(1)])
    assert cache.get("id-1") is not None
    cache.close()
    assert RecentIds(tmp_path / "r.sqlite", 100).get("id-1") is None


def test_the_cap_holds_in_memory_and_across_a_reopen(tmp_path: Path) -> None:
    """Only the newest `cap` ids are kept; the disk keeps enough batches to cover them."""
    cache = RecentIds(tmp_path / "r.sqlite", 25)
    for start in range(0, 100, 10):
        cache.remember([_stored(i) for i in range(start, start + 10)])
    assert len(cache.ids) == 25 and cache.get("id-74") is None and cache.get("id-75")
    cache.close()
    again = RecentIds(tmp_path / "r.sqlite", 25)
    assert set(again.ids) == {f"id-{i}" for i in range(75, 100)}
    rows = sqlite3.connect(tmp_path / "r.sqlite").execute("SELECT count(*) FROM stored_batch")
    assert rows.fetchone()[0] <= 4


def test_the_former_one_row_per_rating_table_is_carried_over(tmp_path: Path) -> None:
    """A file written by the earlier gateway (table recent_rating) loads, then is converted."""
    db = sqlite3.connect(tmp_path / "r.sqlite")
    db.execute(
        "CREATE TABLE recent_rating (n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL"
        " UNIQUE, hall TEXT NOT NULL, device TEXT NOT NULL, window TEXT NOT NULL,"
        " seq INTEGER NOT NULL, level INTEGER NOT NULL, ts INTEGER NOT NULL)"
    )
    db.execute(
        "INSERT INTO recent_rating (id, hall, device, window, seq, level, ts)"
        " VALUES ('id-5', 'h1', 'd1', 'a1', 5, 3, 1700000000005)"
    )
    db.commit()
    db.close()
    cache = RecentIds(tmp_path / "r.sqlite", 100)
    rid, fp, slot = _stored(5)
    assert cache.get(rid) == fp and cache.holder(slot) == rid
    tables = sqlite3.connect(tmp_path / "r.sqlite").execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'"
    )
    assert "recent_rating" not in {name for (name,) in tables}
