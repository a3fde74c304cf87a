"""Upgrade in place: a hall made and run by the previous release, upgraded by install.sh.

The previous release is commit 2335129 (the last before issue 13), taken with `git archive`
and run with this project's venv and PYTHONPATH. It had no installer: its operator wrote the
env files by its samples (passwords inline, scores settings in their own scores.env), made
the PKI with `windowrate pki init`, the broker config with `windowrate broker conf`, the
logins with `broker account` and `device add`, the first admin with `server create-admin`.
Its services make ratings in InfluxDB, a dead letter and a case. Then:

- a copy of the new tree with an injected failing migration is installed over it: the
  installer stops with what to do, and the old services, data and configs are untouched;
- the real new tree is installed over it: everything is still there, the registry is at
  the new head, the configs are converted, and the units run as written serve the old
  logins (the device's and the admin's).
"""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from devstack.services import Influxd, die_with_parent, port_open
from ops.upgrade import head_revision
from tests.support import influx_query, rating_doc, wait_until
from tests.test_install import REPO, Hall, clean_env, hall_ports, install, temp_root

OLD_COMMIT = "2335129"
OLD_HEAD = "0006"
ADMIN_PASSWORD = "upgrade-test-admin-pw"
RATINGS = 5
HOST = "127.0.0.1"


@dataclass
class OldHall:
    """A hall of the previous release under `root`, its services running."""

    root: Path
    src: Path
    ports: dict[str, int]
    device_password: str = ""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    influxd: Influxd | None = None

    @property
    def etc(self) -> Path:
        """/etc/windowrate under the root."""
        return self.root / "etc/windowrate"

    @property
    def state(self) -> Path:
        """/var/lib/windowrate under the root."""
        return self.root / "var/lib/windowrate"

    def env(self, name: str) -> dict[str, str]:
        """An old env file as its services read it (plain KEY=value lines)."""
        lines = (self.etc / name).read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))

    def cli(self, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        """The previous release's `windowrate`."""
        proc = subprocess.run(
            [sys.executable, "-m", "windowrate", "--log-level", "WARNING", *args],
            env={**clean_env(), "PYTHONPATH": str(self.src), **env},
            cwd=self.src,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        return proc

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        """Start an old service."""
        with (self.root / f"old-{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                args,
                env={**clean_env(), "PYTHONPATH": str(self.src), **env},
                cwd=self.src,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    def stop(self, *names: str) -> None:
        """Stop old services (as `systemctl stop` would)."""
        for name in names:
            proc = self.procs.pop(name, None)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        if "influxd" in names and self.influxd is not None:
            self.influxd.stop()


def write_old_env(path: Path, values: dict[str, str]) -> None:
    """An env file as an operator of the previous release wrote it from its sample."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# written by hand from the release's sample\n"
    path.write_text(text + "".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)


def registry(db: Path, sql: str) -> list[tuple[object, ...]]:
    """Rows of a query on the SQLite registry."""
    with sqlite3.connect(db) as conn:
        return list(conn.execute(sql))


def publish(port: int, ca: Path, password: str, doc: object) -> None:
    """Publish as the device over TLS with mosquitto_pub (QoS 1)."""
    pub = subprocess.run(
        ["mosquitto_pub", "-h", HOST, "-p", str(port), "--cafile", str(ca), "-V", "mqttv5",
         "-q", "1", "-i", "d-0001", "-u", "d-0001", "-P", password,
         "-t", "wr/v1/h1/d-0001/rating", "-m", json.dumps(doc)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert pub.returncode == 0, pub.stderr


def count(influx_port: int) -> int:
    """Ratings of the device in InfluxDB."""
    q = 'SELECT count("seq") FROM "rating" WHERE "device" = \'d-0001\''
    series = influx_query(f"http://{HOST}:{influx_port}", q)
    return int(series[0]["values"][0][1]) if series else 0


def make_old_hall(root: Path, work: Path) -> OldHall:
    """Install and run the previous release by its README; make its data."""
    src = work / "old"
    src.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", OLD_COMMIT], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    p = hall_ports()
    old = OldHall(root, src, p)
    etc, state = old.etc, old.state
    old.cli("pki", "init", "--dir", str(etc / "pki"), "--host", HOST, env={})
    server = {
        "WR_SERVER_HOST": HOST,
        "WR_SERVER_PORT": str(p["server"]),
        "WR_SERVER_DATABASE_URL": f"sqlite:///{state / 'server/windowrate.db'}",
        "WR_SERVER_INFLUX__URL": f"http://{HOST}:{p['influx']}",
        "WR_SERVER_MQTT__HOST": HOST,
        "WR_SERVER_MQTT__PORT": str(p["mqtt"]),
        "WR_SERVER_MQTT__USERNAME": "server",
        "WR_SERVER_GATEWAY_METRICS_URLS": f'["http://{HOST}:{p["metrics"]}/metrics"]',
        "WR_SERVER_PROVISIONING__BROKER_AUTH_DIR": str(state / "broker/auth"),
        "WR_SERVER_PROVISIONING__CA_FILE": str(etc / "pki/ca.crt"),
    }
    logins = {}
    for role in ("gateway", "server"):
        made = old.cli("broker", "account", "--role", role, "--username", role, "--json",
                       env=server)  # fmt: skip
        logins[role] = json.loads(made.stdout)["password"]
    added = old.cli("device", "add", "--hall", "h1", "--id", "d-0001", "--window", "w01",
                    "--json", env=server)  # fmt: skip
    old.device_password = json.loads(added.stdout)["password"]
    old.cli("server", "create-admin", "--username", "admin",
            env={**server, "WR_ADMIN_PASSWORD": ADMIN_PASSWORD})  # fmt: skip
    write_old_env(etc / "server.env", {**server, "WR_SERVER_MQTT__PASSWORD": logins["server"]})
    write_old_env(etc / "scores.env", {"WR_SCORES_EXPORT_DIR": str(state / "server/exports")})
    gateway = {
        "WR_GATEWAY_MQTT__HOST": HOST,
        "WR_GATEWAY_MQTT__PORT": str(p["mqtt"]),
        "WR_GATEWAY_MQTT__USERNAME": "gateway",
        "WR_GATEWAY_MQTT__PASSWORD": logins["gateway"],
        "WR_GATEWAY_INFLUX__URL": f"http://{HOST}:{p['influx']}",
        "WR_GATEWAY_METRICS__PORT": str(p["metrics"]),
        "WR_GATEWAY_DATA_DIR": str(state / "gateway"),
    }
    write_old_env(etc / "gateway.env", gateway)
    (state / "broker").mkdir(parents=True, exist_ok=True)
    old.cli("broker", "conf", "--pki-dir", str(etc / "pki"), "--auth-dir",
            str(state / "broker/auth"), "--data-dir", str(state / "broker"), "--plain-port",
            str(p["mqtt"]), "--tls-port", str(p["mqtt-tls"]), "--user", "root",
            "--out", str(etc / "mosquitto.conf"), env=server)  # fmt: skip
    old.spawn("broker", [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c",
                         str(etc / "mosquitto.conf")], {})  # fmt: skip
    old.influxd = Influxd(state / "influxdb", port=p["influx"], rpc_port=p["influx-rpc"])
    old.influxd.start()
    wait_until(lambda: port_open(HOST, p["mqtt-tls"]), 30, what="the old broker")
    python = [sys.executable, "-m", "windowrate"]
    old.spawn("gateway", [*python, "gateway", "run"], old.env("gateway.env"))
    old.spawn("server", [*python, "server", "run"], {**old.env("server.env"),
                                                     **old.env("scores.env")})  # fmt: skip
    wait_until(lambda: port_open(HOST, p["server"]), 60, what="the old server")
    ca = etc / "pki/ca.crt"
    for seq in range(1, RATINGS + 1):
        publish(
            p["mqtt-tls"],
            ca,
            old.device_password,
            rating_doc("h1", "d-0001", seq, window="w01", level=1 if seq == 3 else 5),
        )
    publish(p["mqtt-tls"], ca, old.device_password, {"v": 1, "not": "a rating"})
    db = state / "server/windowrate.db"
    wait_until(lambda: count(p["influx"]) == RATINGS, 60, what="the old gateway's ratings")
    wait_until(lambda: registry(db, "SELECT count(*) FROM cases")[0][0] == 1, 60,
               what="the old server's case")  # fmt: skip
    letters = old.cli("gateway", "dead-letters", "--json", env=gateway).stdout.splitlines()
    assert len(letters) == 1
    return old


@pytest.fixture(scope="module")
def old_hall() -> Iterator[OldHall]:
    """The previous release's hall, running."""
    root, work = temp_root(), Path(tempfile.mkdtemp(prefix="wr-upgrade-"))
    old = make_old_hall(root, work)
    yield old
    old.stop(*list(old.procs), "influxd")
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def failing_tree(old_hall: OldHall) -> Path:
    """A copy of this tree with one more migration, which fails."""
    copy = old_hall.src.parent / "failing"
    copy.mkdir()
    tar = subprocess.run(
        ["tar", "-C", str(REPO), "--exclude=./.git", "--exclude=./.venv", "--exclude=./var",
         "--exclude=node_modules", "--exclude=./build", "--exclude=*.egg-info",
         "--exclude=__pycache__", "--exclude=./tests", "-cf", "-", "."],
        capture_output=True, check=True,
    )  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(copy)], input=tar.stdout, check=True)
    (copy / "server/migrations/versions/0999_injected_failure.py").write_text(
        '"""Injected by tests/test_upgrade.py: a migration that fails."""\n\n'
        'revision = "0999"\n'
        f'down_revision = "{head_revision()}"\n'
        "branch_labels = None\ndepends_on = None\n\n\n"
        "def upgrade() -> None:\n"
        '    """Fail."""\n'
        '    raise RuntimeError("injected migration failure")\n'
    )
    return copy


def test_failing_migration_leaves_the_old_release_running(
    old_hall: OldHall, failing_tree: Path
) -> None:
    """The installer stops before changing anything; the old services keep serving."""
    configs = {p.name: p.read_bytes() for p in old_hall.etc.glob("*.env")}
    copy = failing_tree
    args = [str(copy / "deploy/hall/install.sh"), "--root", str(old_hall.root), "--skip-apt",
            "--user", "daemon", "--host", HOST]  # fmt: skip
    for name, port in old_hall.ports.items():
        args += [f"--{name}-port", str(port)]
    proc = subprocess.run(args, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "UPGRADE STOPPED" in proc.stderr
    assert "injected migration failure" in proc.stderr
    assert "What to do" in proc.stderr
    assert not (old_hall.root / "opt/windowrate/current").exists()
    db = old_hall.state / "server/windowrate.db"
    assert registry(db, "SELECT version_num FROM alembic_version") == [(OLD_HEAD,)]
    assert {p.name: p.read_bytes() for p in old_hall.etc.glob("*.env")} == configs
    assert all(p.poll() is None for p in old_hall.procs.values())
    url = f"http://{HOST}:{old_hall.ports['server']}/api/auth/login"
    resp = httpx.post(url, json={"username": "admin", "password": ADMIN_PASSWORD})
    assert resp.status_code == 200, resp.text
    publish(old_hall.ports["mqtt-tls"], old_hall.etc / "pki/ca.crt", old_hall.device_password,
            rating_doc("h1", "d-0001", RATINGS + 1, window="w01"))  # fmt: skip
    wait_until(lambda: count(old_hall.ports["influx"]) == RATINGS + 1, 60, what="old still works")


def test_upgrade_keeps_everything(old_hall: OldHall, failing_tree: Path) -> None:
    """Stop gateway and server, upgrade, run the new units: all data and logins are there.

    First the failing release's real migration step alone (past its check): it fails, and
    the SQLite registry is put back as it was.
    """
    stored = count(old_hall.ports["influx"])
    old_hall.stop("server", "gateway")
    db = old_hall.state / "server/windowrate.db"
    tables = registry(db, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    failed = subprocess.run(
        [sys.executable, "-m", "windowrate", "hall", "migrate", "--root", str(old_hall.root)],
        env={**clean_env(), "PYTHONPATH": str(failing_tree)},
        cwd=failing_tree,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "failed and was undone" in failed.stderr and "What to do" in failed.stderr
    assert registry(db, "SELECT version_num FROM alembic_version") == [(OLD_HEAD,)]
    assert registry(db, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name") == (
        tables
    )
    out = install(old_hall.root, old_hall.ports)
    assert f"registry migrated: {OLD_HEAD} → {head_revision()}" in out
    assert "moved WR_GATEWAY_MQTT__PASSWORD of gateway.env" in out
    assert "merged" in out and (old_hall.etc / "scores.env.converted").is_file()
    old_hall.stop("broker", "influxd")
    hall = Hall(old_hall.root, old_hall.ports)
    try:
        for unit, port in (
            ("windowrate-influxd.service", "influx"),
            ("windowrate-broker.service", "mqtt-tls"),
            ("windowrate-gateway.service", "metrics"),
            ("windowrate-server.service", "server"),
        ):
            proc = hall.start(unit)
            wait_until(
                lambda port=port, proc=proc: (
                    port_open(HOST, old_hall.ports[port]) or proc.poll() is not None
                ),
                60,
                what=unit,
            )
            assert proc.poll() is None, (hall.root / f"{unit}.log").read_text()[-3000:]
        assert count(old_hall.ports["influx"]) == stored
        assert registry(db, "SELECT version_num FROM alembic_version") == [(head_revision(),)]
        assert registry(db, "SELECT code FROM halls") == [("h1",)]
        assert [r[0] for r in registry(db, "SELECT username FROM users")] == ["admin"]
        assert registry(db, "SELECT count(*) FROM cases") == [(1,)]
        assert ("d-0001",) in registry(db, "SELECT code FROM devices")
        letters = hall.cli("gateway", "dead-letters", "--config", str(hall.etc), "--json")
        assert letters.returncode == 0, letters.stderr
        assert len(letters.stdout.splitlines()) == 1
        for name in ("server.env", "gateway.env"):
            text = (hall.etc / name).read_text()
            assert "PASSWORD=" not in text and "PASSWORD_FILE=" in text
            assert (hall.etc / name).stat().st_mode & 0o777 == 0o600
        url = f"http://{HOST}:{old_hall.ports['server']}/api/auth/login"
        wait_until(lambda: httpx.get(url.replace("/api/auth/login", "/health")).status_code
                   in (200, 503), 30, what="the new server")  # fmt: skip
        resp = httpx.post(url, json={"username": "admin", "password": ADMIN_PASSWORD})
        assert resp.status_code == 200, resp.text
        publish(old_hall.ports["mqtt-tls"], hall.etc / "pki/ca.crt", old_hall.device_password,
                rating_doc("h1", "d-0001", stored + 1, window="w01"))  # fmt: skip
        wait_until(lambda: count(old_hall.ports["influx"]) == stored + 1, 60, what="new rating")
    finally:
        hall.stop_all()
        os.sync()


def test_check_names_a_config_the_new_release_refuses(tmp_path: Path) -> None:
    """An env file with a variable the new settings do not know stops the upgrade, named."""
    etc = tmp_path / "etc/windowrate"
    write_old_env(etc / "server.env", {"WR_SERVER_DATABASE_URL": f"sqlite:///{tmp_path}/r.db",
                                        "WR_SERVER_MQTT__PASWORD": "typo"})  # fmt: skip
    write_old_env(etc / "gateway.env", {})
    proc = subprocess.run(
        [sys.executable, "-m", "windowrate", "hall", "check", "--root", str(tmp_path)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "UPGRADE STOPPED" in proc.stderr
    assert f"{etc / 'server.env'} does not suit the new release" in proc.stderr
    assert "WR_SERVER_MQTT__PASWORD" in proc.stderr
    assert "typo" not in proc.stderr
