"""`--config` / `--run-dir` on the admin commands: find the installation, load it, say which."""

import functools
import os
from pathlib import Path
from typing import Any

import click

from common import installation

_MANAGED = "_windowrate_installation"
_PREFIXES = ("WR_SERVER_", "WR_GATEWAY_", "WR_SCORES_")


def load(config: Path | None, run_dir: Path | None, *, required: bool = True) -> None:
    """Find and activate the installation, print which one on stderr, reset cached settings."""
    inst = installation.find(config, run_dir)
    if inst is None:
        names = sorted(k for k in os.environ if k.startswith(_PREFIXES))
        if names:  # a service's own environment, as systemd or a container gives it
            click.echo(
                f"installation: this process's environment ({len(names)} WR_ variables)", err=True
            )
            _reset_settings_caches()
            return
        if required:
            raise click.ClickException(
                "no WindowRate installation found (no /etc/windowrate/server.env, no running "
                "`windowrate up`, no ./var/run/config): give --config DIR, a directory with "
                "server.env, or --run-dir DIR, a `windowrate up` run directory. "
                "未找到 WindowRate 安装：请用 --config 或 --run-dir 指定。"
            )
        return
    if not inst.config_dir.is_dir():
        raise click.ClickException(f"{inst.describe()} is not a directory")
    kept = installation.activate(inst)
    click.echo(f"installation: {inst.describe()}", err=True)
    if kept:
        click.echo(f"  kept from the environment instead: {', '.join(sorted(kept))}", err=True)
    _reset_settings_caches()


def _reset_settings_caches() -> None:
    """Forget settings read before the installation's variables were loaded."""
    for module in ("server.settings", "server.scores.settings", "gateway.settings"):
        try:
            getter = __import__(module, fromlist=["get_settings"]).get_settings
        except ImportError:  # a kiosk-only install has no server or gateway code
            continue
        getter.cache_clear()


def standalone(command: click.Command) -> click.Command:
    """Leave a command of a managed group as it is: all it uses is its own options."""
    setattr(command, _MANAGED, True)
    return command


def manage(command: click.Command, *, required: bool = True) -> click.Command:
    """Give a command (each leaf of a group) --config and --run-dir, loaded before it runs."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            manage(sub, required=required)
        return command
    if getattr(command, _MANAGED, False) or command.callback is None:
        return command
    command.params += [
        click.Option(
            ["--config", "wr_config_dir"],
            type=click.Path(path_type=Path, file_okay=False),
            help="Config directory of the installation (server.env, gateway.env).",
        ),
        click.Option(
            ["--run-dir", "wr_stack_run_dir"],
            type=click.Path(path_type=Path, file_okay=False),
            help="Run directory of a `windowrate up` dev stack.",
        ),
    ]
    callback = command.callback

    @functools.wraps(callback)
    def run(
        *args: Any, wr_config_dir: Path | None, wr_stack_run_dir: Path | None, **kw: Any
    ) -> Any:
        load(wr_config_dir, wr_stack_run_dir, required=required)
        return callback(*args, **kw)

    command.callback = run
    setattr(command, _MANAGED, True)
    return command
