"""Prometheus metrics of one gateway, in their own registry."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
        self.mqtt_connected = Gauge(
            "windowrate_gateway_mqtt_connected", "1 while connected to the broker", registry=r
        )
        self.unacked = Gauge(
            "windowrate_gateway_unacked_messages",
            "Messages received and not yet acknowledged",
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
