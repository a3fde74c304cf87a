"""Upkeep: the age of the last backup and the webhook deliveries waiting to be sent."""

import importlib
from collections.abc import Callable
from datetime import UTC
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from ops.doctor.context import Context
from ops.doctor.report import Check, Status, ok, problem

PART = "upkeep"


def _lazy(module: str, name: str) -> Callable[..., Any] | None:
    """A function of a module that may not be there yet in this version."""
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


def backup(ctx: Context) -> Check:
    """Hours since the last backup (ops.backup.last_backup)."""
    last_backup = _lazy("ops.backup", "last_backup")
    if last_backup is None:
        return Check(PART, "backup", "unknown", "no backup yet (this version cannot back up)")
    if ctx.installation is None:
        return Check(PART, "backup", "unknown", "no installation directory to read backups from")
    last = last_backup(ctx.installation.config_dir)
    zh = "运行 windowrate backup --out <备份目录>，并确认备份定时器已启用（systemctl list-timers）"
    en = (
        "run `windowrate backup --out <dir>` and make sure the backup timer is on "
        "(systemctl list-timers)"
    )
    if last is None:
        if ctx.run_dir is not None:  # a `windowrate up` dev stack has no backup timer
            return ok(PART, "backup", "no backup yet (dev stack: no backup timer)")
        return problem(PART, "backup", "warn", "no backup yet", zh, en)
    if last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    hours = (ctx.now - last).total_seconds() / 3600
    value = f"last backup {last:%Y-%m-%d %H:%M} UTC ({hours:.0f} h ago)"
    data = {"last": last.isoformat(), "age_h": round(hours, 1)}
    d = ctx.doctor
    if hours < d.backup_warn_hours:
        return ok(PART, "backup", value, **data)
    status: Status = "fail" if hours >= d.backup_fail_hours else "warn"
    return problem(PART, "backup", status, value, zh, en, **data)


def webhooks(ctx: Context) -> Check:
    """Webhook deliveries waiting in the registry (server.cases.webhook.pending_deliveries)."""
    pending_deliveries = _lazy("server.cases.webhook", "pending_deliveries")
    if pending_deliveries is None:
        return Check(PART, "webhooks", "unknown", "this version keeps no delivery queue")
    from server.db.engine import Database

    db = Database(ctx.server.database_url)
    try:
        with db.session() as session:
            pending = int(pending_deliveries(session))
    except SQLAlchemyError as exc:
        return Check(PART, "webhooks", "unknown", f"registry unreadable: {type(exc).__name__}")
    finally:
        db.close()
    value = f"{pending} deliveries pending"
    if pending <= ctx.doctor.webhook_warn:
        return ok(PART, "webhooks", value, pending=pending)
    return problem(
        PART,
        "webhooks",
        "warn",
        value,
        "webhook 接收方未应答：检查 WR_SERVER_CASES__WEBHOOK_URLS 指向的系统及其网络",
        "the webhook receiver does not answer: check the system WR_SERVER_CASES__WEBHOOK_URLS "
        "names and the network to it",
        pending=pending,
    )


def run(ctx: Context) -> list[Check]:
    """Backup age and pending webhook deliveries."""
    return [backup(ctx), webhooks(ctx)]
