"""Settings of scores and exports (WR_SCORES_*); InfluxDB and database are the server's."""

import functools
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ScoresSettings(BaseSettings):
    """Where the scoring policy is and where exports made through the API are kept."""

    model_config = SettingsConfigDict(env_prefix="WR_SCORES_", extra="forbid")

    policy_file: Path | None = Field(
        default=None, title="Scoring policy TOML (DESIGN.md defaults when unset)"
    )
    export_dir: Path = Field(
        default=Path("var/server/exports"), title="Directory of exports made through the API"
    )
    export_keep: int = Field(default=50, ge=1, le=10_000, title="Export jobs kept in memory")


@functools.lru_cache(maxsize=1)
def get_settings() -> ScoresSettings:
    """Return the settings read from the environment (read once, then cached)."""
    return ScoresSettings()
