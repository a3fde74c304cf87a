"""systemd readiness and watchdog notifications (sd_notify) for the kiosk, gateway and server.

The protocol is one datagram of `KEY=VALUE` lines to the AF_UNIX socket named in
$NOTIFY_SOCKET (a path, or `@name` for the abstract namespace). That is a dozen lines with the
stdlib `socket` module, so no library is taken for it (`systemd-python` needs libsystemd's
headers to build; `sdnotify` on PyPI has had no release since 2017). With Type=notify and
WatchdogSec= in a unit, a process says READY=1 once it serves and pings WATCHDOG=1 at half the
interval while its own loops go round, so a hung process (not just a dead one) is restarted.
Outside systemd every call is a no-op that returns False.
"""

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends sd_notify messages; a no-op when $NOTIFY_SOCKET is unset."""

    def __init__(self, address: str | None = None) -> None:
        addr = os.environ.get("NOTIFY_SOCKET") if address is None else address
        self.address: str | None = addr or None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notification socket."""
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=VALUE` assignments as one datagram; True if it was sent."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        data = "\n".join(assignments).encode("utf-8")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.sendto(data, target)
            except OSError as exc:
                self._close_locked()
                if not self._warned:  # once: a ping every few seconds must not flood the log
                    log.warning("sd_notify to %r failed: %s", self.address, exc)
                    self._warned = True
                return False
        return True

    def ready(self) -> bool:
        """Tell systemd that start-up is complete (READY=1)."""
        return self.notify("READY=1")

    def ping(self) -> bool:
        """Keep the watchdog from firing (WATCHDOG=1)."""
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """Set the one-line status shown by `systemctl status` (STATUS=…)."""
        return self.notify("STATUS=" + " ".join(text.split()))

    def stopping(self) -> bool:
        """Tell systemd that the service is shutting down (STOPPING=1)."""
        return self.notify("STOPPING=1")

    @staticmethod
    def interval_s() -> float | None:
        """The watchdog timeout systemd set for this process (WatchdogSec), or None.

        Ping at half of it. None when no watchdog is configured, or it is meant for another
        process ($WATCHDOG_PID differs from ours).
        """
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid.strip() != str(os.getpid())):
            return None
        try:
            value = int(usec)
        except ValueError:
            return None
        return value / 1e6 if value > 0 else None

    def close(self) -> None:
        """Close the socket (it is opened again by the next message)."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def notify(state: str) -> bool:
    """Send one assignment (e.g. "READY=1") to systemd; False when not run by systemd."""
    notifier = SystemdNotifier()
    try:
        return notifier.notify(state)
    finally:
        notifier.close()


class Watchdog:
    """Sends WATCHDOG=1 at half the interval while `alive()` says the process does its work."""

    def __init__(self, alive: Callable[[], bool], interval_s: float | None = None) -> None:
        """Prepare; start() begins pinging when systemd asked for a watchdog."""
        self.alive = alive
        self.interval_s = interval_s if interval_s is not None else SystemdNotifier.interval_s()
        self.notifier = SystemdNotifier()
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
            self.notifier.ping()
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
        self.notifier.close()


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
