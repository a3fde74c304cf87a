"""The serial bridge over real pseudo-terminals: board simulator or reference firmware → bridge →
kiosk outbox, and through a real broker, gateway and InfluxDB where the count matters."""

import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
import tty
import uuid
from pathlib import Path
from typing import Any

import pytest
import serial
from pydantic import ValidationError

from common.mqtt import MqttSettings
from devstack.board_sim import BoardSimulator, LineNoise
from devstack.services import Influxd, Mosquitto, die_with_parent
from firmware_bridge.bridge import Bridge
from firmware_bridge.dedup import STATE_FILE, STATE_FILES
from firmware_bridge.firmware import main as fw
from firmware_bridge.messages import AckStatus, Buzzer, Led, LedMode
from firmware_bridge.service import BridgeService, terminal_spec
from firmware_bridge.settings import BridgeSettings, SerialSettings, load_settings
from kiosk.core.clock import SystemClock
from kiosk.core.session import Refusal
from kiosk.core.terminal import Terminal
from protocol.messages import Command
from tests.support import (
    CHILDREN,
    REPO,
    GatewayProcess,
    distinct_ids,
    influx_query,
    rating_count,
    wait_until,
)

NOISY = LineNoise(corrupt=0.05, drop=0.10)  # 5 % of bytes corrupted, 10 % of frames dropped


def settings_for(tmp: Path, link: Path, **changes: Any) -> BridgeSettings:
    """Bridge settings for a test: fast timers, trusted clock, no repeat flag.

    `changes` of the serial section (feedback_ms …) go there, the others to the root.
    """
    line: dict[str, Any] = {
        "port": str(link),
        "heartbeat_s": 0.5,
        "hello_retry_s": 0.3,
        "reopen_min_s": 0.05,
        "reopen_max_s": 0.5,
    }
    values: dict[str, Any] = {
        "hall": "h1",
        "device": "k-0001",
        "window": "a01",
        "data_dir": tmp / "bridge",
        "trust_wall_clock": True,
        "repeat_interval_s": 0,
    }
    for name, value in changes.items():
        (line if name in SerialSettings.model_fields else values)[name] = value
    return BridgeSettings(serial=SerialSettings(**line), **values)


class Local:
    """A bridge feeding its Terminal with no broker behind it (the ACK path is all local)."""

    def __init__(self, settings: BridgeSettings) -> None:
        """Build the terminal (not connected) and start the bridge."""
        self.settings = settings
        self.terminal = Terminal(
            terminal_spec(settings), clock=SystemClock(trust_wall=True), asks_reasons=False
        )
        self.outbox = self.terminal.outbox
        self.recorder = self.terminal.recorder
        self.state_path = self.terminal.state_dir / STATE_FILE
        self.bridge = Bridge(settings, self.terminal)
        self.bridge.start()

    def restart(self) -> None:
        """Stop the bridge and start a new one on the same state (as a process restart)."""
        self.bridge.stop()
        self.terminal.outputs.remove(self.bridge)
        self.bridge = Bridge(self.settings, self.terminal)
        self.bridge.start()

    def cmd(self, name: str, **kw: Any) -> None:
        """A command from the centre."""
        self.terminal.command(Command(id=uuid.uuid4(), ts=int(time.time() * 1000), cmd=name, **kw))

    def drafts(self) -> list[dict[str, Any]]:
        """The recorded ratings in seq order."""
        return [r.draft for r in self.outbox.pending_ratings(10_000, set())]

    def close(self) -> None:
        """Stop the bridge and close the outbox."""
        self.bridge.stop()
        self.terminal.stop()


@pytest.fixture
def link(tmp_path: Path) -> Path:
    """Where the board's port appears (a by-id style symlink)."""
    return tmp_path / "dev" / "ttyBOARD"


def influx_levels(url: str) -> list[tuple[int, int, str]]:
    """(seq, level, input) of every rating point, by seq."""
    (series,) = influx_query(url, 'SELECT "seq", "level", "input" FROM "rating"')
    cols = series["columns"]
    rows = [dict(zip(cols, v, strict=True)) for v in series["values"]]
    return sorted((int(r["seq"]), int(r["level"]), str(r["input"])) for r in rows)


def metric(bridge: Bridge, name: str, **labels: str) -> float:
    """A bridge metric's current value (0 when never set)."""
    return bridge.metrics.registry.get_sample_value(name, labels) or 0.0


def press_some(board: BoardSimulator, n: int, rng: random.Random, gap_s: float = 0.05) -> None:
    """Press n random levels with short random gaps."""
    for _ in range(n):
        assert board.press(rng.randint(1, 5)) is not None
        time.sleep(rng.uniform(0, gap_s))


def made_levels(board: BoardSimulator) -> list[int]:
    """Levels of every press the board made, in order."""
    return [level for _, _, level in board.log.made]


def test_noisy_line_every_press_in_influx_exactly_once(
    tmp_path: Path, link: Path, broker: Mosquitto, influx: Influxd
) -> None:
    """5 % corrupted bytes and 10 % lost frames both ways: each press stored once, in order."""
    gw = GatewayProcess(tmp_path / "gw", broker.port, influx.url)
    gw.start()
    board = BoardSimulator(link, to_host=NOISY, to_board=NOISY, seed=11, retry_s=0.05, window=8)
    svc = BridgeService(settings_for(tmp_path, link, mqtt=MqttSettings(port=broker.port)))
    svc.start()
    board.start()
    n = 40
    press_some(board, n, random.Random(5))
    assert board.wait_idle(60), f"{board.pending()} presses never ACKed"
    wait_until(lambda: rating_count(influx.url) >= n, 30, what=f"{n} ratings in InfluxDB")
    assert svc.publisher.wait_drained(10)
    time.sleep(1.0)  # anything extra would have arrived by now
    assert rating_count(influx.url) == n
    assert distinct_ids(influx.url) == n
    assert influx_levels(influx.url) == [
        (i + 1, level, "serial") for i, level in enumerate(made_levels(board))
    ]
    # The line really was bad, and the protocol really did work for it.
    assert board.up.corrupted > 50 and board.up.dropped > 5 and board.down.dropped > 2
    assert sum(svc.bridge._decoder.stats.errors.values()) > 20
    assert metric(svc.bridge, "windowrate_bridge_presses_total", result="duplicate") > 0
    assert metric(svc.bridge, "windowrate_bridge_presses_total", result="recorded") == n
    assert set(board.log.acked.values()) <= {AckStatus.RECORDED, AckStatus.DUPLICATE}
    svc.stop()
    board.stop()
    gw.stop()


def test_unplug_replug_and_restart_lose_nothing_double_nothing(
    tmp_path: Path, link: Path, broker: Mosquitto, influx: Influxd
) -> None:
    """Cable pulled twice mid-stream and the bridge restarted, noisy line: each press once."""
    gw = GatewayProcess(tmp_path / "gw", broker.port, influx.url)
    gw.start()
    board = BoardSimulator(link, to_host=NOISY, to_board=NOISY, seed=23, retry_s=0.05, window=8)
    settings = settings_for(tmp_path, link, mqtt=MqttSettings(port=broker.port))
    svc = BridgeService(settings)
    svc.start()
    board.start()
    rng = random.Random(9)
    unacked_at_cut: list[int] = []

    for phase in range(3):
        press_some(board, 8, rng, gap_s=0.02)
        unacked_at_cut.append(board.pending())
        if phase == 1:
            # The bridge goes away with presses in flight (a crash or an update).
            svc.stop()
            press_some(board, 4, rng, gap_s=0.01)
            svc = BridgeService(settings)
            svc.start()
        else:
            board.unplug()  # mid-stream: some presses not yet ACKed
            press_some(board, 4, rng, gap_s=0.01)  # pressed while the cable is out
            time.sleep(0.7)  # the bridge's reopen backoff grows meanwhile
            board.replug()
    press_some(board, 5, rng)
    n = len(board.log.made)
    assert board.wait_idle(60), f"{board.pending()} presses never ACKed"
    wait_until(lambda: rating_count(influx.url) >= n, 30, what=f"{n} ratings in InfluxDB")
    assert svc.publisher.wait_drained(10)
    time.sleep(1.0)
    assert any(unacked_at_cut), "the cuts should have caught presses in flight"
    assert board.log.lost == []
    assert len(board.log.acked) == n
    assert rating_count(influx.url) == n
    assert distinct_ids(influx.url) == n
    assert influx_levels(influx.url) == [
        (i + 1, level, "serial") for i, level in enumerate(made_levels(board))
    ]
    svc.stop()
    board.stop()
    gw.stop()


def test_restarted_bridge_does_not_count_a_retransmission_again(tmp_path: Path, link: Path) -> None:
    """Recorded presses whose ACKs were lost come again to a new bridge: duplicates, not new."""
    board = BoardSimulator(link, to_board=LineNoise(drop=1.0), seed=2, retry_s=0.05, window=8)
    local = Local(settings_for(tmp_path, link))
    board.start()
    for level in (1, 2, 3, 4, 5):
        board.press(level)
    wait_until(lambda: local.outbox.last_seq() == 5, 10, what="5 presses recorded")
    time.sleep(0.3)
    assert board.pending() == 5  # no ACK got through
    local.restart()
    board.down.noise = LineNoise()  # the line heals
    assert board.wait_idle(10)
    time.sleep(0.3)
    assert local.outbox.last_seq() == 5
    assert [d["level"] for d in local.drafts()] == [1, 2, 3, 4, 5]
    assert set(board.log.acked.values()) == {AckStatus.DUPLICATE}
    local.close()
    board.stop()


def test_crash_between_outbox_commit_and_state_commit(tmp_path: Path, link: Path) -> None:
    """The intent row settles a crash mid-press: recorded → taken; not recorded → still due."""
    settings = settings_for(tmp_path, link)
    local = Local(settings)
    local.bridge.stop()
    store = local.bridge.store
    store = type(store)(local.state_path)
    store.begin("brd", 7, 1, local.outbox.last_seq())
    local.recorder.record(3, input="serial", prompted=False)  # committed; then the crash
    store.begin("brd", 8, 4, local.outbox.last_seq())  # about to record; crash before
    store.close()
    bridge = Bridge(settings, local.terminal)  # recovers at start
    assert bridge.store.last("brd", 7) == 1
    assert bridge.store.last("brd", 8) == 0
    # advance() says whether it moved the mark (a HELLO's acked_through rarely should).
    assert bridge.store.advance("brd", 8, 3) is True
    assert bridge.store.advance("brd", 8, 3) is False
    assert bridge.store.advance("brd", 8, 2) is False and bridge.store.last("brd", 8) == 3
    bridge.stop()
    local.outbox.close()


def test_state_lost_board_says_what_was_acked(tmp_path: Path, link: Path) -> None:
    """With the duplicate table gone, the board's HELLO (acked through) lets new presses in."""
    settings = settings_for(tmp_path, link)
    board = BoardSimulator(link, seed=4, retry_s=0.05)
    local = Local(settings)
    board.start()
    for level in (5, 4, 3):
        board.press(level)
    assert board.wait_idle(10)
    local.bridge.stop()
    for name in STATE_FILES:
        (local.terminal.state_dir / name).unlink(missing_ok=True)
    board.press(2)  # number 4 of this boot, while the bridge is down
    local.terminal.outputs.remove(local.bridge)
    local.bridge = Bridge(settings, local.terminal)
    local.bridge.start()
    assert board.wait_idle(10)
    assert [d["level"] for d in local.drafts()] == [5, 4, 3, 2]
    local.close()
    board.stop()


def test_port_missing_exclusive_vanishing_and_back(tmp_path: Path, link: Path) -> None:
    """No port yet: retries; then open exclusively; the pty vanishes: no crash; back: works."""
    local = Local(settings_for(tmp_path, link))
    time.sleep(0.5)
    assert not local.bridge.state().port_open
    assert metric(local.bridge, "windowrate_bridge_port_open_failures_total") >= 2
    board = BoardSimulator(link, seed=5, retry_s=0.05, firmware="sim-2.1")
    board.start()
    wait_until(lambda: local.bridge.state().connected, 10, what="board connected")
    st = local.bridge.state()
    assert st.board is not None and st.board.ident == "sim-board" and st.board.firmware == "sim-2.1"
    assert metric(local.bridge, "windowrate_bridge_board_connected") == 1
    info = {"board": "sim-board", "boot": f"{board.boot:08x}", "firmware": "sim-2.1"}
    assert metric(local.bridge, "windowrate_bridge_board_info", **info, buttons="5") == 1
    with pytest.raises(serial.SerialException):
        serial.Serial(str(link), exclusive=True)
    board.unplug()
    wait_until(lambda: not local.bridge.state().port_open, 5, what="port closed")
    assert metric(local.bridge, "windowrate_bridge_board_connected") == 0
    time.sleep(0.5)
    assert local.bridge._thread is not None and local.bridge._thread.is_alive()
    board.replug()
    board.press(4)
    assert board.wait_idle(10)
    assert [d["level"] for d in local.drafts()] == [4]
    local.close()
    board.stop()


def test_feedback_refusals_commands_and_reboot(tmp_path: Path, link: Path) -> None:
    """LED feedback, refusals blink and beep, pause/prompt/repeat, and a reboot's new press 1.

    The board follows the touchscreen's rules (`KioskSession.press`): in `always` mode a press
    within the repeat interval of the last one is flagged `x-repeat`, prompted or not.
    """
    local = Local(settings_for(tmp_path, link, scale=3, repeat_interval_s=30, feedback_ms=700))
    board = BoardSimulator(link, seed=6, retry_s=0.05)  # 5 buttons on a 3-key window
    board.start()

    def press(level: int) -> AckStatus:
        """Press and wait for the board's ACK status."""
        n = board.press(level)
        assert board.wait_idle(10)
        return board.log.acked[(board.boot, n or 0)]

    assert press(3) is AckStatus.RECORDED
    wait_until(lambda: Led(3, LedMode.ON, 700) in board.log.leds, 5, what="LED 3 lit")
    assert press(5) is AckStatus.REJECTED  # no level 5 on a 3-key scale
    wait_until(lambda: Led(0, LedMode.BLINK, 700) in board.log.leds, 5, what="blink")
    wait_until(lambda: board.log.buzzes, 5, what="beep")
    assert isinstance(board.log.buzzes[0], Buzzer)
    local.cmd("pause")
    assert press(2) is AckStatus.PAUSED
    local.cmd("resume")
    local.cmd("prompt", ticket="A0007", item="330100-001", staff="0457")
    assert press(1) is AckStatus.RECORDED
    assert press(2) is AckStatus.RECORDED  # within the repeat interval: flagged
    board.reboot()
    assert press(3) is AckStatus.RECORDED  # press 1 of the new boot
    drafts = local.drafts()
    assert [d["level"] for d in drafts] == [3, 1, 2, 3]
    assert {d["input"] for d in drafts} == {"serial"}
    assert drafts[1]["prompted"] is True and drafts[1]["ticket"] == "A0007"
    assert drafts[1]["staff"] == "0457" and drafts[1]["reasons"] == ["x-repeat"]
    assert drafts[2]["prompted"] is False and drafts[2]["reasons"] == ["x-repeat"]
    events = [e.payload for e in local.outbox.pending_events(10, set())]
    assert any('"pause"' in e for e in events) and any('"prompt_shown"' in e for e in events)
    local.close()
    board.stop()


def test_per_service_board_needs_a_prompt_like_the_touchscreen(tmp_path: Path, link: Path) -> None:
    """per_service: a press without a prompt is refused (as a touch is); after `prompt`, taken."""
    local = Local(settings_for(tmp_path, link, prompt_mode="per_service", feedback_ms=500))
    board = BoardSimulator(link, seed=12, retry_s=0.05)
    board.start()

    def press(level: int) -> AckStatus:
        """Press and wait for the board's ACK status."""
        n = board.press(level)
        assert board.wait_idle(10)
        return board.log.acked[(board.boot, n or 0)]

    assert press(4) is AckStatus.NO_PROMPT
    wait_until(lambda: Led(0, LedMode.BLINK, 500) in board.log.leds, 5, what="refusal blink")
    assert local.terminal.session.press(4, "touch").refusal is Refusal.NO_PROMPT  # same rule
    assert local.outbox.last_seq() == 0
    local.cmd("prompt", ticket="A0001", item="330100-001", staff="0457")
    wait_until(lambda: Led(0, LedMode.BLINK, 60_000) in board.log.leds, 5, what="prompt blink")
    assert press(5) is AckStatus.RECORDED
    assert press(3) is AckStatus.NO_PROMPT  # the prompt was spent by the rating
    (draft,) = local.drafts()
    assert (draft["level"], draft["input"], draft["prompted"]) == (5, "serial", True)
    assert (draft["ticket"], draft["staff"]) == ("A0001", "0457")
    local.close()
    board.stop()


class FirmwareOnPty:
    """The reference firmware's Board class (on CPython) driving a real pty, like the RP2040."""

    def __init__(self, link: Path) -> None:
        """Open a pty, publish its slave at `link`, and run the firmware loop in a thread."""
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.ttyname(self.slave))
        self.lit: dict[int, bool] = {}
        self.lock = threading.Lock()
        self.board = fw.Board(
            lambda data: os.write(self.master, data),
            "rp2040-e66038b7",
            0xC0FFEE,
            5,
            self.now(),
            set_led=self.lit.__setitem__,
            retry_ms=50,
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    @staticmethod
    def now() -> int:
        """ticks_ms() of the board."""
        return time.monotonic_ns() // 1_000_000

    def run(self) -> None:
        """The firmware's main loop, minus the pins."""
        while not self.stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.005)
            with self.lock:
                if ready:
                    self.board.feed(os.read(self.master, 4096), self.now())
                self.board.tick(self.now())

    def press(self, level: int) -> None:
        """A debounced button press."""
        with self.lock:
            self.board.press(level, self.now())

    def close(self) -> None:
        """Stop and close the pty."""
        self.stop.set()
        self.thread.join(2)
        os.close(self.master)
        os.close(self.slave)


def test_reference_firmware_speaks_to_the_bridge(tmp_path: Path, link: Path) -> None:
    """The firmware's protocol code on a real pty: presses recorded once, LED driven."""
    board = FirmwareOnPty(link)
    local = Local(settings_for(tmp_path, link))
    for level in (5, 1, 4):
        board.press(level)
        time.sleep(0.05)
    wait_until(lambda: not board.board.pending, 10, what="firmware presses ACKed")
    wait_until(lambda: local.bridge.state().connected, 5, what="firmware HELLO")
    st = local.bridge.state()
    assert st.board is not None and st.board.ident == "rp2040-e66038b7"
    assert st.board.firmware == fw.VERSION and st.board.boot == 0xC0FFEE
    assert [d["level"] for d in local.drafts()] == [5, 1, 4]
    wait_until(lambda: 4 in board.lit, 5, what="LED of button 4 driven")
    local.close()
    board.close()


def _run(args: list[str], log: Path) -> "subprocess.Popen[bytes]":
    """Start `windowrate …` as a registered child process."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "windowrate", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            preexec_fn=die_with_parent,
        )
    CHILDREN.append(proc)
    return proc


def test_cli_bridge_and_simulate_serial(
    tmp_path: Path, link: Path, broker: Mosquitto, influx: Influxd
) -> None:
    """`windowrate simulate --serial` and `windowrate bridge --port …` deliver to InfluxDB."""
    gw = GatewayProcess(tmp_path / "gw", broker.port, influx.url)
    gw.start()
    sim = _run(
        [
            "simulate",
            "--serial",
            "--hall",
            "h2",
            "--kiosks",
            "2",
            "--ratings-per-kiosk",
            "4",
            "--rate",
            "5",
            "--mqtt-port",
            str(broker.port),
            "--data-dir",
            str(tmp_path / "sim"),
            "--seed",
            "3",
        ],
        tmp_path / "simulate.log",
    )
    assert sim.wait(60) == 0, (tmp_path / "simulate.log").read_text()[-3000:]
    wait_until(lambda: rating_count(influx.url) == 8, 30, what="8 simulated serial ratings")

    board = BoardSimulator(link, seed=8, retry_s=0.05)
    board.start()
    proc = _run(
        [
            "bridge",
            "--port",
            str(link),
            "--hall",
            "h1",
            "--device",
            "k-0009",
            "--mqtt-port",
            str(broker.port),
            "--data-dir",
            str(tmp_path / "cli-bridge"),
        ],
        tmp_path / "bridge.log",
    )
    for level in (2, 4, 5):
        board.press(level)
    assert board.wait_idle(20), (tmp_path / "bridge.log").read_text()[-3000:]
    wait_until(lambda: rating_count(influx.url) == 11, 30, what="3 more from the CLI bridge")
    # The board's state travels in the device's retained status, through the gateway.
    wait_until(
        lambda: influx_query(
            influx.url,
            'SELECT "board_id", "board_connected" FROM "device_status"'
            ' WHERE "device" = \'k-0009\' AND "board_connected" = true',
        ),
        15,
        what="board state in device_status",
    )
    rows = influx_query(
        influx.url,
        'SELECT "board_id", "board_connected" FROM "device_status"'
        " WHERE \"device\" = 'k-0009' AND \"board_id\" = 'sim-board'",
    )
    assert rows and any(v[2] is True for v in rows[0]["values"]), rows
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    log = (tmp_path / "bridge.log").read_text()
    assert "board sim-board connected" in log
    board.stop()
    gw.stop()


def test_settings_from_env_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """WR_BRIDGE_* variables (nested with __) are read; command-line options override them."""
    monkeypatch.setenv("WR_BRIDGE_SERIAL__PORT", "/dev/serial/by-id/usb-MicroPython_Board-if00")
    monkeypatch.setenv("WR_BRIDGE_SERIAL__FEEDBACK_MS", "500")
    monkeypatch.setenv("WR_BRIDGE_DEVICE", "k-0042")
    monkeypatch.setenv("WR_BRIDGE_HALL", "demo")
    monkeypatch.setenv("WR_BRIDGE_MQTT__HOST", "broker.hall")
    s = load_settings(hall="hz-civic", mqtt_port=1884, scale=None)
    assert s.serial.port.endswith("-if00") and s.device == "k-0042" and s.hall == "hz-civic"
    assert s.serial.feedback_ms == 500
    assert load_settings(port="/dev/ttyUSB3").serial.port == "/dev/ttyUSB3"
    assert s.mqtt.host == "broker.hall" and s.mqtt.port == 1884 and s.scale == 5
    with pytest.raises(ValidationError):
        load_settings(device="Bad Id")
