"""deploy/hall/install.sh into a temporary root: units verified, services run as written, TLS e2e.

The installer makes a real venv (pip, from the package index through pip's cache) and runs
its real steps. No systemd here: each unit's ExecStart is started with its EnvironmentFile=s
and Environment= lines, its User=, Group=, SupplementaryGroups= and WorkingDirectory=, as
systemd would. Not covered: the sandbox options themselves (ProtectSystem=, ReadWritePaths=
…, checked only by `systemd-analyze verify`), Restart=, the backup timer's schedule, the
standby gateway's run (its unit is verified and its environment checked), the apt step
(--skip-apt), the TLS proxy kiosks need for provisioning codes (not installed), and the
creation of the `windowrate` user (the test runs the services as `daemon`, an unprivileged
user that exists on every Debian).
"""

import json
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from dotenv import dotenv_values

from devstack.services import die_with_parent, free_port, port_open
from tests.support import influx_query, rating_doc, wait_until

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "deploy/hall/install.sh"
USER = "daemon"
ADMIN_PASSWORD = "install-test-admin-pw"


@dataclass
class Hall:
    """An installed hall under `root` and the ports it was given."""

    root: Path
    ports: dict[str, int]
    output: str = ""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def etc(self) -> Path:
        """/etc/windowrate under the root."""
        return self.root / "etc/windowrate"

    @property
    def units(self) -> Path:
        """/etc/systemd/system under the root."""
        return self.root / "etc/systemd/system"

    @property
    def windowrate(self) -> Path:
        """The installed command."""
        return self.root / "opt/windowrate/current/bin/windowrate"

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the installed `windowrate` as the operator would (root, --config of this hall)."""
        return subprocess.run(
            [str(self.windowrate), *args],
            env=env or clean_env(),
            cwd="/",
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start(self, unit: str) -> subprocess.Popen[bytes]:
        """Start a unit's ExecStart as systemd would (no systemd)."""
        proc = start_unit(self.units / unit, self.root / f"{unit}.log")
        self.procs[unit] = proc
        return proc

    def stop_all(self) -> None:
        """Stop every started service (server first)."""
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()


def clean_env() -> dict[str, str]:
    """A root shell's environment: no WR_ variables, no venv of this checkout."""
    keep = ("PATH", "LANG", "LC_ALL", "HOME", "PIP_DEFAULT_TIMEOUT", "PIP_CERT", "PIP_FIND_LINKS")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":") if ".venv" not in p)
    return env


def hall_ports() -> dict[str, int]:
    """Free ports for every listener."""
    names = ("mqtt", "mqtt-tls", "influx", "influx-rpc", "server", "metrics", "standby-metrics")
    return {n: free_port() for n in names}


def install(root: Path, ports: dict[str, int] | None, *extra: str, repo: Path = REPO) -> str:
    """Run install.sh into `root` (no ports: none of the first run's options); return output."""
    args = [str(repo / "deploy/hall/install.sh"), "--root", str(root), "--skip-apt"]
    if ports is not None:
        args += ["--user", USER, "--host", "127.0.0.1"]
        for name, port in ports.items():
            args += [f"--{name}-port", str(port)]
    proc = subprocess.run(
        [*args, *extra], env=clean_env(), capture_output=True, text=True, timeout=600, cwd="/"
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def parse_unit(path: Path) -> dict[str, list[str]]:
    """The [Service] settings of a unit file (a key may repeat)."""
    section, out = "", dict[str, list[str]]()
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def unit_environment(unit: dict[str, list[str]]) -> dict[str, str]:
    """The environment systemd gives the process: its env files in order, then Environment=."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8"}
    for f in unit.get("EnvironmentFile", []):
        env.update({k: v for k, v in dotenv_values(f, interpolate=False).items() if v is not None})
    for assignment in unit.get("Environment", []):
        key, _, value = assignment.partition("=")
        env[key] = value
    return env


def start_unit(path: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start the unit's ExecStart with its user, groups, directory and environment."""
    unit = parse_unit(path)
    extra = unit.get("SupplementaryGroups", [""])[0].split()
    with log.open("ab") as out:
        return subprocess.Popen(
            shlex.split(unit["ExecStart"][0]),
            env=unit_environment(unit),
            cwd=unit["WorkingDirectory"][0],
            user=unit["User"][0],
            group=unit["Group"][0],
            extra_groups=extra or None,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )


def temp_root() -> Path:
    """A root the service user can traverse (pytest's tmp_path is root-only)."""
    root = Path(tempfile.mkdtemp(prefix="wr-hall-"))
    root.chmod(0o755)
    return root


@pytest.fixture(scope="module")
def hall() -> Iterator[Hall]:
    """A hall installed into a temporary root, with a first admin from a file."""
    root = temp_root()
    pw = root / "admin-password"
    pw.write_text(ADMIN_PASSWORD + "\n")
    ports = hall_ports()
    h = Hall(root, ports)
    h.output = install(
        root, ports, "--admin", "admin", "--admin-password-file", str(pw), "--standby"
    )
    yield h
    h.stop_all()
    shutil.rmtree(root, ignore_errors=True)


UNITS = (
    "windowrate-influxd.service",
    "windowrate-broker.service",
    "windowrate-gateway.service",
    "windowrate-server.service",
    "windowrate-gateway-standby.service",
    "windowrate-backup.service",
    "windowrate-backup.timer",
)


def test_units_pass_systemd_analyze_verify(hall: Hall) -> None:
    """Every unit is accepted by systemd-analyze verify without a warning."""
    assert sorted(p.name for p in hall.units.iterdir()) == sorted(UNITS)
    for name in UNITS:
        proc = subprocess.run(
            ["systemd-analyze", "verify", str(hall.units / name)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        ours = [ln for ln in proc.stderr.splitlines() if str(hall.root) in ln]
        assert ours == [], ours
    for name in UNITS[:5]:
        unit = parse_unit(hall.units / name)
        for key in ("Restart", "NoNewPrivileges", "ProtectSystem", "PrivateTmp", "ReadWritePaths"):
            assert key in unit, f"{name} has no {key}="
        assert unit["ProtectSystem"] == ["strict"]


def test_configs_hold_no_secret_and_are_private(hall: Hall) -> None:
    """Env files 0600 with secrets only as _FILE; secret files 0600; the broker conf as asked."""
    for name in ("server.env", "gateway.env"):
        path = hall.etc / name
        assert path.stat().st_mode & 0o777 == 0o600
        values = dotenv_values(path, interpolate=False)
        assert not [k for k in values if k.endswith("PASSWORD")], values.keys()
        for key, value in values.items():
            if key.endswith("PASSWORD_FILE") and value:
                secret = Path(value)
                assert secret.stat().st_mode & 0o777 == 0o600
                assert secret.read_text().strip()
    conf = (hall.etc / "mosquitto.conf").read_text()
    for line in (
        f"listener {hall.ports['mqtt']} 127.0.0.1",
        f"listener {hall.ports['mqtt-tls']} 0.0.0.0",
        "use_username_as_clientid true",
        "allow_anonymous false",
        "persistence true",
        "max_queued_messages 2000000",
    ):
        assert line in conf.splitlines()
    standby = unit_environment(parse_unit(hall.units / "windowrate-gateway-standby.service"))
    assert standby["WR_GATEWAY_ROLE"] == "standby"
    assert standby["WR_GATEWAY_MQTT__USERNAME"] == "gateway"  # the primary's session
    assert standby["WR_GATEWAY_METRICS__PORT"] == str(hall.ports["standby-metrics"])
    backup = parse_unit(hall.units / "windowrate-backup.service")["ExecStart"][0]
    assert backup.endswith(
        f"backup --config {hall.etc} --out {hall.root}/var/backups/windowrate --keep 14"
    )


def test_rating_over_tls_ends_in_influxdb(hall: Hall) -> None:
    """Start the units as written; a device login from `device add` publishes over TLS."""
    p = hall.ports
    for unit, port in (
        ("windowrate-influxd.service", p["influx"]),
        ("windowrate-broker.service", p["mqtt-tls"]),
        ("windowrate-gateway.service", p["metrics"]),
        ("windowrate-server.service", p["server"]),
    ):
        proc = hall.start(unit)
        wait_until(
            lambda port=port, proc=proc: port_open("127.0.0.1", port) or proc.poll() is not None,
            60,
            what=f"{unit} listening",
        )
        assert proc.poll() is None, (hall.root / f"{unit}.log").read_text()[-3000:]
    added = hall.cli("device", "add", "--config", str(hall.etc), "--hall", "h1", "--id", "d-0001",
                     "--window", "w01", "--json")  # fmt: skip
    assert added.returncode == 0, added.stderr
    login = json.loads(added.stdout)
    assert login["password"] not in added.stderr
    doc = rating_doc("h1", "d-0001", 1, window="w01")
    pub = subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(p["mqtt-tls"]), "--cafile",
         str(hall.etc / "pki/ca.crt"), "-V", "mqttv5", "-q", "1", "-i", "d-0001",
         "-u", login["username"], "-P", login["password"],
         "-t", "wr/v1/h1/d-0001/rating", "-m", json.dumps(doc)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert pub.returncode == 0, pub.stderr
    url = f"http://127.0.0.1:{p['influx']}"

    def stored() -> bool:
        series = influx_query(url, 'SELECT count("seq") FROM "rating" WHERE "device" = \'d-0001\'')
        return bool(series) and int(series[0]["values"][0][1]) == 1

    wait_until(stored, 60, interval=0.3, what="the rating in InfluxDB")
    login_url = f"http://127.0.0.1:{p['server']}/api/auth/login"
    resp = httpx.post(login_url, json={"username": "admin", "password": ADMIN_PASSWORD})
    assert resp.status_code == 200, resp.text
    assert ADMIN_PASSWORD not in hall.output


def test_rerun_changes_nothing_and_keeps_data(hall: Hall) -> None:
    """A second run without options (an upgrade) keeps every setting, secret, CA and data."""
    hall.stop_all()
    ca = (hall.etc / "pki/ca.crt").read_bytes()
    secret = (hall.etc / "secrets/mqtt-gateway").read_bytes()
    units = {p.name: p.read_bytes() for p in hall.units.iterdir()}
    out = install(hall.root, None)
    assert "upgrade check passed" in out
    assert (hall.etc / "pki/ca.crt").read_bytes() == ca
    assert (hall.etc / "secrets/mqtt-gateway").read_bytes() == secret
    assert "configs: nothing to change" in out
    assert {p.name: p.read_bytes() for p in hall.units.iterdir()} == units
    listed = hall.cli("gateway", "dead-letters", "--config", str(hall.etc))
    assert listed.returncode == 0, listed.stderr
