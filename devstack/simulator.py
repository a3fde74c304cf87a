"""Virtual kiosks: each a real Terminal (outbox, MQTT, session) pressed like a busy window.

A touch kiosk (`VirtualKiosk`) presses its session directly; a serial one (`SerialKiosk`)
presses a simulated button board on a pty that a real serial bridge reads. Both use the
kiosk core's one `Terminal` wiring and its identity layout under `data_dir`.
"""

import logging
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from common.mqtt import MqttSettings
from devstack.board_sim import BoardSimulator, LineNoise
from firmware_bridge.service import BridgeService
from firmware_bridge.settings import BridgeSettings, SerialSettings
from kiosk.core.clock import SystemClock
from kiosk.core.session import Screen
from kiosk.core.terminal import Terminal, TerminalSpec
from protocol.messages import DeviceConfig, ReasonOption

log = logging.getLogger(__name__)

# Level mix seen in halls: mostly 非常满意, a few negatives (weights for levels 1 … 5).
LEVEL_WEIGHTS = (2, 3, 7, 18, 70)
ITEMS = ("330100-001", "330100-014", "330100-102", "330100-230", "330100-311")
REASONS = ("attitude", "waiting", "process", "explanation", "other")


@dataclass(frozen=True)
class SimulationSpec:
    """What to simulate."""

    hall: str = "demo"
    kiosks: int = 5
    first_index: int = 1
    device_prefix: str = "k-"
    ratings_per_kiosk: int = 0  # 0: endless
    rate_per_kiosk: float = 0.2  # mean ratings per second per kiosk
    data_dir: Path = Path("var/sim")
    seed: int | None = None
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    # Each kiosk's own broker login (device id -> password), as `windowrate device add` made.
    credentials: dict[str, str] = field(default_factory=dict)


def _service_time(rng: random.Random, rate: float) -> float:
    """Seconds until the next rating: a lognormal service time with mean 1/rate."""
    return rng.lognormvariate(0, 0.5) / rate / 1.133  # E[lognormal(0, .5)] ≈ 1.133


class VirtualKiosk:
    """One simulated touch terminal: a clerk prompts, a person rates and picks reasons."""

    def __init__(self, spec: SimulationSpec, index: int, stop: threading.Event) -> None:
        """Build its Terminal (outbox and MQTT connection of its own identity)."""
        self.spec = spec
        self.stop_event = stop
        device = f"{spec.device_prefix}{index:04d}"
        self.rng = random.Random(None if spec.seed is None else spec.seed * 7919 + index)
        mqtt = spec.mqtt
        password = spec.credentials.get(device)
        if password is not None:
            mqtt = mqtt.model_copy(update={"username": device, "password": SecretStr(password)})
        # Until the centre says otherwise: simulated people never press twice, and a negative
        # rating asks for reasons (picked at once).
        config = DeviceConfig(
            window=f"w{index:02d}",
            repeat_interval_s=0,
            reasons=[ReasonOption(code=c, zh=c, en=c) for c in REASONS],
        )
        self.terminal = Terminal(
            TerminalSpec(
                hall=spec.hall, device=device, data_dir=spec.data_dir, mqtt=mqtt, config=config
            ),
            clock=SystemClock(trust_wall=True),
            thanks_s=0.0,
        )
        self.staff = [f"{index:02d}{k:02d}" for k in range(1, 3)]
        self.thread = threading.Thread(target=self._run, name=device, daemon=True)

    def _run(self) -> None:
        """Produce ratings until the target seq is reached or stopped."""
        target = self.spec.ratings_per_kiosk
        session = self.terminal.session
        while not self.stop_event.is_set():
            seq = self.terminal.outbox.last_seq()
            if target and seq >= target:
                break
            if self.stop_event.wait(_service_time(self.rng, self.spec.rate_per_kiosk)):
                break
            if self.rng.random() < 0.9:
                staff = self.staff[(seq // 40) % len(self.staff)]
                self.terminal.prompt(f"A{(seq % 9999) + 1:04d}", self.rng.choice(ITEMS), staff)
            level = self.rng.choices(range(1, 6), LEVEL_WEIGHTS)[0]
            result = self.terminal.press(level, self.rng.choice(("touch", "touch", "button")))
            if result.accepted and session.screen is Screen.REASONS:
                session.choose_reasons(self.rng.sample(REASONS, k=1))

    def start(self) -> None:
        """Connect and start producing."""
        self.terminal.start()
        self.thread.start()

    def finish(self, drain_timeout: float) -> bool:
        """Wait for production to end and the outbox to drain; return True if drained."""
        self.thread.join()
        drained = self.terminal.publisher.wait_drained(drain_timeout)
        self.terminal.stop()
        return drained


class SerialKiosk:
    """A simulated serial terminal: board → pty → bridge → the same Terminal wiring → MQTT."""

    def __init__(
        self,
        spec: SimulationSpec,
        index: int,
        stop: threading.Event,
        noise: LineNoise | None = None,
    ) -> None:
        """Create the board, its pty link and a bridge service (its Terminal, own identity)."""
        self.spec = spec
        self.stop_event = stop
        self.device = f"{spec.device_prefix}{index:04d}"
        self.dir = Path(spec.data_dir) / f"{self.device}-serial"
        seed = (spec.seed or 0) * 7919 + index
        self.rng = random.Random(None if spec.seed is None else seed)
        link = self.dir / "tty"
        self.board = BoardSimulator(
            link, board_id=f"sim-{self.device}", to_host=noise, to_board=noise, seed=seed
        )
        settings = BridgeSettings(
            serial=SerialSettings(port=str(link)),
            hall=spec.hall,
            device=self.device,
            window=f"w{index:02d}",
            data_dir=self.dir,
            mqtt=spec.mqtt,
            trust_wall_clock=True,
            repeat_interval_s=0,  # simulated people never press twice
        )
        self.service = BridgeService(settings)
        self.thread = threading.Thread(target=self._run, name=self.device, daemon=True)

    def _run(self) -> None:
        """Press buttons at the spec's rate until its count is reached or stopped."""
        target = self.spec.ratings_per_kiosk
        while not self.stop_event.is_set():
            if target and self.service.outbox.last_seq() + self.board.pending() >= target:
                break
            if self.stop_event.wait(_service_time(self.rng, self.spec.rate_per_kiosk)):
                break
            self.board.press(self.rng.choices(range(1, 6), LEVEL_WEIGHTS)[0])

    def start(self) -> None:
        """Start the bridge service, plug the board in and start pressing."""
        self.service.start()
        self.board.start()
        self.thread.start()

    def finish(self, drain_timeout: float) -> bool:
        """Wait for the presses to be ACKed and the outbox to drain; return True if so."""
        self.thread.join()
        idle = self.board.wait_idle(drain_timeout)
        drained = self.service.publisher.wait_drained(drain_timeout)
        self.service.stop()
        self.board.stop()
        return idle and drained


def run_simulation(spec: SimulationSpec, stop: threading.Event, drain_timeout: float = 600) -> bool:
    """Run `spec.kiosks` virtual kiosks until done (or `stop`); return True if all drained."""
    kiosks = [VirtualKiosk(spec, spec.first_index + i, stop) for i in range(spec.kiosks)]
    for k in kiosks:
        k.start()
    log.info("simulating %d kiosks in hall %s", len(kiosks), spec.hall)
    ok = True
    for k in kiosks:
        ok = k.finish(0 if stop.is_set() else drain_timeout) and ok
    return ok


def run_serial_simulation(
    spec: SimulationSpec, stop: threading.Event, drain_timeout: float = 600
) -> bool:
    """Run `spec.kiosks` serial terminals until done (or `stop`); return True if all drained."""
    kiosks = [SerialKiosk(spec, spec.first_index + i, stop) for i in range(spec.kiosks)]
    for k in kiosks:
        k.start()
    log.info("simulating %d serial kiosks in hall %s", len(kiosks), spec.hall)
    ok = True
    for k in kiosks:
        ok = k.finish(0 if stop.is_set() else drain_timeout) and ok
    return ok
