"""The `windowrate export` and `windowrate scores …` commands."""

import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click

LEVELS = ("window", "unit", "hall", "staff", "item")
FORMATS = ("csv", "xlsx", "json")
DAY = click.DateTime(["%Y-%m-%d"])


def _progress(what: str) -> Any:
    """Return a progress callback that writes `done/total` to stderr."""

    def report(done: int, total: int) -> None:
        click.echo(f"\r{what}: {done}/{total} days", err=True, nl=done >= total)

    return report


def _open() -> Any:
    """Return the server settings, the migrated database and an InfluxDB client."""
    from server.db.engine import Database
    from server.settings import get_settings
    from storage.client import InfluxClient

    cfg = get_settings()
    db = Database(cfg.database_url)
    db.upgrade()
    return cfg, db, InfluxClient(cfg.influx)


def _policy(path: Path | None) -> Any:
    """Load the policy from `path`, WR_SCORES_POLICY_FILE or the defaults."""
    from server.scores.policy import PolicyError, load_policy
    from server.scores.settings import get_settings

    try:
        return load_policy(path or get_settings().policy_file)
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from exc


def _period(first: datetime, last: datetime) -> Any:
    """Return the period of two command-line days."""
    from server.scores.periods import Period

    try:
        return Period(first.date(), last.date())
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command("export")
@click.option("--from", "first", type=DAY, default=None, help="First day, YYYY-MM-DD.")
@click.option("--to", "last", type=DAY, default=None, help="Last day (inclusive).")
@click.option(
    "--period",
    "kind",
    type=click.Choice(["day", "week", "month", "quarter", "year"]),
    default=None,
    help="Instead of --from/--to: the period containing --date.",
)
@click.option("--date", "ref", type=DAY, default=None, help="Day in --period (default today).")
@click.option("--level", type=click.Choice(LEVELS), default="window", show_default=True)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None, help="From --out.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Data file.")
@click.option("--policy", type=click.Path(path_type=Path, exists=True), default=None)
@click.option("--hall", default=None, help="Only this hall.")
@click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True)
def export_command(
    first: datetime | None,
    last: datetime | None,
    kind: str | None,
    ref: datetime | None,
    level: str,
    fmt: str | None,
    out: Path,
    policy: Path | None,
    hall: str | None,
    lang: str,
) -> None:
    """Export scores for a period (hall time zone) as CSV, XLSX or JSON with a manifest."""
    from server.scores.export import manifest_path
    from server.scores.service import export_scores

    fmt = fmt or out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise click.BadParameter("give --format csv|xlsx|json or an --out with that suffix")
    from server.scores.periods import period_of

    if kind is not None:
        if first or last:
            raise click.BadParameter("give either --period (and --date) or --from and --to")
        from server.settings import get_settings

        today = datetime.now(get_settings().tz).date()
        period = period_of(kind, ref.date() if ref else today)
    elif first is None or last is None:
        raise click.BadParameter("give --from and --to (or --period)")
    else:
        period = _period(first, last)
    pol = _policy(policy)
    cfg, db, influx = _open()
    try:
        with db.session() as session:
            _result, manifest = export_scores(
                session=session, influx=influx, tz=cfg.tz, policy=pol, period=period,
                level=level, fmt=fmt, out=out, hall=hall, lang=lang,
                progress=_progress("scoring"),
            )  # fmt: skip
    finally:
        influx.close()
        db.close()
    click.echo(
        f"{out}: {manifest['rows']} rows, sha256 {manifest['sha256']}; "
        f"manifest {manifest_path(out)}"
    )


@click.group("scores")
def scores_group() -> None:
    """Daily rollups, their check, and fraud flags (settings from WR_SERVER_*)."""


def _default_days(first: datetime | None, last: datetime | None) -> tuple[datetime, datetime]:
    """Yesterday in the hall's time zone when no days are given."""
    from server.settings import get_settings

    today = datetime.now(get_settings().tz).date()
    yesterday = datetime.combine(today - timedelta(days=1), datetime.min.time())
    return first or yesterday, last or first or yesterday


@scores_group.command("rollup")
@click.option("--from", "first", type=DAY, default=None, help="First day (default yesterday).")
@click.option("--to", "last", type=DAY, default=None, help="Last day (inclusive).")
@click.option("--policy", type=click.Path(path_type=Path, exists=True), default=None)
def scores_rollup(first: datetime | None, last: datetime | None, policy: Path | None) -> None:
    """Build (or rebuild) the daily rollups and run the fraud detectors on those days."""
    from server.scores.rollup import build_rollups

    pol, period = _policy(policy), _period(*_default_days(first, last))
    cfg, db, influx = _open()
    try:
        with db.session() as session:
            built = build_rollups(session, influx, period, cfg.tz, pol, _progress("rollup"))
    finally:
        influx.close()
        db.close()
    ratings = sum(b.ratings for b in built)
    flags = sum(b.new_flags for b in built)
    click.echo(f"{len(built)} days rolled up: {ratings} ratings, {flags} new fraud flags")


@scores_group.command("check")
@click.option("--from", "first", type=DAY, default=None, help="First day (default yesterday).")
@click.option("--to", "last", type=DAY, default=None, help="Last day (inclusive).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def scores_check(first: datetime | None, last: datetime | None, as_json: bool) -> None:
    """Compare the rollups with the raw ratings; exit 1 on any difference."""
    from server.scores.rollup import check_rollups

    period = _period(*_default_days(first, last))
    cfg, db, influx = _open()
    try:
        with db.session() as session:
            days, problems = check_rollups(session, influx, period, cfg.tz)
    finally:
        influx.close()
        db.close()
    if as_json:
        click.echo(json.dumps({"days": days, "mismatches": [p.__dict__ for p in problems]}))
    elif not problems:
        click.echo(f"{days} rolled-up days agree with the raw ratings")
    for p in [] if as_json else problems:
        click.echo(f"{p.day} {p.hall}/{p.window} level {p.level}: rollup {p.rollup}, raw {p.raw}")
    sys.exit(1 if problems else 0)
