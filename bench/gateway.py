"""Gateway throughput against the physical limit of the path: Mosquitto's own C clients.

Both runs push the same pre-built RatingEvents through the same broker with `mosquitto_pub`
at QoS 1 over several connections. The baseline drains them with `mosquitto_sub` (QoS 1);
the measured run drains them with the gateway into a real InfluxDB and counts what landed.
"""

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uuid6

from devstack.services import Influxd, Mosquitto, die_with_parent, free_port, require_binary
from protocol.messages import RatingEvent
from protocol.topics import Topic, TopicKind
from storage.client import InfluxClient, InfluxSettings

log = logging.getLogger(__name__)


def build_payloads(out: Path, ratings: int, connections: int, hall: str = "bench") -> list[Path]:
    """Write one file of JSON lines per connection (one device each); return the files."""
    files = []
    now = int(time.time() * 1000) - 60_000
    per = [
        ratings // connections + (1 if i < ratings % connections else 0) for i in range(connections)
    ]
    for c, n in enumerate(per):
        device = f"b-{c:04d}"
        path = out / f"{device}.jsonl"
        with path.open("w") as f:
            for seq in range(1, n + 1):
                ev = RatingEvent(
                    id=uuid6.uuid7(),
                    device=device,
                    hall=hall,
                    window=f"w{c:03d}",
                    seq=seq,
                    ts=now + seq,
                    clock_synced=True,
                    scale=5,
                    level=1 + seq % 5,
                    input="touch",
                    prompted=True,
                    staff="0457",
                    ticket=f"A{seq % 10000:04d}",
                    item="330100-001",
                )
                f.write(ev.model_dump_json() + "\n")
        files.append(path)
    return files


def _publishers(port: int, files: list[Path], hall: str = "bench") -> list[subprocess.Popen[bytes]]:
    """Start one mosquitto_pub per file, each on its device's rating topic."""
    pub = require_binary("mosquitto_pub", "mosquitto-clients")
    procs = []
    for path in files:
        device = path.stem
        topic = str(Topic(hall, device, TopicKind.RATING))
        with path.open("rb") as stdin:
            procs.append(
                subprocess.Popen(
                    [
                        pub,
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(port),
                        "-V",
                        "mqttv5",
                        "-q",
                        "1",
                        "-M",
                        "100",
                        "-i",
                        f"pub-{device}",
                        "-t",
                        topic,
                        "-l",
                    ],
                    stdin=stdin,
                    preexec_fn=die_with_parent,
                )
            )
    return procs


def _wait_all(procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    """Wait for every publisher; raise if one failed."""
    for p in procs:
        if p.wait(timeout) != 0:
            raise RuntimeError(f"mosquitto_pub exited with {p.returncode}")


def baseline(port: int, files: list[Path], ratings: int) -> float:
    """Seconds for mosquitto_pub → broker → mosquitto_sub (QoS 1) to move every message."""
    sub = require_binary("mosquitto_sub", "mosquitto-clients")
    consumer = subprocess.Popen(
        [
            sub,
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-i",
            "bench-sub",
            "-t",
            "$share/bench/wr/v1/+/+/rating",
            "-C",
            str(ratings),
        ],
        stdout=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    time.sleep(1.0)  # subscribed
    t0 = time.perf_counter()
    pubs = _publishers(port, files)
    consumer.wait(600)
    seconds = time.perf_counter() - t0
    _wait_all(pubs, 60)
    return seconds


def paho_ceiling(port: int, files: list[Path], ratings: int) -> float:
    """Seconds for a paho MQTT 5 consumer that does nothing else: the client's own limit."""
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    done = threading.Event()
    count = [0]

    def on_message(_c: mqtt.Client, _u: object, _m: mqtt.MQTTMessage) -> None:
        count[0] += 1
        if count[0] >= ratings:
            done.set()

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="bench-paho",
        protocol=mqtt.MQTTv5,
    )
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe("$share/paho/wr/v1/+/+/rating", qos=1)
    client.loop_start()
    time.sleep(1.0)  # subscribed
    t0 = time.perf_counter()
    pubs = _publishers(port, files)
    done.wait(600)
    seconds = time.perf_counter() - t0
    _wait_all(pubs, 60)
    client.disconnect()
    client.loop_stop()
    return seconds


def _written(ports: list[int]) -> float:
    """Sum of ratings_written_total over the gateways."""
    total = 0.0
    for port in ports:
        for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
            if line.startswith("windowrate_gateway_ratings_written_total "):
                total += float(line.split()[1])
    return total


def measured(
    broker_port: int, influx_url: str, files: list[Path], ratings: int, gateways: int, run: Path
) -> tuple[float, list[subprocess.Popen[bytes]]]:
    """Seconds for mosquitto_pub → broker → gateway(s) → InfluxDB to store every rating."""
    ports = [free_port() for _ in range(gateways)]
    procs = []
    for i, mport in enumerate(ports):
        env = dict(os.environ)
        env.update(
            WR_GATEWAY_MQTT__PORT=str(broker_port),
            WR_GATEWAY_INFLUX__URL=influx_url,
            WR_GATEWAY_METRICS__PORT=str(mport),
            WR_GATEWAY_CLIENT_ID=f"bench-gw-{i}",
            WR_GATEWAY_DATA_DIR=str(run / f"gw{i}"),
            WR_GATEWAY_GAPS__INTERVAL_S="3600",
            WR_LOG_LEVEL="WARNING",
        )
        log_file = open(run / f"gw{i}.log", "wb")  # noqa: SIM115 - lives as long as the child
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "windowrate", "gateway", "run"],
                env=env,
                stdout=log_file,
                preexec_fn=die_with_parent,
                stderr=subprocess.STDOUT,
            )
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            _written(ports)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    time.sleep(1.0)  # subscribed
    t0 = time.perf_counter()
    pubs = _publishers(broker_port, files)
    deadline = time.monotonic() + 900
    while _written(ports) < ratings:
        if time.monotonic() > deadline:
            raise RuntimeError(f"gateway stored {_written(ports)} of {ratings} in 900 s")
        time.sleep(0.02)
    seconds = time.perf_counter() - t0
    _wait_all(pubs, 60)
    return seconds, procs


def _scalar(url: str, q: str) -> int:
    """First value of an InfluxQL query."""
    with InfluxClient(InfluxSettings(url=url, timeout_s=120)) as client:
        series = client.series(q)
    return int(series[0].values[0][1]) if series else 0


def run_bench(ratings: int = 100_000, connections: int = 10, gateways: int = 1) -> dict[str, Any]:
    """Run both legs on fresh services and return the result row."""
    run = Path(tempfile.mkdtemp(prefix="wr-bench-gateway-"))
    broker = Mosquitto(run / "mosquitto")
    influx = Influxd(run / "influxd")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        broker.start()
        influx.start()
        files = build_payloads(run, ratings, connections)
        b_seconds = baseline(broker.port, files, ratings)
        p_seconds = paho_ceiling(broker.port, files, ratings)
        r_seconds, procs = measured(broker.port, influx.url, files, ratings, gateways, run)
        count = _scalar(influx.url, 'SELECT count("seq") FROM "rating"')
        distinct = _scalar(influx.url, 'SELECT count(distinct("id")) FROM "rating"')
    finally:
        for p in procs:
            p.terminate()
            p.wait(30)
        influx.stop()
        broker.stop()
        shutil.rmtree(run, ignore_errors=True)
    r = ratings / r_seconds
    b = ratings / b_seconds
    return {
        "ratings": ratings,
        "seconds": round(r_seconds, 3),
        "ratings_per_s": round(r, 1),
        "broker_qos1_per_s": round(b, 1),
        "ratio": round(r / b, 3),
        "lost": ratings - distinct,
        "duplicates": count - distinct,
        "connections": connections,
        "gateways": gateways,
        # paho alone (no validation, no InfluxDB): the ceiling a paho client sets.
        "paho_noop_per_s": round(ratings / p_seconds, 1),
        "paho_noop_ratio": round(ratings / p_seconds / b, 3),
    }
