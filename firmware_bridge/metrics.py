"""Prometheus metrics of one serial bridge, in their own registry."""

from prometheus_client import CollectorRegistry, Counter, Gauge


class BridgeMetrics:
    """Prometheus metrics of one bridge, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """Create the metrics in `registry` (a fresh one by default)."""
        self.registry = r = registry or CollectorRegistry()
        self.port_open = Gauge(
            "windowrate_bridge_port_open", "1 while the port is open", registry=r
        )
        self.connected = Gauge(
            "windowrate_bridge_board_connected", "1 while a board is talking", registry=r
        )
        self.board_info = Gauge(
            "windowrate_bridge_board_info",
            "The connected board (1) by id, boot and firmware",
            ["board", "boot", "firmware", "buttons"],
            registry=r,
        )
        self.board_pending = Gauge(
            "windowrate_bridge_board_pending", "Presses the board holds unACKed", registry=r
        )
        self.presses = Counter(
            "windowrate_bridge_presses", "PRESS frames by outcome", ["result"], registry=r
        )
        self.frames = Counter(
            "windowrate_bridge_frames_received", "Valid frames by type", ["type"], registry=r
        )
        self.frame_errors = Counter(
            "windowrate_bridge_frame_errors", "Rejected frames by reason", ["reason"], registry=r
        )
        self.reopens = Counter(
            "windowrate_bridge_port_opens", "Successful opens of the port", registry=r
        )
        self.open_failures = Counter(
            "windowrate_bridge_port_open_failures", "Failed attempts to open the port", registry=r
        )
