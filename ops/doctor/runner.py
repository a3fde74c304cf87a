"""Run every group of checks against one installation and gather the report."""

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from common.installation import Installation
from ops.doctor import certs, clock, devices, disk, pipeline, services, upkeep
from ops.doctor.context import Context
from ops.doctor.report import Check, Report, problem
from ops.doctor.settings import DoctorSettings

log = logging.getLogger(__name__)

Group = Callable[[Context], list[Check]]
# Services first: the later groups skip InfluxDB queries when it is down and read the
# gateway metrics it scraped.
LATER: dict[str, Group] = {
    "certs": certs.run,
    "disk": disk.run,
    "clock": clock.run,
    "pipeline": pipeline.run,
    "devices": devices.run,
    "upkeep": upkeep.run,
}


def _guarded(part: str, group: Group, ctx: Context) -> list[Check]:
    """Run one group; a check that breaks is reported, never the end of the report."""
    try:
        return group(ctx)
    except Exception as exc:  # one broken check must not hide the others
        log.exception("doctor check %s failed", part)
        return [
            problem(
                part,
                "check",
                "warn",
                f"the check itself failed: {type(exc).__name__}: {exc}",
                "医生检查自身出错：请附上本输出与 --log-level DEBUG 的日志报告问题",
                "the doctor's own check failed: report it with this output and a "
                "--log-level DEBUG log",
            )
        ]


def diagnose(installation: Installation | None, settings: DoctorSettings | None = None) -> Report:
    """Check the installation whose variables are loaded in this process's environment."""
    from gateway.settings import get_settings as gateway_settings
    from ops.doctor.settings import get_settings as doctor_settings
    from server.settings import get_settings as server_settings

    ctx = Context(
        installation, server_settings(), gateway_settings(), settings or doctor_settings()
    )
    checks = _guarded("services", services.run, ctx)
    with ThreadPoolExecutor(max_workers=len(LATER)) as pool:
        futures = [pool.submit(_guarded, part, group, ctx) for part, group in LATER.items()]
        for f in futures:
            checks.extend(f.result())
    return Report(ctx.describe, checks)
