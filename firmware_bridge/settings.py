"""Bridge settings from WR_BRIDGE_* variables (nested with `__`, e.g. WR_BRIDGE_MQTT__PORT)."""

from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.mqtt import MqttSettings
from common.settings import WRSettings

ID_RE = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class BridgeSettings(WRSettings):
    """One button board on one serial port, feeding one device's outbox."""

    model_config = SettingsConfigDict(env_prefix="WR_BRIDGE_")

    port: str = Field(
        default="/dev/ttyACM0",
        title="Serial port",
        description="Prefer a stable name such as /dev/serial/by-id/usb-…; it may vanish.",
    )
    baudrate: int = Field(default=115200, ge=1200, le=4_000_000, title="Baud rate")
    hall: str = Field(default="demo", pattern=ID_RE, title="Hall id")
    device: str = Field(default="k-0001", pattern=ID_RE, title="Device id")
    window: str = Field(default="w01", title="Window until the centre's config says otherwise")
    scale: int = Field(default=5, ge=3, le=5, title="Keys until the centre's config arrives")
    data_dir: Path = Field(default=Path("var/bridge"), title="Outbox and duplicate state")
    mqtt: MqttSettings = Field(default_factory=MqttSettings, title="Broker")
    trust_wall_clock: bool = Field(default=False, title="Treat the wall clock as synced")
    heartbeat_s: float = Field(default=1.0, gt=0, le=60, title="Heartbeat interval")
    board_timeout_s: float = Field(
        default=3.5, gt=0, le=600, title="Board counted lost after this long silent"
    )
    hello_retry_s: float = Field(default=1.0, gt=0, le=60, title="Resend HELLO while no board")
    reopen_min_s: float = Field(default=0.2, gt=0, le=60, title="First reopen delay")
    reopen_max_s: float = Field(default=5.0, gt=0, le=600, title="Longest reopen delay")
    feedback_ms: int = Field(default=800, ge=0, le=10_000, title="LED feedback time per press")
    repeat_interval_s: int = Field(
        default=10, ge=0, le=3600, title="Presses closer than this are flagged x-repeat"
    )
    metrics_port: int = Field(default=0, ge=0, le=65535, title="Prometheus port (0: off)")


def load_settings(**options: object) -> BridgeSettings:
    """WR_BRIDGE_* settings overridden by the options not None (mqtt_host, mqtt_port too)."""
    given: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
    mqtt = {k[5:]: given.pop(k) for k in ("mqtt_host", "mqtt_port") if k in given}
    settings = BridgeSettings(**given)
    if mqtt:
        settings.mqtt = MqttSettings.model_validate(settings.mqtt.model_dump() | mqtt)
    return settings
