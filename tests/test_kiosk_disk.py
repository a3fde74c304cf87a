"""The kiosk on a full data disk: presses refused visibly, the outbox still delivered, recovery.

The data directory is a real, small tmpfs mounted for this module (root only, unmounted at the
end), filled by a file written until ENOSPC, as a runaway log or a copied video would.
"""

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.mqtt import MqttSettings
from devstack.kiosk_measure import fill_disk
from devstack.services import Mosquitto
from kiosk.core.outbox import RESERVE_FILE, Outbox, StorageFull
from kiosk.core.session import Refusal, Screen
from kiosk.core.terminal import Terminal, TerminalSpec
from protocol.messages import DeviceConfig
from tests.support import wait_until
from tests.test_kiosk_ui import (  # noqa: F401 (display is a fixture)
    DEVICE,
    HALL,
    Listener,
    config,
    display,
    listener,
    run_kiosk,
)

TMPFS_MB = 24


@pytest.fixture(scope="module")
def small_disk() -> Iterator[Path]:
    """A 24 MiB tmpfs of its own, unmounted afterwards."""
    mnt = Path(tempfile.mkdtemp(prefix="wr-small-disk-"))
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m,mode=0755", "tmpfs", str(mnt)],
        check=True,
    )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)
        mnt.rmdir()


def free_mb(path: Path) -> float:
    """Free space on `path`'s file system in MiB."""
    return Outbox.free_bytes_at(path) / 2**20


def test_outbox_refuses_on_a_full_disk_and_keeps_its_seq(small_disk: Path) -> None:
    """A full disk refuses a rating before anything is stored; seq goes on without a gap."""
    data = small_disk / "unit"
    ob = Outbox(data / "outbox.sqlite")
    filler = data / "filler.bin"
    try:
        assert (data / RESERVE_FILE).exists() and not ob.storage_full()
        from tests.test_outbox import _draft, _press

        assert ob.add_rating(_draft(), _press())[0] == 1
        fill_disk(filler)
        with pytest.raises(StorageFull):
            ob.add_rating(_draft(), _press())
        assert ob.storage_full() and ob.last_seq() == 1
        # Delivery bookkeeping still works: the reserve is given up for it.
        ob.mark_acked(1, 1)
        assert not (data / RESERVE_FILE).exists() and ob.backlog() == 0
        filler.unlink()
        assert not ob.storage_full(force=True)
        assert (data / RESERVE_FILE).exists()  # made again once there is room
        assert ob.add_rating(_draft(), _press())[0] == 2
    finally:
        filler.unlink(missing_ok=True)
        ob.close()


def test_full_disk_refuses_presses_delivers_the_backlog_and_recovers(
    small_disk: Path,
    broker: Mosquitto,
    listener: Listener,  # noqa: F811 (the fixture imported above)
) -> None:
    """Ratings waiting when the disk fills are delivered; presses are refused on the storage-full
    screen and the status says paused; freeing space brings the rating screen back by itself."""
    data = small_disk / "core"
    spec = TerminalSpec(
        hall=HALL,
        device=DEVICE,
        data_dir=data,
        mqtt=MqttSettings(port=broker.port),
        config=DeviceConfig(window="a12", repeat_interval_s=0),
        trust_wall_clock=True,
    )
    term = Terminal(spec, thanks_s=0.0, asks_reasons=False)
    filler = data / "filler.bin"
    try:
        for level in (5, 4, 3):  # taken offline: they wait in the outbox
            assert term.press(level, "touch").accepted
            term.session.tick()
        fill_disk(filler)
        assert free_mb(data) < 1
        result = term.press(5, "touch")
        assert result.refusal is Refusal.STORAGE_FULL and not result.accepted
        assert term.session.screen is Screen.FULL and term.session.view().storage_full
        assert term.outbox.last_seq() == 3

        term.start(tick_s=0.1)
        wait_until(lambda: len(listener.of("rating")) >= 3, 20, what="the backlog delivered")
        assert [r["seq"] for r in listener.of("rating")] == [1, 2, 3]
        wait_until(lambda: term.outbox.backlog() == 0, 10, what="PUBACKs recorded on a full disk")
        status = wait_until(lambda: listener.of("status"), 10, what="a status")[-1]
        assert status["state"] == "paused" and status["last_seq"] == 3
        assert term.press(4, "button").refusal is Refusal.STORAGE_FULL

        filler.unlink()
        wait_until(lambda: term.session.screen is Screen.RATING, 10, what="the rating screen back")
        wait_until(
            lambda: listener.of("status")[-1]["state"] == "online", 10, what="status online again"
        )
        rec = term.press(2, "touch").recorded
        assert rec is not None and rec.seq == 4
        wait_until(lambda: len(listener.of("rating")) == 4, 20, what="the new rating delivered")
        assert sorted(r["seq"] for r in listener.of("rating")) == [1, 2, 3, 4]
        assert len({r["id"] for r in listener.of("rating")}) == 4
        # The centre hears "online" before the first rating pressed after the recovery, so no
        # rating falls inside the paused interval.
        online = [st for st in listener.of("status") if st["state"] == "online"][-1]
        assert online["ts"] <= listener.of("rating")[-1]["ts"]
        # And a `resume` event at the device's time of the recovery, which ends the pause there
        # even when the broker is away at that moment (the status waits for the connection).
        resumed = wait_until(
            lambda: [e for e in listener.of("event") if e["type"] == "resume"], 10, what="resume"
        )
        assert resumed[-1]["ts"] <= listener.of("rating")[-1]["ts"]
    finally:
        filler.unlink(missing_ok=True)
        term.stop()


def test_storage_full_screen_in_both_languages(
    display: str,  # noqa: F811 (the fixture imported above)
    small_disk: Path,
    tmp_path: Path,
    broker: Mosquitto,
    listener: Listener,  # noqa: F811
    screenshot_dir: Path,
) -> None:
    """Under Xvfb: a touch on a full disk shows 存储空间已满 (English when configured) and is
    not thanked; the screen clears itself when the disk has room again."""
    data = small_disk / "ui"
    result = run_kiosk(
        display,
        tmp_path,
        broker.port,
        [
            {"publish_config": config(repeat_interval_s=0)},
            {"expect_screen": "rating"},
            {"touch": 5},
            {"expect_outbox": 1},
            {"expect_screen": "rating"},
            {"fill_disk": True},
            {"touch": 4},  # before the once-a-second check: the commit itself is refused
            {"expect_screen": "full"},
            {"expect_outbox": 1},
            {"expect_text": "存储空间已满，请联系管理员"},
            {"screenshot": str(screenshot_dir / "full-zh.png")},
            {"publish_config": config(repeat_interval_s=0, language="en")},
            {"expect_text": "Storage full, contact the administrator"},
            {"screenshot": str(screenshot_dir / "full-en.png")},
            {"free_disk": True},
            {"expect_screen": {"screen": "rating", "timeout": 10}},
            {"touch": 3},
            {"expect_outbox": 2},
            {"wait_drained": 15},
        ],
        env={"WR_KIOSK_DATA_DIR": str(data)},
        thanks_s=0.3,
    )
    screens = result["screens"]
    assert screens[screens.index("full") - 1] == "rating"  # refused: no thank-you for it
    assert [r["level"] for r in result["outbox"]] == [5, 3]
    assert [r["seq"] for r in listener.of("rating")] == [1, 2]
    assert "paused" in [s["state"] for s in listener.of("status")]
    assert (screenshot_dir / "full-zh.png").stat().st_size > 0
