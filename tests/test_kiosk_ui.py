"""The real Kivy kiosk app in a window under Xvfb, driven by real touches, on a real broker.

Each test runs `python -m devstack.kiosk_driver` (the same Kiosk and KioskApp as `windowrate kiosk`)
as a child process with a fresh data directory; the run saves a screenshot of every screen in
Chinese and English as {screen}-{lang}.png in the `screenshot_dir` fixture's directory (a
temporary one unless WR_SCREENSHOTS_DIR names another, e.g. docs/screenshots/).
"""

import json
import os
import signal
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from devstack.services import Mosquitto, die_with_parent, free_port
from devstack.xvfb import Xvfb
from kiosk.core.identity import identity_dir
from tests.support import CHILDREN, REPO, raw_client, wait_until
from tests.test_broker_security import Client
from tests.test_provisioning import Centre, Https, centre, https  # noqa: F401 (fixtures)

HALL, DEVICE = "hz-civic", "k-0042"
REASONS = [
    {"code": "waiting", "zh": "等候时间长", "en": "Long wait"},
    {"code": "attitude", "zh": "服务态度不好", "en": "Unfriendly staff"},
    {"code": "process", "zh": "办事流程繁琐", "en": "Complicated procedure"},
    {"code": "explain", "zh": "政策解释不清楚", "en": "Unclear explanation"},
    {"code": "materials", "zh": "材料要求反复", "en": "Documents asked again"},
    {"code": "other", "zh": "其他", "en": "Other"},
]
STAFF = [{"staff": "0457", "name": "王芳"}, {"staff": "0458", "name": "李强"}]
WINDOW_NAME = {"zh": "不动产登记", "en": "Real estate registration"}


def state_dir(tmp_path: Path) -> Path:
    """Where the test device's outbox and cached config live."""
    return identity_dir(tmp_path / "kiosk", HALL, DEVICE)


def config(**changes: Any) -> dict[str, Any]:
    """A DeviceConfig document for the test device."""
    doc: dict[str, Any] = {"window": "a12", "window_name": "不动产登记", "scale": 5}
    doc.update(changes)
    return doc


@pytest.fixture(scope="session")
def display(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An Xvfb on a free display number for the whole session."""
    x = Xvfb("1280x800x24", log_path=tmp_path_factory.mktemp("xvfb") / "xvfb.log")
    yield x.start()
    x.stop()


class Listener:
    """Everything the device publishes, as seen by a subscriber on the real broker."""

    def __init__(self, port: int) -> None:
        """Subscribe to the device's rating, event and status topics."""
        self.lock = threading.Lock()
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.subscribed = threading.Event()
        self.client = raw_client(port, "ui-test-listener")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        base = f"wr/v1/{HALL}/{DEVICE}"
        self.client.subscribe([(f"{base}/rating", 1), (f"{base}/event", 1), (f"{base}/status", 1)])
        assert self.subscribed.wait(10)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        """Keep the message."""
        with self.lock:
            self.messages.append((msg.topic.rsplit("/", 1)[1], json.loads(msg.payload)))

    def of(self, kind: str) -> list[dict[str, Any]]:
        """Messages of `kind` (rating, event, status) so far."""
        with self.lock:
            return [doc for k, doc in self.messages if k == kind]

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def listener(broker: Mosquitto) -> Iterator[Listener]:
    """A subscriber on the device's topics."""
    lst = Listener(broker.port)
    yield lst
    lst.close()


def run_kiosk(
    display: str,
    tmp_path: Path,
    port: int,
    steps: list[dict[str, Any]],
    env: dict[str, str] | None = None,
    timeout: float = 90,
    **scenario: Any,
) -> dict[str, Any]:
    """Run the harness with `steps`; return its result, failing the test on a failed step."""
    scenario_path = tmp_path / "scenario.json"
    result_path = tmp_path / "result.json"
    scenario_path.write_text(json.dumps({"steps": steps, **scenario}, ensure_ascii=False))
    e = {k: v for k, v in os.environ.items() if not k.startswith("WR_KIOSK_")}
    e.update(
        {
            "DISPLAY": display,
            "KIVY_HOME": str(tmp_path / "kivy"),
            "WR_KIOSK_DATA_DIR": str(tmp_path / "kiosk"),
            "WR_KIOSK_MQTT__PORT": str(port),
            "WR_KIOSK_HALL": HALL,
            "WR_KIOSK_DEVICE": DEVICE,
            "WR_KIOSK_TRUST_WALL_CLOCK": "true",
            "SDL_AUDIODRIVER": "dummy",  # voice prompts play into SDL's null device
        }
    )
    e.update(env or {})
    log_path = tmp_path / "kiosk.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devstack.kiosk_driver",
                str(scenario_path),
                "--result",
                str(result_path),
            ],
            cwd=REPO,
            env=e,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
    CHILDREN.append(proc)
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = -9
    tail = log_path.read_text(errors="replace")[-4000:]
    assert result_path.exists(), f"harness exited {rc} without a result:\n{tail}"
    result: dict[str, Any] = json.loads(result_path.read_text())
    assert rc == 0 and result["ok"], f"harness exit {rc}: {result['errors']}\n{tail}"
    return result


def test_touch_commits_to_outbox_and_reaches_broker(
    display: str, tmp_path: Path, broker: Mosquitto, listener: Listener
) -> None:
    """A touch on a rating key is one committed outbox row and one RatingEvent on the broker."""
    result = run_kiosk(
        display,
        tmp_path,
        broker.port,
        [
            {"publish_config": config()},
            {"expect_screen": "rating"},
            {"assert_label": [5, "非常满意"]},
            {"assert_label": [1, "非常不满意"]},
            {"check_targets": True},
            {"touch": 4},
            {"expect_screen": "thanks"},
            {"expect_outbox": 1},
            {"wait_drained": 15},
        ],
    )
    (row,) = result["outbox"]
    assert (row["seq"], row["level"], row["input"], row["prompted"]) == (1, 4, "touch", False)
    assert result["screens"][-2:] == ["rating", "thanks"]
    (rating,) = wait_until(lambda: listener.of("rating"), 10, what="rating on the broker")
    assert rating["id"] == row["id"] and rating["seq"] == 1 and rating["level"] == 4
    assert (rating["hall"], rating["device"], rating["window"]) == (HALL, DEVICE, "a12")
    assert rating["scale"] == 5 and rating["input"] == "touch" and rating["reasons"] == []
    # Keys are at least 20 mm on their shorter side (kivy.metrics.mm at the display's dpi).
    (measured,) = result["targets"]
    assert all(min(size) >= measured["min_px"] for size in measured["keys"].values())
    assert list(measured["keys"]) == [f"rating.{lv}" for lv in (5, 4, 3, 2, 1)]


def test_follow_up_reasons_reach_the_broker(
    display: str, tmp_path: Path, broker: Mosquitto, listener: Listener
) -> None:
    """Negative rating → reasons → the chosen reason is in the RatingEvent; a timeout sends none."""
    result = run_kiosk(
        display,
        tmp_path,
        broker.port,
        [
            {"publish_config": config(reasons=REASONS, repeat_interval_s=0)},
            {"wait": 1.5},  # voice prompts are made in the background at start
            {"touch": 2},
            {"expect_screen": "reasons"},
            {"check_targets": True},
            {"reason": "waiting"},
            {"reason": "attitude"},
            {"reason": "attitude"},  # touched twice: chosen, then unchosen
            {"confirm_reasons": True},
            {"expect_screen": "thanks"},
            {"expect_screen": {"screen": "rating", "timeout": 5}},
            {"touch": 1},
            {"expect_screen": "reasons"},
            {"wait": 2.5},
            {"expect_screen": "rating"},
            {"expect_outbox": 2},
            {"wait_drained": 15},
        ],
        reasons_timeout_s=2.0,
    )
    assert [r["reasons"] for r in result["outbox"]] == [["waiting"], []]
    log_text = (tmp_path / "kiosk.log").read_text(errors="replace")
    assert "playing" in log_text and "thanks-zh.wav" in log_text  # the spoken thank-you
    ratings = wait_until(lambda: len(listener.of("rating")) == 2 and listener.of("rating"), 10)
    by_seq = {r["seq"]: r for r in ratings}
    assert by_seq[1]["level"] == 2 and by_seq[1]["reasons"] == ["waiting"]
    assert by_seq[2]["level"] == 1 and by_seq[2]["reasons"] == []
    events = [e["type"] for e in listener.of("event")]
    assert "reasons_timeout" in events


def test_per_service_takes_one_rating_per_prompt_and_times_out(
    display: str, tmp_path: Path, broker: Mosquitto, listener: Listener
) -> None:
    """一次一评: a prompt takes one rating (bound to ticket, item, clerk), then times out."""
    result = run_kiosk(
        display,
        tmp_path,
        broker.port,
        [
            {"publish_config": config(prompt_mode="per_service", prompt_timeout_s=5, staff=STAFF)},
            {"expect_screen": "welcome"},
            {"keys": "0457\n"},  # the clerk's badge
            {"publish_cmd": {"cmd": "prompt", "ticket": "A0123", "item": "330100-001"}},
            {"expect_screen": "rating"},
            {"touch": 5},
            {"touch": 5},  # a second touch before the screen changed
            {"expect_screen": "thanks"},
            {"touch": 5},  # where the key was: the thank-you screen takes nothing
            {"expect_outbox": 1},
            {"expect_screen": {"screen": "welcome", "timeout": 5}},
            {"publish_cmd": {"cmd": "prompt", "ticket": "A0124"}},
            {"expect_screen": "rating"},
            {"wait": 5.5},
            {"expect_screen": "welcome"},
            {"touch": 3},  # no prompt open: nothing
            {"expect_outbox": 1},
            {"wait_drained": 15},
        ],
    )
    (row,) = result["outbox"]
    assert row["prompted"] and row["ticket"] == "A0123" and row["item"] == "330100-001"
    assert row["staff"] == "0457"
    assert result["screens"] == [
        "rating",
        "welcome",
        "rating",
        "thanks",
        "welcome",
        "rating",
        "welcome",
    ]
    (rating,) = wait_until(lambda: listener.of("rating"), 10)
    assert rating["ticket"] == "A0123" and rating["staff"] == "0457" and rating["level"] == 5
    events = wait_until(
        lambda: (ev := [e["type"] for e in listener.of("event")]) and "prompt_timeout" in ev and ev,
        10,
    )
    assert events.count("prompt_shown") == 2 and "staff_login" in events


def test_paused_refuses_ratings(
    display: str, tmp_path: Path, broker: Mosquitto, listener: Listener
) -> None:
    """While paused (cmd pause) no touch becomes a rating; resume takes them again."""
    result = run_kiosk(
        display,
        tmp_path,
        broker.port,
        [
            {"publish_config": config()},
            {"expect_screen": "rating"},
            {"publish_cmd": {"cmd": "pause"}},
            {"expect_screen": "paused"},
            {"touch": 5},
            {"touch": 1},
            {"wait": 0.3},
            {"expect_outbox": 0},
            {"publish_cmd": {"cmd": "resume"}},
            {"expect_screen": "rating"},
            {"touch": 5},
            {"expect_outbox": 1},
            {"wait_drained": 15},
        ],
    )
    assert result["screens"] == ["rating", "paused", "rating", "thanks"]
    assert [r["level"] for r in result["outbox"]] == [5]
    states = [s["state"] for s in listener.of("status")]
    assert "paused" in states
    events = [e["type"] for e in listener.of("event")]
    assert events.index("pause") < events.index("resume")


def test_config_over_mqtt_relabels_the_keys_live(
    display: str, tmp_path: Path, broker: Mosquitto, listener: Listener, screenshot_dir: Path
) -> None:
    """Scale 5 → 3 and zh → en from the retained config topic, without a restart; cached to disk."""
    result = run_kiosk(
        display,
        tmp_path,
        broker.port,
        [
            {"publish_config": config()},
            {"assert_label": [5, "非常满意"]},
            {"publish_config": config(scale=3)},
            {"assert_label": [3, "满意"]},
            {"assert_label": [2, "基本满意"]},
            {"assert_label": [1, "不满意"]},
            {"check_targets": True},
            {"screenshot": str(screenshot_dir / "rating3-zh.png")},
            {"publish_config": config(scale=3, language="en", window_name=WINDOW_NAME["en"])},
            {"assert_label": [3, "Satisfied"]},
            {"assert_label": [2, "Fairly satisfied"]},
            {"assert_label": [1, "Dissatisfied"]},
            {"screenshot": str(screenshot_dir / "rating3-en.png")},
            {"touch": 3},
            {"expect_outbox": 1},
            {"wait_drained": 15},
        ],
    )
    assert result["labels"] == {"3": "Satisfied", "2": "Fairly satisfied", "1": "Dissatisfied"}
    (rating,) = wait_until(lambda: listener.of("rating"), 10)
    assert rating["scale"] == 3 and rating["level"] == 3
    cached = json.loads((state_dir(tmp_path) / "config.json").read_text())
    assert cached["scale"] == 3 and cached["language"] == "en"


def silhouette_png(w: int = 120, h: int = 160) -> bytes:
    """A small placeholder portrait (grey head and shoulders) as PNG, made without Pillow."""
    rows = []
    for y in range(h):
        row = bytearray([0])  # filter byte
        for x in range(w):
            head = (x - w / 2) ** 2 + (y - h * 0.36) ** 2 < (w * 0.22) ** 2
            body = y > h * 0.62 and abs(x - w / 2) < w * 0.42 - (h - y) * 0.3
            row += bytes((120, 130, 140) if head or body else (225, 232, 240))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_screen_in_both_languages(
    display: str,
    tmp_path: Path,
    broker: Mosquitto,
    listener: Listener,
    lang: str,
    screenshot_dir: Path,
) -> None:
    """A tour of every screen, with screenshots: welcome, keypad, setup, rating, reasons, …"""
    shot = {
        name: str(screenshot_dir / f"{name}-{lang}.png")
        for name in (
            "welcome",
            "keypad",
            "setup",
            "setup_entry",
            "rating5",
            "reasons",
            "thanks",
            "paused",
            "identify",
        )
    }
    photos = tmp_path / "kiosk" / "photos"
    photos.mkdir(parents=True)
    (photos / "0457.png").write_bytes(silhouette_png())  # the clerk's photo on welcome
    cfg = config(
        prompt_mode="per_service",
        language=lang,
        window_name=WINDOW_NAME[lang],
        reasons=REASONS,
        staff=[{"staff": "0457", "name": "王芳" if lang == "zh" else "Wang Fang"}],
    )
    result = run_kiosk(
        display,
        tmp_path,
        broker.port,
        [
            {"publish_config": cfg},
            {"keys": "0457\n"},
            {"expect_screen": "welcome"},
            {"wait": 0.2},
            {"screenshot": shot["welcome"]},
            {"tap": "staff_button"},
            {"tap": "keypad.0"},
            {"tap": "keypad.4"},
            {"tap": "keypad.5"},
            {"screenshot": shot["keypad"]},
            {"tap": "keypad.cancel"},
            {"tap": "setup_button"},
            *[{"tap": f"keypad.{d}"} for d in "2468"],
            {"tap": "keypad.ok"},
            {"expect_screen": "setup"},
            {"screenshot": shot["setup"]},
            {"tap": "setup.host"},
            {"screenshot": shot["setup_entry"]},
            {"tap": "entry.cancel"},
            {"tap": "setup.close"},
            {"expect_screen": "welcome"},
            {"publish_cmd": {"cmd": "prompt", "ticket": "A0123", "item": "330100-001"}},
            {"expect_screen": "rating"},
            {"check_targets": True},
            {"screenshot": shot["rating5"]},
            {"touch": 1},
            {"expect_screen": "reasons"},
            {"reason": "waiting"},
            {"reason": "process"},
            {"screenshot": shot["reasons"]},
            {"confirm_reasons": True},
            {"expect_screen": "thanks"},
            {"screenshot": shot["thanks"]},
            {"publish_cmd": {"cmd": "pause"}},
            {"expect_screen": "paused"},
            {"screenshot": shot["paused"]},
            {"publish_cmd": {"cmd": "resume"}},
            {"expect_screen": "welcome"},
            {"publish_cmd": {"cmd": "identify"}},
            {"wait": 0.5},
            {"screenshot": shot["identify"]},
            {"wait_drained": 15},
        ],
        env={"WR_KIOSK_SETUP_PIN": "2468"},
    )
    assert result["screens"] == [
        "rating",
        "welcome",
        "setup",
        "welcome",
        "rating",
        "reasons",
        "thanks",
        "paused",
        "welcome",
    ]
    (row,) = result["outbox"]
    assert row["level"] == 1 and sorted(row["reasons"]) == ["process", "waiting"]
    (rating,) = wait_until(lambda: listener.of("rating"), 10)
    assert sorted(rating["reasons"]) == ["process", "waiting"] and rating["staff"] == "0457"
    for path in shot.values():
        assert Path(path).stat().st_size > 10_000, path


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_offline_indicator_counts_ratings_waiting(
    display: str, tmp_path: Path, lang: str, screenshot_dir: Path
) -> None:
    """No broker: ratings still go into the outbox and the corner shows how many wait.

    Chinese comes from the settings; English from the config cached by an earlier run.
    """
    env = {"WR_KIOSK_LANGUAGE": "zh"}
    if lang == "en":
        state_dir(tmp_path).mkdir(parents=True)
        (state_dir(tmp_path) / "config.json").write_text(json.dumps(config(language="en")))
    result = run_kiosk(
        display,
        tmp_path,
        free_port(),  # nothing listens there
        [
            {"expect_screen": "rating"},
            *[
                step
                for level in (5, 3, 2)
                for step in (
                    {"touch": level},
                    {"expect_screen": "thanks"},
                    {"expect_screen": "rating"},
                )
            ],
            {"expect_offline": True},
            {"expect_outbox": 3},
            {"screenshot": str(screenshot_dir / f"offline-{lang}.png")},
        ],
        env=env,
        connect=False,
        thanks_s=1.5,  # seen even at the few frames/s of software GL on a busy machine
    )
    assert result["backlog"] == 3 and [r["level"] for r in result["outbox"]] == [5, 3, 2]
    assert result["labels"]["5"] == ("Very satisfied" if lang == "en" else "非常满意")
    assert {r["input"] for r in result["outbox"]} == {"touch"}


def test_windowrate_kiosk_command_runs_and_stops(
    display: str, tmp_path: Path, broker: Mosquitto, listener: Listener
) -> None:
    """`windowrate kiosk` opens the app, goes online, and says offline on SIGTERM."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WR_KIOSK_")}
    env.update(
        {
            "DISPLAY": display,
            "KIVY_HOME": str(tmp_path / "kivy"),
            "WR_KIOSK_DATA_DIR": str(tmp_path / "kiosk"),
            "WR_KIOSK_MQTT__PORT": str(broker.port),
            "WR_KIOSK_HALL": HALL,
            "WR_KIOSK_DEVICE": DEVICE,
            "WR_KIOSK_FULLSCREEN": "false",
        }
    )
    with open(tmp_path / "kiosk.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "windowrate", "kiosk"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
    CHILDREN.append(proc)
    wait_until(
        lambda: [s for s in listener.of("status") if s["state"] == "online"], 30, what="online"
    )
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, (tmp_path / "kiosk.log").read_text(errors="replace")[-3000:]
    assert listener.of("status")[-1]["state"] == "offline"


def test_gpio_button_press_is_a_rating(
    display: str, tmp_path: Path, broker: Mosquitto, listener: Listener
) -> None:
    """The app wires the GPIO panel (gpiozero mock pins): a button press is a `button` rating."""
    pins = tmp_path / "gpio.toml"
    pins.write_text((REPO / "kiosk" / "gpio.toml.sample").read_text())
    result = run_kiosk(
        display,
        tmp_path,
        broker.port,
        [
            {"publish_config": config()},
            {"gpio": 4},
            {"expect_screen": "thanks"},
            {"expect_outbox": 1},
            {"wait_drained": 15},
        ],
        env={"WR_KIOSK_GPIO_FILE": str(pins), "GPIOZERO_PIN_FACTORY": "mock"},
    )
    (row,) = result["outbox"]
    assert row["input"] == "button" and row["level"] == 4
    (rating,) = wait_until(lambda: listener.of("rating"), 10)
    assert rating["input"] == "button"


def test_setup_screen_fixes_the_broker_and_nothing_is_lost(
    display: str, tmp_path: Path, broker: Mosquitto, listener: Listener
) -> None:
    """A kiosk set to a wrong port takes a rating offline; the setup screen (PIN) refuses a
    device change while it waits, saves the right port, restarts, and the rating arrives once."""
    dead_port = free_port()
    env = {"WR_KIOSK_SETUP_PIN": "2468", "WR_KIOSK_MQTT__PORT": str(dead_port)}
    first = run_kiosk(
        display,
        tmp_path,
        dead_port,
        [
            {"expect_screen": "rating"},
            {"wait": 0.5},
            {"touch": 4},
            {"expect_outbox": 1},
            {"expect_screen": "rating"},
            {"tap": "setup_button"},
            *[{"tap": f"keypad.{d}"} for d in "2468"],
            {"tap": "keypad.ok"},
            {"expect_screen": "setup"},
            {"tap": "setup.device"},
            {"tap": "entry.clear"},
            {"entry": "k-0099"},
            {"tap": "entry.ok"},
            {"tap": "setup.save"},
            {"expect_setup_error": "device"},
            {"tap": "setup.device"},
            {"tap": "entry.clear"},
            {"entry": DEVICE},
            {"tap": "entry.ok"},
            {"tap": "setup.port"},
            {"tap": "entry.clear"},
            {"entry": "0"},
            {"tap": "entry.ok"},
            {"tap": "setup.save"},
            {"expect_setup_error": "port"},
            {"tap": "setup.port"},
            {"tap": "entry.clear"},
            {"entry": str(broker.port)},
            {"tap": "entry.ok"},
            {"tap": "setup.save"},
            {"expect_restart": 5},
        ],
        env=env,
        connect=False,
        thanks_s=0.3,
    )
    assert first["restart_requested"] and first["backlog"] == 1
    saved_path = tmp_path / "kiosk" / "setup.json"
    saved = json.loads(saved_path.read_text())
    assert saved == {"hall": HALL, "device": DEVICE, "host": "127.0.0.1", "port": broker.port}
    assert saved_path.stat().st_mode & 0o777 == 0o600
    assert listener.of("rating") == []
    # The restart: the same environment (still the dead port); setup.json wins.
    second = run_kiosk(display, tmp_path, dead_port, [{"wait_drained": 15}], env=env)
    assert second["backlog"] == 0 and second["last_seq"] == 1
    (rating,) = wait_until(lambda: listener.of("rating"), 10)
    assert rating["level"] == 4 and rating["seq"] == 1


def test_setup_screen_redeems_a_scanned_provisioning_code(
    display: str,
    tmp_path: Path,
    centre: Centre,  # noqa: F811 (the fixture imported above)
    https: Https,  # noqa: F811
) -> None:
    """The technician scans the code's QR on the setup screen: the kiosk redeems it over HTTPS,
    restarts as the new device and delivers over TLS with its own login."""
    issued = https.issue("k-0077")
    qr = f"WR1;{https.srv.url};{issued['code']};{issued['ca_fingerprint']}"
    dead_port = free_port()
    env = {"WR_KIOSK_SETUP_PIN": "2468", "WR_KIOSK_MQTT__PORT": str(dead_port)}
    first = run_kiosk(
        display,
        tmp_path,
        dead_port,
        [
            {"expect_screen": "rating"},
            {"tap": "setup_button"},
            *[{"tap": f"keypad.{d}"} for d in "2468"],
            {"tap": "keypad.ok"},
            {"expect_screen": "setup"},
            {"tap": "setup.provision"},
            {"scan": qr},
            {"tap": "entry.ok"},
            {"expect_restart": 20},
        ],
        env=env,
        connect=False,
    )
    assert first["restart_requested"]
    saved = json.loads((tmp_path / "kiosk" / "setup.json").read_text())
    assert (saved["hall"], saved["device"], saved["username"]) == ("hz-civic", "k-0077", "k-0077")
    assert saved["port"] == centre.prov.broker_port and saved["tls_ca"].endswith("hall-ca.crt")
    watch = Client(centre.broker.port, "server", centre.env["SERVER_PW"], client_id="ui-watch")
    watch.subscribe("wr/v1/hz-civic/k-0077/rating")
    second = run_kiosk(display, tmp_path, dead_port, [{"touch": 5}, {"wait_drained": 15}], env=env)
    assert second["last_seq"] == 1 and second["backlog"] == 0
    wait_until(lambda: watch.topics(), 10)
    watch.close()
