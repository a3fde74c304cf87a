"""Virtual kiosks: each a real outbox and MQTT connection producing realistic traffic."""

import logging
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from common.mqtt import MqttSettings
from kiosk.clock import SystemClock
from kiosk.outbox import Outbox
from kiosk.publisher import Publisher
from kiosk.recorder import Identity, Recorder

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


class VirtualKiosk:
    """One simulated window terminal."""

    def __init__(self, spec: SimulationSpec, index: int, stop: threading.Event) -> None:
        """Open its outbox and MQTT connection."""
        self.spec = spec
        self.stop_event = stop
        self.identity = Identity(
            hall=spec.hall, device=f"{spec.device_prefix}{index:04d}", window=f"w{index:02d}"
        )
        self.rng = random.Random(None if spec.seed is None else spec.seed * 7919 + index)
        clock = SystemClock(trust_wall=True)
        self.outbox = Outbox(spec.data_dir / f"{self.identity.device}.sqlite")
        mqtt = spec.mqtt
        password = spec.credentials.get(self.identity.device)
        if password is not None:
            login = {"username": self.identity.device, "password": SecretStr(password)}
            mqtt = mqtt.model_copy(update=login)
        self.publisher = Publisher(self.outbox, self.identity, mqtt, clock)
        self.recorder = Recorder(self.outbox, self.identity, clock, self.publisher.wake)
        self.staff = [f"{index:02d}{k:02d}" for k in range(1, 3)]
        self.thread = threading.Thread(target=self._run, name=self.identity.device, daemon=True)

    def _service_time(self) -> float:
        """Seconds until the next rating: a lognormal service time with the given mean."""
        mean = 1.0 / self.spec.rate_per_kiosk
        return self.rng.lognormvariate(0, 0.5) * mean / 1.133  # E[lognormal(0, .5)] ≈ 1.133

    def _run(self) -> None:
        """Produce ratings until the target seq is reached or stopped."""
        target = self.spec.ratings_per_kiosk
        while not self.stop_event.is_set():
            seq = self.outbox.last_seq()
            if target and seq >= target:
                break
            if self.stop_event.wait(self._service_time()):
                break
            level = self.rng.choices(range(1, 6), LEVEL_WEIGHTS)[0]
            reasons = self.rng.sample(REASONS, k=1) if level <= 2 else []
            self.recorder.record(
                level,
                input=self.rng.choice(("touch", "touch", "button")),
                prompted=self.rng.random() < 0.9,
                staff=self.staff[(seq // 40) % len(self.staff)],
                ticket=f"A{(seq % 9999) + 1:04d}",
                item=self.rng.choice(ITEMS),
                reasons=reasons,
            )

    def start(self) -> None:
        """Connect and start producing."""
        self.publisher.start()
        self.thread.start()

    def finish(self, drain_timeout: float) -> bool:
        """Wait for production to end and the outbox to drain; return True if drained."""
        self.thread.join()
        drained = self.publisher.wait_drained(drain_timeout)
        self.publisher.stop()
        self.outbox.close()
        return drained


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
