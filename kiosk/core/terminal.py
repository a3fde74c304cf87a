"""One terminal's wiring: identity → outbox → recorder → publisher → session, and its outputs.

Every input calls `session.press(level, input)` through `Terminal.press`: the touchscreen,
the GPIO buttons, the serial button board and the simulator follow the same rules. Outputs
(voice, the GPIO thank-you pulse, the board's LEDs) hear of prompts, thanks, pauses and
identify requests through `TerminalOutput`.
"""

import importlib.metadata
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from common.mqtt import MqttSettings
from kiosk.core.clock import Clock, SystemClock
from kiosk.core.identity import (
    CONFIG_CACHE,
    OUTBOX_FILE,
    identity_dir,
    load_cached_config,
    save_cached_config,
)
from kiosk.core.outbox import Outbox
from kiosk.core.publisher import Publisher
from kiosk.core.recorder import Identity, Recorder
from kiosk.core.session import KioskSession, PressResult
from kiosk.settings import KioskSettings
from protocol.messages import Command, DeviceConfig, InputKind

log = logging.getLogger(__name__)

Dispatch = Callable[[Callable[[], None]], None]
Hook = Literal["prompted", "thanked", "paused", "resumed", "identified"]


class TerminalSpec(BaseModel):
    """Who the terminal is, where it keeps its files and which broker it talks to."""

    model_config = ConfigDict(extra="forbid")

    hall: str = Field(title="Hall id")
    device: str = Field(title="Device id")
    data_dir: Path = Field(title="Holds identities/{hall}.{device}/ (outbox, cached config)")
    mqtt: MqttSettings = Field(title="Broker")
    config: DeviceConfig = Field(title="Configuration until the centre's retained one arrives")
    trust_wall_clock: bool = Field(default=False, title="Treat the wall clock as synced")


def spec_from_settings(settings: KioskSettings) -> TerminalSpec:
    """The terminal spec of a touchscreen kiosk's settings."""
    return TerminalSpec(
        hall=settings.hall,
        device=settings.device,
        data_dir=settings.data_dir,
        mqtt=settings.mqtt,
        config=DeviceConfig(
            window=settings.window,
            scale=settings.scale,
            language=settings.language,
            prompt_mode=settings.prompt_mode,
        ),
        trust_wall_clock=settings.trust_wall_clock,
    )


def package_version() -> str:
    """The installed package version (sent in the device status)."""
    try:
        return importlib.metadata.version("windowrate")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def _run_now(fn: Callable[[], None]) -> None:
    """Default dispatcher: run at once (no UI thread to hand over to)."""
    fn()


class TerminalOutput:
    """Something that shows or says what the terminal does; every hook is optional (any thread)."""

    def prompted(self, terminal: "Terminal") -> None:
        """A rating was asked for (prompt button, centre's `prompt`)."""

    def thanked(self, terminal: "Terminal") -> None:
        """A rating was taken and thanked for."""

    def paused(self, terminal: "Terminal") -> None:
        """The window stopped taking ratings."""

    def resumed(self, terminal: "Terminal") -> None:
        """The window takes ratings again."""

    def identified(self, terminal: "Terminal") -> None:
        """The centre asked the device to show itself."""


class Terminal:
    """Everything behind one device's inputs: the UI, buttons and boards only forward to it."""

    def __init__(
        self,
        spec: TerminalSpec,
        *,
        clock: Clock | None = None,
        thanks_s: float = 2.0,
        reasons_timeout_s: float = 10.0,
        asks_reasons: bool = True,
        version: str | None = None,
        status_extra: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        """Open the identity's outbox and build recorder, publisher and session (no network yet)."""
        self.spec = spec
        self.data_dir = Path(spec.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir = identity_dir(self.data_dir, spec.hall, spec.device)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.state_dir / CONFIG_CACHE
        self.clock = clock or SystemClock(trust_wall=spec.trust_wall_clock)
        cached = load_cached_config(self.config_path)
        config = cached or spec.config
        log.info("config from %s", "cache" if cached else "settings")
        self._config_lock = threading.Lock()
        self._saved = cached
        # Where config and commands from the MQTT thread are run: a UI sets its own thread.
        self.dispatch: Dispatch = _run_now
        self.outputs: list[TerminalOutput] = []
        identity = Identity(
            hall=spec.hall, device=spec.device, window=config.window, scale=config.scale
        )
        self.outbox_path = self.state_dir / OUTBOX_FILE
        self.outbox = Outbox(self.outbox_path)
        self.publisher = Publisher(
            self.outbox,
            identity,
            spec.mqtt,
            self.clock,
            version=version or package_version(),
            on_config=self._on_config,
            on_command=self._on_command,
            status_extra=status_extra,
        )
        self.recorder = Recorder(self.outbox, identity, self.clock, self.publisher.wake)
        self.session = KioskSession(
            self.recorder,
            config,
            thanks_s=thanks_s,
            reasons_timeout_s=reasons_timeout_s,
            asks_reasons=asks_reasons,
            on_thanks=self._on_thanks,
            on_storage=self._on_storage,
        )
        self._ticker: threading.Thread | None = None
        self._halt = threading.Event()
        self._started = False
        self._stopped = False

    @classmethod
    def from_settings(cls, settings: KioskSettings, **options: Any) -> "Terminal":
        """The terminal of a touchscreen kiosk's settings."""
        return cls(spec_from_settings(settings), **options)

    # --- lifecycle ---

    def start(self, *, tick_s: float | None = 0.1) -> None:
        """Connect to the broker; tick the session every `tick_s` (None: a UI ticks it)."""
        if self._started:
            return
        self._started = True
        self.publisher.start()
        if tick_s is not None:
            self._ticker = threading.Thread(
                target=self._tick_loop, args=(tick_s,), name="session-tick", daemon=True
            )
            self._ticker.start()

    def _tick_loop(self, tick_s: float) -> None:
        """Advance the session's timeouts until stopped."""
        while not self._halt.wait(tick_s):
            try:
                self.session.tick()
            except Exception:  # a failed event commit must not stop the timeouts
                log.exception("session tick failed")

    def stop(self) -> None:
        """Say offline, disconnect and close the outbox (safe to call twice)."""
        if self._stopped:
            return
        self._stopped = True
        self._halt.set()
        if self._ticker is not None:
            self._ticker.join(5)
        if self._started:
            self.publisher.stop()
        self.outbox.close()

    # --- inputs ---

    def press(self, level: int, input_: InputKind) -> PressResult:
        """A rating from any input, under the session's rules."""
        result = self.session.press(level, input_)
        if not result.accepted:
            log.info("%s press on level %d refused: %s", input_, level, result.refusal)
        return result

    def prompt(
        self, ticket: str | None = None, item: str | None = None, staff: str | None = None
    ) -> bool:
        """Ask for one service's rating (clerk's button or the centre); False if not now."""
        if not self.session.prompt(ticket, item, staff):
            log.info("prompt ignored (paused or asking reasons)")
            return False
        self._tell("prompted")
        return True

    def pause(self) -> None:
        """Stop taking ratings and tell the centre."""
        self.session.pause()
        self.publisher.set_paused(True)
        self._tell("paused")

    def resume(self) -> None:
        """Take ratings again and tell the centre."""
        self.session.resume()
        self.publisher.set_paused(False)
        self._tell("resumed")

    def staff_known(self, staff: str) -> bool:
        """True if `staff` may log in: on the roster, or any number when no roster is configured."""
        roster = self.session.config.staff
        return not roster or any(s.staff == staff for s in roster)

    def login(self, staff: str) -> bool:
        """Log a clerk in (keypad or badge); False when not on this window's roster."""
        if not self.staff_known(staff):
            log.warning("staff %s is not on this window's staff list", staff)
            return False
        self.session.login(staff)
        return True

    @property
    def connected(self) -> bool:
        """True while the broker connection is up."""
        return self.publisher.connected

    # --- the centre ---

    def _on_config(self, config: DeviceConfig) -> None:
        """A retained config (paho's thread): cache it, apply it through `dispatch`."""
        with self._config_lock:
            if config != self._saved:
                try:
                    save_cached_config(self.config_path, config)
                    self._saved = config
                except OSError:
                    log.exception("could not cache config to %s", self.config_path)
        self.dispatch(lambda: self.apply_config(config))

    def apply_config(self, config: DeviceConfig) -> None:
        """Relabel the keys, switch language, mode, reasons and roster live."""
        log.info(
            "config: window %s, scale %s, language %s, mode %s, %d reasons, %d staff",
            config.window,
            config.scale,
            config.language,
            config.prompt_mode,
            len(config.reasons),
            len(config.staff),
        )
        self.session.apply_config(config)
        self.publisher.identity = replace(self.publisher.identity, window=config.window)

    def _on_command(self, cmd: Command) -> None:
        """A command from the centre (paho's thread): run it through `dispatch`."""
        self.dispatch(lambda: self.command(cmd))

    def command(self, cmd: Command) -> None:
        """Run `prompt`, `pause`, `resume` or `identify`."""
        log.info("command %s (%s)", cmd.cmd, cmd.id)
        if cmd.cmd == "prompt":
            self.prompt(cmd.ticket, cmd.item, cmd.staff)
        elif cmd.cmd == "pause":
            self.pause()
        elif cmd.cmd == "resume":
            self.resume()
        elif cmd.cmd == "identify":
            self.session.identify()
            self._tell("identified")

    # --- outputs ---

    def _on_storage(self, full: bool) -> None:
        """The disk filled or has room again: tell the centre now (paused / online)."""
        log.warning("storage %s", "full: ratings refused" if full else "has room: ratings taken")
        self.publisher.publish_status()

    def _on_thanks(self) -> None:
        """The session thanked someone (any thread)."""
        self._tell("thanked")

    def _tell(self, hook: Hook) -> None:
        """Call one hook of every output; one failing output does not silence the others."""
        for out in list(self.outputs):
            try:
                getattr(out, hook)(self)
            except Exception:
                log.exception("output %s failed", type(out).__name__)
