"""The rating pipeline: broker queue ($SYS), gateway lag, seq gaps and dead letters waiting."""

import logging
import secrets
import sqlite3
import threading
import time
from datetime import timedelta

import httpx
import paho.mqtt.client as mqtt
from prometheus_client.parser import text_string_to_metric_families

from common.mqtt import make_client
from gateway.gaps import DeviceSeqs, scan
from ops.doctor.context import Context
from ops.doctor.report import Check, ok, problem
from storage import queries
from storage.client import InfluxError

log = logging.getLogger(__name__)

PART = "pipeline"
SYS = "$SYS/broker/"
SYS_WANTED = ("store/messages/count", "retained messages/count", "publish/messages/dropped")
SYS_SETTLE_S = 0.5  # after the SUBACK, retained $SYS figures arrive within this
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def broker_sys(ctx: Context) -> dict[str, str]:
    """The broker's $SYS figures the server's login may read (empty when none arrive)."""
    got: dict[str, str] = {}
    done = threading.Event()
    client = make_client(ctx.server.mqtt, f"wr-doctor-{secrets.token_hex(4)}", paho_logging=False)

    def on_connect(c: mqtt.Client, _u: object, _f: object, rc: object, _p: object) -> None:
        """Subscribe once connected."""
        c.subscribe(SYS + "#", qos=0)

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        """Keep each figure; stop once the wanted ones are in."""
        got[msg.topic.removeprefix(SYS)] = msg.payload.decode(errors="replace")
        if all(k in got for k in SYS_WANTED):
            done.set()

    def on_subscribe(*_args: object) -> None:
        """Note the SUBACK: retained figures follow at once when the ACL allows them."""
        subscribed.append(time.monotonic())

    subscribed: list[float] = []
    client.on_connect = on_connect
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    try:
        client.connect(ctx.server.mqtt.host, ctx.server.mqtt.port, keepalive=30)
    except (OSError, ValueError):
        return got
    client.loop_start()
    deadline = time.monotonic() + ctx.doctor.timeout_s
    while not done.wait(0.05) and time.monotonic() < deadline:
        if subscribed and time.monotonic() - subscribed[0] > SYS_SETTLE_S:
            break
    client.disconnect()
    client.loop_stop()
    return got


def broker_queue(ctx: Context) -> Check:
    """Messages the broker holds beyond its retained ones, and QoS messages it dropped."""
    figures = broker_sys(ctx)
    try:
        stored = int(figures["store/messages/count"])
        retained = int(figures["retained messages/count"])
        dropped = int(figures["publish/messages/dropped"])
    except (KeyError, ValueError):
        user = ctx.server.mqtt.username or "(anonymous)"
        return Check(
            PART,
            "broker_queue",
            "unknown",
            f"unknown: the broker gave no $SYS figures to login {user!r} "
            "(its ACL needs `topic read $SYS/broker/#`)",
        )
    queued = max(stored - retained, 0)
    value = f"{queued} messages queued or in flight, {dropped} dropped since the broker started"
    data = {"queued": queued, "stored": stored, "retained": retained, "dropped": dropped}
    if dropped:
        return problem(
            PART,
            "broker_queue",
            "fail",
            value,
            "代理丢弃了消息：增大 mosquitto.conf 中的 max_queued_messages"
            "（windowrate broker conf），并用 windowrate gateway gaps 查找缺失的评价",
            "the broker dropped messages: raise max_queued_messages (windowrate broker conf) "
            "and look for lost ratings with `windowrate gateway gaps`",
            **data,
        )
    if queued > ctx.doctor.queue_warn:
        return problem(
            PART,
            "broker_queue",
            "warn",
            value,
            "消息在代理中积压：确认网关在运行并已连接（见 pipeline.gateway_lag）",
            "messages pile up in the broker: make sure the gateway runs and is connected "
            "(see pipeline.gateway_lag)",
            **data,
        )
    return ok(PART, "broker_queue", value, **data)


def samples(text: str) -> Samples:
    """Every sample of a metrics page, by name and labels."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def _one(values: Samples, name: str) -> float:
    """The sum of a metric's samples (0 when absent)."""
    return sum(v for (n, _labels), v in values.items() if n == name)


def last_write_age(ctx: Context) -> float | None:
    """Seconds since the newest device status the gateway stored (its receive time)."""
    if not ctx.influx_up:
        return None
    try:
        with ctx.influx() as client:
            times = [int(r["time"]) for r in queries.device_latest_status(client).values()]
    except InfluxError:
        return None
    return ctx.now.timestamp() - max(times) / 1000 if times else None


def gateway_lag(ctx: Context) -> list[Check]:
    """Per gateway: connected, messages received and not yet acknowledged, and progress."""
    out = []
    status_age = last_write_age(ctx)
    for i, (url, text) in enumerate(ctx.metrics.items()):
        name = "gateway_lag" if i == 0 else f"gateway{i + 1}_lag"
        if text is None:
            out.append(Check(PART, name, "unknown", f"{url} unreachable (see services)"))
            continue
        first = samples(text)
        in_flight = _one(first, "windowrate_gateway_in_flight_messages")
        acked = _one(first, "windowrate_gateway_link_acked_total")
        connected = _one(first, "windowrate_gateway_mqtt_connected")
        failures = _one(first, "windowrate_gateway_influx_write_failures_total")
        influx_up = _one(first, "windowrate_gateway_influx_up")
        # The gateway's own clock of its last accepted write; older gateways lack it: then
        # the newest device status stored stands in.
        written_at = _one(first, "windowrate_gateway_last_write_timestamp_seconds")
        age = ctx.now.timestamp() - written_at if written_at else status_age
        what = "last write" if written_at else "last status stored"
        tail = "" if age is None else f"; {what} {age:.0f} s ago"
        moved = None
        if in_flight:  # waiting messages: is it working through them?
            time.sleep(1.0)
            try:
                later = samples(httpx.get(url, timeout=ctx.doctor.timeout_s).text)
                moved = _one(later, "windowrate_gateway_link_acked_total") - acked
            except httpx.HTTPError:
                moved = None
        value = f"{in_flight:.0f} in flight, connected {connected:.0f}{tail}"
        if moved is not None:
            value += f", {moved:.0f} acknowledged in 1 s"
        data = {"url": url, "in_flight": in_flight, "connected": connected, "acked_1s": moved}
        if age is not None:
            data["last_write_age_s"] = round(age, 1)
        if not connected:
            out.append(
                problem(
                    PART,
                    name,
                    "fail",
                    value,
                    "网关未连接代理：检查网关日志与 WR_GATEWAY_MQTT__* 设置",
                    "the gateway is not connected to the broker: read its log and check "
                    "WR_GATEWAY_MQTT__*",
                    **data,
                )
            )
        elif failures and not influx_up:
            out.append(
                problem(
                    PART,
                    name,
                    "fail",
                    value + f", InfluxDB writes failing ({failures:.0f} retries)",
                    "网关写不进 InfluxDB：检查 InfluxDB（见 services.influxdb 与 disk）",
                    "the gateway cannot write to InfluxDB: check it (services.influxdb, disk)",
                    **data,
                )
            )
        elif in_flight and moved == 0:
            out.append(
                problem(
                    PART,
                    name,
                    "fail",
                    value,
                    "网关有消息但没有进展：查看网关日志，必要时重启网关（不会丢失评价）",
                    "the gateway holds messages but makes no progress: read its log, restart "
                    "it if needed (nothing is lost)",
                    **data,
                )
            )
        elif in_flight > ctx.doctor.in_flight_warn:
            out.append(
                problem(
                    PART,
                    name,
                    "warn",
                    value,
                    "网关正在追赶积压：稍后再检查；持续出现请查看 InfluxDB 的负载",
                    "the gateway is working through a backlog: check again later; if it stays, "
                    "look at InfluxDB's load",
                    **data,
                )
            )
        else:
            out.append(ok(PART, name, value, **data))
    return out


def _confirmed(ctx: Context) -> set[tuple[str, str]]:
    """Devices whose gap some gateway's own checker confirmed (past its grace period)."""
    found: set[tuple[str, str]] = set()
    for text in ctx.metrics.values():
        if text is None:
            continue
        for (name, labels), v in samples(text).items():
            if name == "windowrate_gateway_seq_missing" and v > 0:
                lab = dict(labels)
                found.add((lab.get("hall", ""), lab.get("device", "")))
    return found


def _describe(d: DeviceSeqs) -> str:
    """`hall/device: missing 3,4, duplicated 7`."""
    parts = []
    if d.missing_count:
        parts.append(
            f"missing {','.join(map(str, d.missing[:5]))}" + ("…" if d.missing_count > 5 else "")
        )
    if d.duplicated:
        parts.append(f"duplicated {','.join(map(str, d.duplicated[:5]))}")
    return f"{d.hall}/{d.device}: {' '.join(parts)}"


def seq_gaps(ctx: Context) -> Check:
    """Devices whose stored seqs are not 1 … n exactly once (the gateway's own scan)."""
    if not ctx.influx_up:
        return Check(PART, "seq_gaps", "unknown", "InfluxDB unreachable (see services.influxdb)")
    try:
        with ctx.influx() as client:
            found = scan(client)
    except InfluxError as exc:
        return Check(PART, "seq_gaps", "unknown", f"InfluxDB query failed: {exc}")
    if not found:
        return ok(PART, "seq_gaps", "every device holds seq 1 … n exactly once")
    confirmed = _confirmed(ctx)
    sure = [d for d in found if d.duplicated or (d.hall, d.device) in confirmed]
    missing = sum(d.missing_count for d in found)
    value = f"{len(found)} devices, {missing} ratings missing: " + "; ".join(
        _describe(d) for d in found[:5]
    )
    data = {
        "devices": [
            {
                "hall": d.hall,
                "device": d.device,
                "missing_count": d.missing_count,
                "missing": d.missing[:100],
                "duplicated": d.duplicated[:100],
                "confirmed": d in sure,
            }
            for d in found
        ]
    }
    zh = (
        "评价序号有缺口：运行 windowrate gateway gaps 查看；检查该评价器的网络与 outbox"
        "（未送达的评价仍在其中），并查看死信（pipeline.dead_letters）"
    )
    en = (
        "ratings are missing from a device's seq sequence: run `windowrate gateway gaps`; check "
        "the device's network and outbox (undelivered ratings wait there) and the dead letters"
    )
    if sure:
        return problem(PART, "seq_gaps", "fail", value, zh, en, **data)
    return problem(
        PART,
        "seq_gaps",
        "warn",
        value + " (not yet past the gateway's grace period: may still arrive)",
        zh,
        en,
        **data,
    )


def dead_letters(ctx: Context) -> Check:
    """Dead letters kept by the gateway, those of the last days by reason."""
    path = ctx.gateway.data_dir.resolve() / "dead_letters.sqlite"
    if not path.exists():
        return ok(PART, "dead_letters", f"none ({path} does not exist yet)")
    since = int((ctx.now - timedelta(days=ctx.doctor.dead_letter_days)).timestamp() * 1000)
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=ctx.doctor.timeout_s)
        try:
            total = db.execute("SELECT count(*) FROM dead_letter").fetchone()[0]
            rows = db.execute(
                "SELECT reason, count(*), sum(topic LIKE '%/rating'), max(received_ms) "
                "FROM dead_letter WHERE received_ms >= ? GROUP BY reason ORDER BY reason",
                (since,),
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        return Check(PART, "dead_letters", "unknown", f"{path}: {exc}")
    recent = sum(int(r[1]) for r in rows)
    ratings = sum(int(r[2] or 0) for r in rows)
    days = f"{ctx.doctor.dead_letter_days:g}"
    data = {
        "path": str(path),
        "total": int(total),
        "recent": recent,
        "recent_ratings": ratings,
        "by_reason": {str(r[0]): int(r[1]) for r in rows},
    }
    if not recent:
        return ok(PART, "dead_letters", f"none in {days} days ({total} older)", **data)
    reasons = ", ".join(f"{r[0]} {r[1]}" for r in rows)
    return problem(
        PART,
        "dead_letters",
        "fail" if ratings else "warn",
        f"{recent} in {days} days ({ratings} ratings): {reasons}",
        "有消息未能存储：运行 windowrate gateway dead-letters --json 查看原因与主题中的设备，"
        "并修正发送它们的设备（docs/storage.md 列出各原因）",
        "messages could not be stored: run `windowrate gateway dead-letters --json` for the "
        "reasons and the devices in their topics; fix the device that sent them "
        "(docs/storage.md lists the reasons)",
        **data,
    )


def run(ctx: Context) -> list[Check]:
    """Broker queue, gateway lag, seq gaps, dead letters."""
    return [broker_queue(ctx), *gateway_lag(ctx), seq_gaps(ctx), dead_letters(ctx)]
