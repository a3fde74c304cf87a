"""Settings of negative-rating cases (section `cases`: WR_SERVER_CASES__*)."""

import json
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import NoDecode


class CaseSettings(BaseModel):
    """Deadline, the poller that opens cases from InfluxDB, and the case webhooks."""

    model_config = ConfigDict(extra="forbid")

    deadline_days: int = Field(
        default=15, ge=1, le=365, title="Working days to follow up a negative rating"
    )
    poller: bool = Field(default=True, title="Open cases from InfluxDB in the background")
    poll_s: float = Field(
        default=1.0, gt=0, le=3600, title="Seconds between scans for new negative ratings"
    )
    overlap_s: float = Field(
        default=600, ge=0, le=86400, title="Each scan re-reads this many seconds before its mark"
    )
    sweep_s: float = Field(
        default=60, gt=0, le=86400, title="Seconds between wide scans (late ratings, overdue)"
    )
    lookback_h: float = Field(
        default=72, gt=0, le=24 * 366, title="Hours a wide scan (and the first scan) reads back"
    )
    webhook_urls: Annotated[list[str], NoDecode] = Field(
        repr=False,  # a URL may carry a token
        default_factory=list,
        title="Webhook URLs for case events (comma-separated or JSON list)",
    )
    webhook_secret: SecretStr | None = Field(
        default=None, title="HMAC-SHA256 key of the webhook signature (from env)"
    )
    webhook_retries: int = Field(
        default=6, ge=0, le=50, title="Webhook retries after a failed delivery (backoff doubles)"
    )

    @field_validator("webhook_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        """Accept a JSON list or a comma-separated string of URLs."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [u.strip() for u in text.split(",") if u.strip()]
        return value
