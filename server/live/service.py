"""The live side of one server: MQTT link, device table, board, config publisher and re-sync."""

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from protocol.messages import DeviceConfig, DeviceStatus, RatingEvent, ServiceEvent
from server.db.engine import Database
from server.live.board import LiveBoard
from server.live.configs import DeviceKey, device_configs, registered_devices, window_names
from server.live.devices import DeviceTable
from server.live.hub import Hub
from server.live.mqttlink import MqttLink
from server.registry.service import on_change
from server.scores.policy import Policy, active_policy
from server.settings import ServerSettings
from server.settings.live import LiveSettings
from storage.client import InfluxClient, InfluxError

log = logging.getLogger(__name__)

CONFIG_DEBOUNCE_S = 0.2


def _nothing() -> None:
    """Do nothing (the change hook's remover before start)."""


class LiveService:
    """Runs the MQTT link and a worker thread that re-syncs the board and publishes configs."""

    def __init__(
        self,
        settings: ServerSettings,
        db: Database,
        influx: InfluxClient,
        policy: Policy | None = None,
    ) -> None:
        """Build the parts (negative and satisfied per `policy`, else the one in force)."""
        self.settings = settings
        self.live: LiveSettings = settings.live
        self.db = db
        self.hub = Hub()
        self.devices = DeviceTable()
        self.board = LiveBoard(
            influx,
            settings.tz,
            self.devices,
            self.hub,
            hall=settings.hall,
            pending_s=self.live.pending_s,
            policy=policy or active_policy(),
        )
        self.link = MqttLink(
            settings.mqtt,
            on_rating=self._on_rating,
            on_event=self._on_event,
            on_status=self._on_status,
            on_connect=self.force_republish,
            on_config=self._on_config,
        )
        self.registered: set[DeviceKey] = set()
        self._published: dict[DeviceKey, DeviceConfig] = {}
        self._retained: set[DeviceKey] = set()  # configs the broker holds (network thread)
        self._configs_wanted = threading.Event()
        self._resync_wanted = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._remove_hook: Callable[[], None] = _nothing
        self.configs_published = 0

    # --- lifecycle ---

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Connect to the broker and start the worker (events are delivered on `loop`)."""
        self.hub.bind(loop)
        self._remove_hook = on_change(self.request_configs)
        self._configs_wanted.set()
        self._resync_wanted.set()
        self._thread = threading.Thread(target=self._work, name="live-worker", daemon=True)
        self._thread.start()
        self.link.start()

    def stop(self) -> None:
        """Disconnect, stop the worker and end the SSE streams."""
        self._remove_hook()
        self._stop.set()
        self._wake.set()
        self.hub.close()
        self.link.stop()
        if self._thread is not None:
            self._thread.join(10)

    # --- requests from other threads ---

    def request_configs(self) -> None:
        """Recompute the device configs and publish the changed ones (soon, on the worker)."""
        self._configs_wanted.set()
        self._wake.set()

    def request_resync(self) -> None:
        """Re-sync the board from InfluxDB soon."""
        self._resync_wanted.set()
        self._wake.set()

    # --- MQTT input (network thread) ---

    def _on_rating(self, ev: RatingEvent) -> None:
        """A rating: note the device, count it on the board."""
        self.devices.rating(ev)
        self.board.add_rating(ev)

    def _on_event(self, ev: ServiceEvent) -> None:
        """A service event: update the device; publish its window's row if shown state changed."""
        if self.devices.event(ev):
            self.board.device_changed(ev.hall, ev.window)
        self.hub.publish({"type": "device", "hall": ev.hall, "device": ev.device})

    def _on_status(self, st: DeviceStatus) -> None:
        """A status: update the device; publish its window's row if its state changed."""
        if self.devices.status(st):
            window = st.window or next(
                (v.window for v in self.devices.views() if v.device == st.device), None
            )
            self.board.device_changed(st.hall, window)
        self.hub.publish({"type": "device", "hall": st.hall, "device": st.device})

    def _on_config(self, hall: str, device: str, present: bool) -> None:
        """A retained config on the broker (ours or a stale one): check it against the registry."""
        key = (hall, device)
        if present:
            if key not in self._retained:
                self._retained.add(key)
                self.request_configs()
        else:
            self._retained.discard(key)

    # --- worker thread ---

    def _work(self) -> None:
        """Re-sync every `resync_s` and publish configs when asked, until stopped."""
        next_resync = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if self._resync_wanted.is_set() or now >= next_resync:
                self._resync_wanted.clear()
                self._resync()
                next_resync = time.monotonic() + self.live.resync_s
            if self._configs_wanted.is_set():
                if self._stop.wait(CONFIG_DEBOUNCE_S):
                    break
                self._configs_wanted.clear()
                self._publish_configs()
            self._wake.wait(max(0.0, next_resync - time.monotonic()))
            self._wake.clear()

    def _resync(self) -> None:
        """Re-sync the board, logging (not raising) an unreachable InfluxDB."""
        try:
            self.board.resync()
        except InfluxError as exc:
            self.board.error = str(exc)
            log.warning("live board not re-synced: %s", exc)
        except Exception:
            log.exception("live board re-sync failed")

    def _publish_configs(self) -> None:
        """Publish the config of each device whose config changed (all after a reconnect)."""
        try:
            with self.db.session() as session:
                configs = device_configs(session, self.live)
                self.board.names = window_names(session)
                self.registered = registered_devices(session)
        except Exception:
            log.exception("device configs not computed")
            return
        if not self.link.connected:
            self._published.clear()  # everything is sent again once connected
            return
        for key, config in configs.items():
            if self._published.get(key) != config and self.link.publish_config(*key, config):
                self._published[key] = config
                self.configs_published += 1
                log.info("published config of %s/%s (window %s)", *key, config.window)
        for key in (set(self._published) | set(self._retained)) - set(configs):
            if self.link.publish_config(*key, None):
                self._published.pop(key, None)
                self._retained.discard(key)
                log.info("cleared config of %s/%s (not a registered device with a window)", *key)

    def force_republish(self) -> None:
        """Publish every config again (after a reconnect)."""
        self._published.clear()
        self.request_configs()
