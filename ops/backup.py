"""`windowrate backup`: every part of a running hall into one verified archive.

Order matters for consistency: the registry first, then the gateway's files, then InfluxDB.
Every case in the registry names a rating stored before the registry was copied, so the
later InfluxDB snapshot holds it; every id in the gateway's id cache was stored before the
cache was copied, so InfluxDB holds it too.
"""

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from ops import parts
from ops.archive import FORMAT, PREFIX, SUFFIXES, VERSION, Compression, write_archive
from ops.locations import STATE_FILE, Locations

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
STAGING_PREFIX = ".windowrate-backup-"
LOCK_FILE = ".windowrate-backup.lock"

CONSISTENCY = {
    "registry": "one snapshot: SQLite online backup in one step, or pg_dump",
    "gateway": "each file one snapshot (SQLite online backup), taken before InfluxDB",
    "influxdb": "influxd backup -portable: each shard as of its snapshot, after the registry",
    "files": "copied file by file (they change only when an operator changes them)",
}


@dataclass(frozen=True)
class BackupResult:
    """A finished backup: the archive, its size, file count, duration and pruned archives."""

    archive: Path
    bytes: int
    files: int
    seconds: float
    removed: list[Path]


def _version() -> str:
    """The installed WindowRate version."""
    try:
        return metadata.version("windowrate")
    except metadata.PackageNotFoundError:
        return "unknown"


def _size(path: Path) -> tuple[int, int]:
    """Files and bytes under `path` (a file or a directory)."""
    if path.is_file():
        return 1, path.stat().st_size
    files = parts.tree_files(path)
    return len(files), sum(f.stat().st_size for f in files)


def _archive_name(out_dir: Path, now: datetime, compression: Compression) -> Path:
    """A new archive path in `out_dir`, named by its UTC time (sortable)."""
    stem = f"{PREFIX}{now:%Y%m%dT%H%M%SZ}"
    path = out_dir / f"{stem}{SUFFIXES[compression]}"
    n = 1
    while path.exists():
        path = out_dir / f"{stem}-{n}{SUFFIXES[compression]}"
        n += 1
    return path


def archives_in(out_dir: Path) -> list[Path]:
    """The complete backup archives in `out_dir`, oldest first."""
    found = [
        p
        for p in out_dir.iterdir()
        if p.name.startswith(PREFIX) and p.name.endswith(tuple(SUFFIXES.values()))
    ]
    return sorted(found, key=lambda p: p.name)


def prune(out_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` archives in `out_dir`; return those deleted."""
    old = archives_in(out_dir)[:-keep] if keep > 0 else []
    for p in old:
        p.unlink()
    return old


def run_backup(
    loc: Locations,
    out_dir: Path,
    *,
    installation: dict[str, Any],
    compression: Compression = "gz",
    keep: int = 0,
    influx_rpc: str | None = None,
    progress: Progress = lambda _m: None,
) -> BackupResult:
    """Back up every part named by `loc` into a new archive in `out_dir`."""
    start = time.monotonic()
    now = datetime.now(UTC)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(out_dir):
        _remove_leftovers(out_dir)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
        try:
            manifest = _manifest(loc, installation, now)
            steps = _steps(loc, staging, influx_rpc)
            for i, (name, kind, source, owner, run) in enumerate(steps, 1):
                t0 = time.monotonic()
                progress(f"[{i}/{len(steps)}] {name} ({source}) …")
                rel = run()
                files, size = _size(staging / rel) if rel else (0, 0)
                progress(
                    f"[{i}/{len(steps)}] {name}: {files} 个文件 / files, {size / 1e6:.1f} MB, "
                    f"{time.monotonic() - t0:.1f} s"
                )
                manifest["parts"].append(
                    {
                        "name": name,
                        "kind": kind,
                        "source": source,
                        "path": rel,
                        "files": files,
                        "bytes": size,
                        "owner": owner,
                        "consistency": CONSISTENCY.get(name, CONSISTENCY["files"]),
                    }
                )
            progress("写入归档 / writing the archive …")
            out = _archive_name(out_dir, now, compression)
            written = write_archive(staging, manifest, out, compression, progress)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        removed = prune(out_dir, keep) if keep else []
    if loc.config_dir is not None:
        record_success(loc.config_dir, written.path, written.bytes, now)
    seconds = time.monotonic() - start
    return BackupResult(written.path, written.bytes, written.files, seconds, removed)


def _manifest(loc: Locations, installation: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The manifest's head; parts and files are added as they are made."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "created": now.isoformat(timespec="seconds"),
        "windowrate": _version(),
        "hostname": socket.gethostname(),
        "installation": installation,
        "influx_database": loc.influx.database,
        "parts": [],
    }


@contextlib.contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """Hold the lock of `out_dir` (one backup at a time into it) or raise PartError."""
    fd = os.open(out_dir / LOCK_FILE, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise parts.PartError(
                f"另一个备份正在写入 / another backup is writing into {out_dir} now: "
                "wait for it to finish"
            ) from exc
        yield
    finally:
        os.close(fd)


def _remove_leftovers(out_dir: Path) -> None:
    """Remove what a killed backup left in `out_dir` (its staging dir, a .partial archive)."""
    for p in out_dir.iterdir():
        if p.name.startswith(STAGING_PREFIX) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith(PREFIX) and p.name.endswith(".partial"):
            p.unlink()


StepRun = Callable[[], str | None]


def _steps(
    loc: Locations, staging: Path, influx_rpc: str | None
) -> list[tuple[str, str, str, dict[str, str] | None, StepRun]]:
    """The parts to back up, in order: (name, kind, source, owner, run → path in archive)."""
    steps: list[tuple[str, str, str, dict[str, str] | None, StepRun]] = []
    db_file = parts.sqlite_path(loc.registry_url)
    if db_file is not None:
        if not db_file.is_file():
            raise parts.PartError(
                f"注册库不存在 / the registry {db_file} does not exist: "
                "check WR_SERVER_DATABASE_URL of this installation"
            )

        def registry_sqlite() -> str:
            parts.sqlite_backup(db_file, staging / "registry" / "registry.sqlite")
            return "registry/registry.sqlite"

        steps.append(("registry", "sqlite", str(db_file), parts.owner_of(db_file), registry_sqlite))
    else:

        def registry_pg() -> str:
            (staging / "registry").mkdir()
            parts.pg_dump(loc.registry_url, staging / "registry" / "registry.pgdump")
            return "registry/registry.pgdump"

        steps.append(("registry", "postgresql", parts.redact(loc.registry_url), None, registry_pg))

    gw = loc.gateway_dir

    def gateway() -> str:
        dst = staging / "gateway"
        dst.mkdir()
        if gw.is_dir():
            for f in sorted(gw.glob("*.sqlite")):
                parts.sqlite_backup(f, dst / f.name)
        return "gateway"

    steps.append(("gateway", "sqlite-files", str(gw), _owner(gw), gateway))

    def influx() -> str:
        rpc = parts.influx_rpc(loc.influx, influx_rpc)
        parts.influx_backup(loc.influx, rpc, staging / "influxdb")
        return "influxdb"

    steps.append(("influxdb", "influxd-portable", loc.influx.url, None, influx))

    skip = [p for p in (*loc.directories().values(), gw) if p is not None]
    for name, where in (*loc.directories().items(), ("config", loc.config_dir)):
        if where is None:
            continue

        def copy(name: str = name, where: Path = where) -> str:
            dst = staging / name
            dst.mkdir()
            others = [s for s in skip if s != where]
            if name == "config":
                others.append(where / STATE_FILE)
            if where.is_dir():
                parts.copy_tree(where, dst, others)
            return name

        steps.append((name, "files", str(where), _owner(where), copy))
    return steps


def _owner(path: Path) -> dict[str, str] | None:
    """The owner of `path` when it exists."""
    return parts.owner_of(path) if path.exists() else None


def record_success(config_dir: Path, archive: Path, size: int, when: datetime) -> None:
    """Write `backup-state.json` into the config directory (read by `last_backup`)."""
    state = {"last_success": when.isoformat(), "archive": str(archive), "bytes": size}
    path = config_dir / STATE_FILE
    tmp = path.with_name(f".{STATE_FILE}.tmp")
    try:
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.chmod(tmp, 0o644)
        tmp.replace(path)
    except OSError as exc:
        log.warning(
            "备份成功但无法记录 / backup done but %s not written (%s): the doctor will not see it",
            path,
            exc,
        )


def last_backup(config_dir: Path) -> datetime | None:
    """When the last backup of this installation completed (UTC), or None if never."""
    try:
        state = json.loads((config_dir / STATE_FILE).read_text(encoding="utf-8"))
        when = datetime.fromisoformat(state["last_success"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
