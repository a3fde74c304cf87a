"""The storage contract between the gateway (writer) and the server (reader): InfluxDB v1 API."""

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

MEASUREMENT_RATING = "rating"
MEASUREMENT_EVENT = "event"
MEASUREMENT_STATUS = "device_status"
DEFAULT_DATABASE = "windowrate"


class InfluxSettings(BaseModel):
    """InfluxDB v1 HTTP API (1.x natively, 2.x/3.x through v1 compatibility); password from env."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(default="http://127.0.0.1:8086", title="Base URL of the v1 HTTP API")
    database: str = Field(default=DEFAULT_DATABASE, min_length=1, title="Database")
    username: str | None = Field(default=None, title="User name")
    password: SecretStr | None = Field(default=None, title="Password (from env)")
    timeout_s: float = Field(default=10.0, gt=0, le=300, title="HTTP timeout seconds")


def open_http(
    settings: InfluxSettings,
    *,
    timeout_s: float | None = None,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """Return an HTTP client for the InfluxDB API with its credentials (basic auth)."""
    auth: tuple[str, str] | None = None
    if settings.username:
        pw = settings.password.get_secret_value() if settings.password else ""
        auth = (settings.username, pw)
    return httpx.Client(
        base_url=settings.url.rstrip("/"),
        timeout=timeout_s or settings.timeout_s,
        auth=auth,
        transport=transport,
    )
