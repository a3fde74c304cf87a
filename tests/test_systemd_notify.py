"""systemd's notify protocol (Type=notify, WatchdogSec=): real gateway and server processes.

A datagram socket plays systemd: NOTIFY_SOCKET names it and WATCHDOG_USEC asks for a watchdog.
"""

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.systemd import Heartbeat, Watchdog
from devstack.services import Influxd, Mosquitto, free_port
from tests.support import CHILDREN, REPO, wait_until


class FakeClock:
    """A clock the test moves."""

    def __init__(self) -> None:
        """Start at 0."""
        self.t = 0.0

    def __call__(self) -> float:
        """Now."""
        return self.t


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """The socket systemd would listen on (non-blocking)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.setblocking(False)
    yield sock
    sock.close()


def received(sock: socket.socket, seen: list[str]) -> list[str]:
    """Every message that arrived so far (added to `seen`)."""
    while True:
        try:
            seen.append(sock.recv(4096).decode())
        except BlockingIOError:
            return seen


def test_watchdog_pings_only_while_alive(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A heartbeat gone stale withholds the ping; a fresh one sends it again."""
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.getsockname())
    clock = FakeClock()
    beat = Heartbeat(clock)
    dog = Watchdog(lambda: beat.fresh(5.0), interval_s=10.0)
    seen: list[str] = []
    assert dog.tick() is True
    assert received(notify_socket, seen) == ["WATCHDOG=1"]
    clock.t = 6.0  # the loop has not gone round for 6 s
    assert dog.tick() is False
    assert received(notify_socket, seen) == ["WATCHDOG=1"]
    beat.beat()
    assert dog.tick() is True
    assert received(notify_socket, seen) == ["WATCHDOG=1", "WATCHDOG=1"]


def test_without_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    """No NOTIFY_SOCKET, no WATCHDOG_USEC: no thread, nothing sent, nothing fails."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    dog = Watchdog(lambda: True)
    assert dog.interval_s is None
    dog.start()
    assert dog.tick() is True


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start `windowrate ARGS` with `env`, output to `log`."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "windowrate", *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    CHILDREN.append(proc)
    return proc


def test_gateway_and_server_say_ready_and_ping(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    """Each says READY=1 once it serves, then WATCHDOG=1 again and again; STOPPING=1 on TERM."""
    broker = Mosquitto(tmp_path / "mosquitto")
    influx = Influxd(tmp_path / "influxd")
    broker.start()
    influx.start()
    try:
        base = {k: v for k, v in os.environ.items() if not k.startswith("WR_")}
        base.update(NOTIFY_SOCKET=notify_socket.getsockname(), WATCHDOG_USEC="1000000")
        for name, args, env in (
            (
                "gateway",
                ["gateway", "run"],
                {
                    "WR_GATEWAY_MQTT__PORT": str(broker.port),
                    "WR_GATEWAY_INFLUX__URL": influx.url,
                    "WR_GATEWAY_METRICS__PORT": str(free_port()),
                    "WR_GATEWAY_DATA_DIR": str(tmp_path / "gateway"),
                },
            ),
            (
                "server",
                ["server", "run"],
                {
                    "WR_SERVER_PORT": str(free_port()),
                    "WR_SERVER_MQTT__PORT": str(broker.port),
                    "WR_SERVER_INFLUX__URL": influx.url,
                    "WR_SERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'server.db'}",
                },
            ),
        ):
            seen: list[str] = []
            proc = _spawn(args, {**base, **env}, tmp_path / f"{name}.log")

            log = tmp_path / f"{name}.log"

            def pinged(
                seen: list[str] = seen, proc: subprocess.Popen[bytes] = proc, log: Path = log
            ) -> bool:
                assert proc.poll() is None, log.read_text()
                return received(notify_socket, seen).count("WATCHDOG=1") >= 3

            wait_until(pinged, 60, interval=0.1, what=f"the {name}'s READY=1 and pings")
            assert seen[0] == "READY=1", seen
            proc.terminate()
            # uvicorn re-raises the SIGTERM it handled once it has shut down; systemd counts
            # an exit by SIGTERM as a clean stop.
            assert proc.wait(30) in (0, -15), log.read_text()
            assert "STOPPING=1" in received(notify_socket, seen), seen
    finally:
        influx.stop()
        broker.stop()
