"""Measurements of a running kiosk app: memory, outbox rows, touch-to-commit latency."""

import contextlib
import errno
import gc
import json
import logging
import os
import re
import sqlite3
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SOFT_GL = re.compile(r"^(libLLVM|swrast_dri|libgallium|kms_swrast_dri)")


def memory_kb() -> dict[str, int]:
    """VmRSS, RssAnon, RssFile and RssShmem of this process, in kB."""
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0])
    return out


def rss_by_mapping(top: int = 8) -> dict[str, float]:
    """The largest resident mappings of this process (file name or [anon]/[heap]), in MB."""
    totals: dict[str, int] = {}
    name = "[anon]"
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(maxsplit=6)
            if head and "-" in head[0] and not head[0].endswith(":"):
                name = Path(head[5]).name if len(head) > 5 else "[anon]"
            elif line.startswith("Rss:"):
                totals[name] = totals.get(name, 0) + int(head[1])
    biggest = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return {k: round(v / 1024, 1) for k, v in biggest}


def read_outbox(path: Path) -> tuple[int, list[dict[str, Any]]]:
    """The last seq and every rating row still in an outbox (read-only), oldest first."""
    if not path.exists():
        return 0, []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (last,) = db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
        rows = db.execute(
            "SELECT seq, id, draft, held, acked_ms FROM rating ORDER BY seq"
        ).fetchall()
    finally:
        db.close()
    out = []
    for seq, rid, draft, held, acked in rows:
        d = json.loads(draft)
        out.append(
            {
                "seq": seq,
                "id": rid,
                "level": d["level"],
                "scale": d["scale"],
                "input": d["input"],
                "prompted": d["prompted"],
                "staff": d["staff"],
                "ticket": d["ticket"],
                "item": d["item"],
                "reasons": d["reasons"],
                "held": bool(held),
                "acked": acked is not None,
            }
        )
    return int(last), out


class StepFailed(Exception):
    """A scenario expectation did not hold."""


@dataclass
class Wait:
    """Poll `pred` each frame until true; fail with `what` after `timeout` seconds."""

    pred: Callable[[], bool]
    timeout: float
    what: str | Callable[[], str]

    def __post_init__(self) -> None:
        """Fix the deadline."""
        self.deadline = time.monotonic() + self.timeout


def touch_bench(harness: Any, arg: dict[str, Any]) -> Wait:
    """Touch rating keys `presses` times; time each from touch-down to the outbox commit.

    A low rating's reasons screen is answered with real touches (a reason, then submit).
    """
    presses = int(arg.get("presses", 1000))
    levels = [int(v) for v in arg.get("levels", [5, 4, 3])]  # low ones ask for reasons
    session = harness.kiosk.terminal.session
    press = session.press

    def timed(level: int, input_: Any) -> Any:
        result = press(level, input_)
        harness.committed_at = time.perf_counter()
        harness.last_accepted = result.accepted
        return result

    setattr(session, "press", timed)  # noqa: B010 - instrument the instance, not the class
    latencies: list[float] = []
    refused: list[int] = []
    t_start = time.monotonic()

    reasons_shown: list[str] = []

    def settled(screen: str) -> bool:
        """`screen` is drawn and its slide-in is over (a touch during it lands nowhere)."""
        transition = getattr(harness.app.manager, "transition", None)
        return (
            harness.app.shown == screen
            and not harness.app.redraw_pending
            and session.screen.value == screen
            and not (transition is not None and transition.is_active)
        )

    def answer_reasons() -> bool:
        """On the reasons screen of a low rating: touch the first reason, then submit."""
        if not settled("reasons"):
            return False
        reasons = sorted(k for k in harness.app.targets if k.startswith("reason."))
        if not reasons:
            raise StepFailed("the reasons screen shows no reason keys")
        reasons_shown.append(reasons[0])
        harness.touch_widget(harness.target(reasons[0]))
        harness.touch_widget(harness.target("confirm_reasons"))
        return True

    def step() -> bool:
        if session.screen.value == "reasons":
            answer_reasons()
            return False
        if len(latencies) + len(refused) >= presses:
            return True
        if not settled("rating"):
            return False
        level = levels[(len(latencies) + len(refused)) % len(levels)]
        w = harness.target(f"rating.{level}")
        harness.committed_at = None
        t0 = time.perf_counter()
        harness.touch_widget(w)
        if harness.committed_at is None or not harness.last_accepted:
            refused.append(level)
        else:
            latencies.append((harness.committed_at - t0) * 1000)
        return False

    def finished() -> bool:
        if not step():
            return False
        setattr(session, "press", press)  # noqa: B010
        mem = memory_kb()
        top = rss_by_mapping(top=12)
        lat = sorted(latencies)
        harness.bench = {
            "presses": len(latencies),
            "refused": len(refused),
            "p50_ms": round(statistics.median(lat), 3) if lat else None,
            "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 3) if lat else None,
            "max_ms": round(lat[-1], 3) if lat else None,
            "mean_ms": round(statistics.fmean(lat), 3) if lat else None,
            "reasons_answered": len(reasons_shown),
            "reasons_screens": list(harness.app.screen_history).count("reasons"),
            "rss_mb": round(mem["VmRSS"] / 1024, 1),
            "rss_anon_mb": round(mem.get("RssAnon", 0) / 1024, 1),
            "rss_file_mb": round(mem.get("RssFile", 0) / 1024, 1),
            "rss_top_mb": top,
            # Pages of Mesa's software rasteriser (llvmpipe): Xvfb has no GPU; a Pi's
            # v3d driver does not load LLVM.
            "rss_software_gl_mb": round(sum(v for k, v in top.items() if SOFT_GL.match(k)), 1),
            "seconds": round(time.monotonic() - t_start, 1),
        }
        log.info("bench: %s", harness.bench)
        if refused:
            raise StepFailed(f"{len(refused)} touches were not committed")
        return True

    return Wait(finished, float(arg.get("timeout", 600)), f"{presses} presses")


def process_age_s() -> float:
    """Seconds since this process was started (from /proc/self/stat, 10 ms resolution)."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    start_ticks = int(fields[19])  # field 22, starttime, counted after "pid (comm)"
    return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")


def fill_disk(path: Path) -> int:
    """Write `path` until its file system has no room left; return the bytes written."""
    written = 0
    block = b"\xff" * (1 << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            try:
                n = os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
            written += n
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
    log.info("filled %s with %d bytes", path, written)
    return written


def growth_bench(harness: Any, arg: dict[str, Any]) -> Wait:
    """Press `presses` times through the app's own handlers (the keys' `rate`, the reasons'
    submit), `per_frame` at a time with the session ticked and the screens redrawn after each;
    RSS after a warm-up and at the end. The thank-you time is 0 meanwhile."""
    presses = int(arg.get("presses", 20_000))
    warmup = int(arg.get("warmup", min(1000, presses // 10)))
    per_frame = int(arg.get("per_frame", 40))
    levels = [int(v) for v in arg.get("levels", [5, 4, 3, 2, 1])]
    app = harness.app
    terminal = harness.kiosk.terminal
    session = terminal.session
    thanks_s = session.thanks_s
    session.thanks_s = 0.0
    first_seq = terminal.outbox.last_seq()
    state: dict[str, Any] = {"n": 0, "before": None, "t0": None}

    def one(n: int) -> None:
        app.rate(levels[n % len(levels)])
        if session.screen.value == "reasons":
            app.redraw()
            codes = [r.code for r in session.config.reasons][:1]
            app.submit_reasons(codes)
        session.tick()
        app.redraw()

    def step() -> bool:
        for _ in range(per_frame):
            if state["n"] >= warmup + presses:
                break
            if state["n"] == warmup and state["before"] is None:
                gc.collect()
                state["before"] = memory_kb()
                state["t0"] = time.monotonic()
            one(state["n"])
            state["n"] += 1
        return bool(state["n"] >= warmup + presses)

    def finished() -> bool:
        if not step():
            return False
        session.thanks_s = thanks_s
        gc.collect()
        after = memory_kb()
        before = state["before"]
        committed = terminal.outbox.last_seq() - first_seq
        seconds = time.monotonic() - state["t0"]
        harness.growth = {
            "presses": presses,
            "warmup": warmup,
            "committed": committed,
            "rss_before_mb": round(before["VmRSS"] / 1024, 1),
            "rss_after_mb": round(after["VmRSS"] / 1024, 1),
            "rss_growth_mb": round((after["VmRSS"] - before["VmRSS"]) / 1024, 2),
            "rss_anon_growth_mb": round((after["RssAnon"] - before["RssAnon"]) / 1024, 2),
            "seconds": round(seconds, 1),
            "presses_per_s": round(presses / seconds, 1) if seconds > 0 else None,
            "outbox_bytes": terminal.outbox.file_bytes(),
        }
        log.info("growth: %s", harness.growth)
        if committed != warmup + presses:
            raise StepFailed(f"{warmup + presses} presses but {committed} committed")
        return True

    return Wait(finished, float(arg.get("timeout", 3600)), f"{presses} presses (growth)")
