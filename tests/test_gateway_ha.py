"""Gateways on Mosquitto's plain persistent sessions: active/standby failover and hall partitions.

Real Mosquitto, real influxd, gateways and kiosk simulators as real processes. A rating must
be stored once whichever gateway stores it, and every device's seq must be complete.
"""

import json
import subprocess
import time
from pathlib import Path

import pytest

from devstack.services import Influxd, Mosquitto
from tests.support import (
    GatewayProcess,
    distinct_ids,
    influx_query,
    rating_count,
    rating_doc,
    raw_client,
    simulate_proc,
    wait_until,
)

ACTIVE = "windowrate_gateway_session_active"
WRITTEN = "windowrate_gateway_ratings_written_total"


def kiosks(
    broker: Mosquitto, tmp: Path, hall: str, first: int, n: int, per_kiosk: int, rate: float
) -> subprocess.Popen[bytes]:
    """`n` simulated kiosks of `hall` (devices k-{first}…) as one child process."""
    return simulate_proc(
        broker.port,
        tmp / "kiosks" / hall,
        hall=hall,
        first=first,
        kiosks=n,
        per_kiosk=per_kiosk,
        rate=rate,
        log_path=tmp / f"kiosks-{hall}-{first}.log",
    )


def assert_exactly_once(url: str, total: int, devices: int, per_kiosk: int) -> None:
    """Every rating once: count, distinct ids, and seq 1..per_kiosk complete per device."""
    assert rating_count(url) == total
    assert distinct_ids(url) == total
    series = influx_query(
        url,
        'SELECT count("seq"), min("seq"), max("seq") FROM "rating" GROUP BY "hall", "device"',
    )
    assert len(series) == devices
    for s in series:
        _t, count, low, high = s["values"][0]
        assert (count, low, high) == (per_kiosk, 1, per_kiosk), s["tags"]


def finish(procs: list[subprocess.Popen[bytes]], tmp: Path) -> None:
    """Wait for every simulator to deliver all its ratings."""
    for proc in procs:
        assert proc.wait(300) == 0, "\n".join(
            p.read_text()[-2000:] for p in sorted(tmp.glob("kiosks-*.log"))
        )


@pytest.mark.slow
def test_standby_continues_the_session_when_the_primary_is_killed(
    tmp_path: Path, broker: Mosquitto, influx: Influxd
) -> None:
    """Primary SIGKILLed mid-stream: the standby (same client id) takes over the session and
    every rating is stored once; the primary's return takes it back without a fight."""
    primary = GatewayProcess(tmp_path / "primary", broker.port, influx.url, client_id="gw-ha")
    standby = GatewayProcess(
        tmp_path / "standby", broker.port, influx.url, client_id="gw-ha", WR_GATEWAY_ROLE="standby"
    )
    primary.start()
    standby.start()  # connected = its presence watcher is up
    time.sleep(3)  # longer than a standby waits for a presence that does not exist
    assert primary.metrics()[ACTIVE] == 1 and standby.metrics()[ACTIVE] == 0

    n, per_kiosk = 10, 120
    sims = [kiosks(broker, tmp_path, "ha", 1, n, per_kiosk, rate=4.0)]
    wait_until(lambda: rating_count(influx.url) >= 200, 60, 0.2, "ratings flowing")
    primary.kill()  # mid-stream: it holds messages it has not acknowledged
    wait_until(lambda: standby.metrics()[ACTIVE] == 1, 20, 0.1, "standby active")
    stored_at_failover = rating_count(influx.url)
    finish(sims, tmp_path)
    wait_until(lambda: rating_count(influx.url) >= n * per_kiosk, 120, 0.5, "all ratings")
    time.sleep(2)  # anything extra (a double) would land now
    assert_exactly_once(influx.url, n * per_kiosk, n, per_kiosk)
    m = standby.metrics()
    assert m["windowrate_gateway_standby_takeovers_total"] == 1
    assert m[WRITTEN] >= n * per_kiosk - stored_at_failover

    # The primary returns and takes the session back; the standby yields and stays idle.
    primary.start()
    wait_until(lambda: standby.metrics()[ACTIVE] == 0, 20, 0.1, "standby idle again")
    sims = [kiosks(broker, tmp_path, "ha", 1 + n, n, 30, rate=5.0)]
    finish(sims, tmp_path)
    total = n * per_kiosk + n * 30
    wait_until(lambda: rating_count(influx.url) >= total, 60, 0.5, "second wave")
    time.sleep(2)
    assert rating_count(influx.url) == distinct_ids(influx.url) == total
    assert primary.metrics()[ACTIVE] == 1 and standby.metrics()[ACTIVE] == 0
    assert standby.metrics()["windowrate_gateway_standby_takeovers_total"] == 1  # no tug of war
    standby.stop()
    primary.stop()


@pytest.mark.slow
def test_three_gateways_over_six_halls_one_killed_and_restarted(
    tmp_path: Path, broker: Mosquitto, influx: Influxd
) -> None:
    """Halls partitioned over three gateways, each its own client id and subscriptions; one
    is SIGKILLed and restarted mid-stream: nothing lost, nothing doubled."""
    halls = [f"hall-{i}" for i in range(1, 7)]
    gateways = [
        GatewayProcess(
            tmp_path / f"gw{g}",
            broker.port,
            influx.url,
            client_id=f"gw-part-{g}",
            WR_GATEWAY_HALLS=",".join(halls[2 * g : 2 * g + 2]),
        )
        for g in range(3)
    ]
    for gw in gateways:
        gw.start()
    n, per_kiosk = 3, 100
    sims = [kiosks(broker, tmp_path, hall, 1, n, per_kiosk, rate=4.0) for hall in halls]
    wait_until(lambda: rating_count(influx.url) >= 300, 60, 0.2, "ratings flowing")
    gateways[1].kill()
    time.sleep(3)  # its halls queue in its session meanwhile
    gateways[1].start()
    finish(sims, tmp_path)
    total = len(halls) * n * per_kiosk
    wait_until(lambda: rating_count(influx.url) >= total, 120, 0.5, "all ratings")
    time.sleep(2)
    assert_exactly_once(influx.url, total, len(halls) * n, per_kiosk)
    # Each gateway takes its own halls only: with the first one stopped, a rating of its hall
    # waits in its session (the others do not store it) until it is back.
    gateways[0].stop()
    pub = raw_client(broker.port, "ha-pub")
    doc = rating_doc(halls[0], "k-0099", 1)
    pub.publish(f"wr/v1/{halls[0]}/k-0099/rating", json.dumps(doc), qos=1).wait_for_publish(10)
    time.sleep(2)
    assert rating_count(influx.url) == total
    gateways[0].start()
    wait_until(lambda: rating_count(influx.url) == total + 1, 30, 0.2, "the waiting rating")
    pub.loop_stop()
    pub.disconnect()
    per_hall = influx_query(influx.url, 'SELECT count("seq") FROM "rating" GROUP BY "hall"')
    assert {s["tags"]["hall"]: s["values"][0][1] for s in per_hall} == {
        h: n * per_kiosk + (h == halls[0]) for h in halls
    }
    for gw in gateways:
        gw.stop()


def test_a_stopped_primary_hands_over_through_its_will(
    tmp_path: Path, broker: Mosquitto, influx: Influxd
) -> None:
    """SIGTERM: the primary disconnects with 0x04 (will), the standby takes over, a rating
    sent meanwhile is stored once; the presence topic names who holds the session."""
    primary = GatewayProcess(tmp_path / "primary", broker.port, influx.url, client_id="gw-ho")
    standby = GatewayProcess(
        tmp_path / "standby", broker.port, influx.url, client_id="gw-ho", WR_GATEWAY_ROLE="standby"
    )
    primary.start()
    standby.start()
    time.sleep(3)
    assert standby.metrics()[ACTIVE] == 0
    primary.stop()
    wait_until(lambda: standby.metrics()[ACTIVE] == 1, 10, 0.1, "standby active")
    pub = raw_client(broker.port, "ho-pub")
    doc = rating_doc("h1", "k-0001", 1)
    pub.publish("wr/v1/h1/k-0001/rating", json.dumps(doc), qos=1).wait_for_publish(10)
    wait_until(lambda: rating_count(influx.url) == 1, 15, 0.2, "the rating via the standby")
    seen: list[bytes] = []
    pub.on_message = lambda _c, _u, msg: seen.append(bytes(msg.payload))
    pub.subscribe("wr/gateway/gw-ho/presence", qos=1)
    wait_until(lambda: seen, 10, what="the retained presence")
    assert seen[-1].startswith(b"online ")  # the standby's own announcement
    pub.loop_stop()
    pub.disconnect()
    standby.stop()
