"""`windowrate hall …`: the steps deploy/hall/install.sh runs (install and upgrade a hall)."""

import subprocess
import time
from pathlib import Path

import click

ROOT = click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("/"),
    show_default=True,
    help="Install root (a temporary directory in tests; / on a hall).",
)


@click.group("hall")
def hall_group() -> None:
    """Install and upgrade a hall server (called by deploy/hall/install.sh)."""


@hall_group.command("configure")
@ROOT
@click.option("--host", "hosts", multiple=True, help="Name or address of this server (repeat).")
@click.option("--user", default=None, help="User the services run as [windowrate].")
@click.option("--mqtt-port", type=int, default=None, help="Plain MQTT, loopback [1883].")
@click.option("--mqtt-tls-port", type=int, default=None, help="MQTT over TLS [8883].")
@click.option("--influx-port", type=int, default=None, help="InfluxDB HTTP, loopback [8086].")
@click.option("--influx-rpc-port", type=int, default=None, help="InfluxDB backup RPC [8088].")
@click.option("--server-host", default=None, help="Web server address [0.0.0.0].")
@click.option("--server-port", type=int, default=None, help="Web server port [8000].")
@click.option("--metrics-port", type=int, default=None, help="Gateway metrics [9108].")
@click.option("--standby-metrics-port", type=int, default=None, help="Standby metrics [9109].")
@click.option("--standby/--no-standby", default=None, help="Also a standby gateway unit.")
@click.option("--retention", default=None, help="InfluxDB retention, e.g. 800d [INF: all].")
@click.option("--timezone", default=None, help="The hall's time zone [Asia/Shanghai].")
def hall_configure(root: Path, **given: object) -> None:
    """Write configs, secrets, PKI, broker and InfluxDB configs and units (kept values win)."""
    from pydantic import ValidationError

    from ops.install import configure
    from ops.layout import Layout, load_hall

    layout = Layout(root.resolve())
    try:
        hall = load_hall(layout, **given)
        done = configure(layout, hall)
    except (ValidationError, ValueError, KeyError, FileNotFoundError) as exc:
        raise click.ClickException(f"{exc}\n配置失败：请按上面的提示修改参数后重新运行。") from exc
    for line in done:
        click.echo(f"  - {line}")
    if not done:
        click.echo("  configs: nothing to change")


@hall_group.command("check")
@ROOT
def hall_check(root: Path) -> None:
    """Check the new release against the configs and a copy of the registry (changes nothing)."""
    from ops.layout import Layout
    from ops.upgrade import UpgradeError, check, remedy

    layout = Layout(root.resolve())
    try:
        revs = check(layout)
    except UpgradeError as exc:
        raise click.ClickException(remedy(layout, exc)) from exc
    what = "up to date" if revs.current == revs.head else f"{revs.current} → {revs.head}"
    click.echo(f"  upgrade check passed: configs read by the new release; registry {what}")


@hall_group.command("migrate")
@ROOT
def hall_migrate(root: Path) -> None:
    """Migrate the registry to this release (the gateway and server must be stopped)."""
    from ops.layout import Layout
    from ops.upgrade import UpgradeError, migrate, remedy

    layout = Layout(root.resolve())
    try:
        revs = migrate(layout)
    except Exception as exc:  # the transaction rolled back: say so, whatever failed
        err = exc if isinstance(exc, UpgradeError) else UpgradeError(f"{type(exc).__name__}: {exc}")
        raise click.ClickException(remedy(layout, err)) from exc
    click.echo(f"  registry migrated: {revs.current} → {revs.head}")


@hall_group.command("influx-init")
@ROOT
@click.option("--start", is_flag=True, help="Start influxd for this step when it is not running.")
def hall_influx_init(root: Path, start: bool) -> None:
    """Create the InfluxDB database with the retention policy of hall.env."""
    import httpx

    from ops.layout import Layout, env_of, load_hall
    from ops.upgrade import influx_init

    layout = Layout(root.resolve())
    hall = load_hall(layout)
    url = env_of(layout, "gateway.env").get(
        "WR_GATEWAY_INFLUX__URL", f"http://127.0.0.1:{hall.influx_port}"
    )
    database = env_of(layout, "gateway.env").get("WR_GATEWAY_INFLUX__DATABASE", "windowrate")
    proc = None
    if not _answers(url) and start:
        from ops.install import _binary

        conf = layout.etc / "influxdb.conf"
        proc = subprocess.Popen([_binary("influxd"), "run", "-config", str(conf)], user=hall.user)
    try:
        deadline = time.monotonic() + 60
        while not _answers(url):
            if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
                raise click.ClickException(
                    f"InfluxDB does not answer at {url}: journalctl -u windowrate-influxd. "
                    "InfluxDB 无响应：请查看日志。"
                )
            time.sleep(0.2)
        click.echo(f"  {influx_init(url, database, hall.retention)}")
    except httpx.HTTPError as exc:
        raise click.ClickException(f"InfluxDB at {url}: {exc}") from exc
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)


def _answers(url: str) -> bool:
    """True when InfluxDB's /ping answers 204."""
    import httpx

    try:
        return httpx.get(f"{url}/ping", timeout=1).status_code == 204
    except httpx.HTTPError:
        return False
