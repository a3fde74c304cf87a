"""Settings of scores and exports (WR_SCORES_*); InfluxDB and database are the server's."""

import functools
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import WRSettings


class ScoresSettings(WRSettings):
    """Where the scoring policy is and where exports made through the API are kept."""

    model_config = SettingsConfigDict(env_prefix="WR_SCORES_")

    policy_file: Path | None = Field(
        default=None, title="Scoring policy TOML (the built-in defaults when unset)"
    )
    export_dir: Path = Field(
        default=Path("var/server/exports"), title="Directory of exports made through the API"
    )
    export_keep: int = Field(
        default=50, ge=1, le=10_000, title="Finished export jobs kept in the database"
    )
    rollup_interval_s: float = Field(
        default=3600.0, ge=0, title="The server rolls up days this often (0: never, use cron)"
    )
    rollup_first_s: float = Field(
        default=300.0, ge=0, title="First run this long after the server starts (let it settle)"
    )
    rollup_retry_s: float = Field(default=60.0, gt=0, title="Retry after a failed run")
    rollup_recheck_days: int = Field(
        default=3, ge=0, le=31, title="Completed days rebuilt every run (late ratings)"
    )
    rollup_catchup_days: int = Field(
        default=62, ge=1, le=3660, title="How far back missing days are built"
    )


@functools.lru_cache(maxsize=1)
def get_settings() -> ScoresSettings:
    """Return the settings read from the environment (read once, then cached)."""
    return ScoresSettings()
