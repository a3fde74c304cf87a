"""`windowrate doctor [--json]`: what is wrong with this hall, each problem with what to do."""

import sys
from pathlib import Path

import click


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="One JSON document with every check.")
@click.option("--strict", is_flag=True, help="Exit non-zero on a warning too.")
@click.option(
    "--lang",
    type=click.Choice(["zh", "en", "both"]),
    default="both",
    show_default=True,
    help="Language of the fixes in the table.",
)
def doctor_command(as_json: bool, strict: bool, lang: str) -> None:
    """Check services, certificates, disk, clocks, the rating pipeline, devices and backups.

    Exits 1 on any failure (with --strict, on any warning too), else 0.
    """
    import logging

    from pydantic import ValidationError

    from common import installation
    from ops.doctor.runner import diagnose

    logging.getLogger("alembic").setLevel(logging.WARNING)  # the registry's migration chatter
    params = click.get_current_context().params  # --config / --run-dir, as `manage` used them
    config: Path | None = params.get("wr_config_dir")
    run_dir: Path | None = params.get("wr_stack_run_dir")
    try:
        report = diagnose(installation.find(config, run_dir))
    except ValidationError as exc:
        raise click.ClickException(
            f"设置无效，请修正安装的 env 文件 / the installation's settings are invalid, fix its "
            f"env files: {exc}"
        ) from exc
    if as_json:
        click.echo(report.json_text())
    else:
        click.echo(report.table(lang))  # type: ignore[arg-type]
    sys.exit(report.exit_code(strict))
