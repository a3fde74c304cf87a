"""`windowrate hall …`: what deploy/hall/install.sh calls (being built)."""

import click


@click.group("hall")
def hall_group() -> None:
    """Install and upgrade a hall server (being built)."""
