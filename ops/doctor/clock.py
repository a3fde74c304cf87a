"""Whether the hall server's clock is synchronised (timedatectl, else chrony, else unknown)."""

import re
import shutil
import subprocess

from ops.doctor.context import Context
from ops.doctor.report import Check, ok, problem

PART = "clock"
FIX_ZH = "开启时间同步（timedatectl set-ntp true，或安装并配置 chrony 指向大厅的时间源）"
FIX_EN = (
    "turn time sync on (`timedatectl set-ntp true`, or install chrony pointed at the hall's "
    "time source)"
)


def _run(args: list[str], timeout: float) -> str | None:
    """A command's stdout, or None when it is missing, fails or hangs."""
    if shutil.which(args[0]) is None:
        return None
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def timedatectl(timeout: float) -> bool | None:
    """NTPSynchronized from `timedatectl show`, or None when systemd cannot say."""
    out = _run(["timedatectl", "show", "-p", "NTPSynchronized"], timeout)
    match = re.search(r"^NTPSynchronized=(yes|no)$", out or "", re.MULTILINE)
    return None if match is None else match.group(1) == "yes"


def chrony(timeout: float) -> tuple[bool, str] | None:
    """(synchronised, offset line) from `chronyc tracking`, or None without chrony."""
    out = _run(["chronyc", "-n", "tracking"], timeout)
    if out is None:
        return None
    leap = re.search(r"^Leap status\s*:\s*(.+)$", out, re.MULTILINE)
    offset = re.search(r"^System time\s*:\s*(.+)$", out, re.MULTILINE)
    if leap is None:
        return None
    return leap.group(1).strip() != "Not synchronised", offset.group(1).strip() if offset else ""


def run(ctx: Context) -> list[Check]:
    """The server clock's sync state from the first tool that answers."""
    t = ctx.doctor.timeout_s
    synced = timedatectl(t)
    if synced is not None:
        if synced:
            return [ok(PART, "server", "timedatectl: NTPSynchronized=yes", source="timedatectl")]
        return [
            problem(
                PART,
                "server",
                "fail",
                "timedatectl: NTPSynchronized=no",
                FIX_ZH,
                FIX_EN,
                source="timedatectl",
            )
        ]
    tracked = chrony(t)
    if tracked is not None:
        good, offset = tracked
        value = f"chronyc tracking: {'synchronised' if good else 'not synchronised'} {offset}"
        if good:
            return [ok(PART, "server", value.strip(), source="chrony")]
        return [problem(PART, "server", "fail", value.strip(), FIX_ZH, FIX_EN, source="chrony")]
    return [
        Check(
            PART,
            "server",
            "unknown",
            "unknown: neither `timedatectl show` (systemd) nor `chronyc tracking` answered here",
        )
    ]
