"""Each device's clock_synced and whether registered devices are online (InfluxDB, registry)."""

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from ops.doctor.context import Context
from ops.doctor.report import Check, ok, problem
from storage import queries
from storage.client import InfluxError

log = logging.getLogger(__name__)

PART = "devices"
LISTED = 10  # devices named in a value; the data lists all
Key = tuple[str, str]


def _names(keys: list[Key]) -> str:
    """`hall/device, …` with at most LISTED named."""
    shown = ", ".join(f"{h}/{d}" for h, d in keys[:LISTED])
    return shown + (f" … (+{len(keys) - LISTED})" if len(keys) > LISTED else "")


def clocks(ctx: Context, status: dict[Key, dict[str, Any]]) -> Check:
    """Devices whose latest status (else latest rating today) says clock_synced false."""
    with ctx.influx() as client:
        rated = queries.device_latest_rating_clock(client, ctx.now - timedelta(days=1))
    synced: dict[Key, bool] = {}
    offsets: dict[str, float] = {}
    for key in set(status) | set(rated):
        st = status.get(key, {})
        flag = st.get("clock_synced")
        if flag is None:
            flag = rated.get(key, {}).get("clock_synced")
        if flag is not None:
            synced[key] = bool(flag)
        if st.get("device_ts") is not None and st.get("time") is not None:
            offsets[f"{key[0]}/{key[1]}"] = (int(st["device_ts"]) - int(st["time"])) / 1000
    bad = sorted(k for k, v in synced.items() if not v)
    worst = max(offsets.values(), key=abs, default=None)
    skew = "" if worst is None else f"; largest offset at last status {worst:+.1f} s"
    data = {"devices": len(synced), "unsynced": [f"{h}/{d}" for h, d in bad], "offsets_s": offsets}
    if not bad:
        return ok(PART, "clock", f"{len(synced)} devices report clock_synced{skew}", **data)
    return problem(
        PART,
        "clock",
        "fail",
        f"clock not synchronised: {_names(bad)}{skew}",
        "这些评价器的时钟未同步，评价时间可能记错：检查其网络与时间源（NTP），"
        "评价器设置中的 NTP 服务器应指向大厅服务器",
        "these devices' clocks are not synchronised, so ratings may be dated wrongly: check "
        "their network and NTP time source (point them at the hall server)",
        **data,
    )


def registered(ctx: Context) -> list[Key] | str:
    """The registry's devices as (hall, device), or why they cannot be read."""
    from server.db.engine import Database
    from server.db.models import Device

    db = Database(ctx.server.database_url)
    try:
        with db.session() as session:
            return sorted((d.hall.code, d.code) for d in session.scalars(select(Device)))
    except SQLAlchemyError as exc:
        return f"registry unreadable: {type(exc).__name__}"
    finally:
        db.close()


def offline(ctx: Context, status: dict[Key, dict[str, Any]]) -> Check:
    """Registered devices whose last status is offline, older than the threshold, or missing."""
    devices = registered(ctx)
    if isinstance(devices, str):
        return Check(PART, "offline", "unknown", devices)
    limit_ms = ctx.doctor.offline_after_s * 1000
    now_ms = int(ctx.now.timestamp() * 1000)
    down: list[Key] = []
    for key in devices:
        st = status.get(key)
        if st is None or st.get("state") == "offline" or now_ms - int(st["time"]) > limit_ms:
            down.append(key)
    data = {"registered": len(devices), "offline": [f"{h}/{d}" for h, d in down]}
    value = f"{len(devices) - len(down)} of {len(devices)} registered devices online"
    if not down:
        return ok(PART, "offline", value, **data)
    return problem(
        PART,
        "offline",
        "warn",
        f"{value}; offline or silent > {ctx.doctor.offline_after_s} s: {_names(down)}",
        "检查这些评价器的电源与网络，或在登记中删除已停用的设备（windowrate device）",
        "check these devices' power and network, or remove retired ones from the registry "
        "(windowrate device)",
        **data,
    )


def run(ctx: Context) -> list[Check]:
    """Device clocks and offline devices (unknown while InfluxDB is down)."""
    if not ctx.influx_up:
        why = "InfluxDB unreachable (see services.influxdb)"
        return [Check(PART, "clock", "unknown", why), Check(PART, "offline", "unknown", why)]
    try:
        with ctx.influx() as client:
            status = queries.device_latest_status(client)
        return [clocks(ctx, status), offline(ctx, status)]
    except InfluxError as exc:
        why = f"InfluxDB query failed: {exc}"
        return [Check(PART, "clock", "unknown", why), Check(PART, "offline", "unknown", why)]
