"""The gateway: MQTT (persistent session, manual ack) → validation → batched InfluxDB writes.

A message is acknowledged only after the batch holding it was accepted by InfluxDB or,
for a message that cannot be stored, after its dead letter was committed to disk; the
PUBACKs of a batch go out in one send (`gateway.link`).
"""

import gc
import logging
import queue
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import start_http_server

from common.systemd import Heartbeat, Watchdog, notify
from gateway.deadletters import DeadLetterStore
from gateway.gaps import GapChecker
from gateway.link import ConnectOptions, Link
from gateway.link.standby import PresenceWatcher, Standby, new_instance, presence_topic
from gateway.metrics import GatewayMetrics, LinkCollector
from gateway.points import Accepted, point_of
from gateway.recent import Fingerprint, RecentIds, Slot, Stored, fingerprint, slot_of
from gateway.settings import GatewaySettings
from protocol.decode import Rejection
from protocol.topics import VERSION, TopicKind, subscription
from storage.client import InfluxClient, InfluxRejectedError, InfluxUnavailableError

log = logging.getLogger(__name__)

_CONSUMED = (TopicKind.RATING, TopicKind.EVENT, TopicKind.STATUS)
GC_THRESHOLDS = (100_000, 50, 1000)


@dataclass(slots=True)
class Inbound:
    """A received message waiting for its batch; acknowledged on `link` as of `epoch`."""

    link: Link
    epoch: int
    mid: int
    topic: str
    payload: bytes
    received_ns: int


def topics_of(settings: GatewaySettings) -> tuple[str, ...]:
    """The gateway's subscriptions: all halls, or one filter per kind for each of its halls."""
    prefix, share = settings.mqtt.prefix, settings.share_group
    if not settings.halls:
        return tuple(subscription(k, prefix, share) for k in _CONSUMED)
    filters = [
        f"{prefix}/{VERSION}/{hall}/+/{k.value}" for hall in settings.halls for k in _CONSUMED
    ]
    return tuple(f"$share/{share}/{f}" if share else f for f in filters)


class Gateway:
    """One gateway process: a persistent MQTT session in, InfluxDB out."""

    def __init__(self, settings: GatewaySettings) -> None:
        """Prepare the gateway; start() connects."""
        self.settings = settings
        self.metrics = GatewayMetrics()
        self.output = InfluxClient(settings.influx)
        self.dead = DeadLetterStore(settings.data_dir / "dead_letters.sqlite")
        self.gaps = GapChecker(settings.influx, settings.gaps, self.metrics)
        self.recent = RecentIds(settings.data_dir / "recent_ids.sqlite", settings.dedupe_ids)
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        self._output: threading.Thread | None = None
        # One prepared batch waits while the one before it is written: decoding overlaps
        # InfluxDB's work (which took 30 of 86 µs per rating of the writer's wall time).
        self._out: queue.Queue[Prepared] = queue.Queue(maxsize=1)
        self._http: Any = None
        # systemd's watchdog (WatchdogSec=) hears from the process only while both loops go
        # round: each beats at least every 0.2 s, also while InfluxDB is down and it waits.
        self._beats = {"writer": Heartbeat(), "output": Heartbeat()}
        self.watchdog = Watchdog(self._alive)
        prefix = settings.mqtt.prefix
        self.options = ConnectOptions(
            settings.client_id,
            topics_of(settings),
            receive_max=settings.batch.receive_maximum,
            session_expiry_s=settings.session_expiry_s,
            presence=presence_topic(prefix, settings.client_id) if settings.presence else None,
            instance=new_instance(),
        )
        # The link holding the session now: always for a primary, only while the primary is
        # away for a standby (which swaps it in and out through _use_link).
        self.link: Link | None = None
        self.standby: Standby | None = None
        if settings.role == "standby":
            # A clean session: a fresh id per process, so two standbys never share one.
            watch_id = (
                settings.watch_client_id or f"{settings.client_id}-watch-{uuid.uuid4().hex[:8]}"
            )
            watcher = PresenceWatcher(
                settings.mqtt, presence_topic(prefix, settings.client_id), watch_id
            )
            self.standby = Standby(settings.mqtt, self.options, watcher, self._use_link)
        else:
            self.link = Link(settings.mqtt, self.options)
        self.metrics.registry.register(LinkCollector(self))
        self.metrics.mqtt_connected.set_function(self._connected)
        self.metrics.in_flight.set_function(lambda: self.link.in_flight if self.link else 0)

    def _connected(self) -> float:
        """1 while the session is up (a standby: while its watcher or session is up)."""
        if self.link is not None and self.link.connected:
            return 1.0
        if self.standby is not None and self.standby.link is None:
            return 1.0 if self.standby.watcher.link.connected else 0.0
        return 0.0

    def _use_link(self, link: Link | None) -> None:
        """A standby took the session over (a link) or gave it back (None)."""
        self.link = link

    # --- lifecycle ---

    def start(self) -> None:
        """Serve metrics, connect with a persistent session and start the writer."""
        # The id cache and a batch in flight keep some 10⁶ objects alive, and with the
        # default thresholds (700, 10, 10) the cyclic collector took 35 of 97 µs of CPU per
        # rating (100,000 ratings through Gateway._handle into a real influxd, 2 cores):
        # 61 µs with these, 63 µs with no collector at all. What start-up loaded is frozen
        # out of every collection; few of the gateway's objects form cycles.
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        if self.settings.metrics.port:
            self._http, _ = start_http_server(
                self.settings.metrics.port,
                addr=self.settings.metrics.host,
                registry=self.metrics.registry,
            )
        if self.standby is not None:
            self.standby.start()
        elif self.link is not None:
            self.link.start()
        self._writer = threading.Thread(target=self._write_loop, name="writer", daemon=True)
        self._writer.start()
        self._output = threading.Thread(target=self._output_loop, name="output", daemon=True)
        self._output.start()
        self.gaps.start()
        self.watchdog.start()
        notify("READY=1")
        log.info(
            "gateway %s (%s, %s) started: broker %s:%s, InfluxDB %s/%s, subscriptions %s",
            self.settings.client_id,
            self.settings.role,
            socket.gethostname(),
            self.settings.mqtt.host,
            self.settings.mqtt.port,
            self.settings.influx.url,
            self.settings.influx.database,
            ", ".join(self.options.topics),
        )

    def _alive(self) -> bool:
        """True while the writer and output threads run and went round lately."""
        within = (self.watchdog.interval_s or 0) / 2 or 1.0
        threads = (self._writer, self._output)
        return all(t is not None and t.is_alive() for t in threads) and all(
            b.fresh(within) for b in self._beats.values()
        )

    def stop(self) -> None:
        """Finish the current batch, disconnect (the session stays) and stop."""
        notify("STOPPING=1")
        self.watchdog.stop()
        self._stop.set()
        for thread in (self._writer, self._output):
            if thread is not None:
                thread.join(30)
        if self.standby is not None:
            self.standby.stop()
        if self.link is not None:
            self.link.stop()
        self.gaps.stop()
        if self._http is not None:
            self._http.shutdown()
        self.output.close()
        self.dead.close()
        self.recent.close()
        log.info("gateway stopped")

    # --- writer thread ---

    def _collect(self) -> list[Inbound]:
        """Take messages until the batch is full or its delay has passed."""
        link = self.link
        if link is None:
            self._stop.wait(0.2)
            return []
        first = link.get(0.2, self.settings.batch.max_points)
        if first is None:
            return []
        now = time.time_ns()
        batch = [
            Inbound(link, first.epoch, m.packet_id, m.topic, m.payload, now) for m in first.messages
        ]
        cfg = self.settings.batch
        deadline = time.monotonic() + cfg.max_delay_ms / 1000
        while len(batch) < cfg.max_points:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            more = link.get(left, cfg.max_points - len(batch))
            if more is None:
                continue
            now = time.time_ns()
            batch.extend(
                Inbound(link, more.epoch, m.packet_id, m.topic, m.payload, now)
                for m in more.messages
            )
        return batch

    def _write_loop(self) -> None:
        """Collect and prepare batches; the output thread stores and acknowledges them."""
        beat = self._beats["writer"].beat
        while not self._stop.is_set():
            beat()
            batch = self._collect()
            if not batch:
                continue
            try:
                prepared = [self._prepare(batch)]
            except Exception:  # a bug must not stall the stream nor lose the batch
                log.exception("batch of %d failed unexpectedly; handling one by one", len(batch))
                prepared = [self._prepare_one(m) for m in batch]
            for p in prepared:
                while not self._stop.is_set():
                    beat()
                    try:
                        self._out.put(p, timeout=0.2)
                        break
                    except queue.Full:
                        continue

    def _output_loop(self) -> None:
        """Store and acknowledge prepared batches in their order until stopped."""
        beat = self._beats["output"].beat
        while not self._stop.is_set():
            beat()
            try:
                p = self._out.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._retry_forever("batch commit", lambda p=p: self._commit(p), unexpected=True)
            except _Stopping:
                return

    def _prepare_one(self, m: Inbound) -> "Prepared":
        """Prepare one message; one that fails becomes an internal_error dead letter."""
        try:
            return self._prepare([m])
        except Exception as exc:
            log.exception("message on %s failed; kept as a dead letter", m.topic)
            letter = (m.received_ns // 1_000_000, m.topic, "internal_error", repr(exc)[:500])
            return Prepared([m], letters=[(*letter, m.payload)], reasons=["internal_error"])

    def _handle(self, batch: list[Inbound]) -> None:
        """Validate, store and then acknowledge one batch, in arrival order (no pipeline)."""
        self._commit(self._prepare(batch))

    def _prepare(self, batch: list[Inbound]) -> "Prepared":
        """Validate a batch and sort it into points and dead letters; reserve its rating ids.

        Everything that depends on a message's content happens here, so a bug that one
        message triggers is isolated by `_prepare_one`; `_commit` only does I/O.
        """
        points: list[tuple[str, Inbound]] = []
        letters: list[tuple[int, str, str, str, bytes]] = []
        reasons: list[str] = []
        fresh: list[Stored] = []
        fps: dict[str, Fingerprint] = {}
        slots: dict[Slot, str] = {}
        kinds: dict[TopicKind, int] = {}
        dups = 0
        now_ms = time.time_ns() // 1_000_000
        # Looked up once per batch, not per message (this loop is most of the writer's CPU).
        prefix, max_bytes = self.settings.mqtt.prefix, self.settings.max_payload_bytes
        known, holder = self.recent.get, self.recent.holder
        for m in batch:
            res = point_of(
                m.topic,
                m.payload,
                prefix=prefix,
                max_bytes=max_bytes,
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
                r, key = res.rating, res.rid
                fp = fingerprint(r)
                prev = fps.get(key) or known(key)
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
                other = slots.get(slot) or holder(slot)
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
                fresh.append((key, fp, slot))
                fps[key] = fp
                slots[slot] = key
            kinds[res.kind] = kinds.get(res.kind, 0) + 1
            points.append((res.line, m))
        self.recent.reserve(fresh)  # last: a failure above must leave nothing reserved
        return Prepared(batch, points, letters, reasons, fresh, kinds, dups)

    def _commit(self, p: "Prepared") -> None:
        """Store dead letters and points, count them, persist the ids, then acknowledge."""
        self._store_letters(p.letters)
        refused = self._store_points(p.points)
        for reason in p.reasons + [r for r, _m in refused]:
            self.metrics.rejected.labels(reason=reason).inc()
        for kind, n in p.kinds.items():
            self.metrics.received.labels(kind=kind.value).inc(n)
        n_ratings = p.kinds.get(TopicKind.RATING, 0) - sum(
            1 for _r, m in refused if m.topic.endswith("/rating")
        )
        self.metrics.ratings_written.inc(n_ratings)
        for kind, n in p.kinds.items():
            self.metrics.points_written.labels(kind=kind.value).inc(n)
        self.metrics.duplicates.inc(p.dups)
        if p.fresh:
            self._retry_forever("id cache commit", lambda: self.recent.persist(p.fresh))
        self._ack(p.batch)  # last: nothing after it may fail and get the batch handled again

    def _retry_forever(self, what: str, action: Any, *, unexpected: bool = False) -> Any:
        """Run `action` until it succeeds, backing off; raise _Stopping if stopped meanwhile.

        With `unexpected`, any other exception is retried too (logged with its traceback): a
        commit only does I/O, so a bug there is not one message's fault, and acknowledging
        nothing until it is fixed loses nothing (points are idempotent when written again).
        """
        delay = self.settings.batch.retry_min_s
        while True:
            try:
                return action()
            except _Stopping:
                raise
            except InfluxUnavailableError as exc:
                self.metrics.influx_up.set(0)
                self.metrics.write_failures.inc()
                log.warning(
                    "%s failed, retrying in %.1f s (nothing acknowledged): %s", what, delay, exc
                )
            except (OSError, sqlite3.Error) as exc:  # dead-letter disk trouble: keep trying
                log.error("%s failed, retrying in %.1f s: %s", what, delay, exc)
            except Exception:
                if not unexpected:
                    raise
                log.exception("%s failed unexpectedly, retrying in %.1f s", what, delay)
            if self._wait(delay):
                raise _Stopping
            delay = min(delay * 2, self.settings.batch.retry_max_s)

    def _wait(self, delay: float) -> bool:
        """Wait `delay` s (False) unless stopped (True); waiting for InfluxDB is not hanging."""
        beat = self._beats.get(threading.current_thread().name)
        end = time.monotonic() + delay
        while (left := end - time.monotonic()) > 0:
            if self._stop.wait(min(left, 0.2)):
                return True
            if beat is not None:
                beat.beat()
        return False

    def _store_letters(self, letters: list[tuple[int, str, str, str, bytes]]) -> None:
        """Commit dead letters to disk before their messages are acknowledged."""
        if letters:
            self._retry_forever("dead-letter commit", lambda: self.dead.add_many(letters))

    def _store_points(self, points: list[tuple[str, Inbound]]) -> list[tuple[str, Inbound]]:
        """Write points, isolating any that InfluxDB refuses; return the refused ones."""
        refused: list[tuple[str, Inbound]] = []
        # One socket read may bring more than max_points messages: write in parts, ack once.
        size = self.settings.batch.max_points
        pending = [points[i : i + size] for i in range(0, len(points), size)][::-1]
        while pending:
            part = pending.pop()
            try:
                started = time.perf_counter()
                self._retry_forever(
                    "InfluxDB write", lambda p=part: self.output.write([ln for ln, _ in p])
                )
                self.metrics.batch_seconds.observe(time.perf_counter() - started)
                self.metrics.influx_up.set(1)
                self.metrics.last_write.set_to_current_time()
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
        """PUBACK the whole batch in one send per connection; a later connection gets none."""
        groups: dict[tuple[int, int], tuple[Link, list[int]]] = {}
        for m in batch:
            if m.mid:
                key = (id(m.link), m.epoch)
                if key not in groups:
                    groups[key] = (m.link, [])
                groups[key][1].append(m.mid)
        for (_link, epoch), (link, ids) in groups.items():
            link.ack(epoch, ids)


@dataclass(slots=True)
class Prepared:
    """A validated batch: its points and dead letters, waiting to be stored and acknowledged."""

    batch: list[Inbound]
    points: list[tuple[str, Inbound]] = field(default_factory=list)
    letters: list[tuple[int, str, str, str, bytes]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    fresh: list[Stored] = field(default_factory=list)
    kinds: dict[TopicKind, int] = field(default_factory=dict)
    dups: int = 0


class _Stopping(Exception):
    """Raised inside the writer when the gateway stops while retrying."""
