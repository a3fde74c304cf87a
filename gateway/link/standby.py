"""Active/standby on one MQTT session: the standby holds it only while the primary is away.

Two gateways with the same client id would take the session from each other on every
connect. So whoever holds the session publishes a retained "online {instance}" on the
session's presence topic, with a retained Last Will "offline {instance}"
(`ConnectOptions.presence`). The standby follows that topic on a watcher connection with an
id of its own and connects with the session's client id only when the topic says "offline"
(or says nothing, or names the standby itself: left over from before a broker restart).

When the primary returns it takes the session back. Mosquitto 2.0.11 then closes the
standby's connection without a DISCONNECT 0x8E and drops its will (measured), and the
primary announces itself "online". So a standby whose connection ends waits `SETTLE_S`
and then looks: "online" by another instance means someone holds the session (the primary,
or another standby that won a race), and it watches again; anything else (a broker restart,
a network error) means it takes the session again. Nobody fights: the primary always
connects, a standby only ever yields to another instance's "online".
"""

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

from common.mqtt import MqttSettings
from gateway.link.connection import OFFLINE, ONLINE, ConnectOptions
from gateway.link.session import Backoff, Link

log = logging.getLogger(__name__)

# With no retained presence at all (no gateway ever held the session on this broker) the
# standby waits this long after subscribing before it treats the session as free.
ABSENT_S = 2.0
# After losing the session, wait this long for the new holder's "online" before deciding.
SETTLE_S = 2.0


def presence_topic(prefix: str, client_id: str) -> str:
    """The retained online/offline topic of the session `client_id`."""
    return f"{prefix}/gateway/{client_id}/presence"


def new_instance() -> str:
    """A name for this process in presence messages: host, pid and a random tail."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class PresenceWatcher:
    """Follows a presence topic on a clean connection of its own."""

    def __init__(
        self, settings: MqttSettings, topic: str, client_id: str, backoff: Backoff | None = None
    ) -> None:
        """Prepare; `start` connects."""
        options = ConnectOptions(
            client_id, (topic,), receive_max=16, session_expiry_s=0, clean_start=True
        )
        self.link = Link(settings, options, backoff)
        self.state: tuple[str, str] | None = None
        self._subscribed_at: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Connect and follow the topic."""
        self.link.start()
        self._thread = threading.Thread(target=self._run, name="presence", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Disconnect."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.link.stop()

    def _run(self) -> None:
        """Take every presence message, acknowledge it, keep the last one."""
        while not self._stop.is_set():
            if not self.link.connected:
                self._subscribed_at = None
            elif self._subscribed_at is None:
                self._subscribed_at = time.monotonic()
            batch = self.link.get(0.2)
            if batch is None:
                continue
            with self._lock:
                for m in batch.messages:
                    text = m.payload[:200].decode(errors="replace")
                    state, _, instance = text.partition(" ")
                    self.state = (state, instance)
                    log.info("session presence: %s", text)
            self.link.ack(batch.epoch, batch.packet_ids)

    def snapshot(self) -> tuple[tuple[str, str] | None, float | None]:
        """The last (state, instance) seen, and since when the watcher is subscribed (or None)."""
        with self._lock:
            return self.state, self._subscribed_at if self.link.connected else None


class Standby:
    """Starts a session `Link` while the session is free; hands it over via `on_link`."""

    def __init__(
        self,
        settings: MqttSettings,
        session: ConnectOptions,
        watcher: PresenceWatcher,
        on_link: Callable[[Link | None], None],
        backoff: Backoff | None = None,
    ) -> None:
        """`session` is the primary's; the standby's link carries its own instance name."""
        self.settings = settings
        self.session = replace(session, end_when_lost=True)
        self.watcher = watcher
        self.on_link = on_link
        self.backoff = backoff
        self.link: Link | None = None
        self.takeovers = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching."""
        self.watcher.start()
        self._thread = threading.Thread(target=self._run, name="standby", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; the current session link (if any) is the caller's to stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.watcher.stop()

    def session_free(self) -> bool:
        """True when nobody else announces itself as holding the session."""
        state, since = self.watcher.snapshot()
        if since is None:  # the watcher is not connected: we know nothing
            return False
        if state is None:
            return time.monotonic() - since >= ABSENT_S
        what, who = state
        if what == OFFLINE:
            return True
        return what == ONLINE and who == self.session.instance  # our own, left over

    def _run(self) -> None:
        """Watch; take the session while it is free; yield it to whoever announces itself."""
        while not self._stop.wait(0.1):
            if not self.session_free():
                continue
            self.takeovers += 1
            log.warning("session %s is free: the standby takes it", self.session.client_id)
            link = Link(self.settings, self.session, self.backoff)
            self.link = link
            link.start()
            self.on_link(link)
            while link.running and not self._stop.wait(0.2):
                pass
            if self._stop.is_set():
                return
            self.link = None
            self.on_link(None)
            link.stop()
            log.warning("lost session %s; standby again", self.session.client_id)
            if self._stop.wait(SETTLE_S):
                return
