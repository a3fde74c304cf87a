"""Wiring of one terminal: settings → outbox, recorder, publisher, session, GPIO, Kivy app."""

import contextlib
import importlib.metadata
import logging
import os
import signal
import tempfile
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kiosk.clock import Clock, SystemClock
from kiosk.outbox import Outbox
from kiosk.publisher import Publisher
from kiosk.recorder import Identity, Recorder
from kiosk.session import KioskSession
from kiosk.settings import KioskSettings
from kiosk.voice import VoicePrompts
from kiosk.watchdog import SystemdNotifier
from protocol.messages import Command, DeviceConfig

log = logging.getLogger(__name__)

CONFIG_CACHE = "config.json"
OUTBOX_FILE = "outbox.sqlite"
IDENTITIES_DIR = "identities"


def identity_dir(data_dir: Path, hall: str, device: str) -> Path:
    """Where one identity's outbox and cached config live: its own `seq` history.

    A terminal re-provisioned as another device must not continue the old device's `seq`
    (the centre would see a gap), nor restart it if it comes back (it would see repeats).
    """
    return Path(data_dir) / IDENTITIES_DIR / f"{hall}.{device}"


Dispatch = Callable[[Callable[[], None]], None]


def _version() -> str:
    """The installed package version (sent in the device status)."""
    try:
        return importlib.metadata.version("windowrate")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def default_config(settings: KioskSettings) -> DeviceConfig:
    """The configuration used until the centre's retained config arrives."""
    return DeviceConfig(
        window=settings.window,
        scale=settings.scale,
        language=settings.language,
        prompt_mode=settings.prompt_mode,
    )


def load_cached_config(path: Path) -> DeviceConfig | None:
    """Read the last config received from the centre; None when missing or unreadable."""
    try:
        return DeviceConfig.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError, ValueError) as exc:
        log.warning("ignoring cached config %s: %s", path, exc)
        return None


def save_cached_config(path: Path, config: DeviceConfig) -> None:
    """Write the config atomically (temp file, fsync, rename) so a power cut leaves a valid file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(config.model_dump_json(indent=2).encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _run_now(fn: Callable[[], None]) -> None:
    """Default dispatcher: run at once (no UI thread to hand over to)."""
    fn()


class Kiosk:
    """Everything behind one terminal's screen; the Kivy app only draws and forwards touches."""

    def __init__(
        self,
        settings: KioskSettings,
        *,
        clock: Clock | None = None,
        thanks_s: float = 2.0,
        reasons_timeout_s: float = 10.0,
    ) -> None:
        """Open the outbox and build the recorder, publisher and session (nothing connects yet)."""
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir = identity_dir(self.data_dir, settings.hall, settings.device)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.state_dir / CONFIG_CACHE
        self.clock = clock or SystemClock(trust_wall=settings.trust_wall_clock)
        cached = load_cached_config(self.config_path)
        config = cached or default_config(settings)
        log.info("config from %s", "cache" if cached else "settings")
        self._config_lock = threading.Lock()
        self._saved = cached
        # Where config and commands from the MQTT thread are run: the app sets the UI thread.
        self.dispatch: Dispatch = _run_now
        identity = Identity(
            hall=settings.hall, device=settings.device, window=config.window, scale=config.scale
        )
        self.outbox_path = self.state_dir / OUTBOX_FILE
        self.outbox = Outbox(self.outbox_path)
        self.publisher = Publisher(
            self.outbox,
            identity,
            settings.mqtt,
            self.clock,
            version=_version(),
            on_config=self._on_config,
            on_command=self._on_command,
        )
        self.recorder = Recorder(self.outbox, identity, self.clock, self.publisher.wake)
        self.session = KioskSession(
            self.recorder,
            config,
            thanks_s=thanks_s,
            reasons_timeout_s=reasons_timeout_s,
            on_thanks=self._on_thanks,
        )
        self.gpio: Any = None
        # Spoken prompt and thank-you: the app sets `play` (Kivy SoundLoader on the UI thread).
        self.voice = VoicePrompts(self.data_dir / "voice") if settings.voice else None
        self.play: Callable[[Path], None] | None = None
        self._started = False
        self._stopped = False

    # --- lifecycle ---

    def start(self) -> None:
        """Connect to the broker and claim the GPIO pins (if a pin map is configured)."""
        if self._started:
            return
        self._started = True
        self.publisher.start()
        if self.settings.gpio_file is not None:
            self.gpio = self._open_gpio(self.settings.gpio_file)
        if self.voice is not None:
            threading.Thread(target=self._make_voice, name="voice", daemon=True).start()

    def _make_voice(self) -> None:
        """Make the spoken prompts with espeak-ng if missing (a hall's own recordings win)."""
        assert self.voice is not None
        try:
            self.voice.generate()
        except (RuntimeError, OSError) as exc:
            log.warning("voice prompts unavailable, staying silent: %s", exc)

    def say(self, kind: str) -> None:
        """Play the `prompt` or `thanks` recording in the configured language, if enabled."""
        if self.voice is None or self.play is None:
            return
        path = self.voice.path(kind, self.session.config.language)
        if path is not None:
            self.dispatch(lambda: self.play(path) if self.play else None)

    def stop(self) -> None:
        """Release the pins, say offline, disconnect and close the outbox (safe to call twice)."""
        if self._stopped:
            return
        self._stopped = True
        if self.gpio is not None:
            self.gpio.close()
        if self._started:
            self.publisher.stop()
        self.outbox.close()

    def _open_gpio(self, path: Path) -> Any:
        """Load the pin map and wire the buttons to the session."""
        from kiosk.gpio import GpioPanel, PinMap

        pins = PinMap.from_toml(path)
        if pins.scale != self.session.config.scale:
            log.warning(
                "pin map has %d rating buttons but the configured scale is %d",
                pins.scale,
                self.session.config.scale,
            )
        return GpioPanel(pins, on_rating=self.button_press, on_prompt=self.button_prompt)

    # --- inputs from buttons and the centre ---

    def button_press(self, level: int) -> bool:
        """A physical rating button (gpiozero's thread): True when the rating was committed."""
        result = self.session.press(level, "button")
        if not result.accepted:
            log.info("button %d refused: %s", level, result.refusal)
        return result.accepted

    def button_prompt(self) -> None:
        """The clerk's prompt button (gpiozero's thread)."""
        if self.session.prompt():
            self.say("prompt")
        else:
            log.info("prompt button ignored (paused or asking reasons)")

    def _on_thanks(self) -> None:
        """Pulse the thank-you output of the button panel and say thanks (any thread)."""
        if self.gpio is not None:
            self.gpio.thanks()
        self.say("thanks")

    def _on_config(self, config: DeviceConfig) -> None:
        """A retained config (paho's thread): cache it, apply it on the UI thread."""
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
        """A command from the centre (paho's thread): run it on the UI thread."""
        self.dispatch(lambda: self.command(cmd))

    def command(self, cmd: Command) -> None:
        """Run `prompt`, `pause`, `resume` or `identify`."""
        log.info("command %s (%s)", cmd.cmd, cmd.id)
        if cmd.cmd == "prompt":
            if self.session.prompt(cmd.ticket, cmd.item, cmd.staff):
                self.say("prompt")
            else:
                log.info("prompt %s ignored (paused or asking reasons)", cmd.id)
        elif cmd.cmd == "pause":
            self.pause()
        elif cmd.cmd == "resume":
            self.resume()
        elif cmd.cmd == "identify":
            self.session.identify()

    def pause(self) -> None:
        """Stop taking ratings and tell the centre."""
        self.session.pause()
        self.publisher.set_paused(True)

    def resume(self) -> None:
        """Take ratings again and tell the centre."""
        self.session.resume()
        self.publisher.set_paused(False)

    def staff_known(self, staff: str) -> bool:
        """True if `staff` may log in: on the roster, or any number when no roster is configured."""
        roster = self.session.config.staff
        return not roster or any(s.staff == staff for s in roster)

    @property
    def connected(self) -> bool:
        """True while the broker connection is up."""
        return self.publisher.connected


def prepare_kivy(*, fullscreen: bool, size: tuple[int, int] | None = None) -> None:
    """Set Kivy's environment and window config; call before anything imports kivy's Window."""
    os.environ.setdefault("KIVY_NO_ARGS", "1")  # our command line is not Kivy's
    os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")  # Kivy logs through `logging`
    os.environ.setdefault("KIVY_IMAGE", "sdl2,tex")  # no Pillow: PNGs load through SDL2
    from kivy.config import Config

    Config.set("kivy", "exit_on_escape", "0")
    if not fullscreen:  # a desktop window; on the Pi the input providers come from
        # deploy/pi/kivy-config.ini (mtdev only: a mouse provider would double every touch)
        Config.set("input", "mouse", "mouse,disable_multitouch")
    Config.set("graphics", "fullscreen", "auto" if fullscreen else "0")
    Config.set("graphics", "show_cursor", "0" if fullscreen else "1")
    if size is not None:
        Config.set("graphics", "width", str(size[0]))
        Config.set("graphics", "height", str(size[1]))
        Config.set("graphics", "resizable", "0")


def run(settings: KioskSettings) -> bool:
    """Run the terminal until the window closes, SIGINT or SIGTERM; True to start it again.

    The setup screen asks for a fresh start after saving a new identity or broker: the
    caller then replaces the process (os.execv), so systemd sees the same main PID.
    """
    prepare_kivy(fullscreen=settings.fullscreen)
    from kivy.clock import Clock as KivyClock

    from kiosk.ui.app import KioskApp

    kiosk = Kiosk(settings)
    app = KioskApp(kiosk)

    def stop(_sig: int, _frame: object) -> None:
        KivyClock.schedule_once(lambda _dt: app.stop(), 0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # systemd: READY once the window runs, then a watchdog ping from the UI loop itself,
    # so a hung UI (not just a dead process) gets the terminal restarted.
    notifier = SystemdNotifier()
    KivyClock.schedule_once(lambda _dt: notifier.ready(), 0)
    KivyClock.schedule_interval(lambda _dt: notifier.ping(), (notifier.interval_s() or 30) / 2)
    try:
        app.run()
    finally:
        kiosk.stop()
    return app.restart_requested
