"""The local stack behind `windowrate up`: broker, InfluxDB, gateway, server and kiosks.

Secured as a hall is: a CA made like `windowrate pki init`, the broker with anonymous access
off, a TLS listener, and the password file and ACL the server writes from its registry;
gateway and server log in with their own accounts and each simulated kiosk with the login
`windowrate device add` gives it. Logins are re-keyed at every start (nothing to remember).
"""

import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from common import installation
from devstack.services import Influxd, Mosquitto, TlsFiles, die_with_parent, env_with, port_open
from server.broker.pki import PkiPaths, init_ca, issue_server_cert

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ports:
    """The stack's ports (the defaults of docs/architecture.md)."""

    mqtt: int = 1883
    influx: int = 8086
    server: int = 8000
    metrics: int = 9108
    mqtt_tls: int = 8883


DEMO_HALL = "demo"


class Stack:
    """Starts and stops every part in `run_dir`, in dependency order."""

    def __init__(self, run_dir: Path, ports: Ports, host: str = "127.0.0.1") -> None:
        """Prepare the stack."""
        self.run_dir = run_dir
        self.ports = ports
        self.host = host
        self.pki = PkiPaths(run_dir / "pki")
        self.auth_dir = run_dir / "broker-auth"
        self.pid_file = run_dir / "mosquitto" / "mosquitto.pid"
        self.db_path = run_dir / "server" / "windowrate.db"
        self.credentials_file = run_dir / "kiosks" / "credentials.json"
        self.logins: dict[str, str] = {}
        tls = TlsFiles(
            ports.mqtt_tls, self.pki.ca_cert, self.pki.cert("broker"), self.pki.key("broker")
        )
        self.mosquitto = Mosquitto(
            run_dir / "mosquitto", port=ports.mqtt, host=host, auth_dir=self.auth_dir, tls=tls
        )
        self.influxd = Influxd(run_dir / "influxdb", port=ports.influx, host=host)
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[object] = []

    @property
    def board_url(self) -> str:
        """The hall board's URL."""
        return f"http://{self.host}:{self.ports.server}/"

    def _env(self) -> dict[str, str]:
        """Environment telling gateway and server where everything is."""
        p, h = self.ports, self.host
        return env_with(
            WR_GATEWAY_MQTT__HOST=h,
            WR_GATEWAY_MQTT__PORT=str(p.mqtt),
            WR_GATEWAY_MQTT__USERNAME="gateway",
            WR_GATEWAY_MQTT__PASSWORD=self.logins.get("gateway", ""),
            WR_GATEWAY_INFLUX__URL=f"http://{h}:{p.influx}",
            WR_GATEWAY_METRICS__HOST=h,
            WR_GATEWAY_METRICS__PORT=str(p.metrics),
            WR_GATEWAY_DATA_DIR=str(self.run_dir / "gateway"),
            WR_SERVER_HOST=h,
            WR_SERVER_PORT=str(p.server),
            WR_SERVER_MQTT__HOST=h,
            WR_SERVER_MQTT__PORT=str(p.mqtt),
            WR_SERVER_MQTT__USERNAME="server",
            WR_SERVER_MQTT__PASSWORD=self.logins.get("server", ""),
            WR_SERVER_PROVISIONING__BROKER_AUTH_DIR=str(self.auth_dir),
            WR_SERVER_PROVISIONING__BROKER_PID_FILE=str(self.pid_file),
            WR_SERVER_PROVISIONING__BROKER_HOST=h,
            WR_SERVER_PROVISIONING__BROKER_PORT=str(p.mqtt_tls),
            WR_SERVER_PROVISIONING__CA_FILE=str(self.pki.ca_cert),
            WR_SERVER_INFLUX__URL=f"http://{h}:{p.influx}",
            WR_SERVER_DATABASE_URL=f"sqlite:///{self.db_path}",
            WR_SERVER_GATEWAY_METRICS_URLS=f'["http://{h}:{p.metrics}/metrics"]',
        )

    def _spawn(self, name: str, args: list[str]) -> None:
        """Start `windowrate ARGS` as a child process logging to run_dir/NAME.log."""
        logf = open(self.run_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(logf)
        self.children[name] = subprocess.Popen(
            [sys.executable, "-m", "windowrate", *args],
            env=self._env(),
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    def start(self, kiosks: int = 5, rate: float = 0.2) -> None:
        """Start everything; raise RuntimeError with what to do if a port is taken."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for what, port in (
            ("MQTT", self.ports.mqtt),
            ("InfluxDB", self.ports.influx),
            ("server", self.ports.server),
            ("gateway metrics", self.ports.metrics),
            ("MQTT over TLS", self.ports.mqtt_tls),
        ):
            if port_open(self.host, port):
                raise RuntimeError(
                    f"port {port} ({what}) is already in use: stop whatever listens there "
                    f"(`ss -ltnp | grep :{port}`) or choose another port (see --help)"
                )
        self._provision(kiosks)
        self._write_config()
        self.mosquitto.start()
        assert self.mosquitto.proc is not None
        self.pid_file.write_text(f"{self.mosquitto.proc.pid}\n")
        self.influxd.start()
        self._spawn("gateway", ["gateway", "run"])
        self._spawn("server", ["server", "run"])
        if kiosks:
            self._spawn(
                "kiosks",
                [
                    "simulate",
                    "--kiosks",
                    str(kiosks),
                    "--rate",
                    str(rate),
                    "--mqtt-host",
                    self.host,
                    "--mqtt-port",
                    str(self.ports.mqtt),
                    "--data-dir",
                    str(self.run_dir / "kiosks"),
                    "--hall",
                    DEMO_HALL,
                    "--credentials",
                    str(self.credentials_file),
                ],
            )
        self._wait_http(f"http://{self.host}:{self.ports.server}/health", "server")

    def _provision(self, kiosks: int) -> None:
        """CA and broker certificate, service logins, one login per kiosk, the broker's files."""
        from server.db.engine import Database
        from server.provisioning import service
        from server.settings.provisioning import ProvisioningSettings

        if init_ca(self.pki):
            log.info("made the demo CA in %s", self.pki.root)
        issue_server_cert(self.pki, "broker", [self.host, "localhost"])
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        db = Database(f"sqlite:///{self.db_path}")
        try:
            db.upgrade()
            with db.session() as session:
                for name in ("gateway", "server"):
                    self.logins[name] = service.set_service_account(
                        session,
                        username=name,
                        role=name,
                    )
                creds: dict[str, str] = {}
                for i in range(1, kiosks + 1):
                    device = f"k-{i:04d}"
                    try:
                        service.find_account(session, device)
                        creds[device] = service.rekey(session, device)
                    except service.ProvisioningError:
                        _acc, creds[device], _made = service.add_device(
                            session, hall=DEMO_HALL, device=device, window=f"w{i:02d}"
                        )
                session.commit()
                service.sync_broker(session, ProvisioningSettings(broker_auth_dir=self.auth_dir))
        finally:
            db.close()
        self.credentials_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.credentials_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(creds, f)

    def _write_config(self) -> None:
        """Write the services' env files into run_dir/config, as on an installed hall.

        The admin commands (`windowrate device add`, `export`, `doctor` …) find this stack
        through them (common.installation), so they use its database, broker and InfluxDB.
        """
        env = self._env()
        config = self.run_dir / installation.CONFIG_SUBDIR
        files = {"server.env": ("WR_SERVER_", "WR_SCORES_"), "gateway.env": ("WR_GATEWAY_",)}
        for name, prefixes in files.items():
            values = {k: v for k, v in env.items() if k.startswith(prefixes)}
            installation.write_env_file(config / name, values)

    def _wait_http(self, url: str, name: str, timeout: float = 30) -> None:
        """Wait until `url` answers at all."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for child, proc in self.children.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{child} exited; see {self.run_dir / (child + '.log')}")
            try:
                httpx.get(url, timeout=5)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"{name} did not answer at {url}; see {self.run_dir}/{name}.log")

    def watch(self, stop: threading.Event) -> None:
        """Wait for `stop`, reporting children that die."""
        while not stop.wait(1.0):
            for name, proc in list(self.children.items()):
                if proc.poll() is not None:
                    log.error(
                        "%s exited with %s; see %s",
                        name,
                        proc.returncode,
                        self.run_dir / f"{name}.log",
                    )
                    del self.children[name]

    def stop(self) -> None:
        """Stop kiosks, server, gateway, then InfluxDB and the broker."""
        for name in ("kiosks", "server", "gateway"):
            proc = self.children.pop(name, None)
            if proc is None:
                continue
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.influxd.stop()
        self.mosquitto.stop()
        for f in self._logs:
            f.close()  # type: ignore[attr-defined]
