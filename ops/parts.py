"""Each part of a backup: copy it out of a running hall consistently, and put it back.

SQLite files are read with SQLite's online backup API in one step (one read transaction: a
snapshot as of its start, writers go on); PostgreSQL with `pg_dump` (one repeatable-read
snapshot); InfluxDB with `influxd backup -portable` (a snapshot of each shard); plain
directories (PKI, configs, exports) are copied file by file.
"""

import contextlib
import grp
import logging
import os
import pwd
import shutil
import sqlite3
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL, make_url

from ops.archive import walk_files
from storage.client import InfluxClient, InfluxError, InfluxSettings

log = logging.getLogger(__name__)

SQLITE_SUFFIXES = ("-wal", "-shm", "-journal")
DEFAULT_RPC_PORT = 8088


class PartError(Exception):
    """A part could not be backed up or restored; the message says what to do."""


# --- ownership ---


def owner_of(path: Path) -> dict[str, str]:
    """The user and group names owning `path` (to give them back on restore)."""
    st = path.stat()
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return {"user": user, "group": group}


def give_back(root: Path, owner: dict[str, str] | None) -> None:
    """As root, chown a restored part's directory to its recorded owner (by name).

    Its files carry their own owners (kept in the archive's tar headers); a directory the
    restore had to create would otherwise belong to root and the service could not write.
    """
    if owner is None or os.geteuid() != 0 or not root.is_dir():
        return
    try:
        uid = pwd.getpwnam(owner["user"]).pw_uid
        gid = grp.getgrnam(owner["group"]).gr_gid
    except KeyError:
        log.warning("owner %s:%s of %s not on this machine", owner["user"], owner["group"], root)
        return
    os.chown(root, uid, gid)


def make_dirs(directory: Path, like: Path) -> None:
    """Create `directory` and its missing parents, each owned (as root) like the file `like`."""
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
        same_owner(like, d)


def same_owner(src: Path, dst: Path) -> None:
    """As root, give `dst` the owner and group of `src` (copies are root's otherwise)."""
    if os.geteuid() == 0:
        st = src.stat()
        os.chown(dst, st.st_uid, st.st_gid)


# --- SQLite ---


def sqlite_backup(src: Path, dst: Path) -> None:
    """Copy a live SQLite database with the online backup API, all pages in one step."""
    if not src.is_file():
        raise PartError(f"{src} does not exist")
    dst.parent.mkdir(parents=True, exist_ok=True)
    # Read-write like the service (a read-only open as root could leave a root-owned -shm).
    source = sqlite3.connect(src, timeout=30)
    try:
        target = sqlite3.connect(dst)
        try:
            source.backup(target, pages=-1)
        finally:
            target.close()
    finally:
        source.close()
    same_owner(src, dst)


def sqlite_restore(src: Path, dst: Path) -> None:
    """Put a backed-up SQLite file at `dst` (replacing it and its stale WAL), fsynced."""
    make_dirs(dst.parent, src)
    for suffix in SQLITE_SUFFIXES:  # a stale WAL would be replayed into the restored file
        with contextlib.suppress(FileNotFoundError):
            Path(f"{dst}{suffix}").unlink()
    tmp = dst.with_name(f".{dst.name}.restoring")
    shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o600)
    same_owner(src, tmp)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    tmp.replace(dst)


def sqlite_path(url: str) -> Path | None:
    """The file of a `sqlite:///…` URL (None for another database)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:":
        raise PartError("the registry is an in-memory SQLite database: nothing to back up")
    return Path(parsed.database).resolve()


# --- PostgreSQL ---


def _pg_program(name: str) -> str:
    """The path of pg_dump or pg_restore (PATH, then the newest /usr/lib/postgresql)."""
    found = shutil.which(name)
    if found:
        return found
    for bindir in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (bindir / name).is_file():
            return str(bindir / name)
    raise PartError(f"{name} not found: install it with `apt-get install postgresql-client`")


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq URL without the password, and an environment carrying it (never in argv)."""
    parsed: URL = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def pg_dump(url: str, dst: Path) -> None:
    """Dump the registry database (custom format, one snapshot) to `dst`."""
    libpq, env = _libpq(url)
    cmd = [_pg_program("pg_dump"), "--format=custom", "--no-owner", "--no-acl"]
    cmd += ["--file", str(dst), "--dbname", libpq]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise PartError(f"pg_dump failed: {done.stderr.strip()[-500:]}")


def pg_restore(src: Path, url: str, *, clean: bool) -> None:
    """Restore a pg_dump file into the database of `url` (dropping its objects when `clean`)."""
    libpq, env = _libpq(url)
    cmd = [_pg_program("pg_restore"), "--no-owner", "--no-acl", "--exit-on-error"]
    if clean:
        cmd += ["--clean", "--if-exists"]
    cmd += ["--single-transaction", "--dbname", libpq, str(src)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise PartError(f"pg_restore failed: {done.stderr.strip()[-500:]}")


# The registry's hall data: an installed hall before its first restore has none (its
# first admin, service accounts and audit rows are not hall data).
HALL_DATA_TABLES = ("halls", "devices", "cases")


def registry_tables(url: str) -> list[str]:
    """The tables of the registry database now (none when the SQLite file is missing)."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return []
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            return list(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def registry_hall_data(url: str) -> dict[str, int]:
    """Rows of each hall-data table that has any (empty when the registry holds no hall)."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return {}
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            present = set(inspect(conn).get_table_names())
            counts = {
                t: int(conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one())
                for t in HALL_DATA_TABLES
                if t in present
            }
    finally:
        engine.dispose()
    return {t: n for t, n in counts.items() if n}


def sqlite_rows(path: Path) -> int:
    """Rows in all tables of a SQLite file (0 when it does not exist)."""
    if not path.is_file():
        return 0
    conn = sqlite3.connect(path, timeout=30)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return sum(int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables)
    finally:
        conn.close()


def redact(url: str) -> str:
    """A database URL fit for a log or a manifest (no password)."""
    return make_url(url).render_as_string(hide_password=True)


# --- InfluxDB ---


def _influxd() -> str:
    """The influxd binary (backup and restore go through its RPC service)."""
    found = shutil.which("influxd") or shutil.which("influxd", path="/usr/sbin:/usr/bin")
    if not found:
        raise PartError("influxd not found: install it with `apt-get install influxdb`")
    return found


def influx_rpc(settings: InfluxSettings, explicit: str | None) -> str:
    """The backup/restore RPC address of the influxd behind `settings.url`.

    `explicit` when given; else the `bind-address` influxd reports in SHOW DIAGNOSTICS;
    else the URL's host with port 8088 (influxd's default).
    """
    if explicit:
        return explicit
    host = urlsplit(settings.url).hostname or "127.0.0.1"
    try:
        with InfluxClient(settings) as client:
            for s in client.series("SHOW DIAGNOSTICS"):
                if s.name == "config":
                    bind = str(next(s.rows()).get("bind-address", ""))
                    bind_host, _, port = bind.rpartition(":")
                    if port.isdigit():
                        return f"{bind_host or host}:{port}"
    except InfluxError as exc:
        log.warning("SHOW DIAGNOSTICS failed (%s); trying %s:%s", exc, host, DEFAULT_RPC_PORT)
    return f"{host}:{DEFAULT_RPC_PORT}"


def influx_has_database(settings: InfluxSettings) -> bool:
    """True when the database exists in the influxd behind `settings.url`."""
    try:
        with InfluxClient(settings) as client:
            names = [r[0] for s in client.series("SHOW DATABASES") for r in s.values]
    except InfluxError as exc:
        raise PartError(
            f"InfluxDB at {settings.url} does not answer ({exc}): start it "
            "(systemctl start windowrate-influxd) and run this again"
        ) from exc
    return settings.database in names


def influx_holds_data(settings: InfluxSettings) -> bool:
    """True when the database exists and holds any measurement."""
    if not influx_has_database(settings):
        return False
    with InfluxClient(settings) as client:
        return bool(client.series("SHOW MEASUREMENTS LIMIT 1"))


def _run_influxd(args: list[str], what: str) -> None:
    """Run `influxd backup|restore …`; raise PartError with its output on failure."""
    done = subprocess.run(
        [_influxd(), *args], capture_output=True, text=True, timeout=6 * 3600, check=False
    )
    if done.returncode != 0:
        out = (done.stderr + done.stdout).strip()[-800:]
        raise PartError(f"influxd {what} failed: {out}")


def influx_backup(settings: InfluxSettings, rpc: str, dst: Path) -> None:
    """`influxd backup -portable` of the database into the new directory `dst`."""
    if not influx_has_database(settings):
        raise PartError(
            f"InfluxDB at {settings.url} has no database {settings.database!r}: "
            "nothing was ever stored there; check WR_SERVER_INFLUX__URL"
        )
    dst.mkdir(parents=True, exist_ok=True)
    args = ["backup", "-portable", "-database", settings.database, "-host", rpc, str(dst)]
    _run_influxd(args, "backup")


def influx_restore(settings: InfluxSettings, rpc: str, src: Path) -> None:
    """`influxd restore -portable` into the influxd at `rpc`, dropping the database first.

    The caller has made sure it holds no data, or was told to replace it (--force).
    """
    if influx_has_database(settings):  # empty (made by the installer), or `drop` was given
        with InfluxClient(settings) as client:
            client.query(f'DROP DATABASE "{settings.database}"')
    args = ["restore", "-portable", "-db", settings.database, "-host", rpc, str(src)]
    _run_influxd(args, "restore")


# --- directories ---


def copy_tree(src: Path, dst: Path, skip: list[Path]) -> int:
    """Copy the regular files under `src` (not those under `skip`) to `dst`; return the count."""
    count = 0
    skip = [s.resolve() for s in skip]
    for rel in walk_files(src):
        full = (src / rel).resolve()
        if any(full == s or s in full.parents for s in skip):
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, target)
        same_owner(src / rel, target)
        count += 1
    return count


def restore_tree(src: Path, dst: Path) -> int:
    """Copy the files under `src` into `dst` keeping their modes; return the count."""
    count = 0
    for rel in walk_files(src):
        target = dst / rel
        make_dirs(target.parent, src / rel)
        tmp = target.with_name(f".{target.name}.restoring")
        shutil.copy2(src / rel, tmp)
        same_owner(src / rel, tmp)
        tmp.replace(target)
        count += 1
    return count


def tree_files(root: Path | None) -> list[Path]:
    """The regular files under `root` (none when it does not exist)."""
    if root is None or not root.is_dir():
        return []
    return [root / rel for rel in walk_files(root)]
