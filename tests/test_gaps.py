"""Per-device seq gaps and repeats: found in InfluxDB, shown in metrics and by the CLI."""

import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import uuid6

from common.mqtt import MqttSettings
from devstack.services import Influxd, Mosquitto
from kiosk.core.clock import SystemClock
from kiosk.core.outbox import Outbox
from kiosk.core.publisher import Publisher
from kiosk.core.recorder import Identity, Recorder
from tests.support import (
    REPO,
    GatewayProcess,
    distinct_ids,
    rating_count,
    rating_doc,
    raw_client,
    simulate_proc,
    wait_until,
)

HALL, DEVICE = "hz-civic", "k-0001"
TOPIC = f"wr/v1/{HALL}/{DEVICE}/rating"
MISSING_TOTAL = "windowrate_gateway_seq_missing_total"
DUPLICATED_TOTAL = "windowrate_gateway_seq_duplicated_total"
CHECKS = "windowrate_gateway_gap_checks_total"
WRITTEN = "windowrate_gateway_ratings_written_total"
DUPS = "windowrate_gateway_duplicates_total"
REJECTED = "windowrate_gateway_messages_rejected_total"


def missing(m: dict[str, float], hall: str = HALL, device: str = DEVICE) -> float | None:
    """The value of windowrate_gateway_seq_missing{hall,device} (labels in any order)."""
    want = {f'hall="{hall}"', f'device="{device}"'}
    for key, value in m.items():
        name, _, labels = key.partition("{")
        if name == "windowrate_gateway_seq_missing" and set(labels.rstrip("}").split(",")) == want:
            return value
    return None


def rating(seq: int, **changes: Any) -> dict[str, Any]:
    """A valid RatingEvent document for DEVICE."""
    return rating_doc(HALL, DEVICE, seq, **changes)


def publish(client: mqtt.Client, *docs: dict[str, Any]) -> None:
    """Publish rating documents with QoS 1 and wait for each PUBACK."""
    for doc in docs:
        client.publish(TOPIC, json.dumps(doc), qos=1).wait_for_publish(5)


def gaps_cli(influx_url: str, mem_limit: int | None = None) -> tuple[int, Any, str]:
    """Run `windowrate gateway gaps --json`; return exit code, parsed stdout (or None), stderr."""
    env = dict(os.environ, WR_GATEWAY_INFLUX__URL=influx_url)

    def limit() -> None:
        if mem_limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (mem_limit, mem_limit))

    proc = subprocess.run(
        [sys.executable, "-m", "windowrate", "gateway", "gaps", "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        timeout=60,
        preexec_fn=limit,
    )
    out = proc.stdout.decode(errors="replace").strip()
    try:
        parsed = json.loads(out)
    except json.JSONDecodeError:
        parsed = None
    return proc.returncode, parsed, proc.stderr.decode(errors="replace")[-2000:]


def gateway(tmp_path: Path, broker: Mosquitto, influx: Influxd, **env: str) -> GatewayProcess:
    """A started gateway with fast gap checks (`env` overrides)."""
    settings = {"WR_GATEWAY_GAPS__INTERVAL_S": "0.5", "WR_GATEWAY_GAPS__GRACE_S": "1"}
    settings.update(env)
    gw = GatewayProcess(tmp_path / "gateway", broker.port, influx.url, **settings)
    gw.start()
    return gw


def checks_pass(gw: GatewayProcess, n: int, timeout: float = 30) -> None:
    """Wait until `n` more gap checks have completed."""
    start = gw.metrics().get(CHECKS, 0.0)
    wait_until(
        lambda: gw.metrics().get(CHECKS, 0.0) >= start + n, timeout, what=f"{n} more gap checks"
    )


def test_gap_is_reported_and_cleared(tmp_path: Path, broker: Mosquitto, influx: Influxd) -> None:
    """Seq 1,2,4,5 → seq 3 missing after the grace period; once 3 arrives, all clear."""
    gw = gateway(tmp_path, broker, influx)
    pub = raw_client(broker.port)
    publish(pub, rating(1), rating(2), rating(4), rating(5))
    wait_until(lambda: rating_count(influx.url) == 4, 15, what="4 ratings stored")

    wait_until(
        lambda: missing(gw.metrics()) == 1 and gw.metrics().get(MISSING_TOTAL) == 1,
        15,
        what="seq 3 reported missing",
    )
    assert gw.metrics()[DUPLICATED_TOTAL] == 0
    code, rows, err = gaps_cli(influx.url)
    assert code == 1, err
    assert rows == [
        {
            "hall": HALL,
            "device": DEVICE,
            "count": 4,
            "missing_count": 1,
            "max_seq": 5,
            "missing": [3],
            "duplicated": [],
        }
    ]

    publish(pub, rating(3))
    wait_until(lambda: rating_count(influx.url) == 5, 15, what="seq 3 stored")
    wait_until(
        lambda: missing(gw.metrics()) == 0 and gw.metrics().get(MISSING_TOTAL) == 0,
        15,
        what="gap cleared",
    )
    assert gaps_cli(influx.url)[:2] == (0, [])
    pub.loop_stop()
    pub.disconnect()
    gw.stop()
    assert gw.proc is not None and gw.proc.returncode == 0, gw.log_tail()


def test_hole_within_grace_is_not_reported(
    tmp_path: Path, broker: Mosquitto, influx: Influxd
) -> None:
    """A seq late by less than the grace period (a reordering) never counts as lost."""
    gw = gateway(tmp_path, broker, influx, WR_GATEWAY_GAPS__GRACE_S="30")
    pub = raw_client(broker.port)
    publish(pub, rating(1), rating(2), rating(4))
    wait_until(lambda: rating_count(influx.url) == 3, 15, what="3 ratings stored")
    checks_pass(gw, 3)
    m = gw.metrics()
    assert m[MISSING_TOTAL] == 0
    assert (missing(m) or 0.0) == 0
    # The CLI has no grace: it shows what InfluxDB holds right now.
    code, rows, _err = gaps_cli(influx.url)
    assert code == 1 and rows[0]["missing"] == [3]

    publish(pub, rating(3))
    wait_until(lambda: rating_count(influx.url) == 4, 15, what="seq 3 stored")
    checks_pass(gw, 2)
    m = gw.metrics()
    assert m[MISSING_TOTAL] == 0 and (missing(m) or 0.0) == 0
    assert gaps_cli(influx.url)[:2] == (0, [])
    pub.loop_stop()
    pub.disconnect()
    gw.stop()


def test_duplicated_seq_is_reported(tmp_path: Path, broker: Mosquitto, influx: Influxd) -> None:
    """The same seq stored twice (another id and level) shows in the metric and the CLI."""
    gw = gateway(tmp_path, broker, influx)
    pub = raw_client(broker.port)
    publish(pub, rating(1), rating(2), rating(3))
    publish(pub, rating(2, level=1))
    wait_until(lambda: rating_count(influx.url) == 4, 15, what="4 ratings stored")
    wait_until(
        lambda: gw.metrics().get(DUPLICATED_TOTAL) == 1, 15, what="seq 2 reported duplicated"
    )
    checks_pass(gw, 3)  # past the grace period: still nothing missing
    assert gw.metrics()[MISSING_TOTAL] == 0
    assert gw.metrics()[WRITTEN] == 4
    code, rows, err = gaps_cli(influx.url)
    assert code == 1, err
    assert rows == [
        {
            "hall": HALL,
            "device": DEVICE,
            "count": 4,
            "missing_count": 0,
            "max_seq": 3,
            "missing": [],
            "duplicated": [2],
        }
    ]
    pub.loop_stop()
    pub.disconnect()
    gw.stop()


def test_hole_and_repeat_that_cancel_out_are_reported(
    tmp_path: Path, broker: Mosquitto, influx: Influxd
) -> None:
    """Seq 1,2,2',4: seq 3 is lost and seq 2 is stored twice; both must be visible."""
    gw = gateway(tmp_path, broker, influx)
    pub = raw_client(broker.port)
    publish(pub, rating(1), rating(2), rating(2, level=1), rating(4))
    wait_until(lambda: rating_count(influx.url) == 4, 15, what="4 ratings stored")
    checks_pass(gw, 4)  # well past the 1 s grace period
    m = gw.metrics()
    pub.loop_stop()
    pub.disconnect()
    gw.stop()
    code, rows, _err = gaps_cli(influx.url)
    assert (code, rows) == (
        1,
        [
            {
                "hall": HALL,
                "device": DEVICE,
                "count": 4,
                "missing_count": 1,
                "max_seq": 4,
                "missing": [3],
                "duplicated": [2],
            }
        ],
    )
    assert missing(m) == 1 and m[MISSING_TOTAL] == 1 and m[DUPLICATED_TOTAL] == 1


def test_huge_seq_is_reported_by_the_gateway_and_the_cli(
    tmp_path: Path, broker: Mosquitto, influx: Influxd
) -> None:
    """A device jumping to seq 10**12: the gateway's own checker and the CLI report it, bounded."""
    gw = gateway(tmp_path, broker, influx)
    pub = raw_client(broker.port)
    # 10**12 is 0 mod 10**6: pressed in the same ms as a seq 10**6, both would have one point
    # time and one would overwrite the other. The second is kept as a dead letter instead.
    huge = rating(10**12)
    publish(pub, rating(1), huge, rating(10**6, ts=huge["ts"]))
    wait_until(lambda: rating_count(influx.url) == 2, 15, what="2 ratings stored")
    wait_until(
        lambda: gw.metrics().get(f'{REJECTED}{{reason="time_conflict"}}') == 1,
        15,
        what="the same point time kept as a dead letter",
    )
    lost = 10**12 - 2
    wait_until(
        lambda: gw.metrics().get(MISSING_TOTAL) == lost, 30, what="the jump reported missing"
    )
    assert missing(gw.metrics()) == lost
    checks_pass(gw, 2)  # the checker keeps running
    assert gw.metrics()[MISSING_TOTAL] == lost
    assert gw.metrics()[DUPLICATED_TOTAL] == 0
    pub.loop_stop()
    pub.disconnect()
    gw.stop()
    code, rows, err = gaps_cli(influx.url, mem_limit=1 << 30)
    assert code == 1, err
    assert rows is not None, f"no JSON on stdout; stderr: {err}"
    ((device, max_seq, missing_count, listed),) = [
        (r["device"], r["max_seq"], r["missing_count"], r["missing"]) for r in rows
    ]
    assert (device, max_seq, missing_count) == (DEVICE, 10**12, lost)
    assert listed[:2] == [2, 3] and len(listed) == 1000


class Spy:
    """A plain (not shared) subscriber counting every rating message the broker routes."""

    def __init__(self, port: int) -> None:
        """Subscribe to all ratings and wait for the SUBACK."""
        self.seen: Counter[tuple[str, int, str]] = Counter()
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = raw_client(port, f"spy-{uuid6.uuid7().hex[:8]}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.subscribe("wr/v1/+/+/rating", qos=1)
        assert subscribed.wait(5), "spy not subscribed"

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        doc = json.loads(msg.payload)
        with self._lock:
            self.seen[(doc["device"], doc["seq"], doc["id"])] += 1

    def total(self) -> int:
        """Rating messages routed so far, resends included."""
        with self._lock:
            return sum(self.seen.values())

    def distinct(self) -> int:
        """Distinct ratings routed so far."""
        with self._lock:
            return len(self.seen)

    def resent(self) -> list[tuple[str, int]]:
        """(device, seq) of ratings the broker received more than once."""
        with self._lock:
            return sorted((d, q) for (d, q, _i), n in self.seen.items() if n > 1)

    def close(self) -> None:
        """Disconnect."""
        self.client.loop_stop()
        self.client.disconnect()


def test_two_gateways_share_the_stream(tmp_path: Path, broker: Mosquitto, influx: Influxd) -> None:
    """Two gateways on one shared subscription store 1000 ratings once each, no gaps."""
    gws = [
        GatewayProcess(
            tmp_path / f"gateway-{n}",
            broker.port,
            influx.url,
            client_id=f"gateway-{n}",
            WR_GATEWAY_GAPS__INTERVAL_S="0.5",
            WR_GATEWAY_SHARE_GROUP="gateway",  # opt-in: the default is a plain subscription
        )
        for n in (1, 2)
    ]
    for gw in gws:
        gw.start()
    spy = Spy(broker.port)
    sim = simulate_proc(
        broker.port,
        tmp_path / "kiosks",
        hall="h2",
        first=1,
        kiosks=5,
        per_kiosk=200,
        rate=50,
        log_path=tmp_path / "simulate.log",
    )
    assert sim.wait(90) == 0, (tmp_path / "simulate.log").read_text(errors="replace")[-3000:]
    wait_until(lambda: rating_count(influx.url) >= 1000, 30, what="1000 ratings stored")
    wait_until(lambda: spy.distinct() == 1000, 10, what="spy saw all 1000")
    assert rating_count(influx.url) == 1000
    assert distinct_ids(influx.url) == 1000

    # Every routed message went to exactly one gateway, which either wrote it or skipped it
    # as a redelivery of an id it had already written.
    last: list[float] = []

    def accounted() -> bool:
        ms = [gw.metrics() for gw in gws]
        received = sum(m['windowrate_gateway_messages_received_total{kind="rating"}'] for m in ms)
        last[:] = [spy.total(), received, sum(m[WRITTEN] for m in ms), sum(m[DUPS] for m in ms)]
        return last[1] == last[2] and last[2] + last[3] == last[0]

    try:
        wait_until(accounted, 10, what="gateway accounting")
    except AssertionError:
        pytest.fail(f"delivered, received, written, skipped = {last}: do not add up")
    delivered = spy.total()
    written = [gw.metrics()[WRITTEN] for gw in gws]
    assert all(w > 0 for w in written), written
    # The kiosks publish a rating more than once now and then (see
    # test_kiosk_publishes_each_rating_once); a copy that reaches the other gateway is
    # written (idempotently) and counted again. Without such resends the sum is exactly 1000.
    assert 1000 <= sum(written) <= delivered, (written, spy.resent())
    if delivered == 1000:
        assert sum(written) == 1000, written
    for gw in gws:
        checks_pass(gw, 2)
    for gw in gws:
        m = gw.metrics()
        assert m[MISSING_TOTAL] == 0 and m[DUPLICATED_TOTAL] == 0, gw.log_tail()
        assert not [
            k for k, v in m.items() if k.startswith("windowrate_gateway_seq_missing{") and v
        ]
    assert gaps_cli(influx.url)[:2] == (0, [])
    spy.close()
    for gw in gws:
        gw.stop()


def test_kiosk_publishes_each_rating_once(tmp_path: Path, broker: Mosquitto) -> None:
    """On a healthy connection a kiosk publishes each rating once (slow disk: 100 ms commits)."""
    spy = Spy(broker.port)
    ident = Identity(hall=HALL, device=DEVICE, window="a12")
    outbox = Outbox(tmp_path / "outbox.sqlite")
    mark_acked = outbox.mark_acked

    def slow_mark_acked(seq: int, now_ms: int) -> None:
        time.sleep(0.1)  # an SD card's fsync under load
        mark_acked(seq, now_ms)

    outbox.mark_acked = slow_mark_acked  # type: ignore[method-assign]
    clock = SystemClock(trust_wall=True)
    publisher = Publisher(outbox, ident, MqttSettings(port=broker.port), clock)
    recorder = Recorder(outbox, ident, clock, publisher.wake)
    publisher.start()
    stop = threading.Event()

    def wake_often() -> None:  # as the recorder and the outbox purge do on a busy kiosk
        while not stop.wait(0.005):
            publisher.wake()

    waker = threading.Thread(target=wake_often, daemon=True)
    waker.start()
    try:
        wait_until(lambda: publisher.connected, 10, what="kiosk connected")
        for _ in range(20):
            recorder.record(5, input="touch", prompted=True, staff="0457")
            time.sleep(0.05)
        assert publisher.wait_drained(30)
        wait_until(lambda: spy.distinct() == 20, 10, what="20 ratings routed")
        time.sleep(0.5)
        assert spy.resent() == []
        assert spy.total() == 20
    finally:
        stop.set()
        waker.join()
        publisher.stop()
        outbox.close()
        spy.close()


def test_lost_tail_is_reported_from_the_device_status(
    tmp_path: Path, broker: Mosquitto, influx: Influxd
) -> None:
    """Seqs 3 and 4 never arrive and nothing comes after them: the device's status (last seq
    4, nothing waiting in its outbox) makes the lost tail visible."""
    gw = gateway(tmp_path, broker, influx)
    pub = raw_client(broker.port)
    publish(pub, rating(1), rating(2))
    status = {
        "v": 1,
        "device": DEVICE,
        "hall": HALL,
        "state": "online",
        "ts": int(time.time() * 1000),
        "last_seq": 4,
        "backlog": 0,
    }
    pub.publish(f"wr/v1/{HALL}/{DEVICE}/status", json.dumps(status), qos=1).wait_for_publish(5)
    wait_until(lambda: gw.metrics().get(MISSING_TOTAL) == 2, 30, what="tail of 2 reported")
    assert missing(gw.metrics()) == 2
    code, rows, _err = gaps_cli(influx.url)
    assert code == 1 and rows[0]["missing"] == [3, 4]
    # While the device still has ratings waiting (backlog > 0), its tail is not counted.
    status.update(ts=int(time.time() * 1000), last_seq=6, backlog=2)
    pub.publish(f"wr/v1/{HALL}/{DEVICE}/status", json.dumps(status), qos=1).wait_for_publish(5)
    publish(pub, rating(3), rating(4))
    wait_until(lambda: gw.metrics().get(MISSING_TOTAL) == 0, 30, what="gap closed")
    assert gaps_cli(influx.url)[:2] == (0, [])
    pub.loop_stop()
    pub.disconnect()
    gw.stop()
