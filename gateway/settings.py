"""Gateway settings: one pydantic model per section, from WR_GATEWAY_* environment variables."""

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from common.mqtt import MqttSettings
from common.settings import WRSettings
from protocol.decode import MAX_PAYLOAD_BYTES
from protocol.topics import ID_PATTERN
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
    client_id: str = Field(
        default="gateway-1",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        title="MQTT client id of the session; stable across restarts",
    )
    role: Literal["primary", "standby"] = Field(
        default="primary", title="standby: take the session over only while the primary is away"
    )
    halls: Annotated[list[str], NoDecode] = Field(
        default_factory=list, title="Halls this gateway serves (comma-separated; empty: all)"
    )
    share_group: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9_.-]{0,64}$",
        title="Shared subscription group ($share, opt-in); empty: plain subscription",
    )
    presence: bool = Field(
        default=True, title="Publish a retained online/offline presence (Last Will)"
    )
    watch_client_id: str = Field(
        default="",
        pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,63})?$",
        title="Standby: client id of its presence watcher (empty: CLIENT_ID-watch-random)",
    )
    session_expiry_s: int = Field(default=7 * 86400, ge=86400, title="MQTT session expiry")
    data_dir: Path = Field(default=Path("var/gateway"), title="Dead letters live here")
    metrics: MetricsSettings = Field(default_factory=MetricsSettings, title="Metrics endpoint")
    max_payload_bytes: int = Field(
        default=MAX_PAYLOAD_BYTES, ge=1024, title="Larger payloads are rejected"
    )
    dedupe_ids: int = Field(default=200_000, ge=0, title="Recent rating ids remembered")

    @field_validator("halls", mode="before")
    @classmethod
    def _split_halls(cls, value: Any) -> Any:
        """Accept `h1,h2` as well as a JSON list."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [h.strip() for h in text.split(",") if h.strip()]
        return value

    @field_validator("halls")
    @classmethod
    def _valid_halls(cls, value: list[str]) -> list[str]:
        """Hall ids follow the topic grammar; no wildcards, no duplicates."""
        for hall in value:
            if not re.fullmatch(ID_PATTERN, hall):
                raise ValueError(f"bad hall id {hall!r}")
        if len(set(value)) != len(value):
            raise ValueError("a hall is listed twice")
        return value

    @model_validator(mode="after")
    def _standby_needs_presence(self) -> "GatewaySettings":
        """A standby tells the primary's presence apart from its own: presence must be on."""
        if self.role == "standby" and not self.presence:
            raise ValueError("ROLE=standby needs PRESENCE=true (it watches the presence topic)")
        return self


@lru_cache
def get_settings() -> GatewaySettings:
    """Return the settings from the environment (cached)."""
    return GatewaySettings()
