"""A click group whose subcommands are imported only when used.

A kiosk-only install has no server code's dependencies (FastAPI, SQLAlchemy…), so the
`windowrate` command must not import a subcommand's module before that subcommand runs:
`windowrate kiosk --help` works on a Pi, `windowrate export` on the server.
"""

import importlib
from typing import Any

import click


class LazyGroup(click.Group):
    """A group with `lazy` subcommands given as `{"name": "module:attribute"}`."""

    def __init__(
        self,
        *args: Any,
        lazy: dict[str, str] | None = None,
        managed: dict[str, bool] | None = None,
        **kwargs: Any,
    ) -> None:
        """Remember where each lazy subcommand lives, and which manage an installation.

        `managed` maps a subcommand to whether it needs an installation (True) or only uses
        one when found (False): those get --config/--run-dir (windowrate.installation).
        """
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})
        self.managed = dict(managed or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        """The eager and the lazy subcommands, sorted."""
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Import a lazy subcommand's module when the subcommand is asked for."""
        if cmd_name not in self.lazy:
            command = super().get_command(ctx, cmd_name)
        else:
            module_name, attribute = self.lazy[cmd_name].split(":")
            command = getattr(importlib.import_module(module_name), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self.lazy[cmd_name]} is not a click command")
        if command is not None and cmd_name in self.managed:
            from windowrate.installation import manage

            manage(command, required=self.managed[cmd_name])
        return command
