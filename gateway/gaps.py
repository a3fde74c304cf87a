"""Per-device seq gap detection from what InfluxDB holds, so it is right with many gateways."""

import logging
import re
import threading
import time
from dataclasses import dataclass, field

from gateway.metrics import GatewayMetrics
from gateway.settings import GapSettings
from storage import queries
from storage.client import InfluxClient, InfluxError, InfluxSettings

log = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


MAX_LISTED = 1000  # seqs listed per device; the counts are always complete


@dataclass(slots=True)
class DeviceSeqs:
    """What InfluxDB holds for one device's seq sequence."""

    hall: str
    device: str
    count: int
    max_seq: int
    missing_count: int = 0
    missing: list[int] = field(default_factory=list)
    duplicated: list[int] = field(default_factory=list)


def open_client(settings: InfluxSettings) -> InfluxClient:
    """Return an InfluxDB client with the longer timeout the scan's queries need."""
    return InfluxClient(settings, timeout_s=settings.timeout_s * 3)


def _sent_through(client: InfluxClient) -> dict[tuple[str, str], int]:
    """Per device, the last seq it reports as handed to the broker (status with no backlog)."""
    return {
        key: last_seq
        for key, (last_seq, backlog) in queries.device_last_status(client).items()
        if last_seq is not None and backlog == 0
    }


def scan(client: InfluxClient) -> list[DeviceSeqs]:
    """Return every device whose stored seqs are not exactly 1 … expected once each, with details.

    Expected is the highest stored seq, or the device's own last seq when its latest status
    says nothing is waiting in its outbox: so a lost tail is seen too, not only holes.
    Missing = expected − distinct seqs; duplicated = points − distinct seqs. A hole and a
    repeat never cancel out. Listed seqs are capped at MAX_LISTED per device.
    """
    bad: list[DeviceSeqs] = []
    sent = _sent_through(client)
    stored = queries.device_seq_stats(client)
    for key in sorted(set(stored) | set(sent)):
        hall, device = key
        count, distinct, max_seq = stored.get(key, (0, 0, 0))
        expected = max(max_seq, sent.get(key, 0))
        if count == distinct == expected or not (_SAFE_ID.match(hall) and _SAFE_ID.match(device)):
            continue
        seen: set[int] = set()
        dup: set[int] = set()
        if count:
            for q in queries.device_seqs(client, hall, device):
                (dup if q in seen else seen).add(q)
        missing: list[int] = []
        q = 1
        while q <= expected and len(missing) < MAX_LISTED:  # bounded even for a huge max
            if q not in seen:
                missing.append(q)
            q += 1
        bad.append(
            DeviceSeqs(
                hall,
                device,
                count,
                expected,
                expected - distinct,
                missing,
                sorted(dup)[:MAX_LISTED],
            )
        )
    return bad


class GapChecker:
    """Periodically scans InfluxDB; a seq counts as lost after missing for the grace period."""

    def __init__(self, influx: InfluxSettings, settings: GapSettings, metrics: GatewayMetrics):
        """Prepare the checker; start() runs it in a thread."""
        self.settings = settings
        self.metrics = metrics
        self._query = open_client(influx)
        self._first_seen: dict[tuple[str, str, int], float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.confirmed: dict[tuple[str, str], list[int]] = {}
        self.duplicated: dict[tuple[str, str], list[int]] = {}

    def start(self) -> None:
        """Run checks in a background thread."""
        self._thread = threading.Thread(target=self._run, name="gap-checker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._query.close()

    def _run(self) -> None:
        """Loop until stopped."""
        while not self._stop.wait(self.settings.interval_s):
            try:
                self.check_once()
            except (InfluxError, KeyError) as exc:
                log.warning("gap check skipped: %s", exc)
            except Exception:  # the checker must outlive any surprise in the data
                log.exception("gap check failed")

    def check_once(self, now: float | None = None) -> None:
        """Scan once and update the confirmed gaps and metrics."""
        now = time.monotonic() if now is None else now
        found = scan(self._query)
        current: dict[tuple[str, str, int], float] = {}
        confirmed: dict[tuple[str, str], list[int]] = {}
        counts: dict[tuple[str, str], int] = {}
        duplicated: dict[tuple[str, str], list[int]] = {}
        for d in found:
            for q in d.missing:
                key = (d.hall, d.device, q)
                first = self._first_seen.get(key, now)
                current[key] = first
                if now - first >= self.settings.grace_s:
                    confirmed.setdefault((d.hall, d.device), []).append(q)
            listed = confirmed.get((d.hall, d.device), [])
            if listed:  # when the listing is capped and all of it is confirmed, count all
                full = len(listed) == len(d.missing)
                counts[(d.hall, d.device)] = d.missing_count if full else len(listed)
            if d.duplicated:
                duplicated[(d.hall, d.device)] = d.duplicated
        self._first_seen = current
        for hall, device in set(self.confirmed) - set(confirmed):
            self.metrics.seq_missing.labels(hall=hall, device=device).set(0)
        for (hall, device), seqs in confirmed.items():
            if self.confirmed.get((hall, device)) != seqs:
                log.error("seq gap at %s/%s: missing %s", hall, device, _ranges(seqs))
            self.metrics.seq_missing.labels(hall=hall, device=device).set(counts[(hall, device)])
        for (hall, device), seqs in duplicated.items():
            log.error("seq stored twice at %s/%s: %s", hall, device, _ranges(seqs))
        self.confirmed = confirmed
        self.duplicated = duplicated
        self.metrics.seq_missing_total.set(sum(counts.values()))
        self.metrics.seq_duplicated_total.set(sum(len(v) for v in duplicated.values()))
        self.metrics.gap_checks.inc()


def _ranges(seqs: list[int]) -> str:
    """Format sorted seqs compactly: 3-5,9."""
    out: list[str] = []
    start = prev = None
    for q in sorted(seqs):
        if start is None:
            start = prev = q
        elif prev is not None and q == prev + 1:
            prev = q
        else:
            out.append(f"{start}-{prev}" if start != prev else str(start))
            start = prev = q
    if start is not None:
        out.append(f"{start}-{prev}" if start != prev else str(start))
    return ",".join(out)
