"""The gateway's persistent MQTT session: one reader thread, batches out, batched PUBACKs in.

A blocking socket loop in one thread reads as much as the kernel holds, parses every packet of
that read with the `mqtt5` codec and hands the PUBLISHes over as one `Batch`; the consumer
calls `ack(epoch, packet_ids)` once InfluxDB has the batch, and the thread writes all those
PUBACKs in one send. Nothing is acknowledged by the link on its own. The broker's Receive
Maximum (our `receive_max`) bounds what is unacknowledged, so it is the memory bound.

Why a thread and not asyncio (`bench/drain.py`, 100,000 queued QoS 1 messages, consumer that
acks every batch at once, same run, 2 cores): this thread loop drained {THREAD} msg/s, an
asyncio `Protocol` over the same codec {ASYNCIO} msg/s, `mosquitto_sub` {SUB} msg/s. The event
loop adds a callback and a transport write per read and gains nothing with one socket; the
gateway's writer is a thread already, so a thread hands it batches without a loop in between.

The link survives everything the broker can do: a refused login (logged with the CONNACK
reason, retried slowly), a refused subscription, a server DISCONNECT (reason logged; a session
taken over by another gateway is retried slowly, so two gateways do not fight), a dead broker
(keepalive), a malformed packet (counted, DISCONNECT 0x81, reconnect). Each reconnect waits an
exponential, capped, jittered delay.
"""

import collections
import contextlib
import logging
import random
import socket
import threading
from dataclasses import dataclass, field

import mqtt5

from common.mqtt import MqttSettings
from gateway.link.connection import (
    Connection,
    ConnectOptions,
    LinkError,
    MalformedPacket,
    ServerDisconnect,
)
from gateway.link.frames import Message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: doubling from `initial_s` to `cap_s`, `slow_s` after a refusal."""

    initial_s: float = 0.5
    cap_s: float = 30.0
    slow_s: float = 60.0

    def delay(self, failures: int, slow: bool) -> float:
        """Seconds to wait after `failures` failures in a row, jittered to 50–100 %."""
        base = self.slow_s if slow else min(self.cap_s, self.initial_s * 2 ** max(failures - 1, 0))
        return base * random.uniform(0.5, 1.0)


@dataclass(frozen=True)
class Batch:
    """PUBLISHes that arrived in one socket read; ack with `epoch` (the connection's number)."""

    epoch: int
    messages: list[Message]

    @property
    def packet_ids(self) -> list[int]:
        """The ids to acknowledge (QoS 0 messages have none)."""
        return [m.packet_id for m in self.messages if m.packet_id]


@dataclass
class LinkCounters:
    """Monotonic counters for the gateway's metrics (in-flight is `Link.in_flight`)."""

    received: int = 0
    acked: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    malformed: int = 0
    stale_acks: int = 0
    server_disconnects: dict[str, int] = field(default_factory=dict)


class Link:
    """The gateway's MQTT session on its own thread; `get` batches, `ack` them, `stop`."""

    def __init__(
        self, settings: MqttSettings, options: ConnectOptions, backoff: Backoff | None = None
    ) -> None:
        """Prepare; `start` connects."""
        self.settings = settings
        self.options = options
        self.backoff = backoff or Backoff()
        self.counters = LinkCounters()
        self.last_error: str | None = None
        self.session_present = False
        self._epoch = 0
        self._conn: Connection | None = None
        self._ready: collections.deque[Batch] = collections.deque()
        self._cond = threading.Condition()
        self._acks: list[tuple[int, list[int]]] = []
        self._acks_lock = threading.Lock()
        self._signalled = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = threading.Event()
        self._connected = threading.Event()
        self.taken_over = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the consumer's side ---

    def start(self) -> None:
        """Start the reader thread (it connects and reconnects on its own)."""
        self._thread = threading.Thread(target=self._run, name="mqtt-link", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Send the PUBACKs already asked for, DISCONNECT (the session stays) and end the thread."""
        self._stop.set()
        self._signal()
        if self._thread is not None:
            self._thread.join(timeout)
        self._wake_r.close()
        self._wake_w.close()

    def wait_connected(self, timeout: float) -> bool:
        """Wait until the session is up and its SUBACK granted; return whether it is."""
        return self._connected.wait(timeout)

    @property
    def running(self) -> bool:
        """True until the reader thread has ended (stopped, or lost with `end_when_lost`)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def connected(self) -> bool:
        """True while a session is up and subscribed."""
        return self._connected.is_set()

    @property
    def in_flight(self) -> int:
        """Messages received on the current connection and not yet acknowledged."""
        conn = self._conn
        return conn.unacked_total if conn is not None else 0

    def get(self, timeout: float, limit: int | None = None) -> Batch | None:
        """Messages that arrived since the last call (at most `limit`), as one batch.

        None after `timeout`. The limit keeps batches even when the broker floods past our
        Receive Maximum (docs/delivery.md): one batch of 100,000s of messages would be
        prepared and written with no overlap between the two.
        """
        with self._cond:
            if not self._ready and not self._cond.wait_for(lambda: bool(self._ready), timeout):
                return None
            epoch = self._epoch
            taken: list[Batch] = []
            n = 0
            while self._ready and (limit is None or n < limit):
                b = self._ready.popleft()
                if b.epoch != epoch:
                    continue
                if limit is not None and n + len(b.messages) > limit:
                    cut = limit - n
                    self._ready.appendleft(Batch(b.epoch, b.messages[cut:]))
                    b = Batch(b.epoch, b.messages[:cut])
                taken.append(b)
                n += len(b.messages)
        if len(taken) == 1:
            return taken[0]
        if not taken:
            return None
        return Batch(epoch, [m for b in taken for m in b.messages])

    def ack(self, epoch: int, packet_ids: list[int]) -> None:
        """PUBACK these messages of connection `epoch` (one send); stale epochs are dropped."""
        with self._acks_lock:
            self._acks.append((epoch, packet_ids))
            if self._signalled:
                return
            self._signalled = True
        self._signal()

    def _signal(self) -> None:
        """Wake the reader thread."""
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    # --- the reader thread ---

    def _run(self) -> None:
        """Connect, serve, and reconnect with backoff until stopped."""
        failures = 0
        while not self._stop.is_set():
            conn = Connection(self.settings, self.options, self._wake_r)
            reason: mqtt5.DisconnectReasonCode | None = None
            slow = established = False
            try:
                conn.open()
                self._on_connected(conn)
                failures = 0
                established = True
                self._serve(conn)
                # A stopped gateway with a presence topic lets its will say "offline", so a
                # standby takes the session over; the session itself stays either way.
                reason = (
                    mqtt5.DisconnectReasonCode.DISCONNECT_WITH_WILL_MESSAGE
                    if self.options.presence
                    else mqtt5.DisconnectReasonCode.NORMAL_DISCONNECTION
                )
            except LinkError as exc:
                slow = exc.slow
                reason = self._on_error(exc)
                if (
                    isinstance(exc, ServerDisconnect)
                    and exc.reason_code == mqtt5.DisconnectReasonCode.SESSION_TAKEN_OVER
                ):
                    self.taken_over.set()
            except Exception as exc:  # a bug of ours must not end the gateway's session for good
                log.exception("MQTT link failed")
                self.last_error = repr(exc)
                reason = mqtt5.DisconnectReasonCode.UNSPECIFIED_ERROR
            finally:
                self._on_lost(conn, reason)
            if self._stop.is_set():
                break
            if established and self.options.end_when_lost:
                log.warning("session %s lost: this link ends", self.options.client_id)
                break
            failures += 1
            self.counters.connect_failures += 1
            wait = self.backoff.delay(failures, slow)
            log.warning("reconnecting to %s:%s in %.1f s", *self._where(), wait)
            self._stop.wait(wait)

    def _where(self) -> tuple[str, int]:
        """Host and port, for log lines."""
        return self.settings.host, self.settings.port

    def _on_connected(self, conn: Connection) -> None:
        """Start a new epoch: batches and acks of the old connection are void now."""
        with self._cond:
            self._epoch += 1
            self._ready.clear()
            self._conn = conn
        if self._epoch > 1:
            self.counters.reconnects += 1
            if not conn.session_present:
                log.warning("broker had no session for %s: it was lost", self.options.client_id)
        self.session_present = conn.session_present
        self.last_error = None
        log.info(
            "connected to %s:%s as %s (session present: %s, receive maximum %d)",
            *self._where(),
            self.options.client_id,
            conn.session_present,
            self.options.receive_max,
        )

    def _on_error(self, exc: LinkError) -> mqtt5.DisconnectReasonCode | None:
        """Log and count why the connection ended; return the DISCONNECT reason to send."""
        self.last_error = str(exc)
        if isinstance(exc, MalformedPacket):
            self.counters.malformed += 1
            log.error("%s; closing the connection", exc)
            return mqtt5.DisconnectReasonCode.MALFORMED_PACKET
        if isinstance(exc, ServerDisconnect):
            name = exc.reason_code.name
            self.counters.server_disconnects[name] = (
                self.counters.server_disconnects.get(name, 0) + 1
            )
            log.warning("%s", exc)
            return None
        log.log(logging.ERROR if exc.slow else logging.WARNING, "%s", exc)
        return mqtt5.DisconnectReasonCode.UNSPECIFIED_ERROR if exc.slow else None

    def _on_lost(self, conn: Connection, reason: mqtt5.DisconnectReasonCode | None) -> None:
        """Close the connection; what it held unacknowledged the broker will send again."""
        self._connected.clear()
        with self._cond:
            self._conn = None
            self._ready.clear()
        conn.close(reason)

    def _serve(self, conn: Connection) -> None:
        """Send asked-for PUBACKs, read and hand over batches, until stopped or broken."""
        ready, cond = self._ready, self._cond
        counters = self.counters
        while True:
            self._send_acks(conn)
            if self._stop.is_set():
                return
            messages = conn.poll(1.0)
            if conn.subscribed and not self._connected.is_set():
                self._connected.set()
            if messages:
                counters.received += len(messages)
                with cond:
                    ready.append(Batch(self._epoch, messages))
                    cond.notify()

    def _send_acks(self, conn: Connection) -> None:
        """Take every ack asked for since the last call and send those of this epoch at once."""
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        with self._acks_lock:
            asked, self._acks = self._acks, []
            self._signalled = False
        if not asked:
            return
        ids: list[int] = []
        for epoch, packet_ids in asked:
            if epoch == self._epoch:
                ids.extend(packet_ids)
            else:
                self.counters.stale_acks += len(packet_ids)
        if ids:
            self.counters.acked += conn.send_acks(ids)
