"""Kiosk core → real broker → gateway → real InfluxDB, one failure mode at a time."""

import threading
import time
from pathlib import Path

from common.mqtt import MqttSettings
from devstack.services import Influxd, Mosquitto
from kiosk.core.clock import SystemClock
from kiosk.core.outbox import Outbox
from kiosk.core.publisher import Publisher
from kiosk.core.recorder import Identity, Recorder
from tests.support import GatewayProcess, influx_query, rating_count, wait_until

IDENT = Identity(hall="h1", device="k-0001", window="a01")


class Kiosk:
    """A kiosk core (outbox, recorder, publisher) on `port`."""

    def __init__(
        self, path: Path, port: int, clock: object | None = None, resend_window_s: float = 60.0
    ) -> None:
        """Open the outbox and start publishing."""
        self.clock = clock or SystemClock(trust_wall=True)
        self.outbox = Outbox(path)
        self.publisher = Publisher(
            self.outbox,
            IDENT,
            MqttSettings(port=port),
            self.clock,  # type: ignore[arg-type]
            resend_window_s=resend_window_s,
        )
        self.recorder = Recorder(self.outbox, IDENT, self.clock, self.publisher.wake)  # type: ignore[arg-type]
        self.publisher.start()

    def rate(self, n: int, level: int = 5) -> None:
        """Record n ratings."""
        for _ in range(n):
            self.recorder.record(level, input="touch", prompted=True, staff="0457")

    def close(self) -> None:
        """Stop publishing and close the outbox."""
        self.publisher.stop()
        self.outbox.close()


def test_rating_flows_end_to_end(tmp_path: Path, broker: Mosquitto, influx: Influxd) -> None:
    """A press becomes exactly one point with the contract's tags, fields and time."""
    gw = GatewayProcess(tmp_path / "gw", broker.port, influx.url)
    gw.start()
    k = Kiosk(tmp_path / "k.sqlite", broker.port)
    k.recorder.record(
        2,
        input="touch",
        prompted=True,
        staff="0457",
        ticket="A0123",
        item="330100-001",
        reasons=["waiting"],
    )
    wait_until(lambda: rating_count(influx.url) == 1, 15)
    assert k.publisher.wait_drained(5)
    (series,) = influx_query(influx.url, 'SELECT * FROM "rating"')
    row = dict(zip(series["columns"], series["values"][0], strict=True))
    assert row["hall"] == "h1" and row["device"] == "k-0001" and row["window"] == "a01"
    assert row["level"] == "2" and row["seq"] == 1 and row["scale"] == 5
    assert row["staff"] == "0457" and row["ticket"] == "A0123" and row["reasons"] == "waiting"
    assert row["input"] == "touch" and row["prompted"] is True and row["clock_synced"] is True
    # The retained status reached the gateway too, with the outbox state.
    wait_until(lambda: influx_query(influx.url, 'SELECT last("last_seq") FROM "device_status"'), 10)
    k.close()
    gw.stop()


def test_kiosk_keeps_ratings_while_broker_is_down(
    tmp_path: Path, broker: Mosquitto, influx: Influxd
) -> None:
    """Ratings taken with no broker wait in the outbox and all arrive once it is back."""
    gw = GatewayProcess(tmp_path / "gw", broker.port, influx.url)
    gw.start()
    broker.stop()
    k = Kiosk(tmp_path / "k.sqlite", broker.port)
    k.rate(30)
    assert k.outbox.backlog() == 30
    broker.start()
    wait_until(lambda: rating_count(influx.url) == 30, 60)
    assert k.publisher.wait_drained(10)
    k.close()
    gw.stop()


def test_kiosk_restart_resumes_seq_and_sends_leftovers(
    tmp_path: Path, broker: Mosquitto, influx: Influxd
) -> None:
    """A kiosk stopped with a backlog sends it after restart and continues the seq."""
    broker.stop()
    k = Kiosk(tmp_path / "k.sqlite", broker.port)
    k.rate(10)
    k.close()
    broker.start()
    gw = GatewayProcess(tmp_path / "gw", broker.port, influx.url)
    gw.start()
    k = Kiosk(tmp_path / "k.sqlite", broker.port)
    k.rate(5)
    wait_until(lambda: rating_count(influx.url) == 15, 30)
    (s,) = influx_query(influx.url, 'SELECT min("seq"), max("seq") FROM "rating"')
    assert s["values"][0][1:] == [1, 15]
    k.close()
    gw.stop()


def test_plain_subscription_queues_across_a_broker_restart(
    tmp_path: Path, broker: Mosquitto, influx: Influxd
) -> None:
    """The default plain subscription survives a broker restart: ratings sent while the
    gateway is away queue in its session and are stored once it is back."""
    gw = GatewayProcess(tmp_path / "gw", broker.port, influx.url)
    gw.start()
    gw.stop()
    broker.restart()
    k = Kiosk(tmp_path / "k.sqlite", broker.port)
    k.rate(5)
    assert k.publisher.wait_drained(15)  # the broker took them for the gateway's session
    gw.start()
    wait_until(lambda: rating_count(influx.url) == 5, 30)
    k.close()
    gw.stop()


def test_no_subscriber_after_broker_restart_is_retried(
    tmp_path: Path, broker: Mosquitto, influx: Influxd
) -> None:
    """Mosquitto forgets shared subscriptions (opt-in) on restart; ratings sent before the
    gateway is back get PUBACK 'no matching subscribers' and stay in the outbox until it is."""
    gw = GatewayProcess(tmp_path / "gw", broker.port, influx.url, WR_GATEWAY_SHARE_GROUP="gateway")
    gw.start()
    gw.stop()
    broker.restart()
    k = Kiosk(tmp_path / "k.sqlite", broker.port)
    wait_until(lambda: k.publisher.connected, 10)
    k.rate(5)
    time.sleep(3)  # several PUBACKs with reason 0x10 meanwhile
    assert k.outbox.backlog() == 5
    gw.start()
    wait_until(lambda: rating_count(influx.url) == 5, 30)
    assert k.publisher.wait_drained(10)
    k.close()
    gw.stop()


def test_influx_down_means_no_ack_and_nothing_lost(
    tmp_path: Path, broker: Mosquitto, influx: Influxd
) -> None:
    """With InfluxDB down the gateway holds messages unacknowledged; killed meanwhile, the
    broker redelivers them to the restarted gateway."""
    gw = GatewayProcess(tmp_path / "gw", broker.port, influx.url)
    gw.start()
    influx.stop()
    k = Kiosk(tmp_path / "k.sqlite", broker.port)
    k.rate(20)
    assert k.publisher.wait_drained(15)  # the broker has them
    wait_until(lambda: gw.metrics()["windowrate_gateway_in_flight_messages"] >= 20, 15)
    assert gw.metrics()["windowrate_gateway_influx_write_failures_total"] >= 1
    gw.kill()
    influx.start()
    gw.start()
    wait_until(lambda: rating_count(influx.url) == 20, 30)
    k.close()
    gw.stop()


def test_clock_unsynced_before_2020_is_held_then_corrected(
    tmp_path: Path, broker: Mosquitto, influx: Influxd
) -> None:
    """A press with an implausible, unsynced clock waits; after NTP sync in the same boot its
    ts is corrected from the monotonic clock."""

    class StepClock:
        """A clock that starts in 1970 unsynced and is later stepped by 'NTP'."""

        def __init__(self) -> None:
            self.offset_ms = -int(time.time() * 1000) + 1_000_000
            self.is_synced = False
            self.lock = threading.Lock()

        def wall_ms(self) -> int:
            return int(time.time() * 1000) + self.offset_ms

        def mono_ns(self) -> int:
            return time.monotonic_ns()

        def synced(self) -> bool:
            return self.is_synced

        def boot_id(self) -> str:
            return "boot-1"

    gw = GatewayProcess(tmp_path / "gw", broker.port, influx.url)
    gw.start()
    clock = StepClock()
    k = Kiosk(tmp_path / "k.sqlite", broker.port, clock)
    pressed_at = int(time.time() * 1000)
    k.rate(1)
    time.sleep(2)
    assert k.outbox.backlog() == 1  # held: ts would be 1970
    assert rating_count(influx.url) == 0  # InfluxDB answers (-1 would be an error): none
    clock.offset_ms, clock.is_synced = 0, True  # NTP steps the clock
    k.publisher.wake()
    wait_until(lambda: rating_count(influx.url) == 1, 15)
    (s,) = influx_query(
        influx.url,
        'SELECT "seq", "clock_synced" FROM "rating"',
    )
    ts_ms = int(time.mktime(time.strptime(s["values"][0][0][:19], "%Y-%m-%dT%H:%M:%S"))) * 1000
    assert abs(ts_ms - time.timezone * 1000 - pressed_at) < 2000
    assert s["values"][0][2] is True
    k.close()
    gw.stop()


def test_broker_crash_after_puback_loses_nothing(tmp_path: Path, influx: Influxd) -> None:
    """Mosquitto saves its state periodically: a hard crash loses what it acknowledged since.
    The kiosk keeps acknowledged ratings for a while and sends them again on reconnect."""
    broker = Mosquitto(tmp_path / "mq", autosave_s=3600)  # nothing saved before the crash
    broker.start()
    try:
        gw = GatewayProcess(tmp_path / "gw", broker.port, influx.url)
        gw.start()
        gw.stop()  # ratings now queue in the broker for the gateway's session
        k = Kiosk(tmp_path / "k.sqlite", broker.port)
        k.rate(20)
        assert k.publisher.wait_drained(15)  # every rating PUBACKed by the broker
        broker.kill()  # crash: the queue for the gateway is gone
        broker.start()
        gw.start()
        wait_until(lambda: rating_count(influx.url) == 20, 60)
        k.close()
        gw.stop()
    finally:
        broker.stop()


def test_broker_down_longer_than_the_resend_window_loses_nothing(
    tmp_path: Path, influx: Influxd
) -> None:
    """The resend window counts back from when the connection was lost, not from the
    reconnect: a broker that crashed and stayed down longer than the window loses nothing."""
    broker = Mosquitto(tmp_path / "mq", autosave_s=3600)
    broker.start()
    try:
        gw = GatewayProcess(tmp_path / "gw", broker.port, influx.url)
        gw.start()
        gw.stop()
        k = Kiosk(tmp_path / "k.sqlite", broker.port, resend_window_s=2.0)
        k.rate(5)
        assert k.publisher.wait_drained(15)
        broker.kill()
        wait_until(lambda: not k.publisher.connected, 10)
        time.sleep(4)  # down twice as long as the window
        broker.start()
        gw.start()
        wait_until(lambda: rating_count(influx.url) == 5, 60)
        k.close()
        gw.stop()
    finally:
        broker.stop()
