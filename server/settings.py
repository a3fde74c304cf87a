"""Server settings from the environment (prefix WR_SERVER_, nested with __)."""

import functools
import json
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from common.mqtt import MqttSettings
from common.settings import WRSettings
from protocol.storage import InfluxSettings
from protocol.topics import is_valid_id
from server.live.settings import LiveSettings
from server.provisioning.settings import ProvisioningSettings


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
    case_deadline_days: int = Field(
        default=15, ge=1, le=365, title="Working days to follow up a negative rating"
    )
    case_poll_s: float = Field(
        default=1.0, gt=0, le=3600, title="Seconds between scans for new negative ratings"
    )
    case_overlap_s: float = Field(
        default=600, ge=0, le=86400, title="Each scan re-reads this many seconds before its mark"
    )
    case_sweep_s: float = Field(
        default=60, gt=0, le=86400, title="Seconds between wide scans (late ratings, overdue)"
    )
    case_lookback_h: float = Field(
        default=72, gt=0, le=24 * 366, title="Hours a wide scan (and the first scan) reads back"
    )
    case_poller: bool = Field(default=True, title="Open cases from InfluxDB in the background")
    case_webhook_urls: Annotated[list[str], NoDecode] = Field(
        repr=False,  # a URL may carry a token
        default_factory=list,
        title="Webhook URLs for case events (comma-separated or JSON list)",
    )
    case_webhook_secret: SecretStr | None = Field(
        default=None, title="HMAC-SHA256 key of the webhook signature (from env)"
    )
    case_webhook_retries: int = Field(
        default=6, ge=0, le=50, title="Webhook retries after a failed delivery (backoff doubles)"
    )

    secret_extra = ("database_url",)

    @field_validator("case_webhook_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        """Accept a JSON list or a comma-separated string of URLs."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [u.strip() for u in text.split(",") if u.strip()]
        return value

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
