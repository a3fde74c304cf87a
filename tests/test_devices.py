"""Device management: a real kiosk core, Mosquitto and the server under uvicorn."""

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from common.mqtt import MqttSettings
from devstack.services import Influxd, Mosquitto
from kiosk.core.terminal import Terminal
from kiosk.settings import KioskSettings
from protocol.messages import DeviceConfig
from protocol.topics import Topic, TopicKind
from server.auth.service import create_user
from server.db.models import AuditLog
from tests.support import raw_client, wait_until
from tests.test_live import ServerThread, server_settings

PASSWORD = "correct horse battery"
HALL = "hz-civic"


@pytest.fixture
def server(tmp_path: Path, broker: Mosquitto, influx: Influxd) -> Iterator[ServerThread]:
    """The server with a registry: one hall with a window, a device and a clerk; four users."""
    srv = ServerThread(server_settings(broker.port, influx.url, tmp_path / "wr.db"))
    srv.start()
    with srv.app.state.db.session() as session:
        for name, role, hall in (
            ("root", "admin", None),
            ("office", "office", None),
            ("viewer", "viewer", None),
        ):
            create_user(session, name, PASSWORD, role, hall)
        session.commit()
    admin = login(srv, "root")
    for path, body in (
        ("halls", {"code": HALL, "name": "市民中心"}),
        ("halls", {"code": "other", "name": "另一个大厅"}),
        ("units", {"hall": HALL, "code": "gaj", "name": "公安局"}),
        ("windows", {"hall": HALL, "code": "a12", "name": "12号窗口", "unit": "gaj"}),
        ("devices", {"code": "k-0001", "hall": HALL, "window": "a12"}),
        ("staff", {"hall": HALL, "number": "0457", "name": "张三", "unit": "gaj"}),
    ):
        resp = admin.post(f"/api/registry/{path}", json=body)
        assert resp.status_code == 201, resp.text
    with srv.app.state.db.session() as session:
        create_user(session, "mgr", PASSWORD, "hall_manager", HALL)
        create_user(session, "mgr2", PASSWORD, "hall_manager", "other")
        session.commit()
    try:
        yield srv
    finally:
        srv.stop()


def login(srv: ServerThread, username: str) -> httpx.Client:
    """A client logged in as `username`, sending the CSRF header."""
    c = httpx.Client(base_url=srv.url, timeout=10)
    resp = c.post("/api/auth/login", json={"username": username, "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    c.headers["X-CSRF-Token"] = c.cookies["wr_csrf"]
    return c


@pytest.fixture
def kiosk(tmp_path: Path, broker: Mosquitto) -> Iterator[Terminal]:
    """A real kiosk core (no UI) for device k-0001."""
    settings = KioskSettings(
        hall=HALL,
        device="k-0001",
        window="w01",
        data_dir=tmp_path / "kiosk",
        mqtt=MqttSettings(port=broker.port),
        voice=False,
        trust_wall_clock=True,
    )
    k = Terminal.from_settings(settings)
    k.start()
    try:
        yield k
    finally:
        k.stop()


def device(c: httpx.Client, code: str = "k-0001") -> dict[str, Any] | None:
    """The device's entry in GET /api/devices."""
    resp = c.get("/api/devices")
    assert resp.status_code == 200, resp.text
    return next((d for d in resp.json() if d["device"] == code), None)


def retained_config(port: int, device_code: str = "k-0001") -> DeviceConfig | None:
    """Read the retained config with a fresh subscriber (None if there is none)."""
    got: list[bytes] = []
    done = threading.Event()
    c = raw_client(port, f"probe-{threading.get_ident()}")

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        got.append(msg.payload)
        done.set()

    c.on_message = on_message
    c.subscribe(str(Topic(HALL, device_code, TopicKind.CONFIG)), 1)
    done.wait(3)
    c.loop_stop()
    c.disconnect()
    return DeviceConfig.model_validate_json(got[0]) if got and got[0] else None


def test_status_config_and_commands_round_trip(
    server: ServerThread, kiosk: Terminal, broker: Mosquitto
) -> None:
    """The kiosk's status shows in the API; its config comes from the registry; commands work."""
    admin = login(server, "root")
    dev = wait_until(
        lambda: (d := device(admin)) and d["state"] == "online" and d,
        20,
        what="device online",
    )
    assert dev["registered"] and dev["hall"] == HALL
    assert dev["backlog"] == 0 and dev["clock_synced"] is True and dev["version"]
    # The retained config built from the registry reached the kiosk.
    wait_until(lambda: kiosk.session.config.window == "a12", 20, what="config applied")
    cfg = kiosk.session.config
    assert cfg.window_name == "12号窗口" and [s.staff for s in cfg.staff] == ["0457"]
    assert {r.code for r in cfg.reasons} >= {"attitude", "waiting"}
    # Pause, then resume: the kiosk obeys and the API shows the state it reports.
    resp = admin.post("/api/devices/k-0001/commands", json={"cmd": "pause"})
    assert resp.status_code == 202, resp.text
    assert resp.json()["sent"] is True
    wait_until(lambda: kiosk.session.paused, 10, what="kiosk paused")
    wait_until(lambda: device(admin)["state"] == "paused", 10, what="API paused")  # type: ignore[index]
    assert admin.post("/api/devices/k-0001/commands", json={"cmd": "resume"}).status_code == 202
    wait_until(lambda: not kiosk.session.paused, 10, what="kiosk resumed")
    wait_until(lambda: device(admin)["state"] == "online", 10, what="API online")  # type: ignore[index]
    # A prompt with ticket and item opens the rating screen for that service.
    body = {"cmd": "prompt", "ticket": "A0042", "item": "330100-001", "staff": "0457"}
    assert admin.post("/api/devices/k-0001/commands", json=body).status_code == 202
    wait_until(lambda: kiosk.session.prompt_open is not None, 10, what="prompt open")
    assert kiosk.session.prompt_open is not None
    assert kiosk.session.prompt_open.ticket == "A0042"
    # A registry change republishes the retained config: a new clerk and a new window name.
    staff = {"hall": HALL, "number": "0458", "name": "李四", "unit": "gaj"}
    assert admin.post("/api/registry/staff", json=staff).status_code == 201
    assert (
        admin.patch(f"/api/registry/windows/{HALL}/a12", json={"name": "12号综合窗口"}).status_code
        == 200
    )
    wait_until(
        lambda: (
            [s.staff for s in kiosk.session.config.staff] == ["0457", "0458"]
            and kiosk.session.config.window_name == "12号综合窗口"
        ),
        20,
        what="kiosk got the new config",
    )
    stored = retained_config(broker.port)
    assert stored is not None and stored.window_name == "12号综合窗口"
    # Every command is in the audit log.
    with server.app.state.db.session() as session:
        rows = session.scalars(select(AuditLog).where(AuditLog.action == "device_command")).all()
        assert [r.detail for r in rows] == ['"pause"', '"resume"', '"prompt"']
    # The kiosk stops: offline.
    kiosk.stop()
    wait_until(lambda: device(admin)["state"] == "offline", 10, what="offline")  # type: ignore[index]
    # Deleting the device from the registry clears its retained config.
    assert admin.delete("/api/registry/devices/k-0001").status_code == 204
    wait_until(lambda: retained_config(broker.port) is None, 20, what="config cleared")


def test_command_rights(server: ServerThread, kiosk: Terminal) -> None:
    """Admin, office and the hall's manager may command; a viewer or another hall may not."""
    ok = {"cmd": "identify"}
    wait_until(lambda: kiosk.connected, 10, what="kiosk connected")
    for user in ("root", "office", "mgr"):
        resp = login(server, user).post("/api/devices/k-0001/commands", json=ok)
        assert resp.status_code == 202, (user, resp.text)
    assert login(server, "viewer").post("/api/devices/k-0001/commands", json=ok).status_code == 403
    other = login(server, "mgr2")
    assert other.post("/api/devices/k-0001/commands", json=ok).status_code == 404
    assert [d["device"] for d in other.get("/api/devices").json()] == []
    no_csrf = login(server, "root")
    del no_csrf.headers["X-CSRF-Token"]
    assert no_csrf.post("/api/devices/k-0001/commands", json=ok).status_code == 403
    anon = httpx.Client(base_url=server.url)
    assert anon.get("/api/devices").status_code == 401
    assert anon.post("/api/devices/k-0001/commands", json=ok).status_code in (401, 403)
    admin = login(server, "root")
    assert admin.post("/api/devices/nope/commands", json=ok).status_code == 404
    assert admin.post("/api/devices/k-0001/commands", json={"cmd": "reboot"}).status_code == 422


def test_configs_are_published_at_start(
    tmp_path: Path, server: ServerThread, broker: Mosquitto, influx: Influxd
) -> None:
    """A server starting on an existing registry publishes every device's config."""
    wait_until(lambda: retained_config(broker.port) is not None, 20, what="first config")
    server.stop()
    mq = raw_client(broker.port, "clear")
    topic = str(Topic(HALL, "k-0001", TopicKind.CONFIG))
    mq.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    # A config left behind for a device the registry no longer has.
    ghost = DeviceConfig(window="z9").model_dump_json().encode()
    mq.publish(str(Topic(HALL, "k-ghost", TopicKind.CONFIG)), ghost, qos=1, retain=True)
    mq.loop_stop()
    mq.disconnect()
    assert retained_config(broker.port) is None
    assert retained_config(broker.port, "k-ghost") is not None
    again = ServerThread(server_settings(broker.port, influx.url, tmp_path / "wr.db"))
    again.start()
    try:
        cfg = wait_until(lambda: retained_config(broker.port), 20, what="config at start")
        assert cfg.window == "a12" and [s.staff for s in cfg.staff] == ["0457"]
        wait_until(
            lambda: retained_config(broker.port, "k-ghost") is None, 20, what="stale cleared"
        )
    finally:
        again.stop()
