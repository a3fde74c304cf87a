"""Never block a negative (issue 14, item 7): every level on every input is one published rating.

Touch (the Kivy app under Xvfb), GPIO buttons (gpiozero's MockFactory) and the serial board
(a pty) each press every level of a 5- and a 3-level scale, with and without follow-up
reasons, ending the reasons screen every way it can end (confirmed with one, several or no
reason, timed out with or without a pick, left by the next press, the next prompt, a pause).
A subscriber on one real Mosquitto counts the ratings: one per press, with the level pressed,
none refused. A negative is committed at press time, held only while its reasons are asked
and sendable the moment that screen ends, so it is published in seq order, never after a
rating pressed later (the subscriber sees seq order), as a positive is.
"""

import json
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gpiozero
import paho.mqtt.client as mqtt
import pytest
from gpiozero.pins.mock import MockFactory

from common.mqtt import MqttSettings
from devstack.board_sim import BoardSimulator
from devstack.services import Mosquitto
from firmware_bridge.messages import AckStatus
from firmware_bridge.service import BridgeService
from firmware_bridge.settings import BridgeSettings, SerialSettings
from kiosk.core.clock import SystemClock
from kiosk.core.session import Screen
from kiosk.core.terminal import Terminal, TerminalSpec
from kiosk.device import Peripherals
from kiosk.settings import KioskSettings
from protocol.messages import DeviceConfig, ReasonOption
from protocol.scales import offers_reasons
from tests.support import raw_client, wait_until
from tests.test_kiosk_ui import HALL, display, run_kiosk  # noqa: F401 (display is a fixture)

REASONS = [
    ReasonOption(code="waiting", zh="等候时间长", en="Long wait"),
    ReasonOption(code="attitude", zh="服务态度不好", en="Unfriendly staff"),
    ReasonOption(code="process", zh="办事流程繁琐", en="Complicated procedure"),
]
TIMEOUT_S = 0.3  # the reasons screen's timeout in the session-level runs
# How the reasons screen of a negative ends: the codes confirmed (a list), or a timeout
# after ticking some codes ("timeout", codes), or the next press ("next", None).
ENDINGS: list[tuple[str, list[str]]] = [
    ("confirm", ["waiting"]),
    ("confirm", ["waiting", "attitude"]),
    ("confirm", []),
    ("timeout", ["process"]),
    ("timeout", []),
    ("next", []),
]


class Counter:
    """A subscriber on every device's ratings: (device, seq, level, reasons) as they arrive."""

    def __init__(self, port: int) -> None:
        """Subscribe to `wr/v1/+/+/#` (ratings counted; events and status acknowledged)."""
        self.lock = threading.Lock()
        self.got: list[tuple[str, dict[str, Any], float]] = []
        ready = threading.Event()
        self.client = raw_client(port, "never-block-counter")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: ready.set()
        self.client.subscribe("wr/v1/+/+/#", 1)
        assert ready.wait(10)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        """Keep a rating with its arrival time."""
        if msg.topic.endswith("/rating"):
            with self.lock:
                self.got.append((msg.topic.split("/")[3], json.loads(msg.payload), time.time()))

    def of(self, device: str) -> list[tuple[dict[str, Any], float]]:
        """The ratings of `device` in arrival order, with their arrival (wall) time."""
        with self.lock:
            return [(doc, t) for dev, doc, t in self.got if dev == device]

    def wait(self, device: str, n: int) -> list[dict[str, Any]]:
        """Wait for `n` ratings of `device` and a moment longer (a surplus one would show)."""
        wait_until(lambda: len(self.of(device)) >= n, 20, what=f"{n} ratings of {device}")
        time.sleep(0.3)
        return [doc for doc, _t in self.of(device)]

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One real Mosquitto for the module (each run uses a device of its own)."""
    m = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    m.start()
    yield m
    m.stop()


@pytest.fixture(scope="module")
def counter(broker: Mosquitto) -> Iterator[Counter]:
    """The module's subscriber."""
    c = Counter(broker.port)
    yield c
    c.close()


def config(scale: int, reasons: bool, **more: Any) -> DeviceConfig:
    """A device config: no repeat flag, reasons or none."""
    return DeviceConfig(
        window="a01",
        scale=scale,
        repeat_interval_s=0,
        reasons=REASONS if reasons else [],
        **more,
    )


@contextmanager
def terminal(
    tmp: Path, port: int, device: str, cfg: DeviceConfig, **options: Any
) -> Iterator[Terminal]:
    """A connected Terminal on the module's broker (stopped when the generator closes)."""
    spec = TerminalSpec(
        hall=HALL,
        device=device,
        data_dir=tmp / device,
        mqtt=MqttSettings(port=port),
        config=cfg,
        trust_wall_clock=True,
    )
    term = Terminal(
        spec,
        clock=SystemClock(trust_wall=True),
        thanks_s=0.0,
        reasons_timeout_s=TIMEOUT_S,
        **options,
    )
    term.start(tick_s=0.02)
    try:
        wait_until(lambda: term.connected, 10, what="broker connection")
        yield term
    finally:
        term.stop()


def check_published(counter: Counter, device: str, expected: list[tuple[int, list[str]]]) -> None:
    """Each press is one rating (level, reasons) and they arrive in seq order."""
    docs = counter.wait(device, len(expected))
    assert [d["seq"] for d in docs] == list(range(1, len(expected) + 1))  # seq order, once each
    assert [(d["level"], d["reasons"]) for d in docs] == expected


def figures(counter: Counter, device: str, pressed: dict[int, tuple[float, float]]) -> str:
    """Median press→arrival and screen-end→arrival (ms) per level, for the log."""
    per: dict[int, list[tuple[float, float]]] = {}
    for doc, t in counter.of(device):
        press_t, end_t = pressed[doc["seq"]]
        per.setdefault(doc["level"], []).append(((t - press_t) * 1000, (t - end_t) * 1000))
    return ", ".join(
        f"level {lv}: press→publish {statistics.median(a for a, _ in v):.0f} ms, "
        f"answer→publish {statistics.median(b for _, b in v):.0f} ms"
        for lv, v in sorted(per.items())
    )


@pytest.mark.parametrize("scale", [5, 3])
@pytest.mark.parametrize("reasons", [False, True], ids=["no-reasons", "reasons"])
def test_every_level_and_every_reasons_ending_is_one_published_rating(
    tmp_path: Path, broker: Mosquitto, counter: Counter, scale: int, reasons: bool
) -> None:
    """Session level: every level, each reasons ending; held only while asked, never refused."""
    device = f"t{scale}-{'r' if reasons else 'n'}"
    expected: list[tuple[int, list[str]]] = []
    pressed: dict[int, tuple[float, float]] = {}  # seq → (press, end of the interaction)
    with terminal(tmp_path, broker.port, device, config(scale, reasons)) as term:
        session, outbox = term.session, term.outbox
        left_open: tuple[int, float] | None = None  # a negative the next press is to end
        for how, codes in ENDINGS:
            for level in range(1, scale + 1):
                t0 = time.time()
                result = term.press(level, "touch")
                assert result.accepted, result.refusal  # none refused
                assert result.recorded is not None and outbox.last_seq() == result.recorded.seq
                seq = result.recorded.seq
                if left_open is not None:  # this press ended the reasons screen before it
                    pressed[left_open[0]] = (left_open[1], t0)
                    assert seq - 1 not in outbox.held()
                    left_open = None
                expected.append((level, codes))
                if not (reasons and offers_reasons(scale, level)):
                    assert session.screen is not Screen.REASONS and outbox.held() == []
                    pressed[seq] = (t0, t0)
                    expected[-1] = (level, [])
                    continue
                # Committed at press time, held only while its reasons are asked.
                assert session.screen is Screen.REASONS and outbox.held() == [seq]
                if how == "next":
                    left_open = (seq, t0)
                    continue
                if how == "confirm":
                    session.choose_reasons(codes)
                else:
                    session.pick_reasons(codes)
                    wait_until(lambda: session.screen is not Screen.REASONS, 5, 0.01)
                # The screen ended: sendable at once, as a positive is right after its press.
                assert outbox.held() == []
                pressed[seq] = (t0, time.time())
        assert outbox.held() == []
        check_published(counter, device, expected)
        print(f"\n{device}: {figures(counter, device, pressed)}")


def test_next_prompt_and_pause_end_the_reasons_screen(
    tmp_path: Path, broker: Mosquitto, counter: Counter
) -> None:
    """per_service (一次一评): the next service's prompt, or a pause, sends the held negative."""
    cfg = config(5, True, prompt_mode="per_service")
    with terminal(tmp_path, broker.port, "t-prompt", cfg) as term:
        assert term.prompt(ticket="A0001")
        assert term.press(1, "button").accepted and term.session.screen is Screen.REASONS
        term.session.pick_reasons(["attitude"])
        assert term.prompt(ticket="A0002")  # not refused: the reasons screen ends, 1 goes out
        assert term.outbox.held() == [] and term.session.screen is Screen.RATING
        assert term.press(2, "button").accepted and term.session.screen is Screen.REASONS
        term.pause()
        assert term.outbox.held() == []
        term.resume()
        assert term.prompt(ticket="A0003") and term.press(5, "button").accepted
        check_published(counter, "t-prompt", [(1, ["attitude"]), (2, []), (5, [])])
    tickets = [doc["ticket"] for doc, _t in counter.of("t-prompt")]
    assert tickets == ["A0001", "A0002", "A0003"]


@pytest.fixture
def mock_pins() -> Iterator[MockFactory]:
    """gpiozero's mock pins as the default factory (what `GPIOZERO_PIN_FACTORY=mock` does)."""
    before = gpiozero.Device.pin_factory
    factory = MockFactory()
    gpiozero.Device.pin_factory = factory
    yield factory
    gpiozero.Device.pin_factory = before
    factory.close()


@pytest.mark.parametrize("scale", [5, 3])
@pytest.mark.parametrize("reasons", [False, True], ids=["no-reasons", "reasons"])
def test_gpio_buttons_every_level(
    tmp_path: Path,
    broker: Mosquitto,
    counter: Counter,
    mock_pins: MockFactory,
    scale: int,
    reasons: bool,
) -> None:
    """GPIO: a button press while the reasons are asked ends them and counts; a timeout too."""
    pins = {lv: pin for lv, pin in zip(range(1, scale + 1), (26, 19, 13, 6, 5), strict=False)}
    gpio_file = tmp_path / "gpio.toml"
    lines = [f"{lv} = {pin}" for lv, pin in pins.items()]
    gpio_file.write_text("debounce_ms = 0\n\n[rating_buttons]\n" + "\n".join(lines) + "\n")
    device = f"g{scale}-{'r' if reasons else 'n'}"
    levels = [*range(1, scale + 1), 1]  # each negative ended by the next press; the last times out
    with terminal(tmp_path, broker.port, device, config(scale, reasons)) as term:
        peripherals = Peripherals(KioskSettings(gpio_file=gpio_file, voice=False), term)
        peripherals.start()  # the kiosk's wiring: GpioPanel → Terminal.press(level, "button")
        try:
            for level in levels:
                seq = term.outbox.last_seq()
                mock_pins.pin(pins[level]).drive_low()
                mock_pins.pin(pins[level]).drive_high()
                wait_until(lambda s=seq: term.outbox.last_seq() == s + 1, 5, 0.01, what="commit")
            wait_until(lambda: not term.outbox.held(), 5, 0.02, what="the timeout")
            check_published(counter, device, [(lv, []) for lv in levels])
        finally:
            peripherals.close()
    assert {doc["input"] for doc, _t in counter.of(device)} == {"button"}


@pytest.mark.parametrize("scale", [5, 3])
def test_serial_board_every_level(
    tmp_path: Path, broker: Mosquitto, counter: Counter, scale: int
) -> None:
    """Serial board: no screen to ask on, so a negative goes out at once, reasons or not."""
    device = f"s{scale}"
    link = tmp_path / "dev" / "ttyBOARD"
    settings = BridgeSettings(
        serial=SerialSettings(port=str(link), heartbeat_s=0.5, hello_retry_s=0.3),
        hall=HALL,
        device=device,
        window="a01",
        scale=scale,
        repeat_interval_s=0,
        data_dir=tmp_path / "bridge",
        mqtt=MqttSettings(port=broker.port),
        trust_wall_clock=True,
    )
    service = BridgeService(settings, clock=SystemClock(trust_wall=True))
    board = BoardSimulator(link, buttons=scale, seed=scale, retry_s=0.05)
    board.start()
    service.start()
    levels: list[int] = []
    for reasons in (False, True):
        service.terminal.apply_config(config(scale, reasons))  # as the centre's config does
        for level in range(1, scale + 1):
            n = board.press(level)
            assert n is not None and board.wait_idle(10)
            assert board.log.acked[(board.boot, n)] is AckStatus.RECORDED  # none refused
            assert service.outbox.held() == []
            levels.append(level)
    check_published(counter, device, [(lv, []) for lv in levels])
    service.stop()
    board.stop()


def test_touchscreen_every_level_and_the_reasons_cases(
    display: str,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    broker: Mosquitto,
    counter: Counter,
) -> None:
    """The real Kivy app: touch every level of 5 and 3, each reasons ending, a button press on
    the reasons screen; every press is one rating on the broker, in seq order."""
    pins = Path(__file__).resolve().parent.parent / "kiosk" / "gpio.toml.sample"
    reasons = [r.model_dump() for r in REASONS]
    five = {"window": "a12", "scale": 5, "reasons": reasons, "repeat_interval_s": 0}

    def touch(level: int) -> list[dict[str, Any]]:
        return [{"expect_screen": "rating"}, {"touch": level}]

    def asked(level: int, *then: dict[str, Any]) -> list[dict[str, Any]]:
        return [*touch(level), {"expect_screen": "reasons"}, *then]

    confirm: list[dict[str, Any]] = [{"confirm_reasons": True}]  # the next touch waits
    steps: list[dict[str, Any]] = [
        {"publish_config": five},
        *touch(5),
        *touch(4),
        *touch(3),
        *asked(2, {"reason": "waiting"}, *confirm),
        *asked(1, {"reason": "waiting"}, {"reason": "attitude"}, *confirm),
        *asked(2, *confirm),
        *asked(1, {"reason": "process"}, {"wait": 2.6}),  # picked, then timed out
        *asked(2, {"wait": 2.6}),  # timed out, nothing picked
        *asked(1, {"reason": "waiting"}, {"gpio": 2}, {"expect_screen": "reasons"}),
        {"gpio": 5},  # the 2 pressed on a button is left by the next press too
        {"expect_outbox": 11},
        {"publish_config": {**five, "scale": 3}},
        *touch(3),
        *touch(2),
        *asked(1, {"reason": "attitude"}, *confirm),
        {"wait_drained": 15},
    ]
    expected = [
        (5, []),
        (4, []),
        (3, []),
        (2, ["waiting"]),
        (1, ["waiting", "attitude"]),
        (2, []),
        (1, ["process"]),
        (2, []),
        (1, ["waiting"]),
        (2, []),
        (5, []),
        (3, []),
        (2, []),
        (1, ["attitude"]),
    ]
    run_kiosk(
        display,
        tmp_path,
        broker.port,
        steps,
        env={"WR_KIOSK_GPIO_FILE": str(pins), "GPIOZERO_PIN_FACTORY": "mock"},
        thanks_s=0.3,
        reasons_timeout_s=2.0,
    )
    check_published(counter, "k-0042", expected)
    docs = [doc for doc, _t in counter.of("k-0042")]
    assert [d["input"] for d in docs][8:11] == ["touch", "button", "button"]
