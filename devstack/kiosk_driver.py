"""Scripted runs of the real kiosk app in the current DISPLAY: tests, screenshots, the bench.

`python -m devstack.kiosk_driver SCENARIO.json [--result RESULT.json]` builds the same `Kiosk` and
`KioskApp` as `windowrate kiosk` (settings from WR_KIOSK_*, window not fullscreen) and runs the
scenario's steps from Kivy Clock callbacks, touching the screen with real touch events:

    {"touch": 5}                      touch the centre of the key of level 5
    {"tap": "keypad.ok"}              touch any named target (see KioskApp.targets)
    {"reason": "waiting"}             touch a follow-up reason
    {"confirm_reasons": true}         touch the submit key of the reasons screen
    {"keys": "0457\\n"}               type on the keyboard (a badge reader)
    {"entry": "1884"}                 type on the on-screen keyboard of a setup field
    {"scan": "WR1;https://…;code;fp"}  text from a scanner that types like a keyboard
    {"expect_setup_error": "device"}  the setup form refused that field
    {"expect_restart": 5}             the setup was saved and the app asks to start again
    {"gpio": 5}                       press and release the GPIO button of level 5 (mock pins)
    {"wait": 1.5}                     let time pass
    {"screenshot": "out/x.png"}       save the window (Window.screenshot)
    {"expect_screen": "thanks"}       wait (5 s) for that screen
    {"expect_outbox": 1}              ratings committed so far (last seq) must be exactly 1
    {"expect_offline": true}          the offline badge is (not) shown
    {"assert_label": [5, "非常满意"]}  the key of level 5 reads that text (waits 5 s)
    {"check_targets": true}           every rating/reason key on screen is at least 20 mm
    {"publish_config": {...}}         retained config to the device's topic; waits until applied
    {"publish_cmd": {"cmd": "pause"}} a command to the device's topic (id and ts filled in)
    {"wait_drained": 10}              wait until the outbox has sent everything
    {"fill_disk": true}               fill the data directory's file system (a filler file)
    {"free_disk": true}               delete that filler file again
    {"expect_text": "存储空间已满"}    a label on the shown screen contains that text (waits 5 s)
    {"bench": {"presses": 1000}}      touch keys as fast as the screens allow; time each commit
    {"growth": {"presses": 20000}}    press through the app's own handlers, many per frame (RSS)

Top-level scenario keys: "steps", "size" ([1024, 600]), "thanks_s", "reasons_timeout_s",
"tick_s", "timeout" (s), "connect" (wait for the broker first; default true), "result".
The result file (JSON) holds ok, errors, screens seen, outbox rows, labels, bench figures and
`cold_start_s` (process start to the first screen drawn); the exit status is 1 when an
expectation failed.
"""

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devstack.kiosk_measure import (
    StepFailed,
    Wait,
    fill_disk,
    growth_bench,
    memory_kb,
    process_age_s,
    read_outbox,
    touch_bench,
)

log = logging.getLogger("devstack.kiosk_driver")

DEFAULT_SIZE = (1024, 600)


class Harness:
    """Runs a scenario's steps against a running KioskApp, one Clock callback at a time."""

    def __init__(self, app: Any, kiosk: Any, scenario: dict[str, Any], result_path: Path) -> None:
        """Prepare the run."""
        from kivy.clock import Clock

        self.Clock = Clock
        self.app = app
        self.kiosk = kiosk
        self.scenario = scenario
        self.steps: list[dict[str, Any]] = list(scenario.get("steps", []))
        self.result_path = result_path
        self.i = 0
        self.done = False
        self.errors: list[str] = []
        self.targets_seen: list[dict[str, Any]] = []
        self.bench: dict[str, Any] | None = None
        self._wait: Wait | None = None
        self._then: Callable[[], Wait | None] | None = None
        self._mqtt: Any = None
        self.committed_at: float | None = None
        self.last_accepted = False
        self.growth: dict[str, Any] | None = None
        self.cold_start_s: float | None = None
        self.filler: Path | None = None

    # --- driving ---

    def start(self, *_: Any) -> None:
        """Begin once the app runs: first wait for the broker unless told otherwise."""
        from kivy.core.window import Window

        def drawn(*_a: Any) -> None:
            # Bound handlers run as the frame is flipped: the first screen is on display.
            if self.app.shown is not None and not self.app.redraw_pending:
                Window.unbind(on_flip=drawn)
                self.cold_start_s = round(process_age_s(), 3)
                log.info(
                    "first screen %s drawn %.3f s after start", self.app.shown, self.cold_start_s
                )

        Window.bind(on_flip=drawn)
        self.Clock.schedule_once(self._timeout, float(self.scenario.get("timeout", 120)))
        if self.scenario.get("connect", True):
            since: list[float] = []

            def ready() -> bool:
                if not self.kiosk.terminal.connected:
                    since.clear()
                    return False
                if not since:
                    since.append(time.monotonic())
                # Connected, then a moment for the SUBACK of config and cmd.
                return time.monotonic() - since[0] > 0.5

            self._wait = Wait(ready, 20, "broker connection")
            self.Clock.schedule_once(self._poll, 0.3)
        else:
            self.Clock.schedule_once(self._next, 0.5)

    def _timeout(self, _dt: float) -> None:
        """Fail a scenario that runs too long."""
        if not self.done:
            self.fail(f"scenario timed out at step {self.i}")

    def _next(self, *_: Any) -> None:
        """Run the next step."""
        if self.done:
            return
        if self.i >= len(self.steps):
            self.finish()
            return
        step = self.steps[self.i]
        self.i += 1
        log.info("step %d: %s", self.i, json.dumps(step, ensure_ascii=False)[:200])
        try:
            self._wait = self.run_step(step)
        except StepFailed as exc:
            self.fail(f"step {self.i} {step}: {exc}")
            return
        except Exception as exc:
            log.exception("step %d failed", self.i)
            self.fail(f"step {self.i} {step}: {type(exc).__name__}: {exc}")
            return
        if self._wait is None:
            self.Clock.schedule_once(self._next, float(self.scenario.get("step_gap_s", 0.1)))
        else:
            self.Clock.schedule_once(self._poll, 0)

    def _poll(self, *_: Any) -> None:
        """Check the current wait."""
        if self.done or self._wait is None:
            return
        w = self._wait
        try:
            ok = w.pred()
        except StepFailed as exc:
            self.fail(f"step {self.i}: {exc}")
            return
        if ok:
            self._wait = None
            self.Clock.schedule_once(self._next, float(self.scenario.get("step_gap_s", 0.1)))
        elif time.monotonic() > w.deadline:
            what = w.what() if callable(w.what) else w.what
            self.fail(f"step {self.i}: timed out after {w.timeout} s waiting for {what}")
        else:
            self.Clock.schedule_once(self._poll, 0.02)

    # --- steps ---

    def run_step(self, step: dict[str, Any]) -> Wait | None:
        """Run one step; return what to wait for, if anything."""
        (kind, arg), *rest = step.items()
        if rest:
            raise StepFailed(f"one action per step, got {list(step)}")
        handler = getattr(self, f"step_{kind}", None)
        if handler is None:
            raise StepFailed(f"unknown step {kind!r}")
        result: Wait | None = handler(arg)
        return result

    def target(self, name: str) -> Any:
        """The widget a scripted touch aims at: `{screen}/{name}` on the shown screen, or `name`."""
        targets = self.app.targets
        w = targets.get(f"{self.app.shown}/{name}") or targets.get(name)
        if w is None:
            raise StepFailed(f"no target {name!r} (have {sorted(targets)})")
        return w

    def touch_widget(self, w: Any) -> None:
        """A real touch (down, up) at the widget's centre in window coordinates."""
        from kivy.tests.common import UnitTestTouch

        x, y = w.to_window(*w.center)
        touch = UnitTestTouch(x, y)
        touch.touch_down()
        touch.touch_up()

    def step_touch(self, level: int) -> None:
        """Touch the key of `level`."""
        self.touch_widget(self.target(f"rating.{int(level)}"))

    def step_tap(self, name: str) -> None:
        """Touch a named target."""
        self.touch_widget(self.target(name))

    def step_reason(self, code: str) -> None:
        """Touch a follow-up reason."""
        self.touch_widget(self.target(f"reason.{code}"))

    def step_confirm_reasons(self, _arg: Any) -> None:
        """Touch the submit key of the reasons screen."""
        self.touch_widget(self.target("confirm_reasons"))

    def step_keys(self, text: str) -> None:
        """Type `text` (digits, "\\n" for Enter) as keyboard events."""
        from kivy.core.window import Window

        for ch in text:
            key = 13 if ch == "\n" else ord(ch)
            Window.dispatch("on_key_down", key, 0, None if ch == "\n" else ch, [])
            Window.dispatch("on_key_up", key, 0)

    def step_entry(self, text: str) -> None:
        """Type `text` by touching the keys of the on-screen keyboard (lower case, digits, ._:-)."""
        for ch in text:
            self.touch_widget(self.target(f"entry.key.{ch}"))

    def step_scan(self, text: str) -> None:
        """Text typed by a reader that types like a keyboard (QR/barcode scanner)."""
        from kivy.core.window import Window

        Window.dispatch("on_textinput", text)

    def step_expect_setup_error(self, name: str) -> None:
        """The setup form refused the field `name` (and shows why)."""
        form = self.app.setup_form
        if form is None or name not in form.errors:
            raise StepFailed(f"no setup error on {name!r}: {form.errors if form else None}")

    def step_expect_restart(self, timeout: float) -> Wait:
        """The setup was saved and the app asked for a fresh start: the scenario ends there."""
        return Wait(lambda: bool(self.app.restart_requested), float(timeout), "a restart request")

    def step_gpio(self, level: int) -> None:
        """Press and release a GPIO rating button (gpiozero mock pins)."""
        from gpiozero import Device

        gpio = self.kiosk.peripherals.gpio
        if gpio is None:
            raise StepFailed("no GPIO panel (WR_KIOSK_GPIO_FILE not set)")
        pins = gpio.pins
        pin = Device.pin_factory.pin(pins.rating_buttons[int(level)])
        if pins.pull_up:
            pin.drive_low()
            pin.drive_high()
        else:
            pin.drive_high()
            pin.drive_low()

    def step_wait(self, seconds: float) -> Wait:
        """Let time pass."""
        end = time.monotonic() + float(seconds)
        return Wait(lambda: time.monotonic() >= end, float(seconds) + 5, "time to pass")

    def step_expect_screen(self, arg: Any) -> Wait:
        """Wait for a screen."""
        name, timeout = (arg, 5.0) if isinstance(arg, str) else (arg["screen"], arg["timeout"])
        return Wait(
            lambda: self.app.shown == name and not self.app.redraw_pending,
            float(timeout),
            lambda: f"screen {name} (shown: {self.app.shown})",
        )

    def step_expect_outbox(self, n: int) -> Wait:
        """Exactly `n` ratings committed so far."""

        def check() -> bool:
            seq = self.kiosk.terminal.outbox.last_seq()
            if seq > n:
                raise StepFailed(f"{seq} ratings in the outbox, expected {n}")
            return bool(seq == n)

        return Wait(check, 3, f"{n} ratings in the outbox")

    def step_expect_offline(self, shown: bool) -> Wait:
        """The offline badge is shown (or not)."""
        return Wait(lambda: self.app.offline_shown == bool(shown), 10, f"offline badge {shown}")

    def step_assert_label(self, arg: list[Any]) -> Wait:
        """The key of a level reads `text`."""
        level, text = int(arg[0]), str(arg[1])

        def check() -> bool:
            w = self.app.targets.get(f"rating.{level}")
            return w is not None and w.label.text == text and not self.app.redraw_pending

        return Wait(check, 5, lambda: f"key {level} to read {text!r} (labels: {self.labels()})")

    def step_check_targets(self, _arg: Any) -> None:
        """Every rating or reason key on screen is at least MIN_TARGET_MM on its shorter side."""
        from kivy.metrics import mm

        from kiosk.ui.theme import MIN_TARGET_MM

        need = mm(MIN_TARGET_MM)
        prefix = {"rating": "rating.", "reasons": "reason."}.get(self.app.shown or "", "")
        if not prefix:
            raise StepFailed(f"no keys to check on screen {self.app.shown}")
        sizes = {
            k: [round(w.width), round(w.height)]
            for k, w in self.app.targets.items()
            if k.startswith(prefix)
        }
        self.targets_seen.append(
            {"screen": self.app.shown, "min_px": round(need, 1), "keys": sizes}
        )
        small = {k: s for k, s in sizes.items() if min(s) < need}
        if small or not sizes:
            raise StepFailed(f"keys under {MIN_TARGET_MM} mm ({need:.0f} px): {small or sizes}")

    def step_screenshot(self, path: str) -> Wait:
        """Save the window as a PNG once the next frame is drawn."""
        from kivy.core.window import Window

        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        done: list[bool] = []

        def on_flip(*_: Any) -> None:
            # Bound handlers run before the window's own flip: the back buffer holds this frame.
            Window.unbind(on_flip=on_flip)
            with tempfile.TemporaryDirectory() as tmp:
                saved = Window.screenshot(name=str(Path(tmp) / "shot.png"))
                shutil.move(saved, target)
            log.info("screenshot %s", target)
            done.append(True)

        def arm() -> bool:
            if self.app.redraw_pending:
                return False
            if not armed:
                armed.append(True)
                Window.bind(on_flip=on_flip)
                Window.canvas.ask_update()
            return bool(done)

        armed: list[bool] = []
        return Wait(arm, 10, f"screenshot {path}")

    def _client(self) -> Any:
        """A paho client to the kiosk's broker (made on first use)."""
        if self._mqtt is None:
            from common.mqtt import make_client

            s = self.kiosk.settings
            self._mqtt = make_client(s.mqtt, client_id=f"harness-{s.device}", paho_logging=False)
            self._mqtt.connect(s.mqtt.host, s.mqtt.port)
            self._mqtt.loop_start()
        return self._mqtt

    def _topic(self, kind: str) -> str:
        """The device's topic of `kind`."""
        from protocol.topics import Topic, TopicKind

        s = self.kiosk.settings
        return str(Topic(s.hall, s.device, TopicKind(kind), s.mqtt.prefix))

    def step_publish_config(self, doc: dict[str, Any]) -> Wait:
        """Publish a retained config and wait until the session runs it."""
        from protocol.messages import DeviceConfig

        config = DeviceConfig.model_validate(doc, strict=False)
        info = self._client().publish(
            self._topic("config"), config.model_dump_json(), qos=1, retain=True
        )
        info.wait_for_publish(5)
        return Wait(
            lambda: self.kiosk.terminal.session.config == config and not self.app.redraw_pending,
            10,
            "config applied",
        )

    def step_publish_cmd(self, doc: dict[str, Any]) -> None:
        """Publish a command (id and ts filled in)."""
        import uuid6

        from protocol.messages import Command

        cmd = Command.model_validate(
            {"id": str(uuid6.uuid7()), "ts": int(time.time() * 1000), **doc}, strict=False
        )
        info = self._client().publish(self._topic("cmd"), cmd.model_dump_json(), qos=1)
        info.wait_for_publish(5)

    def step_wait_drained(self, timeout: float) -> Wait:
        """Wait until every rating and event has its PUBACK."""
        outbox = self.kiosk.terminal.outbox
        return Wait(
            lambda: outbox.backlog() == 0 and not outbox.pending_events(1, set()),
            float(timeout),
            "outbox drained",
        )

    def step_fill_disk(self, _arg: Any) -> None:
        """Fill the data directory's file system with a filler file (as another program would)."""
        self.filler = self.kiosk.terminal.data_dir / "filler.bin"
        fill_disk(self.filler)

    def step_free_disk(self, _arg: Any) -> None:
        """Delete the filler file."""
        if self.filler is not None:
            self.filler.unlink(missing_ok=True)

    def step_expect_text(self, text: str) -> Wait:
        """A label on the shown screen contains `text`."""

        def texts() -> list[str]:
            screen = self.app.screens.get(self.app.shown or "")
            return [str(w.text) for w in screen.walk() if hasattr(w, "text")] if screen else []

        return Wait(
            lambda: not self.app.redraw_pending and any(text in t for t in texts()),
            5,
            lambda: f"{text!r} on screen {self.app.shown} (texts: {texts()})",
        )

    def step_growth(self, arg: dict[str, Any]) -> Wait:
        """Press `presses` times through the app's handlers, many per frame; RSS before/after."""
        return growth_bench(self, arg)

    def step_bench(self, arg: dict[str, Any]) -> Wait:
        """Touch rating keys `presses` times; time each from touch-down to the outbox commit."""
        return touch_bench(self, arg)

    # --- the end ---

    def labels(self) -> dict[str, str]:
        """Level → text of the rating keys now."""
        return {
            k.split(".", 1)[1]: w.label.text
            for k, w in self.app.targets.items()
            if k.startswith("rating.")
        }

    def fail(self, message: str) -> None:
        """Record a failed expectation, save a screenshot of it and stop."""
        log.error("FAILED: %s", message)
        self.errors.append(message)
        try:
            from kivy.core.window import Window

            with tempfile.TemporaryDirectory() as tmp:
                saved = Window.screenshot(name=str(Path(tmp) / "fail.png"))
                shutil.move(saved, self.result_path.with_suffix(".fail.png"))
        except Exception:
            log.exception("no failure screenshot")
        self.finish()

    def finish(self) -> None:
        """Write the result file and stop the app."""
        if self.done:
            return
        self.done = True
        last_seq, rows = read_outbox(self.kiosk.terminal.outbox_path)
        result = {
            "ok": not self.errors,
            "errors": self.errors,
            "steps_done": self.i,
            "screens": list(self.app.screen_history),
            "shown": self.app.shown,
            "last_seq": last_seq,
            "backlog": sum(1 for r in rows if not r["acked"]),
            "outbox": rows,
            "labels": self.labels(),
            "targets": self.targets_seen,
            "bench": self.bench,
            "growth": self.growth,
            "cold_start_s": self.cold_start_s,
            "memory_kb": memory_kb(),
            "restart_requested": self.app.restart_requested,
            "setup_message": self.app.setup_message(self.app._lang) if self.app.setup_open else "",
        }
        self.result_path.parent.mkdir(parents=True, exist_ok=True)
        self.result_path.write_text(json.dumps(result, ensure_ascii=False, indent=2))
        if self._mqtt is not None:
            self._mqtt.disconnect()
            self._mqtt.loop_stop()
            self._mqtt = None
        self.app.stop()


def main(argv: list[str] | None = None) -> int:
    """Run a scenario file; exit status 0 when every expectation held."""
    parser = argparse.ArgumentParser(
        prog="python -m devstack.kiosk_driver", description=__doc__.split("\n")[0]
    )
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--result", type=Path, default=None, help="result file (JSON)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("WR_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    scenario = json.loads(args.scenario.read_text())
    result_path = args.result or Path(
        scenario.get("result") or args.scenario.with_suffix(".result.json")
    )

    from kiosk.core.local_setup import effective
    from kiosk.device import Kiosk
    from kiosk.main import prepare_kivy
    from kiosk.settings import KioskSettings

    settings = effective(KioskSettings()).model_copy(update={"fullscreen": False})
    width, height = scenario.get("size", DEFAULT_SIZE)
    prepare_kivy(fullscreen=False, size=(int(width), int(height)))
    from kiosk.ui.app import KioskApp

    kiosk = Kiosk(
        settings,
        thanks_s=float(scenario.get("thanks_s", 2.0)),
        reasons_timeout_s=float(scenario.get("reasons_timeout_s", 10.0)),
    )
    app = KioskApp(kiosk, tick_s=float(scenario.get("tick_s", 0.1)))
    harness = Harness(app, kiosk, scenario, result_path)
    app.bind(on_start=harness.start)
    try:
        app.run()
    finally:
        kiosk.stop()
    if not harness.done:
        # The app stops itself after a saved setup: fine if only `expect_restart` was left.
        left = harness.steps[harness.i - 1 if harness._wait is not None else harness.i :]
        if not (app.restart_requested and all(set(st) == {"expect_restart"} for st in left)):
            harness.errors.append("the app stopped before the scenario finished")
        harness.finish()
    return 0 if not harness.errors else 1


if __name__ == "__main__":
    sys.exit(main())
