"""Gateway settings: one pydantic model per section, from WR_GATEWAY_* environment variables."""

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import SettingsConfigDict

from common.mqtt import MqttSettings
from common.settings import WRSettings
from protocol.decode import MAX_PAYLOAD_BYTES
from storage.client import InfluxSettings


class BatchSettings(BaseModel):
    """How messages are grouped into InfluxDB writes."""

    model_config = ConfigDict(extra="forbid")

    max_points: int = Field(default=5000, ge=1, le=100_000, title="Flush at this many messages")
    max_delay_ms: int = Field(default=200, ge=1, le=60_000, title="Flush this long after the first")
    receive_maximum: int = Field(
        default=20_000, ge=1, le=65_535, title="Unacknowledged messages the broker may send us"
    )
    retry_min_s: float = Field(default=0.5, gt=0, title="First retry delay when InfluxDB is down")
    retry_max_s: float = Field(default=10.0, gt=0, title="Longest retry delay")


class GapSettings(BaseModel):
    """Per-device seq gap detection, computed from what InfluxDB holds."""

    model_config = ConfigDict(extra="forbid")

    interval_s: float = Field(default=30.0, gt=0, title="Seconds between checks")
    grace_s: float = Field(default=120.0, ge=0, title="A seq must be missing this long to count")


class MetricsSettings(BaseModel):
    """The Prometheus metrics endpoint."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", title="Metrics listen address")
    port: int = Field(default=9108, ge=0, le=65535, title="Metrics port (0: off)")


class GatewaySettings(WRSettings):
    """Everything the gateway needs; secrets come from the environment only."""

    model_config = SettingsConfigDict(env_prefix="WR_GATEWAY_")

    mqtt: MqttSettings = Field(default_factory=MqttSettings, title="Broker")
    influx: InfluxSettings = Field(default_factory=InfluxSettings, title="InfluxDB")
    batch: BatchSettings = Field(default_factory=BatchSettings, title="Batching")
    gaps: GapSettings = Field(default_factory=GapSettings, title="Gap detection")
    client_id: str = Field(default="gateway-1", title="MQTT client id; stable across restarts")
    share_group: str = Field(default="gateway", title="Shared subscription group")
    session_expiry_s: int = Field(default=7 * 86400, ge=86400, title="MQTT session expiry")
    data_dir: Path = Field(default=Path("var/gateway"), title="Dead letters live here")
    metrics: MetricsSettings = Field(default_factory=MetricsSettings, title="Metrics endpoint")
    max_payload_bytes: int = Field(
        default=MAX_PAYLOAD_BYTES, ge=1024, title="Larger payloads are rejected"
    )
    dedupe_ids: int = Field(default=200_000, ge=0, title="Recent rating ids remembered")


@lru_cache
def get_settings() -> GatewaySettings:
    """Return the settings from the environment (cached)."""
    return GatewaySettings()
