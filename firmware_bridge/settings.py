"""Bridge settings from WR_BRIDGE_* variables; sections nest with `__` (WR_BRIDGE_SERIAL__PORT)."""

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import SettingsConfigDict

from common.mqtt import MqttSettings
from common.settings import WRSettings

ID_RE = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class SerialSettings(BaseModel):
    """The serial line to the board and the bridge's timers on it."""

    model_config = ConfigDict(extra="forbid")

    port: str = Field(
        default="/dev/ttyACM0",
        title="Serial port",
        description="Prefer a stable name such as /dev/serial/by-id/usb-…; it may vanish.",
    )
    baudrate: int = Field(default=115200, ge=1200, le=4_000_000, title="Baud rate")
    heartbeat_s: float = Field(default=1.0, gt=0, le=60, title="Heartbeat interval")
    board_timeout_s: float = Field(
        default=3.5, gt=0, le=600, title="Board counted lost after this long silent"
    )
    hello_retry_s: float = Field(default=1.0, gt=0, le=60, title="Resend HELLO while no board")
    reopen_min_s: float = Field(default=0.2, gt=0, le=60, title="First reopen delay")
    reopen_max_s: float = Field(default=5.0, gt=0, le=600, title="Longest reopen delay")
    feedback_ms: int = Field(default=800, ge=0, le=10_000, title="LED feedback time per press")


class BridgeSettings(WRSettings):
    """One button board on one serial port: an input of one device's Terminal."""

    model_config = SettingsConfigDict(env_prefix="WR_BRIDGE_")

    serial: SerialSettings = Field(default_factory=SerialSettings, title="Serial line")
    hall: str = Field(default="demo", pattern=ID_RE, title="Hall id")
    device: str = Field(default="k-0001", pattern=ID_RE, title="Device id")
    window: str = Field(default="w01", title="Window until the centre's config says otherwise")
    scale: int = Field(default=5, ge=3, le=5, title="Keys until the centre's config arrives")
    prompt_mode: Literal["always", "per_service"] = Field(
        default="always", title="Prompt mode until the centre's config arrives"
    )
    repeat_interval_s: int = Field(
        default=10, ge=0, le=3600, title="Repeat interval until the centre's config arrives"
    )
    data_dir: Path = Field(default=Path("var/bridge"), title="Identities: outbox, duplicate state")
    mqtt: MqttSettings = Field(default_factory=MqttSettings, title="Broker")
    trust_wall_clock: bool = Field(default=False, title="Treat the wall clock as synced")
    metrics_port: int = Field(default=0, ge=0, le=65535, title="Prometheus port (0: off)")


SERIAL_OPTIONS = ("port",)


def load_settings(**options: object) -> BridgeSettings:
    """WR_BRIDGE_* settings overridden by the options not None (mqtt_host, mqtt_port, port)."""
    given: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
    mqtt = {k[5:]: given.pop(k) for k in ("mqtt_host", "mqtt_port") if k in given}
    serial = {k: given.pop(k) for k in SERIAL_OPTIONS if k in given}
    settings = BridgeSettings(**given)
    if mqtt:
        settings.mqtt = MqttSettings.model_validate(settings.mqtt.model_dump() | mqtt)
    if serial:
        settings.serial = SerialSettings.model_validate(settings.serial.model_dump() | serial)
    return settings
