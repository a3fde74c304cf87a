"""The kiosk's clocks: wall time, a monotonic clock that runs across NTP steps, sync state."""

import ctypes
import ctypes.util
import logging
import time
from pathlib import Path
from typing import Protocol

from protocol.clock import is_plausible

log = logging.getLogger(__name__)

_TIME_ERROR = 5  # adjtimex() state: clock not synchronised


class Clock(Protocol):
    """What the recorder and publisher need to know about time (a seam, like gpiozero's pins)."""

    def wall_ms(self) -> int:
        """Wall-clock time, ms since the Unix epoch."""
        ...

    def mono_ns(self) -> int:
        """A monotonic clock that counts suspend too and is never stepped."""
        ...

    def synced(self) -> bool:
        """True when the wall clock is disciplined by NTP/chrony."""
        ...

    def boot_id(self) -> str:
        """Identity of this boot: monotonic readings compare only within one boot."""
        ...


def _kernel_synced() -> bool | None:
    """Ask the kernel (adjtimex, read-only) whether the clock is synchronised; None if unknown."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
        state = int(libc.adjtimex(buf))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR


class SystemClock:
    """The real clocks of the machine; `trust_wall=True` treats the wall clock as synced."""

    def __init__(self, trust_wall: bool = False) -> None:
        """Create; `trust_wall` is for hosts whose clock is known good (simulators on a server)."""
        self.trust_wall = trust_wall
        self._boot = self._read_boot_id()

    @staticmethod
    def _read_boot_id() -> str:
        """Read the kernel's boot id."""
        try:
            return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            return "unknown"

    def wall_ms(self) -> int:
        """Wall-clock time in ms."""
        return time.time_ns() // 1_000_000

    def mono_ns(self) -> int:
        """CLOCK_BOOTTIME in ns (monotonic, includes suspend)."""
        return time.clock_gettime_ns(time.CLOCK_BOOTTIME)

    def synced(self) -> bool:
        """Kernel sync state; falls back to plausibility when the kernel cannot tell."""
        if self.trust_wall:
            return True
        state = _kernel_synced()
        if state is None:
            return is_plausible(self.wall_ms())
        return state

    def boot_id(self) -> str:
        """This boot's id."""
        return self._boot


def resolve_ts(
    clock: Clock, press_wall_ms: int, press_mono_ns: int, press_boot: str, press_synced: bool
) -> tuple[int, bool] | None:
    """Decide a rating's final (ts, clock_synced) at its first send attempt, or None to hold it.

    docs/wire-contract.md: ts is the press time; if NTP synced after the press (same boot) it is
    corrected from the monotonic clock; implausible times (before 2020) wait for a sync.
    """
    if press_synced:
        return press_wall_ms, True
    if clock.synced():
        if press_boot == clock.boot_id():
            elapsed_ms = (clock.mono_ns() - press_mono_ns) // 1_000_000
            return clock.wall_ms() - elapsed_ms, True
        # Pressed in an earlier boot with an unsynced clock: nothing can correct it. Send as
        # is; an implausible time becomes a dead letter at the gateway, kept for recovery.
        return press_wall_ms, False
    if is_plausible(press_wall_ms):
        return press_wall_ms, False
    return None
