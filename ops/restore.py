"""`windowrate restore`: verify an archive, then put every part back onto an empty machine.

Where each part goes is read from the archive's own env files, as they will be installed
into the target config directory: moved to a new run or config directory when one is given
(every path under the old one is rewritten under the new one), and with any variable set in
this process's environment winning, as for every admin command.
"""

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from common import installation
from ops import parts
from ops.archive import extract_verified
from ops.locations import Locations, environment, from_environment

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


class TargetNotEmptyError(Exception):
    """The target already holds a hall; `findings` says what was found."""

    def __init__(self, findings: list[str]) -> None:
        """Keep what was found."""
        super().__init__("; ".join(findings))
        self.findings = findings


@dataclass(frozen=True)
class Target:
    """Where to restore: the config directory and the path prefixes moved there."""

    config_dir: Path
    how: str
    moves: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class RestoreResult:
    """A finished restore."""

    manifest: dict[str, Any]
    locations: Locations
    kept_from_environment: list[str]
    seconds: float


def resolve_target(manifest: dict[str, Any], config: Path | None, run_dir: Path | None) -> Target:
    """The target of `--config`, `--run-dir`, the installation found, or the archive's own."""
    inst = manifest.get("installation", {})
    old_config = inst.get("config_dir")
    old_run = inst.get("run_dir")

    def moves(new_config: Path, new_run: Path | None) -> list[tuple[str, str]]:
        if old_run and new_run is not None and str(new_run) != old_run:
            return [(old_run, str(new_run))]
        if old_config and str(new_config) != old_config:
            return [(old_config, str(new_config))]
        return []

    if config is not None:
        c = config.resolve()
        return Target(c, "--config", moves(c, None))
    if run_dir is not None:
        r = run_dir.resolve()
        c = r / installation.CONFIG_SUBDIR
        return Target(c, "--run-dir", moves(c, r))
    found = installation.find()
    if found is not None:
        return Target(found.config_dir, found.how, moves(found.config_dir, found.run_dir))
    if not old_config:
        raise ValueError("the archive names no config directory: give --config DIR")
    return Target(Path(old_config), "the archive's own installation")


def move_paths(value: str, moves: list[tuple[str, str]]) -> str:
    """Rewrite every path under an old prefix to the new one (also inside `sqlite:///…`)."""
    for old, new in moves:
        if value == old or value.startswith(old + "/"):
            return new + value[len(old) :]
        i = value.find(old)
        while i > 0:
            end = i + len(old)
            if value[i - 1] in "/=\"'" and (end == len(value) or value[end] in "/\"',]"):
                value = value[:i] + new + value[end:]
                i = value.find(old, i + len(new))
            else:
                i = value.find(old, i + 1)
    return value


def env_values(
    config_src: Path, moves: list[tuple[str, str]], env: Mapping[str, str]
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Each archived env file's variables, moved and overridden by `env`; the names kept."""
    files: dict[str, dict[str, str]] = {}
    kept: set[str] = set()
    for name in installation.ENV_FILES:
        path = config_src / name
        if not path.is_file():
            continue
        raw = dotenv_values(path, interpolate=False)
        values = {k: move_paths(v, moves) for k, v in raw.items() if v is not None}
        for key in values:
            if key in env and env[key] != values[key]:
                values[key] = env[key]
                kept.add(key)
        files[name] = values
    return files, sorted(kept)


def _findings(
    loc: Locations, config_src: Path, manifest: dict[str, Any]
) -> tuple[list[str], list[str]]:
    """What the target holds: hall data (blocks without --force), and files to be replaced.

    An installed hall before its first restore holds no hall data: its config files, CA,
    migrated registry (first admin, service accounts) and empty InfluxDB database are
    replaced by the archive's without --force.
    """
    data: list[str] = []
    files: list[str] = []
    counts = parts.registry_hall_data(loc.registry_url)
    if counts:
        rows = ", ".join(f"{n} {t}" for t, n in counts.items())
        data.append(f"注册库 / registry: {parts.redact(loc.registry_url)} holds {rows}")
    if parts.influx_holds_data(loc.influx):
        data.append(f"InfluxDB: database {loc.influx.database!r} at {loc.influx.url} holds data")
    if loc.gateway_dir.is_dir():
        for f in sorted(loc.gateway_dir.glob("*.sqlite")):
            if n := parts.sqlite_rows(f):
                data.append(f"网关 / gateway: {f} holds {n} rows")
    exports = parts.tree_files(loc.export_dir)
    if exports and _part(manifest, "exports"):
        data.append(f"exports: {loc.export_dir} holds {len(exports)} files")
    if loc.config_dir is not None:
        for f in parts.tree_files(config_src):
            there = loc.config_dir / f.relative_to(config_src)
            if there.exists():
                files.append(f"配置 / config: {there}")
    for name in ("pki", "broker-auth"):
        found = parts.tree_files(loc.directories()[name])
        if found and _part(manifest, name):
            files.append(f"{name}: {len(found)} files in {loc.directories()[name]}")
    return data, files


def _check_kinds(manifest: dict[str, Any], loc: Locations) -> None:
    """Refuse before anything is written when the registry kinds differ."""
    registry = _part(manifest, "registry")
    if registry is None:
        return
    target_sqlite = parts.sqlite_path(loc.registry_url) is not None
    if registry["kind"] == "sqlite" and not target_sqlite:
        raise parts.PartError(
            "归档中是 SQLite 注册库 / the archive holds a SQLite registry but the target's "
            "WR_SERVER_DATABASE_URL is PostgreSQL: set a sqlite:/// URL"
        )
    if registry["kind"] == "postgresql" and target_sqlite:
        raise parts.PartError(
            "归档中是 PostgreSQL 注册库 / the archive holds a PostgreSQL registry but the "
            "target's WR_SERVER_DATABASE_URL is SQLite: set the postgresql:// URL of a database"
        )


def _part(manifest: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The manifest's entry of one part."""
    return next((p for p in manifest["parts"] if p["name"] == name), None)


def run_restore(
    archive: Path,
    *,
    config: Path | None = None,
    run_dir: Path | None = None,
    force: bool = False,
    influx_rpc: str | None = None,
    progress: Progress = lambda _m: None,
) -> RestoreResult:
    """Verify `archive`, check the target is empty (or `force`), restore every part."""
    start = time.monotonic()
    staging = Path(tempfile.mkdtemp(prefix="windowrate-restore-"))
    try:
        progress(f"校验归档 / verifying {archive} …")
        manifest = extract_verified(archive, staging, progress)
        progress(
            f"归档完好 / archive verified: {len(manifest['files'])} files, "
            f"made {manifest['created']} on {manifest.get('hostname')}"
        )
        target = resolve_target(manifest, config, run_dir)
        progress(f"恢复到 / restoring into: {target.config_dir} ({target.how})")
        config_src = staging / "config"
        files, kept = env_values(config_src, target.moves, os.environ)
        merged = {k: v for values in files.values() for k, v in values.items()}
        with environment(merged):
            loc = from_environment(target.config_dir)
        _check_kinds(manifest, loc)
        data, replaced = _findings(loc, config_src, manifest)
        if data and not force:
            raise TargetNotEmptyError([*data, *(f"(also) {f}" for f in replaced)])
        for line in replaced:
            progress(f"  替换 / replacing {line}")
        _restore_parts(manifest, staging, loc, files, influx_rpc, progress)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return RestoreResult(manifest, loc, kept, time.monotonic() - start)


def _restore_parts(
    manifest: dict[str, Any],
    staging: Path,
    loc: Locations,
    env_files: dict[str, dict[str, str]],
    influx_rpc: str | None,
    progress: Progress,
) -> None:
    """Put each part back: configs, files, registry, gateway, then InfluxDB."""
    order = ["config", "pki", "broker-auth", "registry", "gateway", "exports", "influxdb"]
    todo = [p for name in order if (p := _part(manifest, name)) is not None]
    for i, part in enumerate(todo, 1):
        name = part["name"]
        t0 = time.monotonic()
        progress(f"[{i}/{len(todo)}] {name} …")
        src = staging / part["path"] if part.get("path") else None
        where = _restore_one(name, part, src, loc, env_files, influx_rpc)
        progress(f"[{i}/{len(todo)}] {name} → {where} ({time.monotonic() - t0:.1f} s)")


def _restore_one(
    name: str,
    part: dict[str, Any],
    src: Path | None,
    loc: Locations,
    env_files: dict[str, dict[str, str]],
    influx_rpc: str | None,
) -> str:
    """Restore one part; return where it went."""
    if src is None:
        return "(empty)"
    if name == "config":
        assert loc.config_dir is not None
        parts.restore_tree(src, loc.config_dir)
        for env_name, values in env_files.items():
            raw = dotenv_values(src / env_name, interpolate=False)
            if values != {k: v for k, v in raw.items() if v is not None}:
                installation.write_env_file(loc.config_dir / env_name, values)
        parts.give_back(loc.config_dir, part.get("owner"))
        return str(loc.config_dir)
    if name == "registry":
        db_file = parts.sqlite_path(loc.registry_url)
        if db_file is not None:  # kinds checked before anything was written
            parts.sqlite_restore(src, db_file)
            return str(db_file)
        clean = bool(parts.registry_tables(loc.registry_url))
        parts.pg_restore(src, loc.registry_url, clean=clean)
        return parts.redact(loc.registry_url)
    if name == "gateway":
        for f in sorted(src.glob("*.sqlite")):
            parts.sqlite_restore(f, loc.gateway_dir / f.name)
        parts.give_back(loc.gateway_dir, part.get("owner"))
        return str(loc.gateway_dir)
    if name == "influxdb":
        rpc = parts.influx_rpc(loc.influx, influx_rpc)
        parts.influx_restore(loc.influx, rpc, src)
        return f"{loc.influx.url} ({rpc})"
    where = loc.directories().get(name)
    if where is None:
        log.warning("part %s has no place in the target's settings; skipped", name)
        return "(skipped: not configured)"
    parts.restore_tree(src, where)
    parts.give_back(where, part.get("owner"))
    return str(where)
