"""Kiosk settings from WR_KIOSK_* variables; the centre's retained config overrides some."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from common.mqtt import MqttSettings
from common.settings import WRSettings


class KioskSettings(WRSettings):
    """One terminal at one window."""

    model_config = SettingsConfigDict(env_prefix="WR_KIOSK_")

    hall: str = Field(default="demo", pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", title="Hall id")
    device: str = Field(default="k-0001", pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", title="Device id")
    window: str = Field(default="w01", title="Window until the centre's config says otherwise")
    scale: int = Field(default=5, ge=3, le=5, title="Keys until the centre's config arrives")
    language: Literal["zh", "en"] = Field(default="zh", title="Language until configured")
    prompt_mode: Literal["always", "per_service"] = Field(default="always", title="Prompt mode")
    data_dir: Path = Field(default=Path("var/kiosk"), title="Outbox and cached config")
    mqtt: MqttSettings = Field(default_factory=MqttSettings, title="Broker")
    gpio_file: Path | None = Field(default=None, title="Pin map (TOML); none: touch only")
    touch: bool = Field(default=True, title="Show touch buttons (false: buttons only)")
    fullscreen: bool = Field(default=True, title="Fullscreen window")
    setup_pin: SecretStr | None = Field(default=None, title="PIN of the setup screen (none: off)")
    voice: bool = Field(default=True, title="Spoken prompt and thank-you")
    trust_wall_clock: bool = Field(default=False, title="Treat the wall clock as synced")


@lru_cache
def get_settings() -> KioskSettings:
    """Return the settings from the environment (cached)."""
    return KioskSettings()
