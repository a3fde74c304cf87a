"""Secrets from files: `WR_…_PASSWORD_FILE=/run/secrets/x` sets `WR_…_PASSWORD` to the file's text.

Docker secrets and systemd credentials hand a process its secrets as files; this settings
source reads, for every secret field of a settings class (each SecretStr, at any depth, plus
the names given), the variable `<env name>_FILE` and uses the file's text without its final
newline. Giving both the variable and its `_FILE` twin is an error.
"""

import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings, EnvSettingsSource

FILE_SUFFIX = "_FILE"
MAX_BYTES = 64 * 1024


class SecretFileError(ValueError):
    """A `_FILE` variable that cannot be used (unreadable, too large, or set twice)."""


def _is_secret(annotation: Any) -> bool:
    """True when the annotation is SecretStr or an optional SecretStr."""
    if annotation is SecretStr:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_is_secret(a) for a in get_args(annotation))
    return False


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """Return the pydantic model a field holds (also through Optional), else None."""
    candidates = get_args(annotation) if get_origin(annotation) else (annotation,)
    for a in candidates:
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def secret_paths(model: type[BaseModel], extra: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Yield the field paths of every secret of `model` (nested models walked), then `extra`."""
    for name, field in model.model_fields.items():
        if _is_secret(field.annotation):
            yield (name,)
            continue
        sub = _model_of(field.annotation)
        if sub is not None:
            for path in secret_paths(sub):
                yield (name, *path)
    for name in extra:
        yield tuple(name.split("."))


def read_secret_file(path: Path) -> str:
    """Return a secret file's text without its final newline; SecretFileError if unusable."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise SecretFileError(f"secret file {path} is larger than {MAX_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretFileError(f"cannot read secret file {path}: {exc.__class__.__name__}") from exc
    return text.removesuffix("\n").removesuffix("\r")


class SecretFileSource(EnvSettingsSource):
    """The environment source, with `<secret env name>_FILE` files read in place of values."""

    def __init__(self, settings_cls: type[BaseSettings], extra: tuple[str, ...] = ()) -> None:
        """Prepare the source for `settings_cls`; `extra` names non-SecretStr fields (a.b)."""
        self._extra = extra
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        """Return the environment with each secret's `_FILE` twin replaced by the file's text."""
        env = dict(super()._load_env_vars())
        cfg = self.settings_cls.model_config
        prefix = (cfg.get("env_prefix", "") or "").lower()
        delim = (cfg.get("env_nested_delimiter", "") or "__").lower()
        for path in secret_paths(self.settings_cls, self._extra):
            name = prefix + delim.join(path).lower()
            file_name = env.pop(name + FILE_SUFFIX.lower(), None)
            if not file_name:
                continue
            if env.get(name):
                raise SecretFileError(f"both {name.upper()} and its {FILE_SUFFIX} twin are set")
            env[name] = read_secret_file(Path(file_name))
        return env
