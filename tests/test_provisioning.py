"""Provisioning on real parts: `windowrate device add`, codes redeemed over HTTPS, revocation.

Mosquitto runs with the password file and ACL that the server writes from its database and
reloads on SIGHUP; the server runs under uvicorn with TLS from `windowrate pki`; a real kiosk
core provisioned by a code delivers a rating over TLS.
"""

import json
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from common.mqtt import MqttSettings
from devstack.services import Influxd, Mosquitto, TlsFiles, free_port
from kiosk.core import local_setup
from kiosk.core.provision import ProvisionError, Ticket, redeem
from kiosk.core.terminal import Terminal
from kiosk.settings import KioskSettings
from server.app import create_app
from server.auth.service import create_user
from server.broker.pki import PkiPaths, init_ca, issue_server_cert
from server.db.engine import Database
from server.settings import ServerSettings
from server.settings.provisioning import ProvisioningSettings
from storage.client import InfluxSettings
from tests.support import REPO, wait_until
from tests.test_broker_security import Client

HALL = "hz-civic"
ADMIN_PW = "correct horse battery staple"


@dataclass
class Centre:
    """Broker with managed auth files, PKI and the server's environment."""

    broker: Mosquitto
    pki: PkiPaths
    env: dict[str, str]
    db_url: str
    prov: ProvisioningSettings
    tmp: Path

    def cli(self, *args: str) -> dict[str, Any]:
        """Run `windowrate …` with the server's environment; return its JSON output."""
        out = subprocess.run(
            [sys.executable, "-m", "windowrate", *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        parsed: dict[str, Any] = json.loads(out.stdout) if out.stdout.strip() else {}
        return parsed


@pytest.fixture
def centre(tmp_path: Path) -> Iterator[Centre]:
    """A CA, a broker whose passwd/acl the server manages, and the server's settings."""
    pki = PkiPaths(tmp_path / "pki")
    init_ca(pki)
    issue_server_cert(pki, "broker", ["localhost", "127.0.0.1"])
    issue_server_cert(pki, "server", ["localhost", "127.0.0.1"])
    auth_dir = tmp_path / "broker-auth"
    pid_file = tmp_path / "mosquitto.pid"
    tls_port = free_port()
    db_url = f"sqlite:///{tmp_path / 'server.db'}"
    prov = ProvisioningSettings(
        broker_auth_dir=auth_dir,
        broker_pid_file=pid_file,
        broker_host="localhost",
        broker_port=tls_port,
        ca_file=pki.ca_cert,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WR_")}
    env.update(
        {
            "WR_SERVER_DATABASE_URL": db_url,
            "WR_SERVER_PROVISIONING__BROKER_AUTH_DIR": str(auth_dir),
            "WR_SERVER_PROVISIONING__BROKER_PID_FILE": str(pid_file),
            "WR_SERVER_PROVISIONING__BROKER_HOST": "localhost",
            "WR_SERVER_PROVISIONING__BROKER_PORT": str(tls_port),
            "WR_SERVER_PROVISIONING__CA_FILE": str(pki.ca_cert),
        }
    )
    c = Centre(Mosquitto(tmp_path / "mosquitto"), pki, env, db_url, prov, tmp_path)
    server_login = c.cli("broker", "account", "--role", "server", "--username", "server", "--json")
    c.env["SERVER_PW"] = server_login["password"]
    tls = TlsFiles(tls_port, pki.ca_cert, pki.cert("broker"), pki.key("broker"))
    c.broker = Mosquitto(tmp_path / "mosquitto", auth_dir=auth_dir, tls=tls)
    c.broker.start()
    assert c.broker.proc is not None
    pid_file.write_text(str(c.broker.proc.pid))
    yield c
    c.broker.stop()


def test_device_add_prints_a_login_the_broker_accepts_until_revoked(centre: Centre) -> None:
    """`windowrate device add --json` → a working MQTT login; `device revoke` ends it."""
    login = centre.cli(
        "device", "add", "--hall", HALL, "--id", "k-0001", "--window", "a1", "--json"
    )
    assert set(login) == {"username", "password"} and login["username"] == "k-0001"
    port = centre.broker.port
    ok = wait_until(lambda: Client(port, "k-0001", login["password"]).accepted, 5)
    assert ok
    assert not Client(port, "k-0001", login["password"] + "x").accepted
    passwd = (centre.prov.broker_auth_dir or Path()) / "passwd"
    assert login["password"] not in passwd.read_text()  # only the hash is written
    again = subprocess.run(
        [sys.executable, "-m", "windowrate", "device", "add", "--hall", HALL, "--id", "k-0001"],
        env=centre.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 1 and "already has a broker login" in again.stderr
    centre.cli("device", "revoke", "--id", "k-0001")
    wait_until(lambda: not Client(port, "k-0001", login["password"]).accepted, 5)


class HttpsServer:
    """The server app under uvicorn with TLS, in a thread."""

    def __init__(self, settings: ServerSettings, cert: Path, key: Path) -> None:
        """Prepare (not start)."""
        self.port = settings.port
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        """Base URL (the certificate names localhost)."""
        return f"https://localhost:{self.port}"

    def __enter__(self) -> "HttpsServer":
        """Start and wait until it answers."""
        self.thread.start()
        wait_until(lambda: self.server.started, 30, what="uvicorn started")
        return self

    def __exit__(self, *_: object) -> None:
        """Stop."""
        self.server.should_exit = True
        self.thread.join(30)


@dataclass
class Https:
    """The server under TLS and an admin's client of it."""

    srv: HttpsServer
    http: httpx.Client

    def issue(self, device: str) -> dict[str, Any]:
        """Register `device` in the test hall; return the code the API issued."""
        r = self.http.post(
            "/api/provisioning/devices", json={"hall": HALL, "device": device, "window": "a12"}
        )
        assert r.status_code == 201, r.text
        issued: dict[str, Any] = r.json()
        return issued


@pytest.fixture
def https(centre: Centre, tmp_path: Path) -> Iterator[Https]:
    """InfluxDB, the server under TLS (MQTT link with its own login), an admin logged in."""
    influx = Influxd(tmp_path / "influxd")
    influx.start()
    db = Database(centre.db_url)
    db.upgrade()
    with db.session() as s:
        create_user(s, "root", ADMIN_PW, "admin")
        s.commit()
    db.close()
    settings = ServerSettings(
        port=free_port(),
        influx=InfluxSettings(url=influx.url),
        mqtt=MqttSettings(
            host="localhost",
            port=centre.prov.broker_port,
            username="server",
            password=centre.env["SERVER_PW"],
            tls_ca=str(centre.pki.ca_cert),
        ),
        gateway_metrics_urls=[],
        database_url=centre.db_url,
        provisioning=centre.prov,
        cookie_secure=True,
    )
    try:
        with HttpsServer(settings, centre.pki.cert("server"), centre.pki.key("server")) as srv:
            ctx = ssl.create_default_context(cafile=str(centre.pki.ca_cert))
            http = httpx.Client(base_url=srv.url, verify=ctx)
            r = http.post("/api/auth/login", json={"username": "root", "password": ADMIN_PW})
            assert r.status_code == 200, r.text
            http.headers["X-CSRF-Token"] = http.cookies["wr_csrf"]
            yield Https(srv, http)
            http.close()
    finally:
        influx.stop()


def test_a_code_redeemed_over_https_provisions_a_kiosk_that_delivers(
    centre: Centre, https: Https, tmp_path: Path
) -> None:
    """Admin registers a device and gets a code; the kiosk checks the CA fingerprint, redeems
    it once, and its core delivers a rating over TLS with the login it received."""
    kiosk_dir = tmp_path / "kiosk"
    srv, http = https.srv, https.http
    issued = https.issue("k-0042")
    assert issued["qr_svg"].startswith("<svg") and issued["ca_fingerprint"]
    fp = issued["ca_fingerprint"]
    ticket = Ticket.parse(f"{srv.url} {issued['code']} {fp[:16]}")
    # A server showing another CA is refused before the code is sent.
    with pytest.raises(ProvisionError, match="does not match"):
        redeem(Ticket(srv.url, issued["code"], "0" * 16), kiosk_dir)
    setup = redeem(ticket, kiosk_dir)
    assert (setup.hall, setup.device, setup.port) == (
        HALL,
        "k-0042",
        centre.prov.broker_port,
    )
    with pytest.raises(ProvisionError, match="410"):
        redeem(ticket, kiosk_dir)
    with pytest.raises(ProvisionError, match="404"):
        redeem(Ticket(srv.url, "AAAA-BBBB-CCCC-DDDD", fp), kiosk_dir)
    accounts = http.get("/api/provisioning/accounts").json()
    assert {a["username"] for a in accounts} == {"server", "k-0042"}
    # The provisioned kiosk core, over TLS, with its own login.
    gateway = Client(centre.broker.port, "server", centre.env["SERVER_PW"], client_id="watch")
    gateway.subscribe(f"wr/v1/{HALL}/k-0042/rating")
    ks = local_setup.effective(
        KioskSettings(data_dir=kiosk_dir, voice=False, trust_wall_clock=True)
    )
    assert ks.mqtt.tls_ca and ks.mqtt.username == "k-0042"
    kiosk = Terminal.from_settings(ks)
    kiosk.start()
    try:
        wait_until(lambda: kiosk.connected, 15, what="kiosk connected over TLS")
        assert kiosk.session.press(5, "touch").accepted
        wait_until(lambda: kiosk.outbox.backlog() == 0, 15, what="rating sent")
        wait_until(lambda: gateway.topics(), 10)
    finally:
        kiosk.stop()
    # Revoked through the API: the broker refuses the login at once.
    r = http.post("/api/provisioning/devices/k-0042/revoke")
    assert r.status_code == 200 and r.json()["revoked"] is True
    pw = (setup.password.get_secret_value()) if setup.password else ""
    wait_until(
        lambda: not Client(centre.prov.broker_port, "k-0042", pw, ca=centre.pki.ca_cert).accepted,
        5,
    )
    gateway.close()


def test_redeem_is_refused_over_plain_http(tmp_path: Path) -> None:
    """Without TLS the redeem call answers 403 (the password would cross in clear)."""
    from fastapi.testclient import TestClient

    settings = ServerSettings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", gateway_metrics_urls=[]
    )
    with TestClient(create_app(settings)) as c:
        r = c.post("/api/provisioning/redeem", json={"code": "AAAA-BBBB-CCCC-DDDD"})
        assert r.status_code == 403 and "HTTPS" in r.json()["detail"]


def test_an_expired_or_revoked_code_is_refused(tmp_path: Path) -> None:
    """A code past its expiry, or of a revoked device, is refused (410) and spends nothing."""
    from datetime import timedelta

    from server.db.models import utcnow
    from server.provisioning import service
    from server.provisioning.service import ProvisioningError

    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    db.upgrade()
    try:
        with db.session() as s:
            service.add_device(s, hall=HALL, device="k-0100", window=None)
            code, expires = service.issue_code(s, "k-0100", hours=1)
            s.commit()
            with pytest.raises(ProvisioningError) as late:
                service.redeem(s, code, now=expires + timedelta(seconds=1))
            assert late.value.status == 410 and "expired" in str(late.value)
            acc, _pw = service.redeem(s, code.lower().replace("-", " "), now=utcnow())
            assert acc.username == "k-0100"  # typed in lower case with spaces: same code
            other, _ = service.issue_code(s, "k-0100", hours=1)
            service.revoke(s, "k-0100")
            with pytest.raises(ProvisioningError) as revoked:
                service.redeem(s, other)
            assert revoked.value.status == 410
    finally:
        db.close()
