"""Run Mosquitto and influxd as child processes in a run directory on chosen ports."""

import contextlib
import ctypes
import ctypes.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from storage.influxd_conf import influxd_conf

log = logging.getLogger(__name__)


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the parent dies, so nothing is left behind."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_process(proc: "subprocess.Popen[bytes] | None", timeout: float = 30.0) -> None:
    """SIGTERM a running process and wait; SIGKILL it after `timeout` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """Return `n` distinct TCP ports that are free on `host` right now."""
    ports: list[int] = []
    while len(ports) < n:
        p = free_port(host)
        if p not in ports:
            ports.append(p)
    return ports


def port_open(host: str, port: int) -> bool:
    """Return True if something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def require_binary(name: str, package: str) -> str:
    """Return the path of `name`, or raise with the Debian package that provides it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if not path:
        raise RuntimeError(f"{name} not found: install it with `apt-get install {package}`")
    return path


class ServiceProcess:
    """A child process with a config file and data in `run_dir`; restartable on the same ports."""

    name = "service"

    def __init__(self, run_dir: Path, host: str = "127.0.0.1") -> None:
        """Prepare (but do not start) the service in `run_dir`."""
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def command(self) -> list[str]:
        """Return the command line (writes the config first)."""
        raise NotImplementedError

    def ready(self) -> bool:
        """Return True once the service answers."""
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        """Where the service's stdout and stderr go."""
        return self.run_dir / f"{self.name}.out"

    def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait until it is ready."""
        if self.running():
            return
        cmd = self.command()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}; see {self.log_path}:\n"
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            if self.ready():
                log.info("%s ready (pid %s)", self.name, self.proc.pid)
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout} s; see {self.log_path}")

    def running(self) -> bool:
        """Return True while the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """Stop gracefully (SIGTERM), killing after `timeout` seconds."""
        stop_process(self.proc, timeout)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """Kill the process at once (SIGKILL), as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stop()

    def restart(self) -> None:
        """Stop gracefully and start again with the same data and ports."""
        self.stop()
        self.start()

    def __enter__(self) -> "ServiceProcess":
        """Start on entering a with-block."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop on leaving a with-block."""
        self.stop()


MOSQUITTO_CONF = """\
# Generated by windowrate deploy. Without `auth_dir`: loopback only, anonymous allowed
# (tests and the local demo). With it: per-account passwords and ACLs from the registry,
# anonymous off, and with `tls` a TLS listener (server/broker/pki.py makes the CA).
per_listener_settings false
{listeners}
user root
persistence true
persistence_location {data}/
autosave_interval {autosave}
# docs/delivery.md: the default max_queued_messages (1000) silently drops QoS 1 messages
# for a slow or absent subscriber. Size the queue for a day of traffic.
max_queued_messages {max_queued}
max_queued_bytes 0
# Outgoing QoS 1 window to MQTT 3 clients; MQTT 5 clients announce their own
# Receive Maximum, which the gateway sets to its batch window.
max_inflight_messages 1000
# Hostile payloads up to 2 MB reach the gateway, which keeps them as dead letters.
max_packet_size 2000000
persistent_client_expiration 14d
log_dest file {data}/mosquitto.log
log_type error
log_type warning
log_type notice
connection_messages true
"""


@dataclass(frozen=True)
class TlsFiles:
    """A TLS listener: port, CA, certificate and key (server/broker/pki.py)."""

    port: int
    ca: Path
    cert: Path
    key: Path


class Mosquitto(ServiceProcess):
    """A Mosquitto broker with persistence, listening on `port`."""

    name = "mosquitto"

    def __init__(
        self,
        run_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        max_queued: int = 2_000_000,
        autosave_s: int = 5,
        auth_dir: Path | None = None,
        tls: "TlsFiles | None" = None,
        extra_conf: str = "",
    ) -> None:
        """Prepare a broker in `run_dir` on `port` (free port when None).

        `auth_dir` holds `passwd` and `acl` (server/broker/accounts.py); `tls` adds a TLS
        listener on `tls.port`; `extra_conf` is appended (e.g. the uplink section).
        """
        super().__init__(run_dir, host)
        self.port = port or free_port(host)
        self.max_queued = max_queued
        self.autosave_s = autosave_s
        self.auth_dir = auth_dir
        self.tls = tls
        self.extra_conf = extra_conf

    def listeners(self) -> str:
        """The listener and authentication lines."""
        lines = [f"listener {self.port} {self.host}"]
        if self.tls is not None:
            t = self.tls
            lines += [
                f"listener {t.port} {self.host}",
                f"cafile {t.ca}",
                f"certfile {t.cert}",
                f"keyfile {t.key}",
                "tls_version tlsv1.2",
            ]
        if self.auth_dir is None:
            lines.append("allow_anonymous true")
        else:
            lines += [
                "allow_anonymous false",
                f"password_file {self.auth_dir / 'passwd'}",
                f"acl_file {self.auth_dir / 'acl'}",
            ]
        return "\n".join(lines)

    def reload(self) -> None:
        """SIGHUP: the broker rereads its password file and ACL."""
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError("mosquitto is not running")
        self.proc.send_signal(signal.SIGHUP)

    def command(self) -> list[str]:
        """Write mosquitto.conf and return the command line."""
        binary = require_binary("mosquitto", "mosquitto")
        conf = self.run_dir / "mosquitto.conf"
        conf.write_text(
            MOSQUITTO_CONF.format(
                listeners=self.listeners(),
                data=self.run_dir,
                max_queued=self.max_queued,
                autosave=self.autosave_s,
            )
            + self.extra_conf
        )
        conf.chmod(0o600)  # an uplink section holds the central password
        return [binary, "-c", str(conf)]

    def ready(self) -> bool:
        """Return True once the listeners accept connections."""
        tls_up = self.tls is None or port_open(self.host, self.tls.port)
        return port_open(self.host, self.port) and tls_up


class Influxd(ServiceProcess):
    """An InfluxDB 1.x server (`influxd`) serving the v1 HTTP API on `port`."""

    name = "influxd"

    def __init__(
        self,
        run_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        rpc_port: int | None = None,
    ) -> None:
        """Prepare influxd in `run_dir` on `port` (free port when None)."""
        super().__init__(run_dir, host)
        self.port = port or free_port(host)
        self.rpc_port = rpc_port or free_port(host)

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """Write influxdb.conf and return the command line."""
        binary = require_binary("influxd", "influxdb")
        conf = self.run_dir / "influxdb.conf"
        conf.write_text(
            influxd_conf(
                data=self.run_dir,
                http_port=self.port,
                rpc_port=self.rpc_port,
                host=self.host,
                writer="the WindowRate dev stack (devstack.services.Influxd)",
            )
        )
        return [binary, "run", "-config", str(conf)]

    def ready(self) -> bool:
        """Return True once /ping answers."""
        try:
            return httpx.get(f"{self.url}/ping", timeout=0.5).status_code == 204
        except httpx.HTTPError:
            return False


def env_with(**overrides: str) -> dict[str, str]:
    """Return a copy of the environment with `overrides` set."""
    env = dict(os.environ)
    env.update(overrides)
    return env
