"""Settings of the live boards and device management (section `live`: WR_SERVER_LIVE__*)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from protocol.messages import ReasonOption

DEFAULT_REASONS: tuple[ReasonOption, ...] = (
    ReasonOption(code="attitude", zh="服务态度", en="Attitude"),
    ReasonOption(code="waiting", zh="等候时间长", en="Long wait"),
    ReasonOption(code="process", zh="办事流程繁琐", en="Complicated process"),
    ReasonOption(code="explanation", zh="解释不清楚", en="Unclear explanation"),
    ReasonOption(code="other", zh="其他", en="Other"),
)


class LiveSettings(BaseModel):
    """The server's MQTT link, live board refresh and the defaults of every device's config."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, title="Run the MQTT link and live boards")
    resync_s: float = Field(
        default=30.0, gt=0, le=3600, title="Seconds between re-syncs of the board from InfluxDB"
    )
    pending_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        title="Seconds a rating seen on MQTT but not yet in InfluxDB stays on the board",
    )
    heartbeat_s: float = Field(default=15.0, gt=0, le=300, title="SSE keep-alive interval")
    scale: Literal[3, 4, 5] = Field(default=5, title="Rating keys of every device")
    language: Literal["zh", "en"] = Field(default="zh", title="Language of every device")
    prompt_mode: Literal["always", "per_service"] = Field(
        default="always", title="When a device shows the rating keys"
    )
    reasons: list[ReasonOption] = Field(
        default_factory=lambda: list(DEFAULT_REASONS),
        title="Follow-up reasons offered after a negative rating",
    )

    @field_validator("scale", mode="before")
    @classmethod
    def _scale_from_text(cls, value: object) -> object:
        """Read `5` from the environment as the number 5 (a Literal does not convert text)."""
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        return value
