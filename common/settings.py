"""The one settings base: environment with a prefix, nested `__`, unknown keys refused, `_FILE`."""

from typing import ClassVar

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from common.secret_files import with_secret_files


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
        """Read each secret also from the file named by its `_FILE` variable."""
        sources = (init_settings, env_settings, dotenv_settings, file_secret_settings)
        return with_secret_files(settings_cls, sources, extra=cls.secret_extra)
