"""The production processes of a bench: Mosquitto, influxd, `windowrate gateway` and `server`.

Each runs as its own process on free ports in a temporary directory, configured as in
production (the gateway's seq-gap checker on, at its default interval).
"""

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx
from prometheus_client.parser import text_string_to_metric_families

from devstack.services import Influxd, Mosquitto, die_with_parent, free_port

log = logging.getLogger(__name__)


def spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a `windowrate` child process logging to `log_path`."""
    with open(log_path, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "windowrate", *args],
            env={**os.environ, "WR_LOG_LEVEL": "WARNING", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )


def wait_http(url: str, timeout: float) -> None:
    """Wait until `url` answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def metrics(url: str) -> dict[str, float]:
    """Every sample of a Prometheus endpoint, by name (labels joined in), summed over labels."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=5).text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + float(sample.value)
    return out


class Stack:
    """Broker, influxd, one gateway and one server in a temporary directory (a context manager)."""

    def __init__(self, prefix: str) -> None:
        """Prepare the run directory (nothing started)."""
        self.run = Path(tempfile.mkdtemp(prefix=prefix))
        self.broker = Mosquitto(self.run / "mosquitto")
        self.influx = Influxd(self.run / "influxd")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.gateway_metrics = f"http://127.0.0.1:{free_port()}/metrics"
        self.base = f"http://127.0.0.1:{free_port()}"

    def start(self) -> None:
        """Start everything; return once the gateway's metrics and the server's API answer."""
        self.broker.start()
        self.influx.start()
        gw_port = self.gateway_metrics.rsplit(":", 1)[1].split("/")[0]
        self.procs.append(
            spawn(
                ["gateway", "run"],
                {
                    "WR_GATEWAY_MQTT__PORT": str(self.broker.port),
                    "WR_GATEWAY_INFLUX__URL": self.influx.url,
                    "WR_GATEWAY_METRICS__PORT": gw_port,
                    "WR_GATEWAY_DATA_DIR": str(self.run / "gw"),
                    "WR_GATEWAY_CLIENT_ID": "bench-gw",
                },
                self.run / "gateway.log",
            )
        )
        self.procs.append(
            spawn(
                ["server", "run"],
                {
                    "WR_SERVER_PORT": self.base.rsplit(":", 1)[1],
                    "WR_SERVER_MQTT__PORT": str(self.broker.port),
                    "WR_SERVER_INFLUX__URL": self.influx.url,
                    "WR_SERVER_DATABASE_URL": f"sqlite:///{self.run / 'server.db'}",
                    "WR_SERVER_GATEWAY_METRICS_URLS": f'["{self.gateway_metrics}"]',
                },
                self.run / "server.log",
            )
        )
        wait_http(self.gateway_metrics, 30)
        wait_http(f"{self.base}/api/live/board", 60)

    def log_tail(self, name: str, chars: int = 1500) -> str:
        """The end of a product's log (gateway or server)."""
        path = self.run / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self) -> None:
        """Stop every process and remove the run directory."""
        for p in self.procs:
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        self.influx.stop()
        self.broker.stop()
        shutil.rmtree(self.run, ignore_errors=True)

    def __enter__(self) -> "Stack":
        """Start the stack."""
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        """Stop the stack."""
        self.stop()
