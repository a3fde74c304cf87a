"""`windowrate doctor --json` on a running stack: all ok, then each caused problem and its fix."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from common.installation import Installation
from common.mqtt import MqttSettings
from devstack.services import Mosquitto, free_ports
from devstack.stack import DEMO_HALL, Ports, Stack
from gateway.settings import GatewaySettings
from ops.doctor import certs, clock, disk, pipeline, upkeep
from ops.doctor.context import Context
from ops.doctor.report import Check, Fix, Report
from ops.doctor.settings import DoctorSettings
from server.broker import pki
from server.db.engine import Database
from server.provisioning import service
from server.settings import ServerSettings
from server.settings.provisioning import ProvisioningSettings
from tests.support import REPO, influx_query, metrics, rating_doc, wait_until
from tests.test_broker_security import Client

DEVICE = "doc-1"
# Checks this machine cannot measure: no systemd or chrony here, and the server's broker
# login may not read $SYS. Everything else must be ok.
# The server's clock sync needs systemd's timedatectl or chrony, which this machine lacks.
UNMEASURABLE = {"clock.server"}


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


def register(stack: Stack, device: str) -> str:
    """Register a device of the demo hall as `windowrate device add` does; its password."""
    db = Database(f"sqlite:///{stack.db_path}")
    try:
        with db.session() as session:
            _acc, password, _made = service.add_device(
                session, hall=DEMO_HALL, device=device, window="w90"
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
    return password


def _ports() -> Ports:
    """Five distinct free ports."""
    return Ports(*free_ports(5))


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
            password = register(stack, DEVICE)
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
    """Expiring certificate, unsynced clock, seq gap, dead letter, silent device; influxd down."""
    stack = hall.stack
    register(stack, "doc-2")  # registered, never heard from
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
        "devices.offline",
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
    offline = bad["devices.offline"]
    assert offline["status"] == "warn" and offline["data"]["offline"] == [f"{DEMO_HALL}/doc-2"]

    # Last, as it blinds the checks that read InfluxDB: they say so rather than fail too.
    stack.influxd.stop()
    wait_until(
        lambda: metrics(stack.ports.metrics).get("windowrate_gateway_influx_write_failures_total"),
        30,
        interval=0.3,
        what="the gateway failing to write the kiosks' ratings",
    )
    code, checks = doctor(stack)
    assert code == 1
    influx = checks["services.influxdb"]
    assert influx["status"] == "fail"
    assert str(stack.ports.influx) in influx["value"]
    assert "InfluxDB" in influx["fix"]["en"] and "windowrate up" in influx["fix"]["en"]
    for dependent in ("devices.clock", "devices.offline", "pipeline.seq_gaps"):
        assert checks[dependent]["status"] == "unknown", checks[dependent]
        assert "InfluxDB unreachable" in checks[dependent]["value"]
    lag = checks["pipeline.gateway_lag"]
    assert lag["status"] == "fail" and "InfluxDB writes failing" in lag["value"], lag
    assert checks["services.server"]["status"] == "warn"
    assert "influxdb" in checks["services.server"]["value"]

    # The broker, then the gateway: each named with how to restart it.
    stack.mosquitto.stop()
    wait_until(
        lambda: metrics(stack.ports.metrics).get("windowrate_gateway_mqtt_connected") == 0,
        30,
        interval=0.3,
        what="the gateway seeing the broker gone",
    )
    _code, checks = doctor(stack)
    for name in ("services.broker", "services.broker_tls"):
        assert checks[name]["status"] == "fail", checks[name]
        assert "restart `windowrate up`" in checks[name]["fix"]["en"]
    lag = checks["pipeline.gateway_lag"]
    assert lag["status"] == "fail" and "not connected" in lag["fix"]["en"], lag
    gateway = stack.children["gateway"]
    gateway.terminate()
    gateway.wait(20)
    _code, checks = doctor(stack)
    assert checks["services.gateway"]["status"] == "fail"
    assert "gateway.log" in checks["services.gateway"]["fix"]["en"]
    assert checks["pipeline.gateway_lag"]["status"] == "unknown"
    stack.mosquitto.start()  # the kiosks and the server then stop at once, not after 20 s


# --- each judgement on its own, against real files and a real broker ---


def context(doctor_settings: DoctorSettings | None = None, **server: Any) -> Context:
    """A doctor context for an installation of the given server settings."""
    return Context(
        None, ServerSettings(**server), GatewaySettings(), doctor_settings or DoctorSettings()
    )


def test_broker_queue_reports_dropped_messages(tmp_path: Path) -> None:
    """A queue overflow for an absent subscriber is a failure, measured from $SYS."""
    with Mosquitto(tmp_path / "m", max_queued=2, extra_conf="sys_interval 1\n") as broker:
        assert isinstance(broker, Mosquitto)
        ctx = context(mqtt=MqttSettings(host=broker.host, port=broker.port))
        assert pipeline.broker_queue(ctx).status == "ok"
        away = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="away", protocol=mqtt.MQTTv5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        away.connect(broker.host, broker.port, clean_start=False, properties=props)
        away.loop_start()
        away.subscribe("t/#", qos=1)
        time.sleep(0.3)
        away.disconnect()
        away.loop_stop()
        pub = Client(broker.port, None, None)
        for i in range(10):
            pub.publish("t/x", str(i).encode())
        pub.close()
        check = wait_until(
            lambda: (c := pipeline.broker_queue(ctx)).status == "fail" and c,
            15,
            interval=0.5,
            what="the dropped messages in $SYS",
        )
    assert check.data["dropped"] >= 8 and check.data["queued"] >= 2
    assert check.fix is not None and "max_queued_messages" in check.fix.en


def test_certificate_days_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """20 days left is a warning; an expired certificate a failure; the CA's 10 years ok."""
    paths = pki.PkiPaths(tmp_path / "pki")
    pki.init_ca(paths)
    monkeypatch.setattr(pki, "SERVER_DAYS", 20)
    pki.issue_server_cert(paths, "broker", ["127.0.0.1"])
    ctx = context(provisioning=ProvisioningSettings(ca_file=paths.ca_cert))
    ca, broker = certs.run(ctx)
    assert ca.status == "ok" and broker.status == "warn"
    ctx.now += timedelta(days=21)
    _ca, expired = certs.run(ctx)
    assert expired.status == "fail" and expired.fix is not None
    assert "已过期" in expired.fix.zh and "has expired" in expired.fix.en


def test_disk_space_and_influx_growth(tmp_path: Path) -> None:
    """Free space below the thresholds; days until full from the state file's samples."""
    warn = context(DoctorSettings(disk_warn_free_pct=100))
    assert disk.space(warn, "data", tmp_path).status == "warn"
    failing = context(DoctorSettings(disk_warn_free_pct=100, disk_fail_free_pct=100))
    assert disk.space(failing, "data", tmp_path).status == "fail"
    state = tmp_path / "doctor-state.json"
    ctx = context(DoctorSettings(state_file=state))
    first = disk.growth(ctx, 10 * 2**20, free=None)  # first sample: no rate yet
    assert first.status == "ok" and "bytes_per_day" not in first.data
    two_days_ago = ctx.now.timestamp() - 2 * 86400
    state.write_text(json.dumps({"influx_bytes": [[two_days_ago, 0]]}))
    gib = 2**30
    full_soon = disk.growth(ctx, 2 * gib, free=10 * gib)  # 1 GiB a day, 10 GiB free
    assert full_soon.status == "fail" and full_soon.data["days_left"] == 10
    state.write_text(json.dumps({"influx_bytes": [[two_days_ago, 0]]}))
    assert disk.growth(ctx, 2 * gib, free=30 * gib).status == "warn"
    assert len(json.loads(state.read_text())["influx_bytes"]) == 2


def test_server_clock_from_timedatectl_then_chrony(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NTPSynchronized=no fails; without systemd, chrony's leap status decides."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    def tool(name: str, text: str, code: int = 0) -> None:
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{text}\nEOF\nexit {code}\n")
        path.chmod(0o755)

    tool("timedatectl", "NTPSynchronized=no")
    (check,) = clock.run(context())
    assert check.status == "fail" and check.fix is not None and "chrony" in check.fix.en
    tool("timedatectl", "System has not been booted with systemd", 1)
    tool("chronyc", "Leap status     : Not synchronised\nSystem time     : 0.0 seconds")
    (check,) = clock.run(context())
    assert check.status == "fail" and "not synchronised" in check.value
    tool("chronyc", "Leap status     : Normal\nSystem time     : 0.000012 seconds fast")
    (check,) = clock.run(context())
    assert check.status == "ok" and "0.000012 seconds fast" in check.value


def test_backup_age_and_pending_webhooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No backup on an installed hall warns, a week-old one fails; a webhook pile-up warns."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    db = Database(url)
    db.upgrade()
    db.close()
    ctx = context(database_url=url)
    ctx.installation = Installation(tmp_path, "test")
    assert upkeep.backup(ctx).status == "warn"  # nothing in tmp_path: no backup yet
    for hours, status in {1: "ok", 48: "warn", 24 * 8: "fail"}.items():
        when = ctx.now - timedelta(hours=hours)
        monkeypatch.setattr("ops.backup.last_backup", lambda _config, when=when: when)
        assert upkeep.backup(ctx).status == status, hours
    assert upkeep.webhooks(ctx).status == "ok"
    monkeypatch.setattr("server.cases.webhook.pending_deliveries", lambda _session: 150)
    check = upkeep.webhooks(ctx)
    assert check.status == "warn" and check.data["pending"] == 150


def test_table_groups_by_part_and_strict_counts_warnings() -> None:
    """The text table: parts as headings, each fix under its problem; --strict exit codes."""
    report = Report(
        "/etc/windowrate (installed hall)",
        [
            Check("services", "influxdb", "ok", "up"),
            Check("upkeep", "backup", "warn", "no backup yet", Fix("做备份", "make a backup")),
        ],
    )
    text = report.table("both")
    assert "服务与端口 · services and ports" in text and "维护 · upkeep" in text
    assert "→ 做备份 / make a backup" in text
    assert "→ make a backup" in report.table("en") and "做备份" not in report.table("en")
    assert report.exit_code() == 0 and report.exit_code(strict=True) == 1
    assert report.as_json()["ok"] is False
