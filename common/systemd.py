"""Tell systemd a service is ready and alive (sd_notify: READY=1, WATCHDOG=1).

Hand-written: the protocol is one datagram to $NOTIFY_SOCKET (sd_notify(3)); `systemd-python`
needs libsystemd's headers to build and `sdnotify` on PyPI has had no release since 2017.
Outside systemd (no NOTIFY_SOCKET) every call does nothing.
"""

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1") to systemd; False when not run by systemd or on error."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("could not notify systemd (%s): %s", state, exc)
        return False
    return True


def watchdog_interval_s() -> float | None:
    """The watchdog interval systemd asks for (WatchdogSec=), if it is meant for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000
    except ValueError:
        return None


class Watchdog:
    """Sends WATCHDOG=1 at half the interval while `alive()` says the process does its work."""

    def __init__(self, alive: Callable[[], bool], interval_s: float | None = None) -> None:
        """Prepare; start() begins pinging when systemd asked for a watchdog."""
        self.alive = alive
        self.interval_s = interval_s if interval_s is not None else watchdog_interval_s()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Ping from a daemon thread (nothing when no watchdog is configured)."""
        if not self.interval_s:
            return
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._thread.start()

    def tick(self) -> bool:
        """Ping if alive and return True; else log, withhold the ping, and return False."""
        if self.alive():
            notify("WATCHDOG=1")
            return True
        log.error("not alive: withholding the systemd watchdog ping (systemd will restart)")
        return False

    def _run(self) -> None:
        """Tick at half the interval until stopped."""
        assert self.interval_s
        while not self._stop.wait(self.interval_s / 2):
            self.tick()

    def stop(self) -> None:
        """Stop pinging."""
        self._stop.set()


class Heartbeat:
    """A loop's last sign of life, for a Watchdog's `alive`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        """Start as just beaten."""
        self.clock = clock
        self.last = clock()

    def beat(self) -> None:
        """The loop went round."""
        self.last = self.clock()

    def fresh(self, within_s: float) -> bool:
        """True if the loop went round within `within_s` seconds."""
        return self.clock() - self.last <= within_s
