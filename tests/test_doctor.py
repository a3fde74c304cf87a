"""`windowrate doctor --json` on a running stack: all ok, then each caused problem and its fix."""

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from devstack.services import free_port
from devstack.stack import DEMO_HALL, Ports, Stack
from server.broker import pki
from server.db.engine import Database
from server.provisioning import service
from server.settings.provisioning import ProvisioningSettings
from tests.support import REPO, influx_query, metrics, rating_doc, wait_until
from tests.test_broker_security import Client

DEVICE = "doc-1"
# Checks this machine cannot measure: no systemd or chrony here, and the server's broker
# login may not read $SYS. Everything else must be ok.
UNMEASURABLE = {"clock.server", "pipeline.broker_queue"}


@dataclass
class Hall:
    """The running stack and a device of our own publishing what a test needs."""

    stack: Stack
    device: Client

    def publish(self, kind: str, doc: dict[str, Any] | bytes) -> None:
        """Publish as the test device at QoS 1 (status retained, as a kiosk does)."""
        payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        topic = f"wr/v1/{DEMO_HALL}/{DEVICE}/{kind}"
        self.device.publish(topic, payload, retain=kind == "status")

    def status(self, **changes: Any) -> None:
        """Publish the test device's status (online, nothing waiting, clock synced)."""
        doc = {
            "v": 1,
            "device": DEVICE,
            "hall": DEMO_HALL,
            "state": "online",
            "ts": int(time.time() * 1000),
            "last_seq": 1,
            "backlog": 0,
            "clock_synced": True,
        }
        doc.update(changes)
        self.publish("status", doc)


def _ports() -> Ports:
    """Five distinct free ports."""
    ports: list[int] = []
    while len(ports) < 5:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return Ports(*ports)


@pytest.fixture(scope="module")
def hall(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hall]:
    """A `windowrate up` stack (2 kiosks) with a gap checker that confirms within a second."""
    tmp = tmp_path_factory.mktemp("doctor")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_STATE_HOME", str(tmp / "state"))  # the stack's pointer stays in tmp
        mp.setenv("WR_GATEWAY_GAPS__INTERVAL_S", "1")
        mp.setenv("WR_GATEWAY_GAPS__GRACE_S", "1")
        stack = Stack(tmp / "run", _ports())
        try:
            stack.start(kiosks=2, rate=1.0)
            db = Database(f"sqlite:///{stack.db_path}")
            try:
                with db.session() as session:
                    _acc, password, _made = service.add_device(
                        session, hall=DEMO_HALL, device=DEVICE, window="w90"
                    )
                    session.commit()
                    service.sync_broker(
                        session,
                        ProvisioningSettings(
                            broker_auth_dir=stack.auth_dir, broker_pid_file=stack.pid_file
                        ),
                    )
            finally:
                db.close()
            device = wait_until(
                lambda: (c := Client(stack.ports.mqtt, DEVICE, password)).accepted and c,
                10,
                interval=0.3,
                what="the test device's login after the broker reloaded",
            )
            h = Hall(stack, device)
            h.status()
            h.publish("rating", rating_doc(DEMO_HALL, DEVICE, 1, window="w90"))
            yield h
            device.close()
        finally:
            stack.stop()


def doctor(stack: Stack) -> tuple[int, dict[str, Any]]:
    """Run `windowrate doctor --json` on the stack's run dir; its exit code and checks by id."""
    proc = subprocess.run(
        [sys.executable, "-m", "windowrate", "doctor", "--json", "--run-dir", str(stack.run_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    body = json.loads(proc.stdout)
    assert body["installation"].startswith(str(stack.run_dir / "config")), body["installation"]
    return proc.returncode, {c["id"]: c for c in body["checks"]}


def problems(checks: dict[str, Any]) -> dict[str, Any]:
    """The checks that are not ok (unknown ones aside)."""
    return {k: c for k, c in checks.items() if c["status"] in ("warn", "fail")}


def test_all_ok_on_a_running_stack(hall: Hall) -> None:
    """Every check ok (or unknown where this machine cannot measure it), exit code 0."""
    influx = f"http://127.0.0.1:{hall.stack.ports.influx}"
    wait_until(
        lambda: (
            influx_query(influx, f"SELECT * FROM device_status WHERE device = '{DEVICE}'")
            and influx_query(influx, f"SELECT * FROM rating WHERE device = '{DEVICE}'")
        ),
        30,
        interval=0.3,
        what="the test device's status and rating in InfluxDB",
    )
    code, checks = doctor(hall.stack)
    assert problems(checks) == {}
    assert code == 0
    unknown = {k for k, c in checks.items() if c["status"] == "unknown"}
    assert unknown <= UNMEASURABLE, {k: checks[k]["value"] for k in unknown}
    expected = {
        "services.influxdb",
        "services.broker",
        "services.broker_tls",
        "services.gateway",
        "services.server",
        "certs.ca",
        "certs.broker",
        "disk.gateway",
        "disk.registry",
        "disk.influxdb",
        "disk.influxdb_growth",
        "clock.server",
        "pipeline.broker_queue",
        "pipeline.gateway_lag",
        "pipeline.seq_gaps",
        "pipeline.dead_letters",
        "devices.clock",
        "devices.offline",
        "upkeep.backup",
        "upkeep.webhooks",
    }
    assert expected <= set(checks), expected - set(checks)
    assert checks["certs.broker"]["data"]["days_left"] > 800
    assert checks["devices.offline"]["data"]["registered"] == 3  # 2 kiosks and ours
    assert all(c["fix"] is None for c in checks.values() if c["status"] == "ok")


def test_names_each_caused_problem_with_its_fix(
    hall: Hall, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Expiring certificate, unsynced device clock, seq gap, dead letter; then influxd stopped."""
    stack = hall.stack
    monkeypatch.setattr(pki, "SERVER_DAYS", 10)
    pki.issue_server_cert(stack.pki, "broker", [stack.host, "localhost"])
    hall.status(clock_synced=False)
    hall.publish("rating", rating_doc(DEMO_HALL, DEVICE, 3, window="w90"))  # seq 2 skipped
    hall.publish("rating", rating_doc(DEMO_HALL, DEVICE, 4, window="w90", level=9))  # malformed

    seen: list[dict[str, float]] = []

    def gateway_saw_both() -> bool:
        m = metrics(stack.ports.metrics)
        seen[:] = [{k: v for k, v in m.items() if "seq_" in k or "rejected" in k}]
        gap = m.get(f'windowrate_gateway_seq_missing{{device="{DEVICE}",hall="{DEMO_HALL}"}}', 0)
        dead = sum(
            v for k, v in m.items() if k.startswith("windowrate_gateway_messages_rejected_total{")
        )
        return gap > 0 and dead > 0

    try:
        wait_until(gateway_saw_both, 30, interval=0.3, what="a confirmed gap and a dead letter")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; gateway metrics: {seen}") from None
    code, checks = doctor(stack)
    bad = problems(checks)
    assert set(bad) == {
        "certs.broker",
        "devices.clock",
        "pipeline.seq_gaps",
        "pipeline.dead_letters",
    }
    assert code == 1
    cert = bad["certs.broker"]
    assert cert["status"] == "fail" and 9 <= cert["data"]["days_left"] <= 10
    assert "pki init" in cert["fix"]["en"] and "重新签发" in cert["fix"]["zh"]
    clock = bad["devices.clock"]
    assert clock["status"] == "fail" and f"{DEMO_HALL}/{DEVICE}" in clock["value"]
    assert clock["data"]["unsynced"] == [f"{DEMO_HALL}/{DEVICE}"]
    assert "NTP" in clock["fix"]["en"] and "时钟" in clock["fix"]["zh"]
    gaps = bad["pipeline.seq_gaps"]
    assert gaps["status"] == "fail"
    assert gaps["data"]["devices"] == [
        {
            "hall": DEMO_HALL,
            "device": DEVICE,
            "missing_count": 1,
            "missing": [2],
            "duplicated": [],
            "confirmed": True,
        }
    ]
    assert "windowrate gateway gaps" in gaps["fix"]["en"]
    dead = bad["pipeline.dead_letters"]
    assert dead["status"] == "fail"
    assert dead["data"]["by_reason"] == {"level_out_of_scale": 1}
    assert "windowrate gateway dead-letters" in dead["fix"]["zh"]

    # Last, as it blinds the checks that read InfluxDB: they say so rather than fail too.
    stack.influxd.stop()
    code, checks = doctor(stack)
    assert code == 1
    influx = checks["services.influxdb"]
    assert influx["status"] == "fail"
    assert str(stack.ports.influx) in influx["value"]
    assert "InfluxDB" in influx["fix"]["en"] and "windowrate up" in influx["fix"]["en"]
    for dependent in ("devices.clock", "devices.offline", "pipeline.seq_gaps"):
        assert checks[dependent]["status"] == "unknown", checks[dependent]
        assert "InfluxDB unreachable" in checks[dependent]["value"]
