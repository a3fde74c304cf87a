"""The setup screen's logic without a window: checks, setup.json, identities and their outboxes."""

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from kiosk.core import local_setup
from kiosk.core.badge import BadgeReader
from kiosk.core.identity import identity_dir
from kiosk.core.local_setup import LocalSetup, SetupForm
from kiosk.core.provision import ProvisionError, Ticket
from kiosk.core.setup import Note, SetupController
from kiosk.core.terminal import Terminal
from kiosk.settings import KioskSettings


def settings(tmp_path: Path, **changes: object) -> KioskSettings:
    """Settings of a terminal whose data lives in tmp_path (environment ignored)."""
    base = {
        "hall": "hz-civic",
        "device": "k-0001",
        "data_dir": tmp_path,
        "voice": False,
        "trust_wall_clock": True,
    }
    base.update(changes)
    return KioskSettings.model_validate(base)


def test_form_refuses_bad_values_with_a_reason_each(tmp_path: Path) -> None:
    """Ids follow the topic grammar, hosts are names or addresses, ports are 1–65535."""
    form = SetupForm.from_settings(settings(tmp_path), backlog=0)
    form.set("hall", "HZ Civic")
    form.set("device", "-k1")
    form.set("host", "bad host!")
    form.set("port", "70000")
    form.set("password", "secret")
    assert form.check() is None
    assert form.errors == {
        "hall": "setup_err_id",
        "device": "setup_err_id",
        "host": "setup_err_host",
        "port": "setup_err_port",
        "username": "setup_err_user_needed",
    }
    form.set("hall", "hz-civic")
    form.set("device", "k-0001")
    form.set("host", " broker.hall.example ")
    form.set("port", "8883")
    form.set("username", "k-0001")
    setup = form.check()
    assert setup is not None and not form.errors
    assert (setup.host, setup.port, setup.username) == ("broker.hall.example", 8883, "k-0001")
    assert setup.password is not None and setup.password.get_secret_value() == "secret"
    for host in ("10.0.0.5", "::1", "mqtt", "a-b.c"):
        assert local_setup.valid_host(host), host
    for host in ("", "a..b", "-a.b", "a b", "x" * 64):
        assert not local_setup.valid_host(host), host


def test_identity_change_waits_for_the_backlog(tmp_path: Path) -> None:
    """With ratings still waiting, the hall or device cannot change; the broker can."""
    form = SetupForm.from_settings(settings(tmp_path), backlog=3)
    form.set("port", "1884")
    assert form.check() is not None
    form.set("device", "k-0002")
    assert form.check() is None and form.errors == {"device": "setup_err_backlog"}
    form.backlog = 0
    assert form.check() is not None


def test_setup_file_is_private_and_overrides_the_environment(tmp_path: Path) -> None:
    """setup.json is 0600 with the real password, and laid over the WR_KIOSK_* settings."""
    setup = LocalSetup(
        hall="hz-west",
        device="k-0007",
        host="10.1.2.3",
        port=1884,
        username="k-0007",
        password=SecretStr('pa ss"word'),
    )
    local_setup.save(tmp_path, setup)
    path = tmp_path / local_setup.SETUP_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text())["password"] == 'pa ss"word'
    assert not list(tmp_path.glob(".setup-*"))
    s = local_setup.effective(settings(tmp_path))
    assert (s.hall, s.device, s.mqtt.host, s.mqtt.port, s.mqtt.username) == (
        "hz-west",
        "k-0007",
        "10.1.2.3",
        1884,
        "k-0007",
    )
    assert s.mqtt.password is not None and s.mqtt.password.get_secret_value() == 'pa ss"word'
    assert "pa ss" not in repr(s)


@pytest.mark.parametrize("content", [b"{not json", b'{"hall": "x"}', b'{"extra": 1}'])
def test_a_broken_setup_file_falls_back_to_the_environment(tmp_path: Path, content: bytes) -> None:
    """An unreadable or invalid setup.json is ignored (and logged), never a crash."""
    (tmp_path / local_setup.SETUP_FILE).write_bytes(content)
    s = local_setup.effective(settings(tmp_path))
    assert (s.hall, s.device) == ("hz-civic", "k-0001")


def test_each_identity_keeps_its_own_seq(tmp_path: Path) -> None:
    """Re-provisioned as another device the terminal starts at seq 1; switched back, it goes on."""

    def rate(device: str, n: int) -> int:
        kiosk = Terminal.from_settings(settings(tmp_path, device=device), thanks_s=0.0)
        try:
            for _ in range(n):
                assert kiosk.session.press(5, "touch").accepted
                kiosk.session.tick()
            return kiosk.outbox.last_seq()
        finally:
            kiosk.stop()

    assert rate("k-0001", 3) == 3
    assert rate("k-0002", 2) == 2
    assert rate("k-0001", 1) == 4
    assert (identity_dir(tmp_path, "hz-civic", "k-0002") / "outbox.sqlite").exists()


def test_an_outbox_from_before_identities_is_adopted(tmp_path: Path) -> None:
    """An outbox kept straight in data_dir belongs to the environment's identity and moves once."""
    kiosk = Terminal.from_settings(settings(tmp_path))
    kiosk.session.press(3, "touch")
    kiosk.stop()
    home = identity_dir(tmp_path, "hz-civic", "k-0001")
    for name in ("outbox.sqlite", "config.json"):
        if (home / name).exists():
            (home / name).rename(tmp_path / name)
    s = local_setup.effective(settings(tmp_path))
    assert not (tmp_path / "outbox.sqlite").exists()
    again = Terminal.from_settings(s)
    try:
        assert again.outbox.last_seq() == 1
    finally:
        again.stop()


def test_a_provisioning_ticket_needs_https() -> None:
    """Plain http:// is refused before anything is sent; a bare host name means https://."""
    with pytest.raises(ProvisionError, match="https"):
        Ticket.parse("http://hall-server:8443 AAAA-BBBB 0123456789abcdef")
    t = Ticket.parse("hall-server:8443 AAAA-BBBB 0123456789ABCDEF")
    assert (t.url, t.fingerprint) == ("https://hall-server:8443", "0123456789abcdef")
    q = Ticket.parse("WR1;https://h:1/;C-1;ff00ff00ff00ff00")
    assert (q.url, q.code) == ("https://h:1", "C-1")


def test_setup_controller_pin_form_save_and_restart(tmp_path: Path) -> None:
    """The PIN opens the form; a bad field is refused with its reason; a good one saves."""
    s = settings(tmp_path, setup_pin=SecretStr("2468"))
    terminal = Terminal.from_settings(s)
    try:
        setup = SetupController(s, terminal)
        assert setup.enabled and not setup.is_open
        assert not setup.check_pin("1111") and not setup.is_open
        assert setup.check_pin("2468") and setup.is_open
        setup.edit("host", "not a host!")
        assert not setup.save()
        assert setup.first_error() == ("host", Note("setup_err_host", {"n": 0}))
        assert not setup.restart_requested
        setup.edit("host", "broker.hall")
        setup.edit("device", "k-0007")
        assert setup.save() and setup.restart_requested
        assert setup.note == Note("setup_saved")
        saved = local_setup.load(tmp_path)
        assert saved is not None and (saved.device, saved.host) == ("k-0007", "broker.hall")
        setup.close()
        assert not setup.is_open
    finally:
        terminal.stop()


def test_setup_controller_refuses_provisioning_with_a_backlog(tmp_path: Path) -> None:
    """A code is not redeemed while ratings of this identity wait to be sent."""
    s = settings(tmp_path, setup_pin=SecretStr("2468"))
    terminal = Terminal.from_settings(s)
    try:
        setup = SetupController(s, terminal)
        assert setup.check_pin("2468") and setup.may_provision()
        assert terminal.press(4, "touch").accepted
        assert not setup.may_provision()
        assert setup.note == Note("setup_err_backlog", {"n": 1})
    finally:
        terminal.stop()


def test_badge_reader_takes_fast_digits_and_enter() -> None:
    """Digits typed quickly then Enter give a staff number; a slow key starts over."""
    now = [0.0]
    reader = BadgeReader(gap_s=1.0, clock=lambda: now[0])
    for code in (48 + 0, 48 + 4, 256 + 5, 48 + 7):  # "0457" (5 from the keypad)
        assert reader.key(code) == (True, None)
        now[0] += 0.01
    assert reader.key(13) == (True, "0457")
    assert reader.key(97) == (False, None)  # a letter is not the reader's
    reader.key(48 + 1)
    now[0] += 5.0  # a person typing, not a reader: the old digit is dropped
    reader.key(48 + 2)
    assert reader.key(271) == (True, "2")
    assert reader.key(13) == (True, None)
