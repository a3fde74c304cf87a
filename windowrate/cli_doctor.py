"""`windowrate doctor` (being built)."""

import click


@click.command("doctor")
def doctor_command() -> None:
    """Check the hall (being built)."""
    raise click.ClickException("not built yet")
