"""The local stack behind `windowrate up`: broker, InfluxDB, gateway, server and kiosks."""

import logging
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from deploy.services import Influxd, Mosquitto, die_with_parent, env_with, port_open

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ports:
    """The stack's ports (DESIGN.md defaults)."""

    mqtt: int = 1883
    influx: int = 8086
    server: int = 8000
    metrics: int = 9108


class Stack:
    """Starts and stops every part in `run_dir`, in dependency order."""

    def __init__(self, run_dir: Path, ports: Ports, host: str = "127.0.0.1") -> None:
        """Prepare the stack."""
        self.run_dir = run_dir
        self.ports = ports
        self.host = host
        self.mosquitto = Mosquitto(run_dir / "mosquitto", port=ports.mqtt, host=host)
        self.influxd = Influxd(run_dir / "influxdb", port=ports.influx, host=host)
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[object] = []

    @property
    def board_url(self) -> str:
        """The hall board's URL."""
        return f"http://{self.host}:{self.ports.server}/"

    def _env(self) -> dict[str, str]:
        """Environment telling gateway and server where everything is."""
        p, h = self.ports, self.host
        return env_with(
            WR_GATEWAY_MQTT__HOST=h,
            WR_GATEWAY_MQTT__PORT=str(p.mqtt),
            WR_GATEWAY_INFLUX__URL=f"http://{h}:{p.influx}",
            WR_GATEWAY_METRICS_HOST=h,
            WR_GATEWAY_METRICS_PORT=str(p.metrics),
            WR_GATEWAY_DATA_DIR=str(self.run_dir / "gateway"),
            WR_SERVER_HOST=h,
            WR_SERVER_PORT=str(p.server),
            WR_SERVER_MQTT__HOST=h,
            WR_SERVER_MQTT__PORT=str(p.mqtt),
            WR_SERVER_INFLUX__URL=f"http://{h}:{p.influx}",
            WR_SERVER_DATABASE_URL=f"sqlite:///{self.run_dir / 'server' / 'windowrate.db'}",
            WR_SERVER_GATEWAY_METRICS_URLS=f'["http://{h}:{p.metrics}/metrics"]',
        )

    def _spawn(self, name: str, args: list[str]) -> None:
        """Start `windowrate ARGS` as a child process logging to run_dir/NAME.log."""
        logf = open(self.run_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(logf)
        self.children[name] = subprocess.Popen(
            [sys.executable, "-m", "windowrate", *args],
            env=self._env(),
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    def start(self, kiosks: int = 5, rate: float = 0.2) -> None:
        """Start everything; raise RuntimeError with what to do if a port is taken."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for what, port in (
            ("MQTT", self.ports.mqtt),
            ("InfluxDB", self.ports.influx),
            ("server", self.ports.server),
            ("gateway metrics", self.ports.metrics),
        ):
            if port_open(self.host, port):
                raise RuntimeError(
                    f"port {port} ({what}) is already in use: stop whatever listens there "
                    f"(`ss -ltnp | grep :{port}`) or choose another port (see --help)"
                )
        self.mosquitto.start()
        self.influxd.start()
        self._spawn("gateway", ["gateway", "run"])
        self._spawn("server", ["server", "run"])
        if kiosks:
            self._spawn(
                "kiosks",
                [
                    "simulate",
                    "--kiosks",
                    str(kiosks),
                    "--rate",
                    str(rate),
                    "--mqtt-host",
                    self.host,
                    "--mqtt-port",
                    str(self.ports.mqtt),
                    "--data-dir",
                    str(self.run_dir / "kiosks"),
                ],
            )
        self._wait_http(f"http://{self.host}:{self.ports.server}/health", "server")

    def _wait_http(self, url: str, name: str, timeout: float = 30) -> None:
        """Wait until `url` answers at all."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for child, proc in self.children.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{child} exited; see {self.run_dir / (child + '.log')}")
            try:
                httpx.get(url, timeout=5)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"{name} did not answer at {url}; see {self.run_dir}/{name}.log")

    def watch(self, stop: threading.Event) -> None:
        """Wait for `stop`, reporting children that die."""
        while not stop.wait(1.0):
            for name, proc in list(self.children.items()):
                if proc.poll() is not None:
                    log.error(
                        "%s exited with %s; see %s",
                        name,
                        proc.returncode,
                        self.run_dir / f"{name}.log",
                    )
                    del self.children[name]

    def stop(self) -> None:
        """Stop kiosks, server, gateway, then InfluxDB and the broker."""
        for name in ("kiosks", "server", "gateway"):
            proc = self.children.pop(name, None)
            if proc is None:
                continue
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.influxd.stop()
        self.mosquitto.stop()
        for f in self._logs:
            f.close()  # type: ignore[attr-defined]
