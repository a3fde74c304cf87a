"""The gateway's MQTT link (`gateway.link`) against a real Mosquitto and a hostile TCP peer."""

import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import mqtt5
import pytest
from pydantic import SecretStr

from common.mqtt import MqttSettings
from devstack.services import Mosquitto, TlsFiles, free_port
from gateway.link import Backoff, Batch, ConnectOptions, Link
from server.broker import accounts as broker_auth
from server.broker.accounts import Account
from server.broker.pki import PkiPaths, init_ca, issue_server_cert
from tests.support import raw_client, wait_until

TOPIC = "wr/v1/+/+/rating"
FAST = Backoff(initial_s=0.05, cap_s=0.2, slow_s=0.5)


def link(port: int, client_id: str = "gw-test", **options: object) -> Link:
    """A started link on `port` subscribed to ratings."""
    settings = MqttSettings(port=port, keepalive_s=5)
    ln = Link(settings, ConnectOptions(client_id, (TOPIC,), **options), FAST)  # type: ignore[arg-type]
    ln.start()
    return ln


def publish(port: int, first: int, n: int) -> None:
    """Publish payloads b"first" .. b"first+n-1" at QoS 1 and wait for every PUBACK."""
    c = raw_client(port, f"pub-{first}")
    infos = [
        c.publish(f"wr/v1/h1/k-{i % 3}/rating", str(i).encode(), qos=1)
        for i in range(first, first + n)
    ]
    for info in infos:
        info.wait_for_publish(10)
    c.loop_stop()
    c.disconnect()


def receive(ln: Link, n: int, timeout: float = 15.0) -> list[Batch]:
    """Batches until `n` messages arrived (none acknowledged)."""
    batches: list[Batch] = []

    def arrived() -> bool:
        batch = ln.get(0.2)
        if batch is not None:
            batches.append(batch)
        return sum(len(b.messages) for b in batches) >= n

    wait_until(arrived, timeout, 0, f"{n} messages")
    return batches


def payloads(batches: list[Batch]) -> list[int]:
    """The integers the messages carry, in arrival order."""
    return [int(m.payload) for b in batches for m in b.messages]


def test_acked_messages_are_not_redelivered_and_unacked_ones_are(broker: Mosquitto) -> None:
    """The session persists: what was acked never comes back, what was not comes back."""
    ln = link(broker.port)
    assert ln.wait_connected(10)
    publish(broker.port, 0, 30)
    got = receive(ln, 30)
    assert sorted(payloads(got)) == list(range(30))
    for b in got:
        ln.ack(b.epoch, b.packet_ids)
    wait_until(lambda: ln.in_flight == 0, 10, what="acks sent")
    publish(broker.port, 100, 20)
    held = receive(ln, 20)  # received, never acked
    assert ln.in_flight == 20
    ln.stop()

    again = link(broker.port)
    assert again.wait_connected(10)
    assert again.session_present
    redelivered = receive(again, 20)
    assert sorted(payloads(redelivered)) == sorted(payloads(held)) == list(range(100, 120))
    for b in redelivered:
        again.ack(b.epoch, b.packet_ids)
    wait_until(lambda: again.counters.acked == 20, 10)
    again.stop()

    third = link(broker.port)
    assert third.wait_connected(10)
    assert third.get(1.0) is None  # nothing left in the session
    third.stop()


def test_receive_maximum_bounds_what_is_unacknowledged(broker: Mosquitto) -> None:
    """The broker sends no more than our Receive Maximum until we acknowledge.

    Measured: Mosquitto 2.0.11 honours the window until the first PUBACK, then sends the rest
    of what it had queued meanwhile at once (50 published: 7, then 43). So the bound is the
    first window and whatever the broker queued; every message still arrives once and is acked.
    """
    ln = link(broker.port, receive_max=7)
    assert ln.wait_connected(10)
    publish(broker.port, 0, 50)
    got = receive(ln, 7)
    assert ln.get(1.0) is None  # nothing beyond the window in a second
    assert ln.in_flight == 7 and ln.counters.received == 7
    seen = payloads(got)
    while len(seen) < 50:
        for b in got:
            ln.ack(b.epoch, b.packet_ids)
        got = receive(ln, 1)
        seen += payloads(got)
    for b in got:
        ln.ack(b.epoch, b.packet_ids)
    assert sorted(seen) == list(range(50))
    wait_until(lambda: ln.counters.acked == 50 and ln.in_flight == 0, 10)
    ln.stop()


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[tuple[Mosquitto, PkiPaths]]:
    """A Mosquitto with the project's accounts, anonymous off, and a TLS listener."""
    pki = PkiPaths(tmp_path / "pki")
    init_ca(pki)
    issue_server_cert(pki, "broker", ["localhost", "127.0.0.1"])
    auth_dir = tmp_path / "auth"
    hashed = broker_auth.mosquitto_hash("pw-gateway")
    broker_auth.write_files(auth_dir, [Account("gateway", hashed, "gateway")])
    tls = TlsFiles(free_port(), pki.ca_cert, pki.cert("broker"), pki.key("broker"))
    m = Mosquitto(tmp_path / "mosquitto", auth_dir=auth_dir, tls=tls)
    m.start()
    yield m, pki
    m.stop()


def secure_link(
    broker: Mosquitto, password: str, ca: Path | None, presence: str | None = None
) -> Link:
    """A started link logging in as the gateway account, over TLS when `ca` is given."""
    assert broker.tls is not None
    settings = MqttSettings(
        host="127.0.0.1",
        port=broker.tls.port if ca else broker.port,
        username="gateway",
        password=SecretStr(password),
        tls_ca=str(ca) if ca else None,
        keepalive_s=5,
    )
    ln = Link(settings, ConnectOptions("gw-secure", (TOPIC,), presence=presence), FAST)
    ln.start()
    return ln


def test_login_accepted_and_wrong_password_refused_with_reason(
    secure: tuple[Mosquitto, PkiPaths], caplog: pytest.LogCaptureFixture
) -> None:
    """The right password connects; a wrong one is refused and the CONNACK reason logged."""
    broker, _pki = secure
    good = secure_link(broker, "pw-gateway", None, presence="wr/gateway/gw-secure/presence")
    assert good.wait_connected(10)  # the ACL allows its subscriptions and its presence will
    good.stop()
    with caplog.at_level(logging.WARNING, logger="gateway.link"):
        bad = secure_link(broker, "wrong", None)
        wait_until(lambda: bad.counters.connect_failures >= 1, 10)
        assert not bad.connected
        bad.stop()
    assert bad.last_error is not None and "CONNACK" in bad.last_error
    assert any("refused login as 'gateway'" in r.getMessage() for r in caplog.records)


def test_tls_with_the_hall_ca_and_refused_with_another(
    tmp_path: Path, secure: tuple[Mosquitto, PkiPaths], caplog: pytest.LogCaptureFixture
) -> None:
    """TLS against the hall CA connects; a broker certificate from another CA is refused."""
    broker, pki = secure
    ok = secure_link(broker, "pw-gateway", pki.ca_cert)
    assert ok.wait_connected(10)
    ok.stop()
    other = PkiPaths(tmp_path / "other-pki")
    init_ca(other, "Some other CA")
    with caplog.at_level(logging.WARNING, logger="gateway.link"):
        wrong = secure_link(broker, "pw-gateway", other.ca_cert)
        wait_until(lambda: wrong.counters.connect_failures >= 1, 10)
        assert not wrong.connected
        wrong.stop()
    assert wrong.last_error is not None and "certificate" in wrong.last_error
    assert any("broker certificate refused" in r.getMessage() for r in caplog.records)


class HostilePeer:
    """A TCP server that answers CONNECT with CONNACK, then sends `garbage`; counts connections."""

    def __init__(self, garbage: bytes) -> None:
        """Listen on a free port."""
        self.garbage = garbage
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self.closed_by_peer = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        """Serve connections one after another until the socket is closed."""
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)  # CONNECT
                    conn.sendall(mqtt5.ConnAckPacket().write())
                    conn.recv(65536)  # SUBSCRIBE
                    conn.sendall(self.garbage)
                    while conn.recv(65536):  # the link's DISCONNECT, then its close
                        pass
                    self.closed_by_peer += 1
                except OSError:
                    pass

    def close(self) -> None:
        """Stop listening."""
        self.server.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x00\x00\x00",  # packet type 0
        b"\xff\xff\xff\xff\xff\xff",  # remaining length longer than four bytes
        b"\x32\x02\x00\x00",  # PUBLISH shorter than its topic length
        mqtt5.SubAckPacket(9, [mqtt5.SubAckReasonCode.GRANTED_QOS_AT_LEAST_ONCE]).write(),
    ],
    ids=["type-0", "length", "short-publish", "unknown-suback"],
)
def test_malformed_packet_closes_cleanly_and_reconnects(
    garbage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage after a CONNACK: the link closes that connection, reconnects, lives on."""
    peer = HostilePeer(garbage)
    with caplog.at_level(logging.ERROR, logger="gateway.link"):
        ln = link(peer.port)
        wait_until(lambda: peer.closed_by_peer >= 2 and ln.counters.malformed >= 2, 15)
    assert ln.running  # the reader thread survived every one
    ln.stop()
    peer.close()
    assert any(
        "malformed packet" in r.getMessage() or "unexpected" in r.getMessage()
        for r in caplog.records
    )


def test_server_disconnect_reason_is_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A DISCONNECT from the server: its reason code and string are logged, then reconnect."""
    bye = mqtt5.DisconnectPacket(
        reason_code=mqtt5.DisconnectReasonCode.SESSION_TAKEN_OVER, reason_str="someone else"
    ).write()
    peer = HostilePeer(bye)
    with caplog.at_level(logging.WARNING, logger="gateway.link"):
        ln = link(peer.port)
        wait_until(lambda: peer.connections >= 2, 15, what="a reconnect")
    assert ln.taken_over.is_set() and ln.running
    assert ln.counters.server_disconnects["SESSION_TAKEN_OVER"] >= 1
    assert any(
        "DISCONNECT 142 SESSION_TAKEN_OVER (someone else)" in r.getMessage() for r in caplog.records
    )
    ln.stop()
    peer.close()


def test_session_taken_over_on_mosquitto_ends_a_link_that_asks_so(
    broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """A second client with the same id takes the session; the first (end_when_lost) stops.

    Mosquitto 2.0.11 closes the old connection without DISCONNECT 0x8E (measured), so the
    link cannot tell a takeover from a broker that went away: its owner decides.
    """
    with caplog.at_level(logging.WARNING, logger="gateway.link"):
        first = link(broker.port, "gw-same", end_when_lost=True)
        assert first.wait_connected(10)
        second = link(broker.port, "gw-same")
        assert second.wait_connected(10)
        wait_until(lambda: not first.running, 10, what="the first link to end")
    assert any("session gw-same lost" in r.getMessage() for r in caplog.records)
    publish(broker.port, 0, 5)  # the session now serves the second client only
    assert sorted(payloads(receive(second, 5))) == list(range(5))
    assert first.counters.received == 0
    second.stop()
    first.stop()
