"""One touchscreen kiosk: its Terminal, setup controller, GPIO buttons and spoken prompts."""

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kiosk.core.setup import SetupController
from kiosk.core.terminal import Terminal, TerminalOutput
from kiosk.settings import KioskSettings
from kiosk.voice import VoicePrompts

if TYPE_CHECKING:  # gpiozero is imported only when a pin map is configured (RSS)
    from kiosk.gpio import GpioPanel

log = logging.getLogger(__name__)


class Peripherals(TerminalOutput):
    """GPIO rating/prompt buttons (inputs) and the thank-you pulse and voice (outputs)."""

    def __init__(self, settings: KioskSettings, terminal: Terminal) -> None:
        """Prepare (not open) the pins and the voice of `terminal`."""
        self.settings = settings
        self.terminal = terminal
        self.gpio: GpioPanel | None = None
        self.voice = VoicePrompts(terminal.data_dir / "voice") if settings.voice else None
        # Plays a recording; the app sets it (`aplay` started from the UI thread).
        self.play: Callable[[Path], None] | None = None
        terminal.outputs.append(self)

    def start(self) -> None:
        """Claim the GPIO pins (if a pin map is configured) and make missing voice prompts."""
        if self.settings.gpio_file is not None:
            self.gpio = self._open_gpio(self.settings.gpio_file)
        if self.voice is not None:
            threading.Thread(target=self._make_voice, name="voice", daemon=True).start()

    def close(self) -> None:
        """Release the pins."""
        if self.gpio is not None:
            self.gpio.close()
            self.gpio = None

    def _open_gpio(self, path: Path) -> "GpioPanel":
        """Load the pin map and wire the buttons to the terminal."""
        from kiosk.gpio import GpioPanel, PinMap

        pins = PinMap.from_toml(path)
        scale = self.terminal.session.config.scale
        if pins.scale != scale:
            log.warning(
                "pin map has %d rating buttons but the configured scale is %d", pins.scale, scale
            )
        return GpioPanel(pins, on_rating=self.button_press, on_prompt=self.button_prompt)

    def _make_voice(self) -> None:
        """Make the spoken prompts with espeak-ng if missing (a hall's own recordings win)."""
        assert self.voice is not None
        try:
            self.voice.generate()
        except (RuntimeError, OSError) as exc:
            log.warning("voice prompts unavailable, staying silent: %s", exc)

    # --- inputs (gpiozero's thread) ---

    def button_press(self, level: int) -> bool:
        """A physical rating button: True when the rating was committed."""
        return self.terminal.press(level, "button").accepted

    def button_prompt(self) -> None:
        """The clerk's prompt button."""
        self.terminal.prompt()

    # --- outputs (any thread) ---

    def say(self, kind: str) -> None:
        """Play the `prompt` or `thanks` recording in the configured language, if enabled."""
        play = self.play
        if self.voice is None or play is None:
            return
        path = self.voice.path(kind, self.terminal.session.config.language)
        if path is not None:
            self.terminal.dispatch(lambda: play(path))

    def prompted(self, terminal: Terminal) -> None:
        """Say the prompt."""
        self.say("prompt")

    def thanked(self, terminal: Terminal) -> None:
        """Pulse the thank-you output of the button panel and say thanks."""
        if self.gpio is not None:
            self.gpio.thanks()
        self.say("thanks")


class Kiosk:
    """The parts of one touchscreen terminal that the Kivy app draws and forwards to."""

    def __init__(
        self, settings: KioskSettings, *, thanks_s: float = 2.0, reasons_timeout_s: float = 10.0
    ) -> None:
        """Build the terminal (its outbox opens; nothing connects yet) and its extras."""
        self.settings = settings
        self.terminal = Terminal.from_settings(
            settings, thanks_s=thanks_s, reasons_timeout_s=reasons_timeout_s
        )
        self.setup = SetupController(settings, self.terminal)
        self.peripherals = Peripherals(settings, self.terminal)

    def start(self) -> None:
        """Connect (the app ticks the session on its own thread) and claim the pins."""
        self.terminal.start(tick_s=None)
        self.peripherals.start()

    def stop(self) -> None:
        """Release the pins, say offline and close the outbox (safe to call twice)."""
        self.peripherals.close()
        self.terminal.stop()
