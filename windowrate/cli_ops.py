"""`windowrate backup` and `windowrate restore`: a hall into one archive and back.

Exit codes: 0 done; 1 a part failed (nothing half-written: no archive, or see the message);
3 restore: the target is not empty (give --force); 4 restore: the archive is damaged.
"""

import json
import sqlite3
from pathlib import Path
from typing import Literal

import click

from common import installation

EXIT_NOT_EMPTY = 3
EXIT_BAD_ARCHIVE = 4


class _NotEmptyError(click.ClickException):
    """The restore target is not empty."""

    exit_code = EXIT_NOT_EMPTY


class _BadArchiveError(click.ClickException):
    """The archive is damaged or not a backup."""

    exit_code = EXIT_BAD_ARCHIVE


def _progress(message: str) -> None:
    """Progress of a long step on stderr."""
    click.echo(message, err=True)


@click.command("backup")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Directory of the archives (created if missing).",
)
@click.option(
    "--keep",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Then delete all but the newest N archives in --out (0: keep all).",
)
@click.option(
    "--compress",
    "compression",
    type=click.Choice(["gz", "xz", "none"]),
    default="gz",
    show_default=True,
)
@click.option(
    "--influx-rpc",
    default=None,
    help="influxd's backup address HOST:PORT (default: what influxd reports, else :8088).",
)
@click.pass_context
def backup_command(
    ctx: click.Context,
    out_dir: Path,
    keep: int,
    compression: Literal["gz", "xz", "none"],
    influx_rpc: str | None,
) -> None:
    """Back up the hall (InfluxDB, registry, gateway files, PKI, configs, exports) to one archive.

    Safe while the hall runs. Prints one summary line on stdout; progress on stderr.
    """
    from ops.backup import run_backup
    from ops.locations import from_environment
    from ops.parts import PartError

    inst = installation.find(ctx.params.get("wr_config_dir"), ctx.params.get("wr_stack_run_dir"))
    where = {
        "config_dir": str(inst.config_dir.resolve()) if inst else None,
        "how": inst.how if inst else "environment",
        "run_dir": str(inst.run_dir.resolve()) if inst and inst.run_dir else None,
    }
    try:
        loc = from_environment(inst.config_dir if inst else None)
        result = run_backup(
            loc,
            out_dir.resolve(),
            installation=where,
            compression=compression,
            keep=keep,
            influx_rpc=influx_rpc,
            progress=_progress,
        )
    except (PartError, OSError, sqlite3.Error, ValueError) as exc:
        raise click.ClickException(
            f"备份失败，未写入归档 / backup failed, no archive written: {exc}; "
            "fix that and run the backup again"
        ) from exc
    pruned = f", removed {len(result.removed)} older" if result.removed else ""
    click.echo(
        f"备份完成 / backup ok: {result.archive} {result.bytes / 1e6:.1f} MB, "
        f"{result.files} files, {result.seconds:.1f} s{pruned}"
    )


@click.command("restore")
@click.argument("archive", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--config",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Restore into this config directory (may not exist yet).",
)
@click.option(
    "--run-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Restore into this `windowrate up` run directory (paths moved there).",
)
@click.option("--force", is_flag=True, help="Replace what the target already holds.")
@click.option("--verify", "verify_only", is_flag=True, help="Only verify the archive.")
@click.option(
    "--influx-rpc",
    default=None,
    help="influxd's restore address HOST:PORT (default: what influxd reports, else :8088).",
)
def restore_command(
    archive: Path,
    config: Path | None,
    run_dir: Path | None,
    force: bool,
    verify_only: bool,
    influx_rpc: str | None,
) -> None:
    """Verify a backup archive, then restore it onto an empty machine.

    Stop windowrate-server and windowrate-gateway first; InfluxDB must be running. Without
    --config/--run-dir: the installation found, else the archive's own directories.
    """
    from ops.archive import ArchiveError
    from ops.parts import PartError
    from ops.restore import TargetNotEmptyError, run_restore

    if verify_only:
        _verify(archive)
        return
    try:
        result = run_restore(
            archive,
            config=config,
            run_dir=run_dir,
            force=force,
            influx_rpc=influx_rpc,
            progress=_progress,
        )
    except ArchiveError as exc:
        raise _BadArchiveError(str(exc)) from exc
    except TargetNotEmptyError as exc:
        lines = "\n  ".join(exc.findings)
        raise _NotEmptyError(
            "目标不是空的，未恢复任何内容 / the target is not empty, nothing was restored:\n  "
            f"{lines}\n"
            "请在空机器上恢复，或加 --force 替换这些内容 / restore onto an empty machine, "
            "or add --force to replace them"
        ) from exc
    except (PartError, OSError, sqlite3.Error, ValueError) as exc:
        raise click.ClickException(
            f"恢复失败 / restore failed: {exc}; fix it and run restore again with --force"
        ) from exc
    if result.kept_from_environment:
        click.echo(
            f"  kept from the environment: {', '.join(result.kept_from_environment)}", err=True
        )
    click.echo(
        f"恢复完成 / restore ok: {archive} → {result.locations.config_dir} "
        f"(made {result.manifest['created']}), {result.seconds:.1f} s; "
        "start the services now / 现在可以启动服务"
    )


def _verify(archive: Path) -> None:
    """Extract into a temporary directory, verify, print the manifest's parts."""
    import shutil
    import tempfile

    from ops.archive import ArchiveError, extract_verified

    tmp = Path(tempfile.mkdtemp(prefix="windowrate-verify-"))
    try:
        manifest = extract_verified(archive, tmp, _progress)
    except ArchiveError as exc:
        raise _BadArchiveError(str(exc)) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = [{k: p[k] for k in ("name", "files", "bytes", "source")} for p in manifest["parts"]]
    click.echo(json.dumps(summary, ensure_ascii=False), err=True)
    click.echo(f"归档完好 / archive ok: {archive}, {len(manifest['files'])} files")
