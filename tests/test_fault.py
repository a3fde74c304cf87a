"""The foundation's fault test: 5,000 ratings through crashes and outages, stored exactly once."""

import signal
import subprocess
import time
from pathlib import Path

import pytest

from devstack.services import Influxd, Mosquitto
from gateway.gaps import open_client, scan
from storage.client import InfluxSettings
from tests.support import (
    GatewayProcess,
    distinct_ids,
    influx_query,
    rating_count,
    simulate_proc,
    wait_until,
)

KIOSKS = 20
PER_KIOSK = 250
TOTAL = KIOSKS * PER_KIOSK


@pytest.mark.slow
def test_5000_ratings_survive_crashes_and_outages(
    tmp_path: Path, broker: Mosquitto, influx: Influxd
) -> None:
    """Gateway SIGKILLed twice, broker restarted, influxd down 30 s, a kiosk killed: all once."""
    gw = GatewayProcess(tmp_path / "gateway", broker.port, influx.url)
    gw.start()
    sim = tmp_path / "kiosks"
    logs = tmp_path / "logs"
    logs.mkdir()

    def start_kiosks(first: int, n: int) -> subprocess.Popen[bytes]:
        return simulate_proc(
            broker.port,
            sim,
            hall="fault",
            first=first,
            kiosks=n,
            per_kiosk=PER_KIOSK,
            rate=5.0,
            log_path=logs / f"kiosks-{first}.log",
        )

    group: subprocess.Popen[bytes] | None = None
    lone: subprocess.Popen[bytes] | None = None
    try:
        group = start_kiosks(1, KIOSKS - 1)  # 19 kiosks in one process
        lone = start_kiosks(KIOSKS, 1)  # the kiosk that will be killed mid-stream
        t0 = time.monotonic()

        def at(second: float) -> None:
            time.sleep(max(0.0, t0 + second - time.monotonic()))

        at(5)
        gw.kill()  # gateway crash 1
        at(7)
        gw.start()
        at(12)
        broker.restart()  # broker restart (persistence keeps sessions and queued messages)
        at(15)
        lone.send_signal(signal.SIGKILL)  # kiosk process killed mid-stream
        lone.wait()
        at(17)
        lone = start_kiosks(KIOSKS, 1)
        at(20)
        influx.stop()  # InfluxDB down for 30 s
        at(35)
        gw.kill()  # gateway crash 2, while holding unacknowledged messages
        at(37)
        gw.start()
        at(50)
        influx.start()

        assert group.wait(300) == 0, (logs / "kiosks-1.log").read_text()[-3000:]
        assert lone.wait(300) == 0, (logs / f"kiosks-{KIOSKS}.log").read_text()[-3000:]
        wait_until(lambda: rating_count(influx.url) >= TOTAL, 180, 0.5, "all ratings in InfluxDB")
        time.sleep(2)  # anything extra (a double) would land now

    finally:
        for proc in (group, lone):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()

    assert rating_count(influx.url) == TOTAL
    assert distinct_ids(influx.url) == TOTAL
    per_device = influx_query(
        influx.url, 'SELECT count("seq"), max("seq"), min("seq") FROM "rating" GROUP BY "device"'
    )
    assert len(per_device) == KIOSKS
    for s in per_device:
        _t, count, max_seq, min_seq = s["values"][0]
        assert (count, min_seq, max_seq) == (PER_KIOSK, 1, PER_KIOSK), s["tags"]
    query = open_client(InfluxSettings(url=influx.url))
    assert scan(query) == []
    query.close()

    # The gateway's own gap report agrees: a check after the last write finds nothing.
    checks = gw.metrics()["windowrate_gateway_gap_checks_total"]
    wait_until(lambda: gw.metrics()["windowrate_gateway_gap_checks_total"] > checks + 1, 30)
    m = gw.metrics()
    assert m["windowrate_gateway_seq_missing_total"] == 0
    assert m["windowrate_gateway_seq_duplicated_total"] == 0
    assert not any(k.startswith("windowrate_gateway_messages_rejected_total") for k in m)
    gw.stop()


@pytest.mark.slow
def test_broker_sigkilled_while_the_gateway_holds_unacknowledged_messages(
    tmp_path: Path, broker: Mosquitto, influx: Influxd
) -> None:
    """influxd paused (SIGSTOP) so the gateway holds a batch unacknowledged, shown by its
    in-flight metric; then the broker is SIGKILLed (not stopped), restarted, influxd resumed:
    the 5,000 ratings are stored exactly once, seq complete."""
    gw = GatewayProcess(
        tmp_path / "gateway", broker.port, influx.url, WR_GATEWAY_INFLUX__TIMEOUT_S="3"
    )
    gw.start()
    logs = tmp_path / "logs"
    logs.mkdir()
    sims = [
        simulate_proc(
            broker.port,
            tmp_path / "kiosks",
            hall="fault",
            first=first,
            kiosks=n,
            per_kiosk=PER_KIOSK,
            rate=5.0,
            log_path=logs / f"kiosks-{first}.log",
        )
        for first, n in ((1, KIOSKS // 2), (1 + KIOSKS // 2, KIOSKS - KIOSKS // 2))
    ]
    assert influx.proc is not None
    try:
        wait_until(lambda: rating_count(influx.url) >= 500, 60, 0.2, "ratings flowing")
        influx.proc.send_signal(signal.SIGSTOP)  # InfluxDB hangs: the batch cannot be stored
        held = wait_until(
            lambda: gw.metrics()["windowrate_gateway_in_flight_messages"] >= 200,
            30,
            0.1,
            "the gateway holding unacknowledged messages",
        )
        in_flight = gw.metrics()["windowrate_gateway_in_flight_messages"]
        broker.kill()  # SIGKILL while those messages are unacknowledged
        assert held and in_flight >= 200
        time.sleep(2)
        broker.start()
        time.sleep(3)
        influx.proc.send_signal(signal.SIGCONT)
        for proc in sims:
            assert proc.wait(300) == 0, (logs / "kiosks-1.log").read_text()[-3000:]
        wait_until(lambda: rating_count(influx.url) >= TOTAL, 180, 0.5, "all ratings in InfluxDB")
        time.sleep(2)  # anything extra (a double) would land now
    finally:
        if influx.proc is not None:
            influx.proc.send_signal(signal.SIGCONT)
        for proc in sims:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    assert rating_count(influx.url) == TOTAL
    assert distinct_ids(influx.url) == TOTAL
    per_device = influx_query(
        influx.url, 'SELECT count("seq"), max("seq"), min("seq") FROM "rating" GROUP BY "device"'
    )
    assert len(per_device) == KIOSKS
    for s in per_device:
        _t, count, max_seq, min_seq = s["values"][0]
        assert (count, min_seq, max_seq) == (PER_KIOSK, 1, PER_KIOSK), s["tags"]
    m = gw.metrics()
    assert m["windowrate_gateway_link_reconnects_total"] >= 1
    assert not any(k.startswith("windowrate_gateway_messages_rejected_total") for k in m)
    gw.stop()
