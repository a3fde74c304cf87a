"""`windowrate up` end to end as a real process: every part starts, agrees, and stops."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from devstack.services import free_ports, port_open
from server.counts import day_bounds
from tests.support import CHILDREN, REPO, influx_query, rating_doc, wait_until
from tests.test_broker_security import Client

HOST = "127.0.0.1"


@dataclass(frozen=True)
class UpPorts:
    """The five ports `windowrate up` is given."""

    mqtt: int
    influx: int
    server: int
    metrics: int
    mqtt_tls: int

    def all(self) -> tuple[int, int, int, int, int]:
        """Every port."""
        return (self.mqtt, self.influx, self.server, self.metrics, self.mqtt_tls)


def five_free_ports() -> UpPorts:
    """Five distinct free ports."""
    return UpPorts(*free_ports(5))


def up_command(run_dir: Path, ports: UpPorts) -> list[str]:
    """The `windowrate up` command line: 3 kiosks at 5 ratings per second each."""
    return [
        sys.executable,
        "-m",
        "windowrate",
        "up",
        "--kiosks",
        "3",
        "--rate",
        "5",
        "--run-dir",
        str(run_dir),
        "--mqtt-port",
        str(ports.mqtt),
        "--influx-port",
        str(ports.influx),
        "--server-port",
        str(ports.server),
        "--metrics-port",
        str(ports.metrics),
        "--mqtt-tls-port",
        str(ports.mqtt_tls),
    ]


def _proc_text(pid: str, name: str) -> str:
    """A /proc/PID file with NULs as spaces ('' if gone or not readable)."""
    try:
        return (
            (Path("/proc") / pid / name).read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def processes_of(run_dir: Path) -> list[int]:
    """PIDs of processes (not this one) whose command line or environment names `run_dir`.

    Every part of the stack does: broker and InfluxDB by their config file, the kiosks by
    their data dir, gateway and server by the WR_* variables they were started with.
    """
    needle = str(run_dir)
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        stat = _proc_text(entry.name, "stat")
        if ") Z " in stat:  # a zombie is not running anything
            continue
        if needle in _proc_text(entry.name, "cmdline") or needle in _proc_text(
            entry.name, "environ"
        ):
            found.append(int(entry.name))
    return found


def kill_leftovers(run_dir: Path) -> list[int]:
    """SIGKILL, by PID, every process still running for `run_dir`; return their PIDs."""
    pids = processes_of(run_dir)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


@dataclass
class Up:
    """A running `windowrate up`."""

    proc: subprocess.Popen[bytes]
    run_dir: Path
    ports: UpPorts
    stdout: Path
    stderr: Path

    def output(self) -> str:
        """What it printed so far (stdout, then the end of stderr)."""
        return (
            self.stdout.read_text(errors="replace")
            + "\n--- stderr ---\n"
            + self.stderr.read_text(errors="replace")[-3000:]
        )

    def logs(self) -> str:
        """The ends of the children's logs."""
        parts = []
        for name in ("gateway", "server", "kiosks"):
            path = self.run_dir / f"{name}.log"
            if path.exists():
                parts.append(f"--- {name}.log ---\n" + path.read_text(errors="replace")[-1500:])
        return "\n".join(parts)


def admin_env(tmp_path: Path) -> dict[str, str]:
    """An operator's shell: no WR_ variables, its own state dir (where `up` leaves its pointer)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WR_")}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    return env


def start_up(tmp_path: Path, ports: UpPorts) -> Up:
    """Start `windowrate up` in its own process group, output to files."""
    run_dir = (tmp_path / "run").resolve()
    out, err = tmp_path / "up.stdout", tmp_path / "up.stderr"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen(
            up_command(run_dir, ports),
            cwd=REPO,
            env=admin_env(tmp_path),
            stdout=fo,
            stderr=fe,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    CHILDREN.append(proc)
    return Up(proc, run_dir, ports, out, err)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    """`windowrate up` on free ports; whatever survives the test is killed by PID."""
    u = start_up(tmp_path, five_free_ports())
    try:
        yield u
    finally:
        if u.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(u.proc.pid, signal.SIGKILL)
            u.proc.wait(10)
        # The children run in sessions of their own: a killed `up` leaves them behind.
        kill_leftovers(u.run_dir)


def get(url: str) -> httpx.Response | None:
    """GET, or None when nothing answers."""
    try:
        return httpx.get(url, timeout=10)
    except httpx.HTTPError:
        return None


def influx_counts(influx_url: str, tz: str) -> dict[tuple[str, str], int]:
    """Today's ratings per (hall, window) straight from InfluxDB."""
    _today, start, end = day_bounds(ZoneInfo(tz))
    q = (
        f'SELECT count("seq") FROM "rating" WHERE time >= {int(start.timestamp()) * 10**9} '
        f'AND time < {int(end.timestamp()) * 10**9} GROUP BY "hall", "window"'
    )
    return {
        (s["tags"]["hall"], s["tags"]["window"]): int(s["values"][0][1])
        for s in influx_query(influx_url, q)
    }


def api_counts(body: dict[str, Any]) -> dict[tuple[str, str], int]:
    """Ratings per (hall, window) in an /api/today answer."""
    return {(w["hall"], w["window"]): int(w["ratings"]) for w in body["windows"]}


def test_up_runs_the_whole_stack_and_stops_cleanly(up: Up) -> None:
    """Board URL printed, health all up, board numbers = InfluxDB; SIGINT stops every part."""
    ports = up.ports
    board = f"http://{HOST}:{ports.server}/"
    influx_url = f"http://{HOST}:{ports.influx}"

    def announced() -> bool:
        assert up.proc.poll() is None, f"up exited with {up.proc.returncode}:\n{up.output()}"
        return f"Board: {board}" in up.stdout.read_text(errors="replace")

    wait_until(announced, 60, interval=0.2, what="the board URL on stdout")
    assert port_open(HOST, ports.mqtt) and port_open(HOST, ports.influx)
    assert port_open(HOST, ports.mqtt_tls)
    # Secured like a hall: no anonymous login; each kiosk has its own (file readable by root only).
    anon = Client(ports.mqtt, None, None)
    assert anon.connack is not None and not anon.accepted
    creds = up.run_dir / "kiosks" / "credentials.json"
    assert creds.stat().st_mode & 0o777 == 0o600
    assert sorted(json.loads(creds.read_text())) == ["k-0001", "k-0002", "k-0003"]

    def healthy() -> dict[str, Any] | None:
        resp = get(f"{board}health")
        if resp is None or resp.status_code != 200:
            return None
        body: dict[str, Any] = resp.json()
        return body if all(c["state"] == "up" for c in body["components"].values()) else None

    health = wait_until(healthy, 30, interval=0.5, what="/health 200 with every component up")
    assert health["status"] == "ok"
    assert set(health["components"]) == {"influxdb", "mqtt", "gateway"}

    def three_windows() -> dict[str, Any] | None:
        resp = get(f"{board}api/today")
        if resp is None or resp.status_code != 200:
            return None
        body: dict[str, Any] = resp.json()
        ok = len(body["windows"]) == 3 and all(w["ratings"] > 0 for w in body["windows"])
        return body if ok else None

    today = wait_until(three_windows, 30, interval=0.5, what="3 windows with ratings")
    assert {w["window"] for w in today["windows"]} == {"w01", "w02", "w03"}

    # Ratings keep arriving: the board and InfluxDB must agree at a moment when InfluxDB
    # holds the same before and after the board was asked.
    seen: list[Any] = []

    def board_agrees() -> bool:
        before = influx_counts(influx_url, today["timezone"])
        resp = get(f"{board}api/today")
        after = influx_counts(influx_url, today["timezone"])
        if resp is None or resp.status_code != 200:
            return False
        shown = api_counts(resp.json())
        seen[:] = [before, shown, after]
        return before == shown == after and len(shown) == 3

    wait_until(board_agrees, 30, interval=0.05, what="board totals = InfluxDB counts")
    assert all(n > 0 for n in seen[1].values()), seen

    page = get(board)
    assert page is not None and page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<html" in page.text and "w01" in page.text

    # Ctrl-C: everything stops, `up` exits 0.
    children = processes_of(up.run_dir)
    assert len(children) >= 6, children  # up, broker, InfluxDB, gateway, server, kiosks
    up.proc.send_signal(signal.SIGINT)
    try:
        code = up.proc.wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"up still running 30 s after SIGINT:\n{up.output()}\n{up.logs()}")
    assert code == 0, up.output()
    assert "Traceback" not in up.stderr.read_text(errors="replace"), up.output()
    assert [p for p in ports.all() if port_open(HOST, p)] == [], "a port is still served"
    assert processes_of(up.run_dir) == [], "a child survived"


def test_up_with_mqtt_port_taken_fails_and_says_why(tmp_path: Path) -> None:
    """A taken MQTT port: a non-zero exit (not a hang), naming the port and what to do."""
    ports = five_free_ports()
    run_dir = (tmp_path / "run").resolve()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, ports.mqtt))
        sock.listen()
        try:
            proc = subprocess.run(
                up_command(run_dir, ports),
                cwd=REPO,
                capture_output=True,
                stdin=subprocess.DEVNULL,
                timeout=30,
                start_new_session=True,
            )
        finally:
            kill_leftovers(run_dir)
    out = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    assert proc.returncode != 0, out
    assert str(ports.mqtt) in out, out
    assert "already in use" in out and "MQTT" in out, out
    assert "another port" in out or "--mqtt-port" in out, out  # what to do
    assert "Traceback" not in out, out
    assert "WindowRate is up" not in out, out
    # Nothing was left running on the other ports.
    assert [p for p in (ports.influx, ports.server, ports.metrics) if port_open(HOST, p)] == []


def test_admin_commands_find_the_running_up(up: Up, tmp_path: Path) -> None:
    """Run plainly beside `windowrate up`, `device add` and `export` use its database.

    The issue as a new user met it: the device login went into another database (the broker
    refused it) and the export counted a test device's ratings.
    """
    board = f"http://{HOST}:{up.ports.server}/"
    wait_until(
        lambda: f"Board: {board}" in up.stdout.read_text(errors="replace"),
        60,
        interval=0.2,
        what="the board URL on stdout",
    )
    elsewhere = tmp_path / "elsewhere"  # not the repository: no ./var/run to fall back on
    elsewhere.mkdir()
    env = admin_env(tmp_path)

    def windowrate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "windowrate", "--log-level", "WARNING", *args],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    added = windowrate(
        "device", "add", "--hall", "demo", "--id", "t-0001", "--window", "w09",
        "--test-device", "--json",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert f"installation: {up.run_dir / 'config'} (running windowrate up)" in added.stderr
    login = json.loads(added.stdout)
    assert login["password"] not in added.stderr

    doc = rating_doc("demo", "t-0001", 1, window="w09")
    pub = subprocess.run(
        ["mosquitto_pub", "-h", HOST, "-p", str(up.ports.mqtt), "-V", "mqttv5", "-q", "1",
         "-i", "t-0001", "-u", login["username"], "-P", login["password"],
         "-t", "wr/v1/demo/t-0001/rating", "-m", json.dumps(doc)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert pub.returncode == 0, pub.stderr
    influx_url = f"http://{HOST}:{up.ports.influx}"

    def stored() -> bool:
        q = 'SELECT count("seq") FROM "rating" WHERE "device" = \'t-0001\''
        series = influx_query(influx_url, q)
        return bool(series) and int(series[0]["values"][0][1]) == 1

    wait_until(stored, 30, interval=0.2, what="the test device's rating in InfluxDB")

    out = tmp_path / "scores.csv"
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()
    exported = windowrate("export", "--from", today, "--to", today, "--hall", "demo",
                          "--out", str(out))  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert "(running windowrate up)" in exported.stderr
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    assert manifest["exclusions"].get("test_device") == 1, manifest["exclusions"]

    # Without a running stack or a config, an admin command says what to do.
    lost = subprocess.run(
        [sys.executable, "-m", "windowrate", "device", "add", "--hall", "demo", "--id", "x-1"],
        cwd=elsewhere, env={**env, "XDG_STATE_HOME": str(tmp_path / "none")},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert lost.returncode != 0 and "--run-dir" in lost.stderr and "Traceback" not in lost.stderr
