"""Test support: real services on free ports, the gateway as a real process, InfluxDB queries."""

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import uuid6
from paho.mqtt.enums import CallbackAPIVersion

from devstack.services import die_with_parent, free_port, stop_process

REPO = Path(__file__).resolve().parent.parent
# Every child process a test starts, so that teardown can reap what a failure left behind.
CHILDREN: list[subprocess.Popen[bytes]] = []


def reap_children() -> None:
    """Kill every child process still running."""
    while CHILDREN:
        proc = CHILDREN.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def rating_doc(hall: str, device: str, seq: int, **changes: Any) -> dict[str, Any]:
    """A valid RatingEvent document (press time now), with `changes` applied."""
    doc: dict[str, Any] = {
        "v": 1,
        "id": str(uuid6.uuid7()),
        "device": device,
        "hall": hall,
        "window": "a12",
        "seq": seq,
        "ts": int(time.time() * 1000),
        "clock_synced": True,
        "scale": 5,
        "level": 5,
        "input": "touch",
        "prompted": True,
        "staff": "0457",
        "ticket": "A0123",
        "item": "330100-001",
        "reasons": [],
    }
    doc.update(changes)
    return doc


def wait_until(
    pred: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll `pred` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or pred} (last: {last!r})")


def influx_query(
    url: str, q: str, db: str = "windowrate", epoch: str | None = None
) -> list[dict[str, Any]]:
    """Run InfluxQL and return the series of the first result (times in `epoch` units)."""
    params = {"db": db, "q": q}
    if epoch:
        params["epoch"] = epoch
    resp = httpx.get(f"{url}/query", params=params, timeout=30)
    resp.raise_for_status()
    result = resp.json()["results"][0]
    return list(result.get("series", []))


def rating_count(url: str) -> int:
    """Number of rating points in InfluxDB (0 when the database does not exist)."""
    try:
        series = influx_query(url, 'SELECT count("seq") FROM "rating"')
    except httpx.HTTPError:
        return -1
    return int(series[0]["values"][0][1]) if series else 0


def distinct_ids(url: str) -> int:
    """Number of distinct rating ids in InfluxDB."""
    series = influx_query(url, 'SELECT count(distinct("id")) FROM "rating"')
    return int(series[0]["values"][0][1]) if series else 0


def metrics(port: int) -> dict[str, float]:
    """Scrape a gateway's /metrics into {name{labels}: value}."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


class GatewayProcess:
    """`windowrate gateway run` as a real child process, restartable with the same identity."""

    def __init__(
        self,
        run_dir: Path,
        mqtt_port: int,
        influx_url: str,
        client_id: str = "gateway-1",
        **env: str,
    ) -> None:
        """Prepare (not start) the gateway."""
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_port = free_port()
        self.env = dict(os.environ)
        self.env.update(
            {
                "WR_GATEWAY_MQTT__PORT": str(mqtt_port),
                "WR_GATEWAY_INFLUX__URL": influx_url,
                "WR_GATEWAY_DATA_DIR": str(run_dir),
                "WR_GATEWAY_METRICS__PORT": str(self.metrics_port),
                "WR_GATEWAY_CLIENT_ID": client_id,
                "WR_GATEWAY_BATCH__MAX_DELAY_MS": "100",
                "WR_GATEWAY_BATCH__RETRY_MAX_S": "2",
                "WR_GATEWAY_GAPS__INTERVAL_S": "1",
                "WR_GATEWAY_GAPS__GRACE_S": "10",
            }
        )
        self.env.update(env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start and wait for the metrics endpoint and the broker connection."""
        self.starts += 1
        log = open(self.run_dir / f"gateway-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "windowrate", "gateway", "run"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            preexec_fn=die_with_parent,
        )
        CHILDREN.append(self.proc)
        log.close()

        def connected() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log_tail()
            try:
                return metrics(self.metrics_port).get("windowrate_gateway_mqtt_connected") == 1.0
            except httpx.HTTPError:
                return False

        wait_until(connected, 30, what="gateway connected")

    def metrics(self) -> dict[str, float]:
        """Current metrics."""
        return metrics(self.metrics_port)

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM and wait."""
        stop_process(self.proc)

    def log_tail(self) -> str:
        """The end of the latest log."""
        path = self.run_dir / f"gateway-{self.starts}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def raw_client(port: int, client_id: str = "raw") -> mqtt.Client:
    """A plain connected MQTT 5 client for publishing hand-made payloads."""
    c = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def simulate_proc(
    mqtt_port: int,
    data_dir: Path,
    *,
    hall: str,
    first: int,
    kiosks: int,
    per_kiosk: int,
    rate: float,
    log_path: Path,
) -> subprocess.Popen[bytes]:
    """Start `windowrate simulate` as a child process."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "windowrate",
                "simulate",
                "--hall",
                hall,
                "--first",
                str(first),
                "--kiosks",
                str(kiosks),
                "--ratings-per-kiosk",
                str(per_kiosk),
                "--rate",
                str(rate),
                "--mqtt-port",
                str(mqtt_port),
                "--data-dir",
                str(data_dir),
                "--seed",
                str(first),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            preexec_fn=die_with_parent,
        )
    CHILDREN.append(proc)
    return proc
