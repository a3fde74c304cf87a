"""The environment variables a settings root understands, and the ones it does not.

A settings root (prefix `WR_PART_`, nested with `__`) understands the name of each of its
fields at any depth (a section as a whole too, as JSON), the keys below a mapping field, and
the `_FILE` twin of each secret. Any other variable that starts with the prefix is a typo or
a setting that no longer exists; the settings base refuses it by name.
"""

import difflib
import types
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

from common.secret_files import FILE_SUFFIX, secret_paths


class UnknownSettingError(ValueError):
    """An environment variable with a settings root's prefix that matches no setting."""


def _parts(annotation: Any) -> tuple[Any, ...]:
    """The members of a union (Optional included), else the annotation itself."""
    if get_origin(annotation) in (Union, types.UnionType):
        return get_args(annotation)
    return (annotation,)


def _walk(model: type[BaseModel], path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], bool]]:
    """Yield (path, is_mapping) for every field of `model`, nested models included."""
    for name, field in model.model_fields.items():
        here = (*path, name)
        parts = _parts(field.annotation)
        is_mapping = any(get_origin(a) in (dict, Mapping) or a is dict for a in parts)
        yield here, is_mapping
        for a in parts:
            if isinstance(a, type) and issubclass(a, BaseModel):
                yield from _walk(a, here)


def known_names(
    model: type[BaseModel], prefix: str, delimiter: str = "__", extra: tuple[str, ...] = ()
) -> tuple[frozenset[str], tuple[str, ...]]:
    """Return (every exact variable name, name prefixes of mapping keys), lower case."""
    exact: set[str] = set()
    open_prefixes: list[str] = []
    for path, is_mapping in _walk(model, ()):
        name = (prefix + delimiter.join(path)).lower()
        exact.add(name)
        if is_mapping:
            open_prefixes.append(name + delimiter.lower())
    for path in secret_paths(model, extra):
        exact.add((prefix + delimiter.join(path) + FILE_SUFFIX).lower())
    return frozenset(exact), tuple(open_prefixes)


def unknown_names(
    names: Iterable[str],
    model: type[BaseModel],
    prefix: str,
    delimiter: str = "__",
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The names (compared in lower case) with `prefix` that `model` does not understand."""
    exact, open_prefixes = known_names(model, prefix, delimiter, extra)
    low_prefix = prefix.lower()
    return sorted(
        n
        for n in names
        if n.lower().startswith(low_prefix)
        and n.lower() not in exact
        and not n.lower().startswith(open_prefixes)
    )


def refuse_unknown(
    names: Iterable[str],
    model: type[BaseModel],
    prefix: str,
    delimiter: str = "__",
    extra: tuple[str, ...] = (),
) -> None:
    """Raise UnknownSettingError naming each variable `model` does not understand."""
    unknown = unknown_names(names, model, prefix, delimiter, extra)
    if not unknown:
        return
    exact, _ = known_names(model, prefix, delimiter, extra)
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name.lower(), sorted(exact), n=1)
        hint = f" (did you mean {close[0].upper()}?)" if close else ""
        hints.append(f"{name.upper()}{hint}")
    raise UnknownSettingError(f"unknown setting for {model.__name__}: " + ", ".join(hints))
