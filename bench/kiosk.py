"""Press-to-commit latency and memory of the real kiosk app: touches of every level under Xvfb.

Starts Xvfb and a Mosquitto on a free port, runs `python -m devstack.kiosk_driver` with a bench
scenario: real touch events on the rating keys of the real KioskApp, levels 5, 4, 3, 2, 1 in
turn, each as soon as the screens come back, with the production thank-you time; a low
rating opens the reasons screen, where one reason is touched and submitted. It reports for
each press the time from touch-down to the outbox commit (SQLite, fsynced), the kiosk
process's RSS after the presses, and fails unless every committed rating reached the broker
exactly once.

Then, for memory on a machine without a GPU (Xvfb, Mesa's software GL), `growth_presses` more
presses (20,000 by default) go through the app's own key and reasons handlers, many per frame,
with every screen redrawn: `rss_growth_20k_presses_mb` is the RSS after them minus the RSS
after a warm-up. `rss_over_bare_kivy_mb` is the kiosk's RSS (after the touches) minus that of
an empty Kivy window in the same display, and `cold_start_s` the time from the kiosk process's
start to its first screen (welcome) drawn.
"""

import inspect
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common.mqtt import MqttSettings, make_client
from devstack.services import Mosquitto, die_with_parent
from devstack.xvfb import Xvfb
from protocol.topics import Topic, TopicKind

log = logging.getLogger(__name__)

HALL = "bench"
DEVICE = "k-bench"
REPO = Path(__file__).resolve().parent.parent
LEVELS = [5, 4, 3, 2, 1]
TARGETS = {"rss_over_bare_kivy_mb": 50.0, "rss_growth_20k_presses_mb": 5.0}
REASONS = [
    {"code": "waiting", "zh": "等候时间长", "en": "Long wait"},
    {"code": "attitude", "zh": "服务态度", "en": "Attitude"},
    {"code": "process", "zh": "办事流程", "en": "Process"},
]


class _Counter:
    """Subscribes to the device's rating topic and notes each rating id that arrives."""

    def __init__(self, port: int) -> None:
        """Connect and subscribe."""
        self.ids: set[str] = set()
        self.count = 0
        self.ready = threading.Event()
        self.client = make_client(
            MqttSettings(port=port), client_id="bench-counter", paho_logging=False
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self.ready.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(str(Topic(HALL, DEVICE, TopicKind.RATING)), qos=1)
        self.ready.wait(10)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        """Note one rating."""
        self.count += 1
        self.ids.add(json.loads(msg.payload)["id"])

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


# For scale: the RSS of an empty Kivy window (one Label) in the same display and GL driver.
_BARE_KIVY = """
import os
os.environ.setdefault("KIVY_NO_ARGS", "1")
os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")
from kivy.config import Config
Config.set("graphics", "width", "1024")
Config.set("graphics", "height", "600")
from kivy.app import App
from kivy.clock import Clock
from kivy.uix.label import Label

class Bare(App):
    def build(self):
        Clock.schedule_once(self.done, 1.0)
        return Label(text="WindowRate")

    def done(self, _dt):
        with open("/proc/self/status") as f:
            rss = next(int(x.split()[1]) for x in f if x.startswith("VmRSS:"))
        print(rss)
        self.stop()

Bare().run()
"""


def bare_kivy_rss_mb(display: str, home: Path) -> float | None:
    """RSS (MB) of an empty Kivy window on `display`, or None if it could not run."""
    env = {**os.environ, "DISPLAY": display, "KIVY_HOME": str(home)}
    home.mkdir(parents=True, exist_ok=True)
    script = home / "bare_kivy.py"  # Kivy's App needs a source file (it looks for a .kv next to it)
    script.write_text(_BARE_KIVY)
    proc = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        log.warning("bare Kivy window failed: %s", proc.stderr[-500:])
        return None
    return round(int(lines[-1]) / 1024, 1)


def production_thanks_s() -> float:
    """The thank-you time of `windowrate kiosk` (its Kiosk's default)."""
    from kiosk.device import Kiosk

    default = inspect.signature(Kiosk).parameters["thanks_s"].default
    return float(default)


def run_bench(
    presses: int = 100, growth_presses: int = 20_000, keep: Path | None = None
) -> dict[str, Any]:
    """Run the bench; return the harness's figures plus what reached the broker."""
    thanks_s = production_thanks_s()
    # Each press waits out the thank-you screen; a low one also the reasons screen.
    growth_timeout = 120 + growth_presses * 0.05
    timeout = 60 + presses * (thanks_s + 3) + growth_timeout
    with tempfile.TemporaryDirectory(prefix="wr-bench-kiosk-") as tmpdir:
        tmp = keep or Path(tmpdir)
        tmp.mkdir(parents=True, exist_ok=True)
        xvfb = Xvfb(log_path=tmp / "xvfb.log")
        display = xvfb.start()
        broker = Mosquitto(tmp / "mosquitto")
        broker.start()
        counter = _Counter(broker.port)
        try:
            scenario = {
                "thanks_s": thanks_s,
                "tick_s": 0.1,
                "timeout": timeout,
                "steps": [
                    {
                        "publish_config": {
                            "window": "b01",
                            "scale": 5,
                            "prompt_mode": "always",
                            "repeat_interval_s": 0,
                            "reasons": REASONS,
                        }
                    },
                    {
                        "bench": {
                            "presses": presses,
                            "levels": LEVELS,
                            "timeout": 30 + presses * (thanks_s + 3),
                        }
                    },
                    {"growth": {"presses": growth_presses, "timeout": growth_timeout}},
                    {"wait_drained": 120},
                ],
            }
            path = tmp / "scenario.json"
            path.write_text(json.dumps(scenario))
            result_path = tmp / "result.json"
            env = dict(os.environ)
            env.update(
                {
                    "DISPLAY": display,
                    "KIVY_HOME": str(tmp / "kivy"),
                    "WR_KIOSK_DATA_DIR": str(tmp / "kiosk"),
                    "WR_KIOSK_MQTT__PORT": str(broker.port),
                    "WR_KIOSK_HALL": HALL,
                    "WR_KIOSK_DEVICE": DEVICE,
                    "WR_KIOSK_TRUST_WALL_CLOCK": "true",
                    # The first screen is the welcome screen (the config then says always).
                    "WR_KIOSK_PROMPT_MODE": "per_service",
                }
            )
            with open(tmp / "kiosk.log", "wb") as out:
                proc = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "devstack.kiosk_driver",
                        str(path),
                        "--result",
                        str(result_path),
                    ],
                    env=env,
                    cwd=REPO,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    preexec_fn=die_with_parent,
                    timeout=timeout + 120,
                    check=False,
                )
            if not result_path.exists():
                tail = (tmp / "kiosk.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"harness exited with {proc.returncode} and no result:\n{tail}")
            result = json.loads(result_path.read_text())
            bench = result.get("bench") or {}
            committed = {r["id"] for r in result["outbox"]}
            low = sum(1 for n in range(bench.get("presses", 0)) if LEVELS[n % len(LEVELS)] <= 2)
            errors = list(result["errors"])
            deadline = time.monotonic() + 10  # the broker acked all; its copies may be on the way
            while len(counter.ids) < result["last_seq"] and time.monotonic() < deadline:
                time.sleep(0.05)
            delivered = len(counter.ids)
            if delivered != result["last_seq"] or not committed <= counter.ids:
                errors.append(f"{result['last_seq']} committed but {delivered} delivered")
            growth = result.get("growth") or {}
            # Counted when the touches ended: the growth presses show reasons screens too.
            screens = bench.get("reasons_screens", -1)
            if screens != low or bench.get("reasons_answered") != low:
                errors.append(f"{low} low ratings but {screens} reasons screens")
            bare = bare_kivy_rss_mb(display, tmp / "kivy-bare")
            rss = bench.get("rss_mb")
            figures = {
                "rss_over_bare_kivy_mb": (
                    round(rss - bare, 1) if rss is not None and bare is not None else None
                ),
                "rss_growth_20k_presses_mb": growth.get("rss_growth_mb"),
                "cold_start_s": result.get("cold_start_s"),
            }
            return {
                **bench,
                "levels": LEVELS,
                "thanks_s": thanks_s,
                "low_ratings": low,
                "reasons_screens": screens,
                "rss_bare_kivy_window_mb": bare,
                **figures,
                "growth": growth,
                "targets": TARGETS,
                "within_targets": all(
                    figures[k] is not None and figures[k] <= v for k, v in TARGETS.items()
                ),
                "committed": result["last_seq"],
                "delivered": delivered,
                "duplicates": counter.count - delivered,
                "lost": result["last_seq"] - delivered,
                "ok": not errors and proc.returncode == 0,
                "errors": errors,
                "error": "; ".join(errors)
                or (None if proc.returncode == 0 else f"harness exit {proc.returncode}"),
            }
        finally:
            counter.close()
            broker.stop()
            xvfb.stop()
