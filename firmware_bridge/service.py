"""A whole serial terminal: the kiosk core's Terminal with the button board as its input."""

import logging
import threading
import time
from typing import Any

from prometheus_client import start_http_server

from firmware_bridge.bridge import VERSION, Bridge
from firmware_bridge.dedup import STATE_FILES
from firmware_bridge.settings import BridgeSettings
from kiosk.core.clock import Clock
from kiosk.core.identity import adopt_legacy
from kiosk.core.terminal import Terminal, TerminalSpec
from protocol.messages import DeviceConfig

log = logging.getLogger(__name__)


def terminal_spec(settings: BridgeSettings) -> TerminalSpec:
    """The terminal spec of a serial bridge's settings."""
    return TerminalSpec(
        hall=settings.hall,
        device=settings.device,
        data_dir=settings.data_dir,
        mqtt=settings.mqtt,
        config=DeviceConfig(
            window=settings.window,
            scale=settings.scale,
            prompt_mode=settings.prompt_mode,
            repeat_interval_s=settings.repeat_interval_s,
        ),
        trust_wall_clock=settings.trust_wall_clock,
    )


class BridgeService:
    """One Terminal (identity, outbox, publisher, session) fed by one button board."""

    def __init__(self, settings: BridgeSettings, *, clock: Clock | None = None) -> None:
        """Open the identity's outbox and build the parts (nothing connects yet)."""
        self.settings = settings
        # An outbox kept straight in data_dir (before identities) belongs to this identity.
        adopt_legacy(settings.data_dir, (settings.hall, settings.device), STATE_FILES)
        # No screen to pick follow-up reasons on: a negative rating goes out at once.
        self.terminal = Terminal(
            terminal_spec(settings),
            clock=clock,
            asks_reasons=False,
            version=VERSION,
            status_extra=self._board_status,
        )
        self.outbox = self.terminal.outbox
        self.publisher = self.terminal.publisher
        self.bridge = Bridge(settings, self.terminal)
        self.bridge.on_board_change = self.publisher.publish_status
        self._http: object | None = None

    def start(self) -> None:
        """Serve metrics (if configured), connect to the broker and open the port."""
        if self.settings.metrics_port:
            self._http, _ = start_http_server(
                self.settings.metrics_port, registry=self.bridge.metrics.registry
            )
        self.terminal.start()
        self.bridge.start()

    def stop(self) -> None:
        """Close the port, publish offline, close the outbox."""
        self.bridge.stop()
        self.terminal.stop()
        shutdown = getattr(self._http, "shutdown", None)
        if shutdown is not None:
            shutdown()

    def _board_status(self) -> dict[str, Any]:
        """The board part of the device's retained status."""
        st = self.bridge.state()
        board: dict[str, Any] = {"connected": st.connected}
        if st.board is not None:
            board.update(
                id=st.board.ident[:64],
                firmware=st.board.firmware[:64] or None,
                buttons=st.board.buttons if 1 <= st.board.buttons <= 8 else None,
            )
        return {"board": board}


def run_bridge(settings: BridgeSettings, stop: threading.Event) -> None:
    """Run one serial terminal until `stop` is set."""
    service = BridgeService(settings)
    service.start()
    log.info(
        "bridge for %s/%s on %s (state and outbox in %s)",
        settings.hall,
        settings.device,
        settings.serial.port,
        service.terminal.state_dir,
    )
    last_report = 0.0
    while not stop.wait(1.0):
        if time.monotonic() - last_report > 60:
            last_report = time.monotonic()
            st = service.bridge.state()
            log.info(
                "port %s %s; board %s; outbox backlog %d",
                st.port,
                "open" if st.port_open else "closed",
                f"{st.board.ident} fw {st.board.firmware}" if st.board else "none",
                service.outbox.backlog(),
            )
    service.stop()
