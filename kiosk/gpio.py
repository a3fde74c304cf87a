"""The kiosk's physical rating buttons, clerk prompt button and lights, via gpiozero."""

# Why debounce is ours and not gpiozero's `bounce_time`:
# - real push buttons bounce for 1–20 ms on press AND on release, so one press reaches us as a
#   burst of pressed/released edges; a rating kiosk must count it once (一次一评);
# - gpiozero's MockFactory ignores `bounce_time` (MockPin._set_bounce stores it and does nothing),
#   so code relying on it would be untestable, and backends differ in how (or whether) they
#   honour it;
# - so every Button is created with `bounce_time=None` and the decision is made here, in the
#   plain `Debouncer` below, against an injected clock that tests can drive.
# A press is taken on the pressed edge (low latency). It is accepted only if no accepted press
# and no release edge of the same group of buttons happened within the window before it: the
# first rule folds the burst of a press into one, the second rejects the pressed edges a bouncing
# release produces after a long hold.

import logging
import threading
import time
import tomllib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Self

import gpiozero
from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)

BCM_MIN = 0
BCM_MAX = 27
SCALES = (3, 4, 5)


class PinMap(BaseModel):
    """Which BCM pins the rating buttons, prompt button and lights are wired to."""

    model_config = ConfigDict(extra="forbid")

    rating_buttons: dict[int, int] = Field(
        title="Rating buttons",
        description="Rating level (1 = worst … n = best) → BCM pin; 3, 4 or 5 buttons.",
    )
    prompt_button: int | None = Field(
        default=None,
        title="Prompt button",
        description="BCM pin of the clerk's button that opens a per-service rating prompt.",
    )
    confirm_led: int | None = Field(
        default=None,
        title="Confirm LED",
        description="BCM pin of the LED lit briefly to confirm each accepted rating.",
    )
    thanks_output: int | None = Field(
        default=None,
        title="Thank-you output",
        description="BCM pin of a buzzer or LED pulsed to say thank you.",
    )
    pull_up: bool = Field(
        default=True,
        title="Pull-up",
        description="True: buttons wired to GND with internal pull-ups; False: to 3V3, pull-downs.",
    )
    debounce_ms: int = Field(
        default=50,
        ge=0,
        le=1000,
        title="Debounce window (ms)",
        description="Presses within this window after an accepted press or a release are bounce.",
    )
    confirm_ms: int = Field(
        default=300,
        gt=0,
        le=10_000,
        title="Confirm light time (ms)",
        description="How long the confirm LED stays lit after an accepted rating.",
    )
    thanks_ms: int = Field(
        default=150,
        gt=0,
        le=10_000,
        title="Thank-you pulse (ms)",
        description="How long the thank-you output is pulsed.",
    )

    @model_validator(mode="after")
    def _check_pins(self) -> Self:
        """Check the scale, the level numbering, the pin range and that no pin is used twice."""
        levels = sorted(self.rating_buttons)
        if len(levels) not in SCALES:
            raise ValueError(f"rating_buttons must have 3, 4 or 5 entries, not {len(levels)}")
        if levels != list(range(1, len(levels) + 1)):
            raise ValueError(f"rating levels must be 1..{len(levels)}, got {levels}")
        uses = [(f"rating_buttons[{lv}]", self.rating_buttons[lv]) for lv in levels]
        uses += [
            (name, pin)
            for name, pin in (
                ("prompt_button", self.prompt_button),
                ("confirm_led", self.confirm_led),
                ("thanks_output", self.thanks_output),
            )
            if pin is not None
        ]
        seen: dict[int, str] = {}
        for name, pin in uses:
            if not BCM_MIN <= pin <= BCM_MAX:
                raise ValueError(f"{name}: BCM pin {pin} is outside {BCM_MIN}..{BCM_MAX}")
            if pin in seen:
                raise ValueError(f"{name}: BCM pin {pin} is already used by {seen[pin]}")
            seen[pin] = name
        return self

    @property
    def scale(self) -> int:
        """The rating scale the buttons make (3, 4 or 5)."""
        return len(self.rating_buttons)

    @classmethod
    def from_toml(cls, path: Path | str) -> "PinMap":
        """Read a pin map from a TOML file (see kiosk/gpio.toml.sample)."""
        with open(path, "rb") as f:
            return cls.model_validate(tomllib.load(f))


class Debouncer:
    """Decides which pressed edges of a group of buttons are real presses."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        """Set the window (seconds) and the monotonic clock it is measured with."""
        if window_s < 0:
            raise ValueError("window_s must be >= 0")
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_accept: float | None = None
        self._last_release: float | None = None

    def accept(self) -> bool:
        """Judge a pressed edge now: True if it is a press, False if it is bounce."""
        with self._lock:
            now = self._clock()
            for last in (self._last_accept, self._last_release):
                if last is not None and now - last < self.window_s:
                    return False
            self._last_accept = now
            return True

    def released(self) -> None:
        """Note a released edge now (a bouncing release must not count as a new press)."""
        with self._lock:
            self._last_release = self._clock()


class GpioPanel:
    """The rating buttons, the prompt button and the lights of one kiosk."""

    def __init__(
        self,
        pins: PinMap,
        on_rating: Callable[[int], bool],
        on_prompt: Callable[[], None] | None = None,
        pin_factory: gpiozero.Factory | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Claim the pins through pin_factory (None: gpiozero's default) and wire the callbacks."""
        self.pins = pins
        self._on_rating = on_rating
        self._on_prompt = on_prompt
        self._rating_debounce = Debouncer(pins.debounce_ms / 1000, clock)
        self._prompt_debounce = Debouncer(pins.debounce_ms / 1000, clock)
        self._devices: list[Any] = []
        self._closed = False
        self._buttons: dict[int, Any] = {}
        self._prompt: Any = None
        self._confirm: Any = None
        self._thanks: Any = None
        try:
            for level, pin in sorted(pins.rating_buttons.items()):
                button = self._add(
                    gpiozero.Button(
                        pin, pull_up=pins.pull_up, bounce_time=None, pin_factory=pin_factory
                    )
                )
                button.when_pressed = partial(self._rating_pressed, level)
                button.when_released = self._rating_debounce.released
                self._buttons[level] = button
            if pins.prompt_button is not None:
                self._prompt = self._add(
                    gpiozero.Button(
                        pins.prompt_button,
                        pull_up=pins.pull_up,
                        bounce_time=None,
                        pin_factory=pin_factory,
                    )
                )
                self._prompt.when_pressed = self._prompt_pressed
                self._prompt.when_released = self._prompt_debounce.released
            if pins.confirm_led is not None:
                self._confirm = self._add(gpiozero.LED(pins.confirm_led, pin_factory=pin_factory))
            if pins.thanks_output is not None:
                self._thanks = self._add(
                    gpiozero.DigitalOutputDevice(pins.thanks_output, pin_factory=pin_factory)
                )
        except BaseException:
            self.close()
            raise
        log.info(
            "GPIO panel ready: %d rating buttons %s, prompt %s, confirm LED %s, thanks %s",
            pins.scale,
            pins.rating_buttons,
            pins.prompt_button,
            pins.confirm_led,
            pins.thanks_output,
        )

    def _add(self, device: Any) -> Any:
        """Remember a device so close() releases it."""
        self._devices.append(device)
        return device

    @property
    def closed(self) -> bool:
        """True once close() has run."""
        return self._closed

    def _rating_pressed(self, level: int) -> None:
        """Pressed edge of a rating button (runs in gpiozero's callback thread)."""
        if self._closed:
            return
        if not self._rating_debounce.accept():
            log.debug("rating button %d: bounce ignored", level)
            return
        log.info("rating button %d pressed", level)
        try:
            committed = self._on_rating(level)
        except Exception:
            log.exception("on_rating(%d) failed", level)
            return
        if committed:
            self._pulse(self._confirm, self.pins.confirm_ms)
        else:
            log.info("rating %d not committed: no confirm light", level)

    def _prompt_pressed(self) -> None:
        """Pressed edge of the clerk's prompt button (runs in gpiozero's callback thread)."""
        if self._closed:
            return
        if not self._prompt_debounce.accept():
            log.debug("prompt button: bounce ignored")
            return
        if self._on_prompt is None:
            log.info("prompt button pressed, but no prompt handler is set")
            return
        log.info("prompt button pressed")
        try:
            self._on_prompt()
        except Exception:
            log.exception("on_prompt() failed")

    def _pulse(self, device: Any, ms: int) -> None:
        """Switch an output on for ms milliseconds without blocking (no-op if not wired)."""
        if device is None or self._closed:
            return
        try:
            device.blink(on_time=ms / 1000, off_time=0, n=1, background=True)
        except Exception:
            log.exception("pulse on %s failed", device)

    def thanks(self) -> None:
        """Pulse the thank-you output for thanks_ms (non-blocking; no-op if not wired)."""
        self._pulse(self._thanks, self.pins.thanks_ms)

    def close(self) -> None:
        """Release every pin; callbacks after this are ignored. Safe to call twice."""
        self._closed = True
        while self._devices:
            device = self._devices.pop()
            try:
                device.close()
            except Exception:
                log.exception("closing %s failed", device)

    def __enter__(self) -> Self:
        """Use the panel as a context manager."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the panel."""
        self.close()
