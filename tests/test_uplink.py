"""A hall broker's uplink to the central broker: the WAN is cut for 60 s while kiosks rate.

Two real Mosquittos; the hall's uplink (server/broker/uplink.py) reaches the centre through a TCP
relay that the test cuts (every connection closed, new ones refused) and restores. Kiosks
(`windowrate simulate`, the real kiosk core) publish to the hall broker; the central gateway
writes to the central InfluxDB, which must end with every rating exactly once.
"""

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.services import Influxd, Mosquitto, free_port
from server.broker.uplink import UplinkSettings, uplink_conf
from tests.support import GatewayProcess, simulate_proc, wait_until

HALL = "hz-north"
KIOSKS, PER_KIOSK, RATE = 4, 40, 0.5  # 160 ratings over ~80 s, the link down 60 s of them
CUT_AT_S, CUT_FOR_S = 5.0, 60.0


class Relay:
    """A TCP relay standing for the WAN link: cut() drops it, restore() brings it back."""

    def __init__(self, target_port: int) -> None:
        """Relay a free local port to `target_port`."""
        self.target_port = target_port
        self.port = free_port()
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        self.server: socket.socket | None = None
        self.connections_made = 0

    def restore(self) -> None:
        """Listen again."""
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(8)
        self.server = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def cut(self) -> None:
        """Close the listener and every connection through it."""
        with self.lock:
            srv, self.server = self.server, None
            conns, self.conns = self.conns, []
        if srv is not None:
            srv.close()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, srv: socket.socket) -> None:
        """Pair each client with a connection to the target."""
        while True:
            try:
                client, _ = srv.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                if self.server is not srv:
                    client.close()
                    upstream.close()
                    return
                self.conns += [client, upstream]
                self.connections_made += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        """Copy bytes one way until either side closes."""
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def central(tmp_path: Path) -> Iterator[tuple[Mosquitto, Influxd, GatewayProcess]]:
    """The centre: broker, InfluxDB and gateway."""
    broker = Mosquitto(tmp_path / "central-mosquitto")
    influx = Influxd(tmp_path / "central-influxd")
    broker.start()
    influx.start()
    gw = GatewayProcess(tmp_path / "central-gateway", broker.port, influx.url)
    gw.start()
    yield broker, influx, gw
    gw.stop()
    influx.stop()
    broker.stop()


def pressed_after(influx: Influxd, ms: int) -> int:
    """How many ratings in `influx` were pressed after `ms` (point time from the press time)."""
    q = f'SELECT count("seq") FROM rating WHERE time >= {ms + 1}ms'
    r = httpx.get(f"{influx.url}/query", params={"db": "windowrate", "q": q}).json()["results"]
    series = r[0].get("series") or []
    return int(series[0]["values"][0][1]) if series else 0


def counts(influx: Influxd) -> tuple[int, int, dict[str, tuple[int, int, int]]]:
    """count(seq), count(distinct(id)) and per device (count, min, max) of seq."""
    q = (
        'SELECT count("seq") FROM rating; SELECT count(distinct("id")) FROM rating; '
        'SELECT count("seq"), min("seq"), max("seq") FROM rating GROUP BY "device"'
    )
    r = httpx.get(f"{influx.url}/query", params={"db": "windowrate", "q": q}).json()["results"]

    def one(res: dict) -> int:  # type: ignore[type-arg]
        series = res.get("series") or []
        return int(series[0]["values"][0][1]) if series else 0

    per = {
        s["tags"]["device"]: tuple(int(v) for v in s["values"][0][1:4])
        for s in r[2].get("series") or []
    }
    return one(r[0]), one(r[1]), per  # type: ignore[return-value]


def test_wan_cut_for_60_s_every_rating_reaches_the_centre_once(
    tmp_path: Path, central: tuple[Mosquitto, Influxd, GatewayProcess]
) -> None:
    """Kiosks keep rating on the hall broker while the link is down; all arrive once after."""
    central_broker, central_influx, _gw = central
    relay = Relay(central_broker.port)
    relay.restore()
    link = UplinkSettings(
        hall=HALL, central_host="127.0.0.1", central_port=relay.port, restart_s=(1, 2)
    )
    hall = Mosquitto(tmp_path / "hall-mosquitto", extra_conf=uplink_conf(link))
    hall.start()
    try:
        wait_until(lambda: relay.connections_made >= 1, 15, what="the uplink to connect")
        sim = simulate_proc(
            hall.port,
            tmp_path / "kiosks",
            hall=HALL,
            first=1,
            kiosks=KIOSKS,
            per_kiosk=PER_KIOSK,
            rate=RATE,
            log_path=tmp_path / "simulate.log",
        )
        time.sleep(CUT_AT_S)
        relay.cut()
        cut_ms = time.time_ns() // 1_000_000  # pressed later: cannot have crossed the cut link
        time.sleep(CUT_FOR_S)
        # The link really was down: no rating pressed after the cut reached the centre while
        # it was cut (ratings already across the link may still land; they were pressed before).
        assert pressed_after(central_influx, cut_ms) == 0
        relay.restore()
        assert sim.wait(120) == 0
        total = KIOSKS * PER_KIOSK
        wait_until(lambda: counts(central_influx)[0] >= total, 60, what="all ratings centrally")
        time.sleep(2)
        n, distinct, per = counts(central_influx)
        assert (n, distinct) == (total, total)
        assert per == {f"k-{i:04d}": (PER_KIOSK, 1, PER_KIOSK) for i in range(1, KIOSKS + 1)}
        # Those ratings waited on the hall broker and crossed once the link was back.
        assert pressed_after(central_influx, cut_ms) > 0
        assert relay.connections_made >= 2
    finally:
        relay.cut()
        hall.stop()
