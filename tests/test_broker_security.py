"""Broker security on a real Mosquitto: passwords, per-device ACLs, TLS on its own port, revocation.

The broker's password file and ACL are made by server/broker/accounts.py and its certificate by
server/broker/pki.py, exactly as `windowrate` deploys them.
"""

import contextlib
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devstack.services import Influxd, Mosquitto, TlsFiles, free_port
from server.broker import accounts as broker_auth
from server.broker.accounts import Account
from server.broker.pki import PkiPaths, init_ca, issue_server_cert
from tests.support import GatewayProcess, rating_doc, wait_until

HALL = "hz-civic"
PASSWORDS = {
    "k-a": "pw-device-a",
    "k-b": "pw-device-b",
    "gateway": "pw-gateway",
    "server": "pw-server",
}


def accounts(*, without: str | None = None) -> list[Account]:
    """Devices A and B of the hall, the gateway and the server (optionally one left out)."""
    out = [
        Account("k-a", broker_auth.mosquitto_hash(PASSWORDS["k-a"]), "device", HALL, "k-a"),
        Account("k-b", broker_auth.mosquitto_hash(PASSWORDS["k-b"]), "device", HALL, "k-b"),
        Account("gateway", broker_auth.mosquitto_hash(PASSWORDS["gateway"]), "gateway"),
        Account("server", broker_auth.mosquitto_hash(PASSWORDS["server"]), "server"),
    ]
    return [a for a in out if a.username != without]


@dataclass
class SecureBroker:
    """A broker with auth and TLS, and the files it was made from."""

    broker: Mosquitto
    auth_dir: Path
    pki: PkiPaths

    @property
    def tls_port(self) -> int:
        """The TLS listener."""
        assert self.broker.tls is not None
        return self.broker.tls.port


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[SecureBroker]:
    """A Mosquitto with passwords, ACLs, anonymous off and a TLS listener."""
    pki = PkiPaths(tmp_path / "pki")
    assert init_ca(pki)
    assert not init_ca(pki)  # idempotent: the CA is never replaced by accident
    issue_server_cert(pki, "broker", ["localhost", "127.0.0.1"])
    assert pki.ca_key.stat().st_mode & 0o777 == 0o600
    auth_dir = tmp_path / "auth"
    broker_auth.write_files(auth_dir, accounts())
    tls = TlsFiles(free_port(), pki.ca_cert, pki.cert("broker"), pki.key("broker"))
    m = Mosquitto(tmp_path / "mosquitto", auth_dir=auth_dir, tls=tls)
    m.start()
    yield SecureBroker(m, auth_dir, pki)
    m.stop()


class Client:
    """A connected MQTT 5 client that records what it receives and its CONNACK."""

    def __init__(
        self,
        port: int,
        user: str | None,
        password: str | None,
        *,
        ca: Path | None = None,
        client_id: str | None = None,
    ) -> None:
        """Connect (TLS when `ca` is given) and wait for the CONNACK or a failure."""
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.connack: Any = None
        self.done = threading.Event()
        self.c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-{user}-{time.monotonic_ns()}",
            protocol=mqtt.MQTTv5,
        )
        if user is not None:
            self.c.username_pw_set(user, password)
        if ca is not None:
            self.c.tls_set(ca_certs=str(ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_connect_fail = lambda *_a: self.done.set()
        self.error: Exception | None = None
        try:
            self.c.connect("127.0.0.1", port, keepalive=10)
        except (OSError, ssl.SSLError) as exc:
            self.error = exc
            self.done.set()
            return
        self.c.loop_start()
        self.done.wait(10)

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        """Keep the CONNACK reason."""
        self.connack = reason
        self.done.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        """Keep the message."""
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    @property
    def accepted(self) -> bool:
        """True when the broker accepted the login."""
        return self.connack is not None and not self.connack.is_failure

    def subscribe(self, topic: str) -> None:
        """Subscribe at QoS 1 and give the broker a moment to deliver retained messages."""
        self.c.subscribe(topic, qos=1)
        time.sleep(0.3)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and wait for the broker's answer."""
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def topics(self) -> list[str]:
        """Topics received so far."""
        with self.lock:
            return [t for t, _ in self.messages]

    def close(self) -> None:
        """Disconnect."""
        self.c.disconnect()
        self.c.loop_stop()


def topic(device: str, kind: str) -> str:
    """A device topic of the test hall."""
    return f"wr/v1/{HALL}/{device}/{kind}"


def test_a_device_publishes_and_reads_only_its_own_topics(secure: SecureBroker) -> None:
    """A cannot publish under B's topics nor read B's config or commands; its own work."""
    port = secure.broker.port
    gateway = Client(port, "gateway", PASSWORDS["gateway"])
    server = Client(port, "server", PASSWORDS["server"])
    a = Client(port, "k-a", PASSWORDS["k-a"])
    assert gateway.accepted and server.accepted and a.accepted
    gateway.subscribe("wr/v1/+/+/+")
    for kind in ("config", "cmd"):
        server.publish(topic("k-b", kind), b'{"for": "b"}', retain=kind == "config")
        server.publish(topic("k-a", kind), b'{"for": "a"}', retain=kind == "config")
    a.subscribe(topic("k-b", "config"))
    a.subscribe(topic("k-a", "config"))
    a.subscribe("wr/v1/#")  # a wildcard does not widen what A may read
    for kind in ("rating", "event", "status"):
        a.publish(topic("k-b", kind), b"forged")
        a.publish(f"wr/v1/other-hall/k-a/{kind}", b"forged")
    a.publish(topic("k-a", "config"), b"devices do not write config")
    a.publish(topic("k-a", "rating"), b"own")
    wait_until(lambda: topic("k-a", "rating") in gateway.topics(), 5)
    time.sleep(0.5)
    assert gateway.topics() == [topic("k-a", "rating")]
    got = a.topics()
    assert got and set(got) == {topic("k-a", "config")}, got
    # The gateway account only reads: what it publishes goes nowhere.
    b = Client(port, "k-b", PASSWORDS["k-b"])
    b.subscribe(topic("k-b", "cmd"))
    gateway.publish(topic("k-b", "cmd"), b'{"cmd": "pause"}')
    server.publish(topic("k-b", "cmd"), b'{"cmd": "resume"}')
    wait_until(lambda: b.topics(), 5)
    time.sleep(0.3)
    assert [p for _, p in b.messages] == [b'{"cmd": "resume"}']
    for c in (gateway, server, a, b):
        c.close()


def test_wrong_password_and_anonymous_are_refused(secure: SecureBroker) -> None:
    """No login without the right password; no anonymous access at all."""
    port = secure.broker.port
    assert not Client(port, "k-a", "wrong").accepted
    assert not Client(port, "k-a", PASSWORDS["k-b"]).accepted
    assert not Client(port, "nobody", "x").accepted
    assert not Client(port, None, None).accepted
    ok = Client(port, "k-a", PASSWORDS["k-a"])
    assert ok.accepted
    ok.close()


def test_tls_is_required_on_the_tls_port(secure: SecureBroker, tmp_path: Path) -> None:
    """Plain MQTT on the TLS port fails; TLS with the hall's CA works; another CA is refused."""
    plain = Client(secure.tls_port, "k-a", PASSWORDS["k-a"])
    assert not plain.accepted
    tls = Client(secure.tls_port, "k-a", PASSWORDS["k-a"], ca=secure.pki.ca_cert)
    assert tls.accepted
    tls.close()
    stranger = PkiPaths(tmp_path / "other-ca")
    init_ca(stranger, "Somebody else's CA")
    spoofed = Client(secure.tls_port, "k-a", PASSWORDS["k-a"], ca=stranger.ca_cert)
    assert not spoofed.accepted
    assert isinstance(spoofed.error, ssl.SSLCertVerificationError)
    bad_pw = Client(secure.tls_port, "k-a", "wrong", ca=secure.pki.ca_cert)
    assert not bad_pw.accepted


def test_a_revoked_device_is_refused_after_reload(secure: SecureBroker) -> None:
    """Rewrite the files without A, SIGHUP: A is cut off, cannot log in, nothing of it arrives."""
    port = secure.broker.port
    gateway = Client(port, "gateway", PASSWORDS["gateway"])
    gateway.subscribe("wr/v1/+/+/rating")
    a = Client(port, "k-a", PASSWORDS["k-a"], client_id="kiosk-a")
    assert a.accepted
    broker_auth.write_files(secure.auth_dir, accounts(without="k-a"))
    secure.broker.reload()
    # Mosquitto drops the revoked login's connection on reload; paho's reconnects are refused.
    wait_until(lambda: not a.c.is_connected(), 5)
    with contextlib.suppress(RuntimeError, ValueError):
        a.publish(topic("k-a", "rating"), b"after revocation")
    b = Client(port, "k-b", PASSWORDS["k-b"])
    b.publish(topic("k-b", "rating"), b"b still works")
    wait_until(lambda: gateway.topics(), 5)
    time.sleep(0.3)
    assert gateway.topics() == [topic("k-b", "rating")]
    again = Client(port, "k-a", PASSWORDS["k-a"])
    assert not again.accepted
    for c in (gateway, a, b):
        c.close()


def test_nothing_a_forges_reaches_the_gateways_storage(
    secure: SecureBroker, tmp_path: Path
) -> None:
    """The real gateway over TLS with its own login: A's ratings in B's name never get stored."""
    influx = Influxd(tmp_path / "influxd")
    influx.start()
    gw = GatewayProcess(
        tmp_path / "gateway",
        secure.tls_port,
        influx.url,
        WR_GATEWAY_MQTT__USERNAME="gateway",
        WR_GATEWAY_MQTT__PASSWORD=PASSWORDS["gateway"],
        WR_GATEWAY_MQTT__TLS_CA=str(secure.pki.ca_cert),
        WR_GATEWAY_MQTT__HOST="localhost",
    )
    try:
        gw.start()
        a = Client(secure.tls_port, "k-a", PASSWORDS["k-a"], ca=secure.pki.ca_cert)
        assert a.accepted
        forged = rating_doc(HALL, "k-b", 1)
        a.publish(topic("k-b", "rating"), json.dumps(forged).encode())
        own = rating_doc(HALL, "k-a", 1)
        a.publish(topic("k-a", "rating"), json.dumps(own).encode())

        def stored() -> dict[str, int]:
            r = httpx.get(
                f"{influx.url}/query",
                params={
                    "db": "windowrate",
                    "q": 'SELECT count("seq") FROM rating GROUP BY "device"',
                },
            )
            out: dict[str, int] = {}
            for s in r.json()["results"][0].get("series", []):
                out[s["tags"]["device"]] = s["values"][0][1]
            return out

        assert wait_until(lambda: stored().get("k-a") == 1, 15)
        time.sleep(1.0)
        assert stored() == {"k-a": 1}
        a.close()
    finally:
        gw.stop()
        influx.stop()


def test_account_names_cannot_break_the_files() -> None:
    """User names follow the id grammar; hashes are Mosquitto's $7$; duplicates are refused."""
    h = broker_auth.mosquitto_hash("x")
    assert broker_auth.verify_hash("x", h) and not broker_auth.verify_hash("y", h)
    for bad in ("a b", "a\nuser root", "A", "", "a:b"):
        with pytest.raises(ValueError):
            Account(bad, h, "gateway")
    with pytest.raises(ValueError):
        Account("k-1", "plaintext", "gateway")
    with pytest.raises(ValueError):
        Account("k-1", h, "device", HALL, None)
    with pytest.raises(ValueError):
        broker_auth.write_files(Path("/nonexistent"), [Account("g", h, "gateway")] * 2)
