"""Server settings from the environment (prefix WR_SERVER_, sections nested with __)."""

import functools
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from common.mqtt import MqttSettings
from common.settings import WRSettings
from protocol.topics import is_valid_id
from server.settings.cases import CaseSettings
from server.settings.live import LiveSettings
from server.settings.provisioning import ProvisioningSettings
from storage.client import InfluxSettings


class ServerSettings(WRSettings):
    """Settings of the WindowRate server (FastAPI board, API and health)."""

    model_config = SettingsConfigDict(env_prefix="WR_SERVER_")

    host: str = Field(default="127.0.0.1", title="Listen address")
    port: int = Field(default=8000, ge=1, le=65535, title="Listen port")
    influx: InfluxSettings = Field(default_factory=InfluxSettings, title="InfluxDB")
    mqtt: MqttSettings = Field(default_factory=MqttSettings, title="MQTT broker")
    gateway_metrics_urls: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:9108/metrics"],
        title="Prometheus metrics URLs of the gateways (health check)",
    )
    timezone: str = Field(default="Asia/Shanghai", title="The hall's time zone (IANA name)")
    hall: str | None = Field(default=None, title="Show only this hall (all halls when unset)")
    database_url: str = Field(
        repr=False,
        default="sqlite:///var/server/windowrate.db",
        title="Registry database URL (SQLAlchemy; sqlite:/// or postgresql+psycopg://)",
    )
    cookie_secure: bool = Field(
        default=False, title="Send the login cookies only over HTTPS (set behind TLS)"
    )
    session_hours: int = Field(default=12, ge=1, le=24 * 30, title="Login session lifetime")
    provisioning: ProvisioningSettings = Field(
        default_factory=ProvisioningSettings, title="Broker accounts and kiosk provisioning"
    )
    live: LiveSettings = Field(
        default_factory=LiveSettings, title="Live boards, MQTT link and device config defaults"
    )
    cases: CaseSettings = Field(
        default_factory=CaseSettings, title="Negative-rating cases: deadline, poller, webhooks"
    )

    secret_extra = ("database_url",)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        """Reject a time zone name that zoneinfo does not know."""
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("hall")
    @classmethod
    def _valid_hall(cls, value: str | None) -> str | None:
        """Reject a hall id that does not follow the topic grammar."""
        if value is not None and not is_valid_id(value):
            raise ValueError(f"bad hall id {value!r}")
        return value

    @property
    def tz(self) -> ZoneInfo:
        """The hall's time zone."""
        return ZoneInfo(self.timezone)


@functools.lru_cache(maxsize=1)
def get_settings() -> ServerSettings:
    """Return the settings read from the environment (read once, then cached)."""
    return ServerSettings()
