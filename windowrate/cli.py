"""The `windowrate` command and its subcommands (each imports its part only when it runs)."""

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import click

from common import installation
from windowrate.installation import manage
from windowrate.lazy import LazyGroup

SECURITY = "windowrate.cli_security"
SCORES = "server.scores.commands"


def _stop_on_signals() -> threading.Event:
    """Return an event set by SIGINT or SIGTERM."""
    stop = threading.Event()

    def handler(_sig: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


@click.group(
    cls=LazyGroup,
    lazy={
        "device": f"{SECURITY}:device",
        "broker": f"{SECURITY}:broker",
        "pki": f"{SECURITY}:pki",
        "export": f"{SCORES}:export_command",
        "scores": f"{SCORES}:scores_group",
        "backup": "windowrate.cli_ops:backup_command",
        "restore": "windowrate.cli_ops:restore_command",
        "doctor": "windowrate.cli_doctor:doctor_command",
        "hall": "windowrate.cli_install:hall_group",
    },
    # Admin commands work on the installation they find (common.installation): True where
    # one is required, False where it is used when found.
    managed={
        "device": True,
        "broker": True,
        "pki": False,
        "export": True,
        "scores": True,
        "backup": True,
        # restore is not here: its --config/--run-dir name a target that may not exist yet.
        "doctor": True,
    },
)
@click.option(
    "--log-level", default=lambda: os.environ.get("WR_LOG_LEVEL", "INFO"), show_default="INFO"
)
def main(log_level: str) -> None:
    """WindowRate: real-time satisfaction ratings for service windows."""
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)


@main.group()
def gateway() -> None:
    """The MQTT → InfluxDB gateway (settings from WR_GATEWAY_* variables)."""


@gateway.command("run")
def gateway_run() -> None:
    """Run the gateway until SIGINT or SIGTERM."""
    from gateway.service import Gateway
    from gateway.settings import get_settings

    stop = _stop_on_signals()
    gw = Gateway(get_settings())
    gw.start()
    stop.wait()
    gw.stop()


@gateway.command("dead-letters")
@click.option("--reason", default=None, help="Only this reason.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def gateway_dead_letters(reason: str | None, as_json: bool) -> None:
    """List the messages the gateway could not store (kept for recovery)."""
    from gateway.deadletters import DeadLetterStore
    from gateway.settings import get_settings

    path = get_settings().data_dir / "dead_letters.sqlite"
    if not path.exists():
        click.echo(f"no dead letters ({path} does not exist)")
        return
    store = DeadLetterStore(path)
    for d in store.iter(reason):
        if as_json:
            text = d.payload.decode("utf-8", errors="replace")
            click.echo(
                json.dumps(
                    {
                        "n": d.n,
                        "received_ms": d.received_ms,
                        "topic": d.topic,
                        "reason": d.reason,
                        "detail": d.detail,
                        "payload": text,
                    },
                    ensure_ascii=False,
                )
            )
        else:
            click.echo(f"{d.n}\t{d.received_ms}\t{d.reason}\t{d.topic}\t{d.detail}")
    store.close()


@gateway.command("gaps")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def gateway_gaps(as_json: bool) -> None:
    """Scan InfluxDB now for devices whose seq sequence has holes or repeats."""
    from gateway.gaps import open_client, scan
    from gateway.settings import get_settings

    with open_client(get_settings().influx) as client:
        found = scan(client)
    rows = [
        {
            "hall": d.hall,
            "device": d.device,
            "count": d.count,
            "missing_count": d.missing_count,
            "max_seq": d.max_seq,
            "missing": d.missing,
            "duplicated": d.duplicated,
        }
        for d in found
    ]
    if as_json:
        click.echo(json.dumps(rows))
    elif not rows:
        click.echo("no gaps: every device holds seq 1 … max exactly once")
    else:
        for r in rows:
            click.echo(
                f"{r['hall']}/{r['device']}: missing {r['missing']} duplicated {r['duplicated']}"
            )
    sys.exit(1 if rows else 0)


@main.command()
@click.option("--hall", default="demo", show_default=True)
@click.option("--kiosks", default=5, show_default=True, help="Number of virtual kiosks.")
@click.option("--first", "first_index", default=1, show_default=True, help="Index of the first.")
@click.option("--prefix", "device_prefix", default="k-", show_default=True)
@click.option(
    "--ratings-per-kiosk",
    default=0,
    show_default=True,
    help="Stop at this seq (0: run until stopped).",
)
@click.option("--rate", default=0.2, show_default=True, help="Mean ratings per second per kiosk.")
@click.option(
    "--data-dir", type=click.Path(path_type=Path), default=Path("var/sim"), show_default=True
)
@click.option("--mqtt-host", default="127.0.0.1", show_default=True)
@click.option("--mqtt-port", default=1883, show_default=True)
@click.option("--seed", type=int, default=None)
@click.option(
    "--serial", is_flag=True, help="Each kiosk: a simulated button board on a pty plus the bridge."
)
@click.option(
    "--credentials",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="JSON file {device: password}: each kiosk's broker login (windowrate device add).",
)
def simulate(
    hall: str,
    kiosks: int,
    first_index: int,
    device_prefix: str,
    ratings_per_kiosk: int,
    rate: float,
    data_dir: Path,
    mqtt_host: str,
    mqtt_port: int,
    seed: int | None,
    serial: bool,
    credentials: Path | None,
) -> None:
    """Run virtual kiosks, each with its own outbox and MQTT connection."""
    from common.mqtt import MqttSettings
    from devstack.simulator import SimulationSpec, run_simulation

    stop = _stop_on_signals()
    spec = SimulationSpec(
        hall=hall,
        kiosks=kiosks,
        first_index=first_index,
        device_prefix=device_prefix,
        ratings_per_kiosk=ratings_per_kiosk,
        rate_per_kiosk=rate,
        data_dir=data_dir,
        seed=seed,
        mqtt=MqttSettings(host=mqtt_host, port=mqtt_port),
        credentials=json.loads(credentials.read_text()) if credentials else {},
    )
    if serial:
        from devstack.simulator import run_serial_simulation

        ok = run_serial_simulation(spec, stop)
    else:
        ok = run_simulation(spec, stop)
    sys.exit(0 if ok else 3)


@main.command()
@click.option("--port", default=None, help="Serial port, e.g. /dev/serial/by-id/usb-…")
@click.option("--hall", default=None, help="Hall id.")
@click.option("--device", default=None, help="Device id.")
@click.option("--window", default=None, help="Window until the centre's config arrives.")
@click.option("--scale", type=int, default=None, help="Keys until the centre's config arrives.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
@click.option("--mqtt-host", default=None)
@click.option("--mqtt-port", type=int, default=None)
@click.option("--metrics-port", type=int, default=None, help="Prometheus port (0: off).")
def bridge(
    port: str | None,
    hall: str | None,
    device: str | None,
    window: str | None,
    scale: int | None,
    data_dir: Path | None,
    mqtt_host: str | None,
    mqtt_port: int | None,
    metrics_port: int | None,
) -> None:
    """Feed a serial button board into the kiosk core (options override WR_BRIDGE_* variables)."""
    from pydantic import ValidationError

    from firmware_bridge.service import run_bridge
    from firmware_bridge.settings import load_settings

    try:
        settings = load_settings(
            port=port,
            hall=hall,
            device=device,
            window=window,
            scale=scale,
            data_dir=data_dir,
            metrics_port=metrics_port,
            mqtt_host=mqtt_host,
            mqtt_port=mqtt_port,
        )
    except ValidationError as exc:
        raise click.ClickException(str(exc)) from exc
    run_bridge(settings, _stop_on_signals())


@main.group()
def server() -> None:
    """The web server (settings from WR_SERVER_* variables)."""


@server.command("run")
def server_run() -> None:
    """Run the web server until stopped."""
    from server.app import run
    from server.settings import get_settings

    run(get_settings())


@server.command("create-admin")
@click.option("--username", required=True, help="Login name of the new administrator.")
def server_create_admin(username: str) -> None:
    """Create an administrator in the server's database (migrated first).

    The password comes from WR_ADMIN_PASSWORD or is asked twice without echo;
    at least 12 characters.
    """
    from server.auth.service import MIN_PASSWORD, AuthError, create_user
    from server.db.engine import Database
    from server.settings import get_settings

    password = os.environ.get("WR_ADMIN_PASSWORD")
    if password is None:
        password = click.prompt(
            "Password", hide_input=True, confirmation_prompt=True, err=True, type=str
        )
    if len(password) < MIN_PASSWORD:
        raise click.ClickException(f"password shorter than {MIN_PASSWORD} characters")
    db = Database(get_settings().database_url)
    try:
        db.upgrade()
        with db.session() as session:
            try:
                create_user(session, username, password, "admin")
            except AuthError as exc:
                raise click.ClickException(str(exc)) from exc
            session.commit()
    finally:
        db.close()
    click.echo(f"administrator {username!r} created")


@main.command()
@click.option("--kiosks", default=5, show_default=True, help="Simulated kiosks to start.")
@click.option(
    "--run-dir", type=click.Path(path_type=Path), default=Path("var/run"), show_default=True
)
@click.option("--mqtt-port", default=1883, show_default=True)
@click.option("--influx-port", default=8086, show_default=True)
@click.option("--server-port", default=8000, show_default=True)
@click.option("--metrics-port", default=9108, show_default=True)
@click.option("--mqtt-tls-port", default=8883, show_default=True)
@click.option("--rate", default=0.2, show_default=True, help="Ratings per second per kiosk.")
def up(
    kiosks: int,
    run_dir: Path,
    mqtt_port: int,
    influx_port: int,
    server_port: int,
    metrics_port: int,
    mqtt_tls_port: int,
    rate: float,
) -> None:
    """Start broker, InfluxDB, gateway, server and simulated kiosks; stop all on Ctrl-C."""
    from devstack.stack import Ports, Stack

    stop = _stop_on_signals()
    ports = Ports(mqtt_port, influx_port, server_port, metrics_port, mqtt_tls_port)
    stack = Stack(run_dir.resolve(), ports)
    try:
        stack.start(kiosks=kiosks, rate=rate)
    except RuntimeError as exc:
        stack.stop()
        raise click.ClickException(str(exc)) from exc
    # The admin commands (`windowrate device add`, `export` …) find this stack by this pointer.
    installation.record_running_stack(stack.run_dir, os.getpid())
    click.echo(f"WindowRate is up. Board: {stack.board_url}  (Ctrl-C stops everything)", err=False)
    sys.stdout.flush()
    try:
        stack.watch(stop)
    finally:
        installation.clear_running_stack(stack.run_dir)
        stack.stop()


@main.group(
    "kiosk",
    cls=LazyGroup,
    lazy={"provision": f"{SECURITY}:kiosk_provision"},
    invoke_without_command=True,
)
@click.pass_context
def kiosk_command(ctx: click.Context) -> None:
    """Run the touchscreen terminal (WR_KIOSK_* variables, then the setup screen's setup.json)."""
    if ctx.invoked_subcommand is not None:
        return
    from kiosk.core.local_setup import effective
    from kiosk.main import run
    from kiosk.settings import get_settings

    if run(effective(get_settings())):
        logging.getLogger(__name__).warning("restarting the kiosk with its new setup")
        os.execv(sys.executable, [sys.executable, "-m", "windowrate", *sys.argv[1:]])


@main.group()
def bench() -> None:
    """Benchmarks that print JSON."""


@bench.command("gateway")
@click.option("--ratings", default=100_000, show_default=True)
@click.option("--connections", default=10, show_default=True)
@click.option(
    "--gateways",
    default=1,
    show_default=True,
    help="Gateway processes, the halls partitioned between them (WR_GATEWAY_HALLS).",
)
@click.option(
    "--backlog", default=0, show_default=True, help="Instead: drain this many queued ratings."
)
@click.option("--devices", default=1000, show_default=True, help="Backlog: devices.")
@click.option("--halls", default=10, show_default=True, help="Backlog: halls.")
@click.option("--publishers", default=8, show_default=True, help="Backlog: mosquitto_pub at once.")
@click.option("--json", "as_json", is_flag=True, help="Only JSON lines on stdout.")
def bench_gateway(
    ratings: int,
    connections: int,
    gateways: int,
    backlog: int,
    devices: int,
    halls: int,
    publishers: int,
    as_json: bool,
) -> None:
    """Gateway throughput against Mosquitto's own C clients, or the drain of a backlog."""
    from bench.gateway import run_backlog, run_bench

    if backlog:
        result = run_backlog(
            backlog, devices=devices, halls=halls, publishers=publishers, gateways=gateways
        )
    else:
        result = run_bench(ratings=ratings, connections=connections, gateways=gateways)
    click.echo(json.dumps(result))


@bench.command("peers")
@click.option("--ratings", default=100_000, show_default=True)
@click.option("--connections", default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Only JSON lines on stdout (always so).")
def bench_peers(ratings: int, connections: int, as_json: bool) -> None:
    """Our gateway against Node-RED 4 (mqtt in → json → influxdb batch), same run and data."""
    from bench.peers import run_bench

    click.echo(json.dumps(run_bench(ratings=ratings, connections=connections)))


@bench.command("kiosk")
@click.option("--presses", default=100, show_default=True, help="Each waits the thank-you time.")
@click.option(
    "--growth-presses",
    default=20_000,
    show_default=True,
    help="Then presses through the app's handlers, many per frame, for the RSS growth.",
)
@click.option("--json", "as_json", is_flag=True, help="Only JSON lines on stdout (always so).")
def bench_kiosk(presses: int, growth_presses: int, as_json: bool) -> None:
    """Latency, RSS over a bare Kivy window, RSS growth and cold start of the kiosk under Xvfb."""
    from bench.kiosk import run_bench

    result = run_bench(presses=presses, growth_presses=growth_presses)
    click.echo(json.dumps(result, ensure_ascii=False))
    keys = ("presses", "committed", "delivered", "lost", "reasons_screens", "p50_ms", "p99_ms")
    memory = ("rss_over_bare_kivy_mb", "rss_growth_20k_presses_mb", "cold_start_s")
    summary = {k: result.get(k) for k in (*keys, "rss_mb", *memory, "error")}
    click.echo(json.dumps(summary))
    sys.exit(0 if result.get("ok") else 1)


@bench.command("board")
@click.option("--windows", default=100, show_default=True, help="Kiosk terminals pressed.")
@click.option("--rate", default=50.0, show_default=True, help="Presses per second, all kiosks.")
@click.option("--seconds", default=15.0, show_default=True)
@click.option("--page-windows", default=200, show_default=True)
@click.option("--loads", default=5, show_default=True, help="Cold (and warm) page loads.")
@click.option("--json", "as_json", is_flag=True, help="Only JSON lines on stdout (always so).")
def bench_board(
    windows: int, rate: float, seconds: float, page_windows: int, loads: int, as_json: bool
) -> None:
    """Kiosk press to board paint in headless Chromium, and cold board loads; fails on a loss."""
    from bench.board import run_bench

    result = run_bench(
        windows=windows, rate=rate, seconds=seconds, page_windows=page_windows, loads=loads
    )
    click.echo(json.dumps(result, ensure_ascii=False))
    keys = ("committed", "received", "lost", "p50_ms", "p99_ms", "page_load_ms", "error")
    click.echo(json.dumps({k: result[k] for k in keys}))
    sys.exit(1 if result["error"] else 0)


@bench.command("export")
@click.option("--windows", default=1000, show_default=True)
@click.option("--raw-days", default=2, show_default=True, help="Last days not rolled up yet.")
@click.option(
    "--raw-head-days", default=1, show_default=True, help="First days awaiting a rebuild."
)
@click.option(
    "--built-days", default=2, show_default=True, help="Days the rollup job builds, timed."
)
@click.option("--json", "as_json", is_flag=True, help="Only JSON lines on stdout.")
def bench_export(
    windows: int, raw_days: int, raw_head_days: int, built_days: int, as_json: bool
) -> None:
    """A year of 1,000 windows: cold XLSX export of an unaligned and an aligned year."""
    from bench.export import run_bench

    result = run_bench(
        windows=windows, raw_days=raw_days, raw_head_days=raw_head_days, built_days=built_days
    )
    click.echo(json.dumps(result, ensure_ascii=False))
    summary = {k: result[k] for k in ("windows", "ratings", "rollup_build_s_per_day")}
    summary["unaligned_s"] = result["unaligned"]["seconds"]
    summary["aligned_s"] = result["aligned"]["seconds"]
    click.echo(json.dumps(summary))


@bench.command("lineproto")
@click.option("--points", default=100_000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Only JSON lines on stdout (always so).")
def bench_lineproto(points: int, as_json: bool) -> None:
    """Line protocol: the gateway's hand-written lines against influxdb_client's Point."""
    from bench.lineproto import run_bench

    click.echo(json.dumps(run_bench(points=points)))


@bench.command("stages")
@click.option("--ratings", default=100_000, show_default=True)
@click.option("--rounds", default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Only the JSON line on stdout.")
def bench_stages(ratings: int, rounds: int, as_json: bool) -> None:
    """Per-rating cost of each gateway stage, before and after the fast decode."""
    from bench.stages import run

    click.echo(json.dumps(run(ratings, rounds), ensure_ascii=False))


# Admin commands of the eager groups work on the installation they find (the services'
# own `run` commands take their environment from their unit or the dev stack instead).
for _admin in (gateway_dead_letters, gateway_gaps, server_create_admin):
    manage(_admin)
