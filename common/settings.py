"""The one settings base: environment with a prefix, nested `__`, unknown keys refused, `_FILE`."""

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from common.env_names import refuse_unknown
from common.secret_files import SecretFileSource


class StrictEnvSource(SecretFileSource):
    """The environment, secrets also from `_FILE` twins, and unknown variables refused.

    A variable with the root's prefix that names no setting raises UnknownSettingError
    instead of being silently ignored.
    """

    def _load_env_vars(self) -> Mapping[str, str | None]:
        """Return the environment after refusing the prefix's unknown names."""
        env = super()._load_env_vars()
        cfg = self.settings_cls.model_config
        prefix = cfg.get("env_prefix", "") or ""
        if prefix:
            delim = cfg.get("env_nested_delimiter", "") or "__"
            refuse_unknown(env, self.settings_cls, prefix, delim, self._extra)
        return env


class WRSettings(BaseSettings):
    """Base of every settings root; each secret (SecretStr) may also come from `<NAME>_FILE`.

    A subclass sets `model_config = SettingsConfigDict(env_prefix="WR_PART_")` and, for a
    secret that is not a SecretStr (a database URL), names its dotted path in `secret_extra`.
    """

    model_config = SettingsConfigDict(env_nested_delimiter="__", extra="forbid")

    secret_extra: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Read each secret also from its `_FILE` variable; refuse unknown variables."""
        env: Any = StrictEnvSource(settings_cls, cls.secret_extra)
        return (init_settings, env, dotenv_settings, file_secret_settings)
