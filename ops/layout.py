"""Where a hall server keeps everything, and what its installer was told (hall.env)."""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from dotenv import dotenv_values
from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from common.settings import WRSettings

HALL_ENV = "hall.env"
SECRET_DIR = "secrets"


class HallSettings(WRSettings):
    """What the installer was told (kept in /etc/windowrate/hall.env, WR_HALL_*)."""

    model_config = SettingsConfigDict(env_prefix="WR_HALL_")

    hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, title="Names and addresses of the hall server (certificate)"
    )
    user: str = Field(default="windowrate", title="User the services run as")
    mqtt_port: int = Field(default=1883, ge=1, le=65535, title="Plain MQTT (loopback only)")
    mqtt_tls_port: int = Field(default=8883, ge=1, le=65535, title="MQTT over TLS (devices)")
    influx_port: int = Field(default=8086, ge=1, le=65535, title="InfluxDB HTTP (loopback)")
    influx_rpc_port: int = Field(default=8088, ge=1, le=65535, title="InfluxDB backup RPC")
    server_host: str = Field(default="0.0.0.0", title="Web server listen address")
    server_port: int = Field(default=8000, ge=1, le=65535, title="Web server port")
    metrics_port: int = Field(default=9108, ge=1, le=65535, title="Gateway metrics port")
    standby_metrics_port: int = Field(default=9109, ge=1, le=65535, title="Standby metrics")
    standby: bool = Field(default=False, title="Install the standby gateway unit")
    retention: str = Field(
        default="INF", pattern=r"^(INF|[1-9][0-9]*[hdw])$", title="InfluxDB retention (INF: all)"
    )
    timezone: str = Field(default="Asia/Shanghai", title="The hall's time zone")

    @field_validator("hosts", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        """Accept `a,b` as well as a list."""
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value


@dataclass(frozen=True)
class Layout:
    """Where everything of a hall server lives, under `root`."""

    root: Path

    @property
    def etc(self) -> Path:
        """Configs, env files, secrets and PKI."""
        return self.root / "etc/windowrate"

    @property
    def pki(self) -> Path:
        """The hall CA and the broker's certificate."""
        return self.etc / "pki"

    @property
    def secrets(self) -> Path:
        """One file per secret (0600)."""
        return self.etc / SECRET_DIR

    @property
    def state(self) -> Path:
        """Data of every service."""
        return self.root / "var/lib/windowrate"

    @property
    def auth(self) -> Path:
        """The broker's passwd and acl (written by the server)."""
        return self.state / "broker/auth"

    @property
    def pid_file(self) -> Path:
        """Mosquitto's pid (the server sends it SIGHUP after an account change)."""
        return self.state / "broker/mosquitto.pid"

    @property
    def backups(self) -> Path:
        """Where the nightly backups go."""
        return self.root / "var/backups/windowrate"

    @property
    def prefix(self) -> Path:
        """The releases (one venv each) and the `current` link."""
        return self.root / "opt/windowrate"

    @property
    def current(self) -> Path:
        """The running release's venv."""
        return self.prefix / "current"

    @property
    def units(self) -> Path:
        """systemd's directory of local units."""
        return self.root / "etc/systemd/system"

    @property
    def database(self) -> Path:
        """The registry (SQLite)."""
        return self.state / "server/windowrate.db"


def load_hall(layout: Layout, **given: Any) -> HallSettings:
    """The settings in hall.env, with what the operator gives now on top."""
    values = _read_env(layout.etc / HALL_ENV)
    for key, value in given.items():
        if value is not None and value != ():
            values[f"WR_HALL_{key.upper()}"] = (
                ",".join(value) if isinstance(value, tuple) else value
            )
    env = {k: str(v) for k, v in values.items()}
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("WR_HALL_")}
    try:
        os.environ.update(env)
        return HallSettings()
    finally:
        for k in env:
            os.environ.pop(k, None)
        os.environ.update(saved)


def _read_env(path: Path) -> dict[str, str]:
    """The variables of an env file (none when it does not exist)."""
    if not path.is_file():
        return {}
    return {k: v for k, v in dotenv_values(path, interpolate=False).items() if v is not None}


def env_of(layout: Layout, name: str) -> dict[str, str]:
    """The variables of one env file, as systemd's EnvironmentFile= gives them."""
    return _read_env(layout.etc / name)
