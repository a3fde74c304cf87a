"""SystemdNotifier (common.systemd) against a real AF_UNIX datagram socket as NOTIFY_SOCKET."""

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.systemd import SystemdNotifier


def _receive(sock: socket.socket) -> bytes:
    sock.settimeout(2.0)
    return sock.recv(4096)


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound to a file, like /run/systemd/notify."""
    path = tmp_path / "notify"
    if len(str(path)) > 100:  # sun_path is 108 bytes
        pytest.skip(f"tmp_path too long for an AF_UNIX address: {path}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield sock, str(path)
    sock.close()


def test_exact_datagrams_to_path_socket(
    path_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    n = SystemdNotifier()
    assert n.enabled
    assert n.ready() is True
    assert _receive(sock) == b"READY=1"
    assert n.ping() is True
    assert _receive(sock) == b"WATCHDOG=1"
    assert n.status("online, 3 ratings waiting") is True
    assert _receive(sock) == b"STATUS=online, 3 ratings waiting"
    # UTF-8, and a newline cannot inject a second assignment
    assert n.status("暂停服务\nREADY=1") is True
    assert _receive(sock) == "STATUS=暂停服务 READY=1".encode()
    assert n.stopping() is True
    assert _receive(sock) == b"STOPPING=1"
    assert n.notify("READY=1", "STATUS=up") is True
    assert _receive(sock) == b"READY=1\nSTATUS=up"
    n.close()


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"windowrate-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        n = SystemdNotifier()
        assert n.ready()
        assert _receive(sock) == b"READY=1"
        assert n.ping()
        assert _receive(sock) == b"WATCHDOG=1"
        assert n.status("ok")
        assert _receive(sock) == b"STATUS=ok"
        n.close()
    finally:
        sock.close()


def test_noop_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = SystemdNotifier()
    assert not n.enabled
    assert n.ready() is False
    assert n.ping() is False
    assert n.status("anything") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert SystemdNotifier().ping() is False


def test_gone_socket_does_not_raise_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "notify"
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    n = SystemdNotifier()
    assert n.ping() is False  # nobody listening yet
    assert n.ping() is False
    assert sum("sd_notify" in r.message for r in caplog.records) == 1  # warned once
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        assert n.ping() is True
        assert _receive(sock) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert SystemdNotifier.interval_s() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert SystemdNotifier.interval_s() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert SystemdNotifier.interval_s() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert SystemdNotifier.interval_s() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("WATCHDOG_USEC", "bogus")
    assert SystemdNotifier.interval_s() is None
