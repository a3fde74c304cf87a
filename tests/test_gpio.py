"""The GPIO panel against gpiozero's MockFactory: presses, bounce, lights, pin-map validation."""

import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pydantic
import pytest
from gpiozero.pins.mock import MockFactory

from kiosk.gpio import Debouncer, GpioPanel, PinMap

FIVE = {5: 5, 4: 6, 3: 13, 2: 19, 1: 26}
PROMPT, CONFIRM, BUZZER = 21, 20, 16
SAMPLE = Path(__file__).resolve().parent.parent / "kiosk" / "gpio.toml.sample"


class FakeClock:
    """A monotonic clock the test advances by hand."""

    def __init__(self) -> None:
        """Start at an arbitrary non-zero time."""
        self.t = 1000.0

    def __call__(self) -> float:
        """Current fake time in seconds."""
        return self.t

    def advance(self, ms: float) -> None:
        """Move time forward."""
        self.t += ms / 1000


class Calls:
    """Records callback invocations from gpiozero's threads."""

    def __init__(self, result: bool = True) -> None:
        """result is what on_rating answers (False: e.g. the kiosk is paused)."""
        self.result = result
        self.ratings: list[int] = []
        self.prompts = 0
        self._lock = threading.Lock()

    def on_rating(self, level: int) -> bool:
        """Rating callback."""
        with self._lock:
            self.ratings.append(level)
        return self.result

    def on_prompt(self) -> None:
        """Prompt callback."""
        with self._lock:
            self.prompts += 1


def wait_for(cond: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Poll cond until true or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


def has_ratings(calls: Calls, n: int) -> bool:
    """True once n ratings have arrived."""
    return len(calls.ratings) == n


def five_map(**kw: object) -> PinMap:
    """The sample 5-button board."""
    fields: dict[str, object] = {
        "rating_buttons": FIVE,
        "prompt_button": PROMPT,
        "confirm_led": CONFIRM,
        "thanks_output": BUZZER,
    }
    fields.update(kw)
    return PinMap.model_validate(fields)


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    """A fresh mock pin factory per test."""
    f = MockFactory()
    yield f
    f.close()


@pytest.fixture
def clock() -> FakeClock:
    """The fake clock injected into the panel."""
    return FakeClock()


@pytest.fixture
def calls() -> Calls:
    """Callback recorder; on_rating commits."""
    return Calls()


@pytest.fixture
def panel(factory: MockFactory, clock: FakeClock, calls: Calls) -> Iterator[GpioPanel]:
    """A 5-button panel with prompt, confirm LED and buzzer on the mock factory."""
    p = GpioPanel(five_map(), calls.on_rating, calls.on_prompt, pin_factory=factory, clock=clock)
    yield p
    p.close()


def press(factory: MockFactory, pin: int, clock: FakeClock, hold_ms: float = 80) -> None:
    """One clean press of a pull-up button: low, hold, high."""
    factory.pin(pin).drive_low()
    clock.advance(hold_ms)
    factory.pin(pin).drive_high()


def bounce(factory: MockFactory, pin: int, clock: FakeClock, edges: int = 5) -> None:
    """A bouncing press: `edges` low pulses within 20 ms, ending pressed, then released."""
    for i in range(edges):
        factory.pin(pin).drive_low()
        clock.advance(2)
        if i < edges - 1:
            factory.pin(pin).drive_high()
            clock.advance(2)
    clock.advance(100)
    factory.pin(pin).drive_high()


# --- Debouncer -------------------------------------------------------------------------------


def test_debouncer_first_press_accepted_and_window_blocks(clock: FakeClock) -> None:
    d = Debouncer(0.05, clock)
    assert d.accept()
    clock.advance(10)
    assert not d.accept()
    clock.advance(39)
    assert not d.accept()  # 49 ms after the accepted press
    clock.advance(2)
    assert d.accept()  # 51 ms: accepted


def test_debouncer_rejected_edges_do_not_extend_window(clock: FakeClock) -> None:
    d = Debouncer(0.05, clock)
    assert d.accept()
    for _ in range(4):
        clock.advance(10)
        assert not d.accept()
    clock.advance(11)  # 51 ms after the accepted press, 11 ms after the last rejected edge
    assert d.accept()


def test_debouncer_release_bounce_is_not_a_press(clock: FakeClock) -> None:
    d = Debouncer(0.05, clock)
    assert d.accept()
    clock.advance(500)  # long hold
    d.released()
    clock.advance(3)
    assert not d.accept()  # contact bounce while releasing
    d.released()
    clock.advance(49)
    assert not d.accept()
    clock.advance(2)
    assert d.accept()


def test_debouncer_zero_window_accepts_everything(clock: FakeClock) -> None:
    d = Debouncer(0, clock)
    assert all(d.accept() for _ in range(5))
    with pytest.raises(ValueError):
        Debouncer(-0.001, clock)


# --- presses ---------------------------------------------------------------------------------


def test_one_press_per_button_gives_its_level(
    panel: GpioPanel, factory: MockFactory, clock: FakeClock, calls: Calls
) -> None:
    for n, (level, pin) in enumerate(FIVE.items(), start=1):
        clock.advance(500)
        press(factory, pin, clock)
        assert wait_for(partial(has_ratings, calls, n))
        assert calls.ratings[-1] == level
    assert calls.ratings == [5, 4, 3, 2, 1]
    assert calls.prompts == 0


def test_bounce_burst_is_one_rating_then_real_press_counts(
    panel: GpioPanel, factory: MockFactory, clock: FakeClock, calls: Calls
) -> None:
    pin = FIVE[4]
    # five pressed edges within 20 ms (2 ms low, 2 ms high): one press
    for i in range(5):
        factory.pin(pin).drive_low()
        clock.advance(2)
        if i < 4:
            factory.pin(pin).drive_high()
            clock.advance(2)
    assert clock.t - 1000.0 < 0.020
    assert wait_for(lambda: len(calls.ratings) >= 1)
    factory.pin(pin).drive_high()
    time.sleep(0.05)  # give any stray callback a chance to show up
    assert calls.ratings == [4]
    # a second, real press 200 ms later
    clock.advance(200)
    press(factory, pin, clock)
    assert wait_for(lambda: len(calls.ratings) == 2)
    assert calls.ratings == [4, 4]


def test_debounce_spans_all_rating_buttons(
    panel: GpioPanel, factory: MockFactory, clock: FakeClock, calls: Calls
) -> None:
    factory.pin(FIVE[5]).drive_low()
    clock.advance(10)
    factory.pin(FIVE[1]).drive_low()  # a palm on two keys: only the first counts
    clock.advance(80)
    factory.pin(FIVE[5]).drive_high()
    factory.pin(FIVE[1]).drive_high()
    assert wait_for(lambda: len(calls.ratings) >= 1)
    time.sleep(0.05)
    assert calls.ratings == [5]


def test_bouncing_release_after_long_hold_is_not_a_press(
    panel: GpioPanel, factory: MockFactory, clock: FakeClock, calls: Calls
) -> None:
    pin = FIVE[3]
    factory.pin(pin).drive_low()
    clock.advance(800)  # held well past the debounce window
    for _ in range(4):  # the release bounces
        factory.pin(pin).drive_high()
        clock.advance(3)
        factory.pin(pin).drive_low()
        clock.advance(3)
    factory.pin(pin).drive_high()
    assert wait_for(lambda: len(calls.ratings) >= 1)
    time.sleep(0.05)
    assert calls.ratings == [3]


def test_exception_in_on_rating_does_not_break_the_panel(
    factory: MockFactory, clock: FakeClock
) -> None:
    seen: list[int] = []

    def flaky(level: int) -> bool:
        seen.append(level)
        if len(seen) == 1:
            raise RuntimeError("outbox full")
        return True

    with GpioPanel(five_map(), flaky, pin_factory=factory, clock=clock):
        press(factory, FIVE[2], clock)
        clock.advance(200)
        press(factory, FIVE[2], clock)
        assert wait_for(lambda: len(seen) == 2)
        assert wait_for(lambda: factory.pin(CONFIRM).state == 1)


# --- lights ----------------------------------------------------------------------------------


def test_confirm_led_lights_for_confirm_ms(
    panel: GpioPanel, factory: MockFactory, clock: FakeClock, calls: Calls
) -> None:
    led = factory.pin(CONFIRM)
    assert led.state == 0
    led.clear_states()
    press(factory, FIVE[5], clock)
    assert wait_for(lambda: led.state == 1, timeout=1.0)
    assert wait_for(lambda: led.state == 0)
    # one pulse: on, then off again (how long it lasts is measured by `windowrate bench board`)
    changes = [s.state for s in led.states]
    assert changes == [False, True, False]
    assert calls.ratings == [5]


def test_confirm_led_dark_when_rating_not_committed(factory: MockFactory, clock: FakeClock) -> None:
    calls = Calls(result=False)
    with GpioPanel(five_map(), calls.on_rating, pin_factory=factory, clock=clock):
        led = factory.pin(CONFIRM)
        led.clear_states()
        press(factory, FIVE[1], clock)
        assert wait_for(lambda: calls.ratings == [1])
        time.sleep(0.2)
        assert led.state == 0
        assert [s.state for s in led.states] == [False]


def test_thanks_pulses_buzzer(panel: GpioPanel, factory: MockFactory) -> None:
    buzzer = factory.pin(BUZZER)
    buzzer.clear_states()
    panel.thanks()
    assert wait_for(lambda: len(buzzer.states) == 3)
    assert [s.state for s in buzzer.states] == [False, True, False]
    assert buzzer.state == 0


def test_thanks_without_output_is_noop(factory: MockFactory, clock: FakeClock) -> None:
    """No thank-you output wired: thanks() claims no pin and drives none."""
    with GpioPanel(PinMap(rating_buttons=FIVE), lambda _: True, pin_factory=factory) as p:
        claimed = {info.number for info in factory.pins}
        for pin in factory.pins.values():
            pin.clear_states()
        p.thanks()
        assert {info.number for info in factory.pins} == claimed  # no output claimed for it
        assert all(len(pin.states) == 1 for pin in factory.pins.values())  # nothing driven
        assert {factory.pin(n).function for n in FIVE.values()} == {"input"}


# --- prompt button ---------------------------------------------------------------------------


def test_prompt_button_calls_on_prompt_once_per_press(
    panel: GpioPanel, factory: MockFactory, clock: FakeClock, calls: Calls
) -> None:
    press(factory, PROMPT, clock)
    assert wait_for(lambda: calls.prompts == 1)
    clock.advance(300)
    bounce(factory, PROMPT, clock)
    assert wait_for(lambda: calls.prompts == 2)
    clock.advance(300)
    press(factory, PROMPT, clock)
    assert wait_for(lambda: calls.prompts == 3)
    time.sleep(0.05)
    assert calls.prompts == 3
    assert calls.ratings == []


def test_prompt_and_rating_debounce_independently(
    panel: GpioPanel, factory: MockFactory, clock: FakeClock, calls: Calls
) -> None:
    factory.pin(PROMPT).drive_low()
    clock.advance(5)
    factory.pin(FIVE[5]).drive_low()
    assert wait_for(lambda: calls.prompts == 1 and calls.ratings == [5])


# --- other boards ----------------------------------------------------------------------------


def test_three_button_map(factory: MockFactory, clock: FakeClock, calls: Calls) -> None:
    pins = PinMap(rating_buttons={1: 17, 2: 27, 3: 22}, confirm_led=18)
    assert pins.scale == 3
    with GpioPanel(pins, calls.on_rating, pin_factory=factory, clock=clock):
        for pin in (22, 27, 17):
            clock.advance(300)
            bounce(factory, pin, clock)
        assert wait_for(lambda: len(calls.ratings) == 3)
        time.sleep(0.05)
        assert calls.ratings == [3, 2, 1]


def test_pull_down_wiring(factory: MockFactory, clock: FakeClock, calls: Calls) -> None:
    pins = PinMap(rating_buttons={1: 17, 2: 27, 3: 22, 4: 23}, pull_up=False)
    with GpioPanel(pins, calls.on_rating, pin_factory=factory, clock=clock):
        factory.pin(23).drive_high()
        clock.advance(80)
        factory.pin(23).drive_low()
        assert wait_for(lambda: calls.ratings == [4])


def test_close_releases_pins_and_stops_callbacks(
    factory: MockFactory, clock: FakeClock, calls: Calls
) -> None:
    p = GpioPanel(five_map(), calls.on_rating, calls.on_prompt, pin_factory=factory, clock=clock)
    p.close()
    p.close()
    assert p.closed
    # the pins are free again: a new panel can claim them, the old one stays silent
    with GpioPanel(five_map(), calls.on_rating, pin_factory=factory, clock=clock):
        press(factory, FIVE[5], clock)
        assert wait_for(lambda: calls.ratings == [5])
        time.sleep(0.05)
        assert calls.ratings == [5]


def test_sample_file_is_a_valid_map() -> None:
    pins = PinMap.from_toml(SAMPLE)
    assert pins.rating_buttons == FIVE
    assert (pins.prompt_button, pins.confirm_led, pins.thanks_output) == (21, 20, 16)
    assert pins.pull_up and pins.scale == 5


@pytest.mark.parametrize(
    "fields",
    [
        {"rating_buttons": {1: 5, 2: 5, 3: 6}},  # duplicate rating pin
        {"rating_buttons": {1: 5, 2: 6, 3: 13}, "confirm_led": 6},  # LED on a button pin
        {"rating_buttons": {1: 5, 2: 6, 3: 13}, "prompt_button": 20, "thanks_output": 20},
        {"rating_buttons": {1: 5, 2: 6, 4: 13}},  # levels 1, 2, 4
        {"rating_buttons": {0: 5, 1: 6, 2: 13}},  # levels from 0
        {"rating_buttons": {1: 5, 2: 6, 3: 40}},  # no BCM 40
        {"rating_buttons": {1: 5, 2: 6, 3: 13}, "confirm_led": -1},
        {"rating_buttons": {1: 5, 2: 6}},  # too few
        {"rating_buttons": {i: 4 + i for i in range(1, 7)}},  # too many
        {"rating_buttons": {1: 5, 2: 6, 3: 13}, "led": 20},  # unknown key
        {"rating_buttons": {1: 5, 2: 6, 3: 13}, "debounce_ms": -5},
        {"rating_buttons": {1: 5, 2: 6, 3: 13}, "confirm_ms": 0},
    ],
)
def test_invalid_maps_are_rejected(fields: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        PinMap.model_validate(fields)
