"""KioskSession: the terminal's behaviour without a window, on a real outbox."""

import json
from pathlib import Path

import pytest

from kiosk.core.outbox import Outbox
from kiosk.core.recorder import Identity, Recorder
from kiosk.core.session import KioskSession, Refusal, Screen
from protocol.messages import FLAG_REPEAT, DeviceConfig, ReasonOption, StaffEntry


class FakeClock:
    """A settable monotonic + wall clock (the session's and recorder's time seams)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def wall_ms(self) -> int:
        return 1_763_880_000_000 + int(self.t * 1000)

    def mono_ns(self) -> int:
        return int(self.t * 1e9)

    def synced(self) -> bool:
        return True

    def boot_id(self) -> str:
        return "boot"


REASONS = [
    ReasonOption(code="waiting", zh="等候时间长", en="Long wait"),
    ReasonOption(code="attitude", zh="服务态度", en="Attitude"),
]


def make(tmp_path: Path, **cfg: object) -> tuple[KioskSession, Outbox, FakeClock]:
    """A session on a fresh outbox with the given config."""
    clock = FakeClock()
    outbox = Outbox(tmp_path / "outbox.sqlite")
    recorder = Recorder(outbox, Identity("h1", "k-0001", "a01"), clock)
    config = DeviceConfig.model_validate({"window": "a01", **cfg})
    return KioskSession(recorder, config, clock=clock), outbox, clock


def drafts(outbox: Outbox) -> list[dict[str, object]]:
    """Every rating draft in the outbox (pending ones only)."""
    return [r.draft for r in outbox.pending_ratings(1000, set())]


def test_always_mode_takes_a_press_and_thanks(tmp_path: Path) -> None:
    s, outbox, clock = make(tmp_path)
    assert s.screen is Screen.RATING
    r = s.press(5, "touch")
    assert r.accepted and not r.repeat
    assert s.screen is Screen.THANKS
    (d,) = drafts(outbox)
    assert d["level"] == 5 and d["prompted"] is False and d["reasons"] == []
    clock.t += 2.1
    s.tick()
    assert s.screen is Screen.RATING


def test_repeat_within_interval_is_kept_and_flagged(tmp_path: Path) -> None:
    s, outbox, clock = make(tmp_path, repeat_interval_s=10)
    s.press(5, "touch")
    clock.t += 3
    r = s.press(5, "button")
    assert r.accepted and r.repeat
    clock.t += 11
    assert not s.press(4, "touch").repeat
    assert [d["reasons"] for d in drafts(outbox)] == [[], [FLAG_REPEAT], []]


def test_negative_rating_is_held_until_reasons_are_chosen(tmp_path: Path) -> None:
    s, outbox, _clock = make(tmp_path, reasons=[r.model_dump() for r in REASONS])
    r = s.press(1, "touch")
    assert r.accepted and s.screen is Screen.REASONS
    assert outbox.backlog() == 1 and drafts(outbox) == []  # on disk, not yet sendable
    s.choose_reasons(["waiting", "not-offered"])
    assert s.screen is Screen.THANKS
    (d,) = drafts(outbox)
    assert d["reasons"] == ["waiting"]


def test_reasons_timeout_sends_without_reasons(tmp_path: Path) -> None:
    s, outbox, clock = make(tmp_path, reasons=[r.model_dump() for r in REASONS])
    s.press(2, "touch")
    clock.t += 11
    s.tick()
    assert s.screen is Screen.RATING
    (d,) = drafts(outbox)
    assert d["level"] == 2 and d["reasons"] == []
    types = [json.loads(e.payload)["type"] for e in outbox.pending_events(10, set())]
    assert "reasons_timeout" in types


def test_held_rating_survives_a_crash(tmp_path: Path) -> None:
    s, outbox, _clock = make(tmp_path, reasons=[r.model_dump() for r in REASONS])
    s.press(1, "touch")
    outbox.close()  # the kiosk dies on the reasons screen
    reopened = Outbox(tmp_path / "outbox.sqlite")
    (d,) = drafts(reopened)
    assert d["level"] == 1


def test_per_service_takes_exactly_one_rating_per_prompt(tmp_path: Path) -> None:
    s, outbox, _clock = make(tmp_path, prompt_mode="per_service")
    assert s.screen is Screen.WELCOME
    assert s.press(5, "touch").refusal is Refusal.NO_PROMPT
    s.login("0457")
    assert s.prompt(ticket="A0123", item="330100-001")
    assert s.screen is Screen.RATING
    assert s.press(4, "touch").accepted
    assert s.press(5, "touch").refusal is Refusal.NO_PROMPT
    (d,) = drafts(outbox)
    assert (d["prompted"], d["ticket"], d["item"], d["staff"]) == (
        True,
        "A0123",
        "330100-001",
        "0457",
    )


def test_per_service_prompt_times_out(tmp_path: Path) -> None:
    s, outbox, clock = make(tmp_path, prompt_mode="per_service", prompt_timeout_s=30)
    s.prompt(ticket="A0001")
    clock.t += 31
    s.tick()
    assert s.screen is Screen.WELCOME
    assert s.press(5, "touch").refusal is Refusal.NO_PROMPT
    assert drafts(outbox) == []
    types = [json.loads(e.payload)["type"] for e in outbox.pending_events(10, set())]
    assert types == ["prompt_shown", "prompt_timeout"]


def test_paused_refuses_ratings_and_prompts(tmp_path: Path) -> None:
    s, outbox, _clock = make(tmp_path)
    s.pause()
    assert s.screen is Screen.PAUSED
    assert s.press(5, "touch").refusal is Refusal.PAUSED
    assert not s.prompt()
    s.resume()
    assert s.screen is Screen.RATING and s.press(5, "touch").accepted
    assert len(drafts(outbox)) == 1


def test_config_change_relabels_and_rescales(tmp_path: Path) -> None:
    s, outbox, _clock = make(tmp_path)
    s.apply_config(DeviceConfig(window="b07", scale=3, language="en"))
    v = s.view()
    assert (v.scale, v.language, v.window) == (3, "en", "b07")
    with pytest.raises(ValueError):
        s.recorder.record(4, input="touch", prompted=False)
    assert s.press(4, "touch").refusal is Refusal.INVALID
    s.press(3, "touch")
    (d,) = drafts(outbox)
    assert (d["scale"], d["level"], d["window"]) == (3, 3, "b07")


def test_staff_login_logout_events_and_names(tmp_path: Path) -> None:
    s, outbox, _clock = make(tmp_path, staff=[StaffEntry(staff="0457", name="王芳").model_dump()])
    s.login("0457")
    assert s.view().staff_name == "王芳"
    s.login("0458")
    s.logout()
    types = [
        (json.loads(e.payload)["type"], json.loads(e.payload)["staff"])
        for e in outbox.pending_events(10, set())
    ]
    assert types == [
        ("staff_login", "0457"),
        ("staff_logout", "0457"),
        ("staff_login", "0458"),
        ("staff_logout", "0458"),
    ]


def test_identify_flag_expires(tmp_path: Path) -> None:
    s, _outbox, clock = make(tmp_path)
    s.identify()
    assert s.view().identify
    clock.t += 11
    s.tick()
    assert not s.view().identify
