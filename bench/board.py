"""Press-to-board latency and hall board load time, on real services.

Mosquitto, influxd, the gateway and the server run as separate processes. One paho
client publishes RatingEvents for `windows` simulated windows at `rate` per second;
an SSE client of `/api/live/stream` notes when each rating's `window` event arrives.
Then headless Chromium loads a hall board of `page_windows` windows several times.
"""

import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import uuid6
from paho.mqtt.enums import CallbackAPIVersion

from devstack.services import Influxd, Mosquitto, die_with_parent, free_port
from protocol.messages import RatingEvent
from protocol.topics import Topic, TopicKind

log = logging.getLogger(__name__)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a `windowrate` child process logging to `log_path`."""
    with open(log_path, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "windowrate", *args],
            env={**os.environ, "WR_LOG_LEVEL": "WARNING", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )


def _wait_http(url: str, timeout: float) -> None:
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


class Stream:
    """SSE client noting the arrival time of every rating id."""

    def __init__(self, url: str) -> None:
        """Connect and read in a thread."""
        self.arrived: dict[str, float] = {}
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(url,), daemon=True)
        self.thread.start()
        if not self.ready.wait(30):
            raise RuntimeError("SSE stream did not open")

    def _run(self, url: str) -> None:
        """Read events until the server goes away."""
        try:
            with httpx.stream("GET", url, timeout=httpx.Timeout(10, read=None)) as resp:
                self.ready.set()
                for line in resp.iter_lines():
                    if line.startswith("data: ") and '"rating"' in line:
                        now = time.monotonic()
                        rating = json.loads(line[6:]).get("rating")
                        if rating:
                            self.arrived.setdefault(rating["id"], now)
        except httpx.HTTPError as exc:
            log.info("SSE stream ended: %s", exc)


def _event(hall: str, index: int, seq: int) -> RatingEvent:
    """Return a rating of window `index` pressed now."""
    return RatingEvent(
        id=uuid6.uuid7(),
        device=f"b-{index:04d}",
        hall=hall,
        window=f"w{index:03d}",
        seq=seq,
        ts=int(time.time() * 1000),
        clock_synced=True,
        scale=5,
        level=1 + (seq * 7 + index) % 5,
        input="touch",
        prompted=True,
    )


def _publisher(port: int) -> mqtt.Client:
    """A connected paho client."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"bench-board-{os.getpid()}",
        protocol=mqtt.MQTTv5,
    )
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def _percentile(values: list[float], q: float) -> float:
    """Return the q-quantile (0–1) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def press_to_board(
    client: mqtt.Client, stream: Stream, hall: str, windows: int, rate: float, seconds: float
) -> dict[str, Any]:
    """Publish `rate` ratings/s round-robin over `windows` windows; return latency figures."""
    sent: dict[str, float] = {}
    seqs = [0] * windows
    total = int(rate * seconds)
    start = time.monotonic()
    for n in range(total):
        due = start + n / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        index = n % windows
        seqs[index] += 1
        ev = _event(hall, index, seqs[index])
        topic = str(Topic(hall, ev.device, TopicKind.RATING))
        sent[str(ev.id)] = time.monotonic()
        client.publish(topic, ev.model_dump_json(), qos=1)
    deadline = time.monotonic() + 30
    while len(stream.arrived.keys() & sent.keys()) < total and time.monotonic() < deadline:
        time.sleep(0.05)
    lat = [(stream.arrived[i] - t) * 1000 for i, t in sent.items() if i in stream.arrived]
    return {
        "ratings": total,
        "windows": windows,
        "rate_per_s": round(total / max(1e-9, time.monotonic() - start), 1) if total else 0.0,
        "received": len(lat),
        "p50_ms": round(_percentile(lat, 0.50), 1) if lat else None,
        "p99_ms": round(_percentile(lat, 0.99), 1) if lat else None,
        "max_ms": round(max(lat), 1) if lat else None,
    }


def page_load(url: str, rows: int, loads: int) -> list[float]:
    """Milliseconds from navigation until the live board shows `rows` rows, per load."""
    from playwright.sync_api import sync_playwright

    times: list[float] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()

        # Selectors, not script: the pages' CSP forbids eval.
        def load() -> None:
            page.goto(url)
            page.wait_for_selector("#live-state.up", timeout=30_000)
            page.wait_for_selector(f"#rows > tr:nth-child({rows})", timeout=30_000)

        load()  # warm-up (connections, caches as a wall screen would have them)
        for _ in range(loads):
            t0 = time.perf_counter()
            load()
            times.append((time.perf_counter() - t0) * 1000)
        browser.close()
    return times


def run_bench(
    windows: int = 500,
    rate: float = 200.0,
    seconds: float = 15.0,
    page_windows: int = 200,
    loads: int = 9,
) -> dict[str, Any]:
    """Start the services, measure both figures and return the result row."""
    run = Path(tempfile.mkdtemp(prefix="wr-bench-board-"))
    broker = Mosquitto(run / "mosquitto")
    influx = Influxd(run / "influxd")
    procs: list[subprocess.Popen[bytes]] = []
    client: mqtt.Client | None = None
    try:
        broker.start()
        influx.start()
        gw_metrics = free_port()
        procs.append(
            _spawn(
                ["gateway", "run"],
                {
                    "WR_GATEWAY_MQTT__PORT": str(broker.port),
                    "WR_GATEWAY_INFLUX__URL": influx.url,
                    "WR_GATEWAY_METRICS__PORT": str(gw_metrics),
                    "WR_GATEWAY_DATA_DIR": str(run / "gw"),
                    "WR_GATEWAY_CLIENT_ID": "bench-board-gw",
                    "WR_GATEWAY_GAPS__INTERVAL_S": "3600",
                },
                run / "gateway.log",
            )
        )
        port = free_port()
        procs.append(
            _spawn(
                ["server", "run"],
                {
                    "WR_SERVER_PORT": str(port),
                    "WR_SERVER_MQTT__PORT": str(broker.port),
                    "WR_SERVER_INFLUX__URL": influx.url,
                    "WR_SERVER_DATABASE_URL": f"sqlite:///{run / 'server.db'}",
                    "WR_SERVER_GATEWAY_METRICS_URLS": f'["http://127.0.0.1:{gw_metrics}/metrics"]',
                },
                run / "server.log",
            )
        )
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"http://127.0.0.1:{gw_metrics}/metrics", 30)
        _wait_http(f"{base}/api/live/board", 60)
        time.sleep(1.0)  # the server's MQTT link subscribes
        stream = Stream(f"{base}/api/live/stream")
        client = _publisher(broker.port)
        # A hall board of `page_windows` windows: one rating each, then load it in Chromium.
        press_to_board(client, stream, "hall-page", page_windows, rate, page_windows / rate)
        loads_ms = page_load(f"{base}/", page_windows, loads)
        latency = press_to_board(client, stream, "hall-live", windows, rate, seconds)
    finally:
        if client is not None:
            client.loop_stop()
            client.disconnect()
        for p in procs:
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        influx.stop()
        broker.stop()
        shutil.rmtree(run, ignore_errors=True)
    return {
        **latency,
        "page_windows": page_windows,
        "page_loads_ms": [round(x, 1) for x in loads_ms],
        "page_load_ms": round(statistics.median(loads_ms), 1),
    }
