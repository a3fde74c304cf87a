"""Drains the outbox over MQTT 5 at QoS 1, deleting a row only on its PUBACK."""

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from common.mqtt import MqttSettings, guarded, make_client
from kiosk.core.clock import Clock, resolve_ts
from kiosk.core.outbox import Outbox, StorageFull
from kiosk.core.recorder import Identity, build_event
from protocol.messages import Command, DeviceConfig, DeviceStatus
from protocol.topics import Topic, TopicError, TopicKind

log = logging.getLogger(__name__)

_RETRY_AFTER_REFUSAL_S = 5.0
_RETRY_NO_SUBSCRIBER_S = 2.0
_RECHECK_CLOCK_S = 2.0
_NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT 5 PUBACK reason code


class Publisher:
    """Owns the device's MQTT connection: outbox drain, retained status, Last Will, config/cmd."""

    def __init__(
        self,
        outbox: Outbox,
        identity: Identity,
        settings: MqttSettings,
        clock: Clock,
        *,
        window: int = 64,
        status_interval_s: float = 30.0,
        resend_window_s: float = 60.0,
        purge_interval_s: float = 5.0,
        version: str = "0.1.0",
        on_config: Callable[[DeviceConfig], None] | None = None,
        on_command: Callable[[Command], None] | None = None,
        status_extra: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        """Prepare the publisher; call start() to connect."""
        self.outbox = outbox
        self.identity = identity
        self.settings = settings
        self.clock = clock
        self.window = window
        self.status_interval_s = status_interval_s
        self.resend_window_s = resend_window_s
        self.purge_interval_s = purge_interval_s
        self._last_purge = 0.0
        self.version = version
        self.on_config = on_config
        self.on_command = on_command
        self.status_extra = status_extra
        self.paused = False
        self._lock = threading.Lock()
        self._inflight: dict[int, tuple[str, int | str]] = {}
        self._early: dict[int, ReasonCode] = {}
        self._refused_until: dict[int | str, float] = {}  # guarded by _lock
        self._lost_at_ms: int | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_status = 0.0
        self._full_told: bool | None = None  # storage state of the last status sent
        self._topic = {
            kind: str(Topic(identity.hall, identity.device, kind, settings.prefix))
            for kind in TopicKind
        }
        self.client = make_client(settings, client_id=f"wr-{identity.hall}-{identity.device}")
        self.client.max_inflight_messages_set(window)
        will = DeviceStatus(device=identity.device, hall=identity.hall, state="offline")
        self.client.will_set(
            self._topic[TopicKind.STATUS], will.model_dump_json(exclude_none=True), 1, True
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

    @property
    def connected(self) -> bool:
        """True while connected to the broker."""
        return self._connected.is_set()

    def start(self) -> None:
        """Connect in the background and start draining."""
        self.client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive_s,
            clean_start=True,
        )
        self.client.loop_start()
        self._thread = threading.Thread(target=self._drain_loop, name="outbox-drain", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Tell the drain loop that the outbox has something new."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Publish offline status, disconnect and stop the threads."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.connected:
            info = self._publish_status("offline")
            if info is not None and self.connected:
                try:
                    info.wait_for_publish(timeout)
                except (RuntimeError, ValueError) as exc:
                    log.info("offline status not confirmed: %s", exc)
        self.client.disconnect()
        self.client.loop_stop()

    def wait_drained(self, timeout: float) -> bool:
        """Wait until the outbox is empty; return True if it is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.outbox.backlog() == 0 and not self.outbox.pending_events(1, set()):
                return True
            time.sleep(0.05)
        return self.outbox.backlog() == 0

    def publish_status(self) -> None:
        """Publish the status now (something in it changed), if connected."""
        if self.connected:
            self._publish_status()

    def set_paused(self, paused: bool) -> None:
        """Switch between online and paused and publish the state."""
        self.paused = paused
        if self.connected:
            self._publish_status()

    # --- paho callbacks (network thread) ---

    @guarded
    def _on_connect(
        self, client: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Properties | None
    ) -> None:
        """Announce the device and subscribe to its config and commands."""
        if rc.is_failure:
            log.warning("broker refused connection: %s", rc)
            return
        log.info("connected to %s:%s", self.settings.host, self.settings.port)
        # A broker that crashed loses what it acknowledged since its last save: send the
        # ratings acknowledged in the last resend window again (redelivery is idempotent).
        # Measured from when the last connection was lost (the broker may have been down
        # longer than the window), not from now.
        lost_at = self._lost_at_ms if self._lost_at_ms is not None else self.clock.wall_ms()
        since = lost_at - int(self.resend_window_s * 1000)
        again = self.outbox.requeue_acked_since(since)
        if again:
            log.info("re-sending %d recently acknowledged ratings after reconnecting", again)
        self._connected.set()
        client.subscribe([(self._topic[TopicKind.CONFIG], 1), (self._topic[TopicKind.CMD], 1)])
        self._publish_status()
        self._wake.set()

    @guarded
    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Properties | None
    ) -> None:
        """Note the loss; paho resends unacknowledged QoS 1 messages after reconnecting."""
        if self._connected.is_set():
            self._lost_at_ms = self.clock.wall_ms()
        self._connected.clear()
        log.warning("disconnected from broker: %s", rc)

    @guarded
    def _on_publish(
        self, _c: mqtt.Client, _u: Any, mid: int, rc: ReasonCode, _p: Properties | None
    ) -> None:
        """On PUBACK delete the row; on a refusal keep it and retry later."""
        # paho calls this holding its own message lock, which publish() also takes: never
        # block here on a lock held across publish(). A PUBACK that beats _send's
        # bookkeeping is parked in _early and settled there.
        with self._lock:
            entry = self._inflight.get(mid)
            if entry is None:
                self._early[mid] = rc
                return
        # Settle first, then forget the mid: until the outbox row is marked, the drain
        # loop must still see it as in flight, or it would publish it again.
        try:
            self._settle(entry, rc)
        finally:
            with self._lock:
                self._inflight.pop(mid, None)

    def _settle(self, entry: tuple[str, int | str], rc: ReasonCode) -> None:
        """Apply a PUBACK to its outbox row."""
        kind, key = entry
        if kind == "status":
            return
        if rc.is_failure:
            log.error("broker refused %s %s: %s; kept in the outbox", kind, key, rc)
            with self._lock:
                self._refused_until[key] = time.monotonic() + _RETRY_AFTER_REFUSAL_S
            return
        if rc.value == _NO_MATCHING_SUBSCRIBERS:
            # The broker accepted the message and dropped it: nobody (no gateway) was
            # subscribed. Mosquitto 2.0 does not restore shared subscriptions after a
            # restart, so this happens until the gateway resubscribes. Keep it and retry.
            log.warning("no subscriber took %s %s; kept, retrying", kind, key)
            with self._lock:
                self._refused_until[key] = time.monotonic() + _RETRY_NO_SUBSCRIBER_S
            self._wake.set()
            return
        if kind == "rating":
            assert isinstance(key, int)
            self.outbox.mark_acked(key, self.clock.wall_ms())
        elif kind == "event":
            assert isinstance(key, str)
            self.outbox.delete_event(key)
        self._wake.set()

    @guarded
    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        """Validate config and commands on this device's own topics and hand them on."""
        name = "<undecodable>"
        try:
            name = msg.topic  # raises UnicodeDecodeError (a ValueError) on a non-UTF-8 topic
            if name == self._topic[TopicKind.CONFIG]:
                if self.on_config is not None:
                    self.on_config(DeviceConfig.model_validate_json(msg.payload))
            elif name == self._topic[TopicKind.CMD]:
                if self.on_command is not None:
                    self.on_command(Command.model_validate_json(msg.payload))
            else:  # another device's or a kind the kiosk does not take (a hostile broker)
                raise TopicError(f"not this device's config or cmd topic: {name[:200]!r}")
        except ValueError as exc:
            log.warning("ignored invalid message on %s: %s", name[:200], exc)

    # --- drain loop (own thread) ---

    def _publish_status(self, state: str | None = None) -> mqtt.MQTTMessageInfo | None:
        """Publish the retained status with the outbox state.

        A full disk is told as `paused` (v1's DeviceStatus has no field for it, and the window
        does take no ratings); the log says why, and `backlog` shows what still waits.
        """
        self._last_status = time.monotonic()
        full = self.outbox.storage_full()
        self._full_told = full
        if full and state is None:
            log.error("status: paused, storage full (%d ratings waiting)", self.outbox.backlog())
        status = DeviceStatus.model_validate(
            {
                "device": self.identity.device,
                "hall": self.identity.hall,
                "state": state or ("paused" if self.paused or full else "online"),
                "ts": self.clock.wall_ms(),
                "window": self.identity.window,
                "last_seq": self.outbox.last_seq(),
                "backlog": self.outbox.backlog(),
                "clock_synced": self.clock.synced(),
                "version": self.version,
                **(self.status_extra() if self.status_extra else {}),
            }
        )
        return self._send(
            "status", "status", self._topic[TopicKind.STATUS], status.model_dump_json(), True
        )

    def _drain_loop(self) -> None:
        """Send waiting rows while connected, keeping at most `window` in flight."""
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            if not self.connected:
                continue
            try:
                self._drain_once()
                if (
                    time.monotonic() - self._last_status > self.status_interval_s
                    or self.outbox.storage_full() != self._full_told
                ):
                    self._publish_status()
                if time.monotonic() - self._last_purge > self.purge_interval_s:
                    self._last_purge = time.monotonic()
                    cutoff = self.clock.wall_ms() - int(self.resend_window_s * 1000)
                    if self.outbox.purge_acked_before(cutoff):
                        self.outbox.checkpoint()
            except StorageFull as exc:  # the reserve is spent: retried once space returns
                log.error("outbox bookkeeping waits for disk space: %s", exc)
                time.sleep(1.0)
            except Exception:  # keep draining whatever one row did
                log.exception("outbox drain failed; retrying")
                time.sleep(1.0)

    def _drain_once(self) -> None:
        """Publish as many waiting rows as the window allows."""
        now = time.monotonic()
        with self._lock:
            busy_r = {k for kind, k in self._inflight.values() if kind == "rating"}
            busy_e = {k for kind, k in self._inflight.values() if kind == "event"}
            free = self.window - len(busy_r) - len(busy_e)
            refused = dict(self._refused_until)
        if free <= 0:
            return
        busy_r |= {k for k, t in refused.items() if isinstance(k, int) and t > now}
        busy_e |= {k for k, t in refused.items() if isinstance(k, str) and t > now}
        for row in self.outbox.pending_ratings(free, {int(k) for k in busy_r}):
            ts, synced = row.ts, row.clock_synced
            if ts is None or synced is None:
                fixed = resolve_ts(
                    self.clock,
                    row.press.wall_ms,
                    row.press.mono_ns,
                    row.press.boot,
                    row.press.synced,
                )
                if fixed is None:
                    log.debug("holding seq %s until the clock syncs", row.seq)
                    with self._lock:  # re-checked later; newer rows are not blocked meanwhile
                        self._refused_until[row.seq] = time.monotonic() + _RECHECK_CLOCK_S
                    continue
                ts, synced = fixed
                self.outbox.fix_ts(row.seq, ts, synced)
            payload = build_event(row.id, row.seq, row.draft, ts, synced)
            self._send("rating", row.seq, self._topic[TopicKind.RATING], payload)
            free -= 1
        if free > 0:
            for ev in self.outbox.pending_events(free, {str(k) for k in busy_e}):
                self._send("event", ev.id, self._topic[TopicKind.EVENT], ev.payload)

    def _send(
        self, kind: str, key: int | str, topic: str, payload: str, retain: bool = False
    ) -> mqtt.MQTTMessageInfo:
        """Publish at QoS 1 and remember the mid until its PUBACK (every publish is tracked)."""
        with self._lock:
            self._refused_until.pop(key, None)
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("publish of %s %s not queued (rc %s); retrying later", kind, key, info.rc)
            return info
        with self._lock:
            early = self._early.pop(info.mid, None)
            if early is None:
                self._inflight[info.mid] = (kind, key)
        if early is not None:
            self._settle((kind, key), early)
        return info
