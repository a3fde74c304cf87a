"""The gateway: MQTT (persistent session, manual ack) → validation → batched InfluxDB writes.

A message is acknowledged only after the batch holding it was accepted by InfluxDB or,
for a message that cannot be stored, after its dead letter was committed to disk.
"""

import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client import start_http_server

from common.mqtt import guarded, make_client
from gateway.deadletters import DeadLetterStore
from gateway.gaps import GapChecker
from gateway.metrics import GatewayMetrics
from gateway.points import Accepted, point_of
from gateway.recent import Fingerprint, RecentIds, Slot, fingerprint, slot_of
from gateway.settings import GatewaySettings
from protocol.decode import Rejection
from protocol.messages import RatingEvent
from protocol.topics import TopicKind, subscription
from storage.client import InfluxClient, InfluxRejectedError, InfluxUnavailableError

log = logging.getLogger(__name__)

_CONSUMED = (TopicKind.RATING, TopicKind.EVENT, TopicKind.STATUS)


@dataclass(slots=True)
class Inbound:
    """A received message waiting for its batch."""

    gen: int
    mid: int
    qos: int
    topic: str
    payload: bytes
    received_ns: int


class Gateway:
    """One gateway process; several may share the subscription."""

    def __init__(self, settings: GatewaySettings) -> None:
        """Prepare the gateway; start() connects."""
        self.settings = settings
        self.metrics = GatewayMetrics()
        self.output = InfluxClient(settings.influx)
        self.dead = DeadLetterStore(settings.data_dir / "dead_letters.sqlite")
        self.gaps = GapChecker(settings.influx, settings.gaps, self.metrics)
        # Bounded: the broker sends at most receive_maximum unacknowledged QoS 1 messages.
        self._queue: queue.Queue[Inbound] = queue.Queue(settings.batch.receive_maximum + 1000)
        self._gen = 0
        self._gen_lock = threading.Lock()
        self.recent = RecentIds(settings.data_dir / "recent_ids.sqlite", settings.dedupe_ids)
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        self._http: Any = None
        self.client = make_client(
            settings.mqtt, settings.client_id, manual_ack=True, paho_logging=False
        )
        self._in_batch = 0
        self.metrics.unacked.set_function(lambda: self._queue.qsize() + self._in_batch)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    # --- lifecycle ---

    def start(self) -> None:
        """Serve metrics, connect with a persistent session and start the writer."""
        if self.settings.metrics.port:
            self._http, _ = start_http_server(
                self.settings.metrics.port,
                addr=self.settings.metrics.host,
                registry=self.metrics.registry,
            )
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.settings.session_expiry_s
        props.ReceiveMaximum = self.settings.batch.receive_maximum
        self.client.connect_async(
            self.settings.mqtt.host,
            self.settings.mqtt.port,
            keepalive=self.settings.mqtt.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()
        self._writer = threading.Thread(target=self._write_loop, name="writer", daemon=True)
        self._writer.start()
        self.gaps.start()
        log.info(
            "gateway %s started: broker %s:%s, InfluxDB %s/%s",
            self.settings.client_id,
            self.settings.mqtt.host,
            self.settings.mqtt.port,
            self.settings.influx.url,
            self.settings.influx.database,
        )

    def stop(self) -> None:
        """Finish the current batch, disconnect (the session stays) and stop."""
        self._stop.set()
        if self._writer is not None:
            self._writer.join(30)
        self.client.disconnect()
        self.client.loop_stop()
        self.gaps.stop()
        if self._http is not None:
            self._http.shutdown()
        self.output.close()
        self.dead.close()
        self.recent.close()
        log.info("gateway stopped")

    # --- paho callbacks (network thread) ---

    @guarded
    def _on_connect(
        self, client: mqtt.Client, _u: Any, flags: Any, rc: ReasonCode, _p: Properties | None
    ) -> None:
        """Subscribe (shared) to ratings, events and statuses."""
        if rc.is_failure:
            log.error("broker refused the gateway: %s", rc)
            return
        with self._gen_lock:
            self._gen += 1
        self.metrics.mqtt_connected.set(1)
        log.info("connected (session present: %s)", flags.session_present)
        opts = SubscribeOptions(qos=1)
        client.subscribe(
            [
                (subscription(k, self.settings.mqtt.prefix, self.settings.share_group), opts)
                for k in _CONSUMED
            ]
        )

    @guarded
    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Properties | None
    ) -> None:
        """Forget pending acks of this connection: the broker redelivers those messages."""
        with self._gen_lock:
            self._gen += 1
        self.metrics.mqtt_connected.set(0)
        log.warning("disconnected from broker: %s", rc)

    @guarded
    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        """Queue the message for the writer (blocks when the writer is behind)."""
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = "<undecodable>"
        self._queue.put(
            Inbound(self._gen, msg.mid, msg.qos, topic, bytes(msg.payload), time.time_ns())
        )
        self.metrics.unacked.inc()

    # --- writer thread ---

    def _collect(self) -> list[Inbound]:
        """Take messages until the batch is full or its delay has passed."""
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        cfg = self.settings.batch
        deadline = time.monotonic() + cfg.max_delay_ms / 1000
        while len(batch) < cfg.max_points:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=min(left, 0.01)))
            except queue.Empty:
                continue
        return batch

    def _write_loop(self) -> None:
        """Collect, store and acknowledge batches until stopped."""
        while not self._stop.is_set():
            batch = self._collect()
            if not batch:
                continue
            self._in_batch = len(batch)
            try:
                self._handle(batch)
            except _Stopping:
                return
            except Exception:  # a bug must not stall the stream nor lose the batch
                log.exception("batch of %d failed unexpectedly; handling one by one", len(batch))
                try:
                    self._handle_singly(batch)
                except _Stopping:
                    return

    def _handle_singly(self, batch: list[Inbound]) -> None:
        """Handle messages one at a time; one that still fails becomes a dead letter."""
        for m in batch:
            try:
                self._handle([m])
            except _Stopping:
                raise
            except Exception as exc:
                log.exception("message on %s failed; kept as a dead letter", m.topic)
                self._store_letters(
                    [
                        (
                            m.received_ns // 1_000_000,
                            m.topic,
                            "internal_error",
                            repr(exc)[:500],
                            m.payload,
                        )
                    ]
                )
                self.metrics.rejected.labels(reason="internal_error").inc()
                self._ack([m])

    def _handle(self, batch: list[Inbound]) -> None:
        """Validate, store and then acknowledge one batch, in arrival order."""
        points: list[tuple[str, Inbound]] = []
        letters: list[tuple[int, str, str, str, bytes]] = []
        reasons: list[str] = []
        fresh: list[RatingEvent] = []
        fps: dict[str, Fingerprint] = {}
        slots: dict[Slot, str] = {}
        kinds: dict[TopicKind, int] = {}
        dups = 0
        now_ms = time.time_ns() // 1_000_000
        for m in batch:
            res = point_of(
                m.topic,
                m.payload,
                prefix=self.settings.mqtt.prefix,
                max_bytes=self.settings.max_payload_bytes,
                now_ms=now_ms,
                received_ns=m.received_ns,
            )
            if isinstance(res, Rejection):
                letters.append(
                    (m.received_ns // 1_000_000, m.topic, res.reason, res.detail, m.payload)
                )
                reasons.append(res.reason)
                continue
            assert isinstance(res, Accepted)
            if res.rating is not None:
                r = res.rating
                key, fp = str(r.id), fingerprint(r)
                prev = fps.get(key) or self.recent.get(key)
                if prev is not None:
                    if prev == fp:
                        dups += 1
                        continue
                    letters.append(
                        (
                            m.received_ns // 1_000_000,
                            m.topic,
                            "id_conflict",
                            f"id {key} was stored with (device, seq, level, ts) = {prev}",
                            m.payload,
                        )
                    )
                    reasons.append("id_conflict")
                    continue
                slot = slot_of(r)
                other = slots.get(slot) or self.recent.holder(slot)
                if other is not None and other != key:  # one point time: it would overwrite
                    letters.append(
                        (
                            m.received_ns // 1_000_000,
                            m.topic,
                            "time_conflict",
                            f"rating {other} is stored in the same series at the same point"
                            " time (ts ms, seq mod 10**6): this one would overwrite it",
                            m.payload,
                        )
                    )
                    reasons.append("time_conflict")
                    continue
                fresh.append(r)
                fps[key] = fp
                slots[slot] = key
            kinds[res.kind] = kinds.get(res.kind, 0) + 1
            points.append((res.line, m))
        self._store_letters(letters)
        refused = self._store_points(points)
        for reason in reasons + [r for r, _m in refused]:
            self.metrics.rejected.labels(reason=reason).inc()
        for kind, n in kinds.items():
            self.metrics.received.labels(kind=kind.value).inc(n)
        n_ratings = kinds.get(TopicKind.RATING, 0) - sum(
            1 for _r, m in refused if m.topic.endswith("/rating")
        )
        self.metrics.ratings_written.inc(n_ratings)
        for kind, n in kinds.items():
            self.metrics.points_written.labels(kind=kind.value).inc(n)
        self.metrics.duplicates.inc(dups)
        if fresh:
            self._retry_forever("id cache commit", lambda: self.recent.remember(fresh))
        self._ack(batch)  # last: nothing after it may fail and get the batch handled again

    def _retry_forever(self, what: str, action: Any) -> Any:
        """Run `action` until it succeeds, backing off; raise _Stopping if stopped meanwhile."""
        delay = self.settings.batch.retry_min_s
        while True:
            try:
                return action()
            except InfluxUnavailableError as exc:
                self.metrics.influx_up.set(0)
                self.metrics.write_failures.inc()
                log.warning(
                    "%s failed, retrying in %.1f s (nothing acknowledged): %s", what, delay, exc
                )
            except (OSError, sqlite3.Error) as exc:  # dead-letter disk trouble: keep trying
                log.error("%s failed, retrying in %.1f s: %s", what, delay, exc)
            if self._stop.wait(delay):
                raise _Stopping
            delay = min(delay * 2, self.settings.batch.retry_max_s)

    def _store_letters(self, letters: list[tuple[int, str, str, str, bytes]]) -> None:
        """Commit dead letters to disk before their messages are acknowledged."""
        if letters:
            self._retry_forever("dead-letter commit", lambda: self.dead.add_many(letters))

    def _store_points(self, points: list[tuple[str, Inbound]]) -> list[tuple[str, Inbound]]:
        """Write points, isolating any that InfluxDB refuses; return the refused ones."""
        refused: list[tuple[str, Inbound]] = []
        pending = [points] if points else []
        while pending:
            part = pending.pop()
            try:
                started = time.perf_counter()
                self._retry_forever(
                    "InfluxDB write", lambda p=part: self.output.write([ln for ln, _ in p])
                )
                self.metrics.batch_seconds.observe(time.perf_counter() - started)
                self.metrics.influx_up.set(1)
            except InfluxRejectedError as exc:
                if len(part) == 1:
                    _line, m = part[0]
                    log.error("InfluxDB refused a point from %s: %s", m.topic, exc)
                    self._store_letters(
                        [
                            (
                                m.received_ns // 1_000_000,
                                m.topic,
                                "influx_rejected",
                                str(exc)[:500],
                                m.payload,
                            )
                        ]
                    )
                    refused.append(("influx_rejected", m))
                else:
                    half = len(part) // 2
                    pending.extend([part[half:], part[:half]])
        return refused

    def _ack(self, batch: list[Inbound]) -> None:
        """Acknowledge in arrival order; skip messages of an earlier connection."""
        with self._gen_lock:
            for m in batch:
                if m.qos > 0 and m.gen == self._gen:
                    self.client.ack(m.mid, m.qos)
        self._in_batch = 0


class _Stopping(Exception):
    """Raised inside the writer when the gateway stops while retrying."""
