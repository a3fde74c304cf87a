"""Free space of each data directory, and how fast InfluxDB grows (from a small state file)."""

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from ops.doctor.context import Context
from ops.doctor.report import Check, Status, ok, problem
from storage.client import InfluxError

log = logging.getLogger(__name__)

PART = "disk"
GiB = 1024**3
MIN_SPAN_S = 3600  # a growth rate needs samples at least this far apart
KEEP_S = 30 * 86400  # samples older than this are dropped
SAMPLE_EVERY_S = 600  # a new sample at most this often (repeated runs keep the file small)


def _existing(path: Path) -> Path | None:
    """The path, or its nearest existing parent (a directory not made yet)."""
    for p in (path, *path.parents):
        if p.exists():
            return p
    return None


def data_dirs(ctx: Context, influx_dir: Path | None) -> dict[str, Path]:
    """The directories this installation keeps data in."""
    dirs: dict[str, Path] = {"gateway": ctx.gateway.data_dir.resolve()}
    url = ctx.server.database_url
    if url.startswith("sqlite:///"):
        dirs["registry"] = Path(url.removeprefix("sqlite:///")).resolve().parent
    if influx_dir is not None:
        dirs["influxdb"] = influx_dir
    try:
        from server.scores.settings import ScoresSettings

        dirs["exports"] = ScoresSettings().export_dir.resolve()
    except ValueError:  # invalid scores settings: the export check of `windowrate export` says
        pass
    broker = ctx.run_dir / "mosquitto" if ctx.run_dir else Path("/var/lib/mosquitto")
    if broker.exists():
        dirs["broker"] = broker
    return dirs


def space(ctx: Context, name: str, path: Path) -> Check:
    """Free space of the file system holding `path`."""
    where = _existing(path)
    if where is None:
        return Check(PART, name, "unknown", f"{path} does not exist")
    usage = shutil.disk_usage(where)
    pct = 100.0 * usage.free / usage.total if usage.total else 0.0
    value = f"{path}: {usage.free / GiB:.1f} GiB free of {usage.total / GiB:.1f} GiB ({pct:.0f} %)"
    data = {"path": str(path), "free_bytes": usage.free, "total_bytes": usage.total}
    d = ctx.doctor
    if pct >= d.disk_warn_free_pct:
        return ok(PART, name, value, free_pct=round(pct, 1), **data)
    status: Status = "fail" if pct < d.disk_fail_free_pct else "warn"
    return problem(
        PART,
        name,
        status,
        value,
        "磁盘将满：清理或扩容该磁盘（不要删除 InfluxDB 或评价数据）；缩短保留期见 docs/storage.md",
        "the disk is filling up: free or add space (never delete InfluxDB or rating data); "
        "a shorter retention is in docs/storage.md",
        free_pct=round(pct, 1),
        **data,
    )


def influx_size(ctx: Context) -> tuple[int, Path | None]:
    """InfluxDB's bytes on disk for the database (SHOW STATS) and its data directory."""
    total, root = 0, None
    with ctx.influx() as client:
        for stmt in client.query("SHOW STATS FOR 'shard'", timeout=ctx.doctor.timeout_s):
            for s in stmt.series:
                if s.tags.get("database") != client.database:
                    continue
                row = next(s.rows(), {})
                total += int(row.get("diskBytes") or 0)
                path = s.tags.get("path")
                if path and root is None:  # <data>/<database>/<retention>/<shard id>
                    root = Path(path).parents[2]
    return total, root


def state_path(ctx: Context) -> Path:
    """The doctor's state file: WR_DOCTOR_STATE_FILE, else next to the run or gateway data."""
    if ctx.doctor.state_file is not None:
        return ctx.doctor.state_file
    base = ctx.run_dir if ctx.run_dir is not None else ctx.gateway.data_dir.resolve().parent
    return base / "doctor-state.json"


def _load(path: Path) -> dict[str, Any]:
    """The state file's content (empty when missing or unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save(path: Path, data: dict[str, Any]) -> str | None:
    """Write the state file atomically; return the error, if any."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        return str(exc)
    return None


def growth(ctx: Context, size: int, free: int | None) -> Check:
    """InfluxDB's size now, its growth per day and the days until its disk is full."""
    path = state_path(ctx)
    state = _load(path)
    now = ctx.now.timestamp()
    samples = [
        (float(t), int(b))
        for t, b in state.get("influx_bytes", [])
        if isinstance(t, int | float) and isinstance(b, int) and now - KEEP_S <= t <= now
    ]
    if not samples or now - samples[-1][0] >= SAMPLE_EVERY_S:
        samples.append((now, size))
    error = _save(path, {**state, "influx_bytes": samples})
    value = f"{size / 2**20:.1f} MiB"
    data: dict[str, Any] = {"bytes": size, "state_file": str(path)}
    first_t, first_b = samples[0]
    span = now - first_t
    if span < MIN_SPAN_S:
        note = f"; growth: measured from the next run after {MIN_SPAN_S // 60} min ({path})"
        if error:
            note = f"; growth unknown: cannot write {path}: {error}"
        return ok(PART, "influxdb_growth", value + note, **data)
    per_day = (size - first_b) / span * 86400
    data["bytes_per_day"] = round(per_day)
    value += f", {per_day / 2**20:+.1f} MiB/day over {span / 86400:.1f} days"
    if per_day <= 0 or free is None:
        return ok(PART, "influxdb_growth", value, **data)
    days = free / per_day
    data["days_left"] = round(days, 1)
    value += f", disk full in {days:.0f} days"
    d = ctx.doctor
    if days >= d.growth_warn_days:
        return ok(PART, "influxdb_growth", value, **data)
    return problem(
        PART,
        "influxdb_growth",
        "fail" if days < d.growth_fail_days else "warn",
        value,
        f"约 {days:.0f} 天后 InfluxDB 磁盘写满：扩容，或缩短保留期（docs/storage.md）",
        f"InfluxDB's disk is full in about {days:.0f} days: add space or shorten the retention "
        "(docs/storage.md)",
        **data,
    )


def run(ctx: Context) -> list[Check]:
    """Free space of each data directory, then InfluxDB's size and growth."""
    size: int | None = None
    influx_dir: Path | None = None
    why = "InfluxDB unreachable (see services.influxdb)"
    if ctx.influx_up:
        try:
            size, influx_dir = influx_size(ctx)
        except InfluxError as exc:
            why = f"SHOW STATS failed: {exc}"
    checks = [space(ctx, name, path) for name, path in data_dirs(ctx, influx_dir).items()]
    if size is None:
        checks.append(Check(PART, "influxdb_growth", "unknown", why))
        return checks
    free = None
    if influx_dir is not None and (where := _existing(influx_dir)) is not None:
        free = shutil.disk_usage(where).free
    checks.append(growth(ctx, size, free))
    return checks
