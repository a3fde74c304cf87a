"""Thresholds of `windowrate doctor` (WR_DOCTOR_* variables; the defaults suit a hall)."""

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import WRSettings


class DoctorSettings(WRSettings):
    """When a measured value is a warning or a failure."""

    model_config = SettingsConfigDict(env_prefix="WR_DOCTOR_")

    timeout_s: float = Field(default=3.0, gt=0, le=60, title="Timeout of each network check")
    cert_warn_days: int = Field(default=30, ge=0, title="Warn when a certificate expires sooner")
    cert_fail_days: int = Field(default=14, ge=0, title="Fail when a certificate expires sooner")
    disk_warn_free_pct: float = Field(default=15.0, ge=0, le=100, title="Warn below this free %")
    disk_fail_free_pct: float = Field(default=5.0, ge=0, le=100, title="Fail below this free %")
    growth_warn_days: float = Field(default=60.0, ge=0, title="Warn when the disk fills sooner")
    growth_fail_days: float = Field(default=14.0, ge=0, title="Fail when the disk fills sooner")
    offline_after_s: int = Field(default=300, ge=30, title="A device silent this long is offline")
    queue_warn: int = Field(default=10_000, ge=0, title="Warn above this many queued messages")
    in_flight_warn: int = Field(default=5_000, ge=0, title="Warn above this many unacked messages")
    dead_letter_days: float = Field(default=7.0, gt=0, title="Dead letters this recent are shown")
    backup_warn_hours: float = Field(default=36.0, gt=0, title="Warn when the last backup is older")
    backup_fail_hours: float = Field(default=24.0 * 7, gt=0, title="Fail when it is older")
    webhook_warn: int = Field(default=100, ge=0, title="Warn above this many pending deliveries")
    state_file: Path | None = Field(
        default=None, title="Where InfluxDB sizes are kept (default: next to the data)"
    )


@lru_cache
def get_settings() -> DoctorSettings:
    """Return the settings from the environment (cached)."""
    return DoctorSettings()
