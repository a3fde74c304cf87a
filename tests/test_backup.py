"""`windowrate backup` / `restore` on a real hall (devstack Stack: broker, influxd, gateway, server,
5 simulated kiosks): a backup taken while kiosks rate is consistent; a quiet hall restored onto
fresh directories is identical (ratings, registry with cases, dead letters, the export byte for
byte); a non-empty target and a damaged archive are refused.
"""

import fcntl
import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import create_engine, inspect, text

from common.installation import write_env_file
from devstack.postgres import PgCluster
from devstack.services import Influxd, free_port, free_ports
from devstack.stack import DEMO_HALL, Ports, Stack
from ops.archive import ArchiveError, extract_verified, write_archive
from ops.backup import last_backup, run_backup
from ops.locations import Locations
from ops.parts import PartError
from ops.restore import move_paths
from server.auth.service import create_user
from server.db.engine import Database
from server.db.models import Hall as HallRow
from storage.client import InfluxSettings
from tests.support import influx_query, wait_until

KIOSKS = 5


@dataclass
class Hall:
    """The running stack and its directories."""

    root: Path
    run: Path
    stack: Stack
    backups: Path

    @property
    def influx_url(self) -> str:
        """The original hall's InfluxDB."""
        return self.stack.influxd.url


def _ports() -> Ports:
    """Five distinct free ports."""
    return Ports(*free_ports(5))


def _env(root: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI run: no WR_ variables of this process, its own state dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WR_")}
    env["XDG_STATE_HOME"] = str(root / "state")
    env.update(extra)
    return env


def wr(root: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run `windowrate ARGS` as a process; return what it did."""
    return subprocess.run(
        [sys.executable, "-m", "windowrate", *args],
        env=_env(root, **extra),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def hall(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hall]:
    """A secured stack with 5 kiosks rating 4 per second each, exports in run/exports."""
    root = tmp_path_factory.mktemp("hall")
    run = root / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_STATE_HOME", str(root / "state"))
    mp.setenv("WR_SCORES_EXPORT_DIR", str(run / "exports"))
    stack = Stack(run, _ports())
    try:
        stack.start(kiosks=KIOSKS, rate=4.0)
        yield Hall(root, run, stack, root / "backups")
    finally:
        stack.stop()
        mp.undo()


def seqs_by_device(url: str) -> dict[str, list[int]]:
    """Every stored rating's seq, per device, sorted."""
    out: dict[str, list[int]] = {}
    for s in influx_query(url, 'SELECT "seq" FROM "rating" GROUP BY "device"'):
        out[s["tags"]["device"]] = sorted(int(v[1]) for v in s["values"])
    return out


def all_ratings(url: str) -> list[list[object]]:
    """Every rating point with every column, in time order."""
    series = influx_query(url, 'SELECT * FROM "rating"', epoch="ns")
    return [row for s in series for row in s["values"]]


def rating_ids(url: str) -> set[str]:
    """The ids of the stored ratings."""
    series = influx_query(url, 'SELECT "id" FROM "rating"')
    return {str(v[1]) for s in series for v in s["values"]}


def sql_rows(db: Path, query: str) -> list[tuple[object, ...]]:
    """Rows of a query on a SQLite file."""
    conn = sqlite3.connect(db)
    try:
        return list(conn.execute(query))
    finally:
        conn.close()


def count(db: Path, table: str) -> int:
    """Rows of one table of a SQLite file."""
    return int(str(sql_rows(db, f'SELECT count(*) FROM "{table}"')[0][0]))


def dump(db: Path) -> list[str]:
    """The SQL dump of a SQLite file."""
    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def restore_into(hall: Hall, archive: Path, name: str, *extra: str) -> tuple[Path, Influxd]:
    """Restore `archive` into a fresh run dir `name` with a fresh influxd; return both."""
    target = hall.root / name
    influxd = Influxd(hall.root / f"{name}-influxd")
    influxd.start()
    done = wr(
        hall.root,
        "restore",
        str(archive),
        "--run-dir",
        str(target),
        *extra,
        WR_SERVER_INFLUX__URL=influxd.url,
        WR_GATEWAY_INFLUX__URL=influxd.url,
    )
    assert done.returncode == 0, done.stderr
    assert "恢复完成 / restore ok" in done.stdout
    return target, influxd


def test_a_backup_while_five_kiosks_rate_is_consistent(hall: Hall) -> None:
    """Restored: each device holds seq 1..n without a gap; registry and InfluxDB agree."""
    wait_until(
        lambda: (
            len(seqs_by_device(hall.influx_url)) == KIOSKS
            and min(len(v) for v in seqs_by_device(hall.influx_url).values()) >= 5
        ),
        60,
        what="every kiosk has 5 ratings stored",
    )
    assert last_backup(hall.run / "config") is None
    before = datetime.now(UTC).replace(microsecond=0)
    done = wr(hall.root, "backup", "--run-dir", str(hall.run), "--out", str(hall.backups))
    after = datetime.now(UTC)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("备份完成 / backup ok: ") and len(done.stdout.splitlines()) == 1
    assert "[3/" in done.stderr and "influxdb" in done.stderr  # progress of each step
    (archive,) = hall.backups.glob("windowrate-backup-*.tar.gz")
    when = last_backup(hall.run / "config")
    assert when is not None and before <= when <= after  # recorded by this backup

    target, influxd = restore_into(hall, archive, "during")
    try:
        restored = seqs_by_device(influxd.url)
        assert sorted(restored) == [f"k-{i:04d}" for i in range(1, KIOSKS + 1)]
        for device, seqs in restored.items():
            assert seqs == list(range(1, len(seqs) + 1)), f"{device}: not 1..n: {seqs}"
        registry = target / "server" / "windowrate.db"
        devices = {r[0] for r in sql_rows(registry, "SELECT code FROM devices")}
        assert set(restored) <= devices
        ids = rating_ids(influxd.url)
        cases = {r[0] for r in sql_rows(registry, "SELECT rating_id FROM cases")}
        assert cases <= ids, "a case names a rating the restored InfluxDB lacks"
        # The kiosks went on rating: the original comes to hold more than the snapshot.
        wait_until(
            lambda: sum(map(len, seqs_by_device(hall.influx_url).values())) > len(ids),
            30,
            what="ratings after the backup",
        )
    finally:
        influxd.stop()

    damaged = hall.root / "damaged.tar.gz"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    done = wr(hall.root, "restore", str(damaged), "--run-dir", str(hall.root / "never"))
    assert done.returncode == 4, done.stderr
    assert not (hall.root / "never").exists()


def _publish(port: int, device: str, password: str, payload: bytes) -> None:
    """Publish one message as `device` on its rating topic, QoS 1, and wait for the PUBACK."""
    c = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=device,
        protocol=mqtt.MQTTv5,
    )
    c.username_pw_set(device, password)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.publish(f"wr/v1/{DEMO_HALL}/{device}/rating", payload, qos=1).wait_for_publish(10)
    finally:
        c.loop_stop()
        c.disconnect()


@pytest.fixture(scope="module")
def quiet(hall: Hall) -> Hall:
    """The hall with kiosks stopped, everything stored, a dead letter, an export; then
    gateway and server stopped so that nothing changes any more (influxd runs on)."""
    kiosks = hall.stack.children.pop("kiosks", None)
    if kiosks is not None:
        kiosks.terminate()
        kiosks.wait(30)
    creds = json.loads(hall.stack.credentials_file.read_text())
    _publish(hall.stack.ports.mqtt, "k-0001", creds["k-0001"], b"{not json")
    dead = hall.run / "gateway" / "dead_letters.sqlite"
    wait_until(
        lambda: dead.exists() and count(dead, "dead_letter") >= 1,
        30,
        what="the dead letter is kept",
    )
    registry = hall.run / "server" / "windowrate.db"

    def settled() -> bool:
        before = all_ratings(hall.influx_url)
        time.sleep(1.0)
        cases = count(registry, "cases")
        return before == all_ratings(hall.influx_url) and cases > 0

    wait_until(settled, 90, interval=0.5, what="every rating stored, a case opened")
    # Once server and gateway are stopped nothing changes: the backup must equal this hall.
    for name in ("server", "gateway"):
        proc = hall.stack.children.pop(name)
        proc.terminate()
        proc.wait(30)
    return hall


def _export(root: Path, run_dir: Path, out: Path) -> None:
    """`windowrate export` of today (the period of every rating) to `out`."""
    today = datetime.now(UTC).astimezone().strftime("%Y-%m-%d")
    done = wr(
        root, "export", "--run-dir", str(run_dir), "--period", "month", "--date", today,
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_a_quiet_hall_restored_onto_fresh_directories_is_identical(quiet: Hall) -> None:
    """Ratings, registry (cases), dead letters, id cache, PKI and the export are identical."""
    hall = quiet
    export = hall.run / "exports" / "job-1" / "scores.csv"
    _export(hall.root, hall.run, export)
    nobody = pwd.getpwnam("nobody")
    if os.geteuid() == 0:  # as on a hall: each file's owner (by name) comes back
        os.chown(hall.run / "pki" / "ca.crt", nobody.pw_uid, nobody.pw_gid)
    done = wr(
        hall.root, "backup", "--run-dir", str(hall.run), "--out", str(hall.backups),
        "--compress", "none", "--keep", "1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "removed 1 older" in done.stdout
    (archive,) = hall.backups.glob("windowrate-backup-*")  # --keep 1 pruned the first one
    assert archive.name.endswith(".tar")
    assert archive.stat().st_mode & 0o077 == 0  # it holds keys and passwords

    target, influxd = restore_into(hall, archive, "fresh")
    try:
        assert all_ratings(influxd.url) == all_ratings(hall.influx_url)
        assert len(all_ratings(influxd.url)) > 0
        old_db, new_db = hall.run / "server" / "windowrate.db", target / "server" / "windowrate.db"
        assert dump(new_db) == dump(old_db)
        assert count(new_db, "cases") > 0
        for name in ("dead_letters.sqlite", "recent_ids.sqlite"):
            assert dump(target / "gateway" / name) == dump(hall.run / "gateway" / name)
        for rel in ("pki/ca.crt", "pki/ca.key", "broker-auth/passwd", "exports/job-1/scores.csv"):
            assert (target / rel).read_bytes() == (hall.run / rel).read_bytes(), rel
        assert oct((target / "pki" / "ca.key").stat().st_mode & 0o777) == "0o600"
        if os.geteuid() == 0:
            st = (target / "pki" / "ca.crt").stat()
            assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid)
            assert (target / "pki" / "ca.key").stat().st_uid == 0
        server_env = (target / "config" / "server.env").read_text()
        assert str(target / "server" / "windowrate.db") in server_env
        assert str(hall.run) + "/" not in server_env
        assert influxd.url in server_env

        again = hall.root / "again.csv"
        _export(hall.root, target, again)
        assert again.read_bytes() == export.read_bytes()

        # The target is no longer empty: refused, with what was found, unless --force.
        done = wr(
            hall.root, "restore", str(archive), "--run-dir", str(target),
            WR_SERVER_INFLUX__URL=influxd.url, WR_GATEWAY_INFLUX__URL=influxd.url,
        )  # fmt: skip
        assert done.returncode == 3, done.stderr
        assert "目标不是空的" in done.stderr and "--force" in done.stderr
        for found in ("registry", "InfluxDB", "gateway", "pki", "config"):
            assert found in done.stderr, found
        done = wr(
            hall.root, "restore", str(archive), "--run-dir", str(target), "--force",
            WR_SERVER_INFLUX__URL=influxd.url, WR_GATEWAY_INFLUX__URL=influxd.url,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert all_ratings(influxd.url) == all_ratings(hall.influx_url)
        assert dump(new_db) == dump(old_db)
    finally:
        influxd.stop()


def test_a_flipped_byte_is_refused_by_checksum(quiet: Hall) -> None:
    """One byte flipped inside the registry file of an uncompressed archive: nothing restored."""
    hall = quiet
    archives = sorted(hall.backups.glob("windowrate-backup-*.tar"))
    if not archives:
        done = wr(
            hall.root, "backup", "--run-dir", str(hall.run), "--out", str(hall.backups),
            "--compress", "none",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        archives = sorted(hall.backups.glob("windowrate-backup-*.tar"))
    damaged = hall.root / "flipped.tar"
    shutil.copyfile(archives[-1], damaged)
    with tarfile.open(damaged) as tar:
        offset = tar.getmember("registry/registry.sqlite").offset_data + 4096
    with damaged.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))
    target = hall.root / "flipped-target"
    done = wr(hall.root, "restore", str(damaged), "--run-dir", str(target))
    assert done.returncode == 4, done.stderr
    assert "校验失败" in done.stderr and "registry/registry.sqlite" in done.stderr
    assert not target.exists()
    assert wr(hall.root, "restore", "--verify", str(damaged)).returncode == 4
    assert wr(hall.root, "restore", "--verify", str(archives[-1])).returncode == 0


def pg_rows(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table of a PostgreSQL database, sorted."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t: sorted(map(tuple, conn.execute(text(f'SELECT * FROM "{t}"'))), key=repr)
                for t in inspect(conn).get_table_names()
            }
    finally:
        engine.dispose()


def test_a_postgresql_registry_goes_through_pg_dump(quiet: Hall, pg: PgCluster) -> None:
    """`--config` installation with a PostgreSQL registry: backed up, refused, restored."""
    root = quiet.root / "pg"
    source_url, target_url = pg.new_database(), pg.new_database()
    db = Database(source_url)
    db.upgrade()
    with db.session() as session:
        create_user(session, "admin1", "correct horse battery", "admin")
        session.add(HallRow(code="h1", name="一号大厅"))
        session.commit()
    db.close()
    # The target as the installer leaves it: migrated registry with its own first admin.
    db = Database(target_url)
    db.upgrade()
    with db.session() as session:
        create_user(session, "installer-admin", "another horse battery", "admin")
        session.commit()
    db.close()
    config = root / "a" / "config"
    write_env_file(
        config / "server.env",
        {
            "WR_SERVER_DATABASE_URL": source_url,
            "WR_SERVER_INFLUX__URL": quiet.influx_url,
            "WR_SCORES_EXPORT_DIR": str(root / "a" / "exports"),
        },
    )
    write_env_file(config / "gateway.env", {"WR_GATEWAY_DATA_DIR": str(root / "a" / "gw")})

    # InfluxDB down: the backup fails, says so, and leaves nothing in --out.
    dead = f"http://127.0.0.1:{free_port()}"
    out = root / "out"
    done = wr(quiet.root, "backup", "--config", str(config), "--out", str(out),
              WR_SERVER_INFLUX__URL=dead)  # fmt: skip
    assert done.returncode == 1 and "备份失败" in done.stderr and "start it" in done.stderr
    assert [p.name for p in out.iterdir()] == [".windowrate-backup.lock"]
    assert last_backup(config) is None

    done = wr(quiet.root, "backup", "--config", str(config), "--out", str(out))
    assert done.returncode == 0, done.stderr
    (archive,) = out.glob("windowrate-backup-*")
    manifest_parts = _manifest(archive)["parts"]
    registry = next(p for p in manifest_parts if p["name"] == "registry")
    assert registry["kind"] == "postgresql" and "correct horse" not in json.dumps(manifest_parts)

    influxd = Influxd(root / "b-influxd")
    influxd.start()
    made = httpx.post(f"{influxd.url}/query", params={"q": "CREATE DATABASE windowrate"})
    assert made.status_code == 200  # the installer made it, empty
    target = root / "b" / "config"
    write_env_file(target / "server.env", {"WR_SERVER_HOST": "0.0.0.0"})
    over = {
        "WR_SERVER_DATABASE_URL": target_url,
        "WR_SERVER_INFLUX__URL": influxd.url,
        "WR_SCORES_EXPORT_DIR": str(root / "b" / "exports"),
        "WR_GATEWAY_DATA_DIR": str(root / "b" / "gw"),
    }
    try:
        # InfluxDB of the target down: refused before anything is written.
        done = wr(quiet.root, "restore", str(archive), "--config", str(target),
                  **{**over, "WR_SERVER_INFLUX__URL": dead})  # fmt: skip
        assert done.returncode == 1 and "start it" in done.stderr, done.stderr
        assert "0.0.0.0" in (target / "server.env").read_text()

        # Installed but without hall data: restored without --force, the files replaced.
        done = wr(quiet.root, "restore", str(archive), "--config", str(target), **over)
        assert done.returncode == 0, done.stderr
        assert "替换 / replacing 配置 / config" in done.stderr
        assert "kept from the environment: WR_GATEWAY_DATA_DIR" in done.stderr
        assert pg_rows(target_url) == pg_rows(source_url)
        assert all_ratings(influxd.url) == all_ratings(quiet.influx_url)
        assert target_url in (target / "server.env").read_text()

        done = wr(quiet.root, "restore", str(archive), "--config", str(target), **over)
        assert done.returncode == 3 and "1 halls" in done.stderr, done.stderr
        done = wr(quiet.root, "restore", str(archive), "--config", str(target), "--force", **over)
        assert done.returncode == 0, done.stderr
        assert pg_rows(target_url) == pg_rows(source_url)

        # The quiet hall's SQLite registry cannot go into PostgreSQL: refused before writing.
        (sqlite_archive,) = quiet.backups.glob("windowrate-backup-*.tar")
        elsewhere = root / "c"
        done = wr(quiet.root, "restore", str(sqlite_archive), "--run-dir", str(elsewhere),
                  WR_SERVER_DATABASE_URL=pg.new_database(),
                  WR_SERVER_INFLUX__URL=influxd.url)  # fmt: skip
        assert done.returncode == 1 and "SQLite registry" in done.stderr, done.stderr
        assert not elsewhere.exists()
    finally:
        influxd.stop()


def _manifest(archive: Path) -> dict[str, Any]:
    """The manifest of an archive."""
    with tarfile.open(archive) as tar:
        f = tar.extractfile("manifest.json")
        assert f is not None
        return dict(json.loads(f.read()))


def test_paths_under_the_old_directory_move_to_the_new_one() -> None:
    """Relocation rewrites whole path components only, also inside a sqlite URL."""
    moves = [("/srv/old", "/data/new")]
    assert move_paths("/srv/old/server/x.db", moves) == "/data/new/server/x.db"
    assert move_paths("sqlite:////srv/old/server/x.db", moves) == "sqlite:////data/new/server/x.db"
    assert move_paths('["/srv/old/a", "/srv/old"]', moves) == '["/data/new/a", "/data/new"]'
    assert move_paths("/srv/older/x", moves) == "/srv/older/x"
    assert move_paths("/x/srv/old/y", moves) == "/x/srv/old/y"


def test_an_archive_with_an_unsafe_path_is_refused(tmp_path: Path) -> None:
    """A member named `../…` is never written outside the staging directory."""
    evil = tmp_path / "evil.tar"
    payload = tmp_path / "payload"
    payload.write_text("x")
    with tarfile.open(evil, "w") as tar:
        tar.add(payload, arcname="../escaped")
    with pytest.raises(ArchiveError, match="unsafe path"):
        extract_verified(evil, tmp_path / "staging", lambda _m: None)
    assert not (tmp_path / "escaped").exists()


def test_one_backup_at_a_time_and_leftovers_of_a_killed_one_go(tmp_path: Path) -> None:
    """A second backup into the same directory is refused; a killed one's debris is removed."""
    out = tmp_path / "out"
    out.mkdir()
    loc = Locations(
        config_dir=None,
        registry_url=f"sqlite:///{tmp_path / 'missing.db'}",
        gateway_dir=tmp_path / "gw",
        pki_dir=None,
        broker_auth_dir=None,
        export_dir=tmp_path / "exports",
        influx=InfluxSettings(url=f"http://127.0.0.1:{free_port()}"),
    )
    with (out / ".windowrate-backup.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(PartError, match="another backup"):
            run_backup(loc, out, installation={})
    (out / ".windowrate-backup-killed").mkdir()
    (out / "windowrate-backup-20260101T000000Z.tar.gz.partial").write_bytes(b"half")
    with pytest.raises(PartError, match=r"registry .* does not exist"):
        run_backup(loc, out, installation={})
    assert sorted(p.name for p in out.iterdir()) == [".windowrate-backup.lock"]


def _archive(tmp_path: Path, **manifest: Any) -> Path:
    """A small valid archive of one file, with `manifest` fields changed."""
    staging = tmp_path / "staging"
    (staging / "pki").mkdir(parents=True)
    (staging / "pki" / "ca.crt").write_text("cert")
    head: dict[str, Any] = {"format": "windowrate-backup", "version": 1, "parts": []}
    head.update(manifest)
    return write_archive(staging, head, tmp_path / "a.tar", "none").path


def test_archives_of_another_version_or_with_strange_members_are_refused(tmp_path: Path) -> None:
    """Unknown version, a symlink member, a member not in SHA256SUMS: each refused by name."""
    extract_verified(_archive(tmp_path / "ok"), tmp_path / "ok" / "x", lambda _m: None)

    with pytest.raises(ArchiveError, match="unsupported backup format"):
        extract_verified(_archive(tmp_path / "v", version=99), tmp_path / "v" / "x", print)

    linked = _archive(tmp_path / "l")
    with tarfile.open(linked, "a") as tar:
        link = tarfile.TarInfo("pki/evil")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(link)
    with pytest.raises(ArchiveError, match="non-regular file 'pki/evil'"):
        extract_verified(linked, tmp_path / "l" / "x", print)

    extra = _archive(tmp_path / "e")
    (tmp_path / "planted").write_text("x")
    with tarfile.open(extra, "a") as tar:
        tar.add(tmp_path / "planted", arcname="config/planted.env")
    with pytest.raises(ArchiveError, match=r"not listed: config/planted\.env"):
        extract_verified(extra, tmp_path / "e" / "x", print)
