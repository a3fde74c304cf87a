"""`windowrate backup` and `windowrate restore` (being built)."""

import click


@click.command("backup")
def backup_command() -> None:
    """Back up the hall (being built)."""
    raise click.ClickException("not built yet")


@click.command("restore")
def restore_command() -> None:
    """Restore a hall backup (being built)."""
    raise click.ClickException("not built yet")
