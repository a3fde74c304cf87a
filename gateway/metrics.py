"""Prometheus metrics of one gateway, in their own registry."""

from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.link import Link


class GatewayMetrics:
    """Counters and gauges exported on /metrics."""

    def __init__(self) -> None:
        """Create the metrics in a fresh registry."""
        self.registry = r = CollectorRegistry()
        self.received = Counter(
            "windowrate_gateway_messages_received", "Messages received", ["kind"], registry=r
        )
        self.ratings_written = Counter(
            "windowrate_gateway_ratings_written",
            "Ratings accepted by InfluxDB (redeliveries skipped by the id cache excluded)",
            registry=r,
        )
        self.points_written = Counter(
            "windowrate_gateway_points_written", "Points accepted by InfluxDB", ["kind"], registry=r
        )
        self.rejected = Counter(
            "windowrate_gateway_messages_rejected",
            "Messages kept as dead letters, by reason",
            ["reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "windowrate_gateway_duplicates",
            "Redelivered ratings already stored (acknowledged, not written again)",
            registry=r,
        )
        self.write_failures = Counter(
            "windowrate_gateway_influx_write_failures",
            "Batch writes that failed and were retried",
            registry=r,
        )
        self.influx_up = Gauge(
            "windowrate_gateway_influx_up", "1 if the last InfluxDB write succeeded", registry=r
        )
        self.last_write = Gauge(
            "windowrate_gateway_last_write_timestamp_seconds",
            "Unix time of the last batch InfluxDB accepted (0 before the first)",
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "windowrate_gateway_mqtt_connected", "1 while connected to the broker", registry=r
        )
        self.in_flight = Gauge(
            "windowrate_gateway_in_flight_messages",
            "Messages received on the current connection and not yet acknowledged (PUBACK)",
            registry=r,
        )
        self.batch_seconds = Histogram(
            "windowrate_gateway_batch_write_seconds", "InfluxDB write time per batch", registry=r
        )
        self.seq_missing = Gauge(
            "windowrate_gateway_seq_missing",
            "Ratings missing from a device's seq sequence for longer than the grace period",
            ["hall", "device"],
            registry=r,
        )
        self.seq_missing_total = Gauge(
            "windowrate_gateway_seq_missing_total",
            "Missing ratings over all devices (confirmed gaps)",
            registry=r,
        )
        self.seq_duplicated_total = Gauge(
            "windowrate_gateway_seq_duplicated_total",
            "Seq values stored more than once over all devices",
            registry=r,
        )
        self.gap_checks = Counter(
            "windowrate_gateway_gap_checks", "Completed gap checks", registry=r
        )


class _HasLinks(Protocol):
    """What LinkCollector reads: the session link now, and a standby's watcher if any."""

    link: Link | None
    standby: Any


class LinkCollector(Collector):
    """The MQTT link's own counters, read at scrape time (summed over the links it had)."""

    def __init__(self, gateway: _HasLinks) -> None:
        """Read links from `gateway` at every scrape."""
        self.gateway = gateway
        self._seen: dict[int, Link] = {}

    def collect(self) -> Iterator[Metric]:
        """Yield received, acked, reconnects, malformed, server disconnects, session state."""
        link = self.gateway.link
        if link is not None:
            self._seen.setdefault(id(link), link)
        links = list(self._seen.values())
        counters = [ln.counters for ln in links]
        names = (
            ("received", "Messages received from the broker"),
            ("acked", "Messages acknowledged (PUBACK sent)"),
            ("reconnects", "Reconnects after the first connection"),
            ("connect_failures", "Connections that failed or ended with an error"),
            ("malformed", "Connections closed for a malformed packet from the broker"),
            ("stale_acks", "Acks dropped: their connection had ended (the broker resends)"),
        )
        for name, doc in names:
            total = sum(getattr(c, name) for c in counters)
            yield CounterMetricFamily(f"windowrate_gateway_link_{name}", doc, value=total)
        by_reason = CounterMetricFamily(
            "windowrate_gateway_link_server_disconnects",
            "DISCONNECT packets from the broker, by reason",
            labels=["reason"],
        )
        reasons: dict[str, int] = {}
        for c in counters:
            for reason, n in c.server_disconnects.items():
                reasons[reason] = reasons.get(reason, 0) + n
        for reason, n in sorted(reasons.items()):
            by_reason.add_metric([reason], n)
        yield by_reason
        standby = self.gateway.standby
        yield GaugeMetricFamily(
            "windowrate_gateway_session_active",
            "1 while this gateway holds the MQTT session (a standby: only after a takeover)",
            value=1.0 if link is not None and link.connected else 0.0,
        )
        if standby is not None:
            yield CounterMetricFamily(
                "windowrate_gateway_standby_takeovers",
                "Times this standby took the session over",
                value=standby.takeovers,
            )
