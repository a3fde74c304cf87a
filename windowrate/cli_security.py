"""`windowrate device|broker|pki` and `windowrate kiosk provision`: who may use the broker."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from windowrate.installation import standalone


@contextmanager
def _session() -> Iterator[Any]:
    """A session of the server's database (migrated first)."""
    from server.db.engine import Database
    from server.settings import get_settings

    db = Database(get_settings().database_url)
    try:
        db.upgrade()
        with db.session() as session:
            yield session
    finally:
        db.close()


def _sync(session: Any) -> None:
    """Rewrite the broker's files and reload it, when this server manages them."""
    from server.provisioning.service import sync_broker
    from server.settings import get_settings

    cfg = get_settings().provisioning
    n = sync_broker(session, cfg)
    if cfg.broker_auth_dir is not None:
        click.echo(f"broker files in {cfg.broker_auth_dir}: {n} accounts", err=True)


def _fail(exc: Exception) -> click.ClickException:
    """A provisioning error as a command-line error."""
    return click.ClickException(str(exc))


@click.group()
def device() -> None:
    """Register devices with a broker login, issue provisioning codes, revoke."""


@device.command("add")
@click.option("--hall", required=True, help="Hall id (made when new).")
@click.option("--id", "device_id", required=True, help="Device id (its MQTT user name).")
@click.option("--window", default=None, help="Window code (made when new).")
@click.option("--test-device", is_flag=True, help="Its ratings never count.")
@click.option("--json", "as_json", is_flag=True, help='Print {"username": …, "password": …}.')
def device_add(
    hall: str, device_id: str, window: str | None, test_device: bool, as_json: bool
) -> None:
    """Register a device and print its MQTT login (the password is shown only now)."""
    from server.provisioning.service import ProvisioningError, add_device

    with _session() as session:
        try:
            acc, password, created = add_device(
                session, hall=hall, device=device_id, window=window, test_device=test_device
            )
        except ProvisioningError as exc:
            raise _fail(exc) from exc
        session.commit()
        _sync(session)
    for what in created:
        click.echo(f"created {what}", err=True)
    if as_json:
        click.echo(json.dumps({"username": acc.username, "password": password}))
    else:
        click.echo(f"user name: {acc.username}\npassword:  {password}")


@device.command("code")
@click.option("--id", "device_id", required=True, help="Device id.")
@click.option("--hours", default=24, show_default=True, help="Valid for this long.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def device_code(device_id: str, hours: int, as_json: bool) -> None:
    """Issue a one-time provisioning code for the kiosk's setup screen."""
    from server.provisioning.service import ProvisioningError, ca_fingerprint, issue_code
    from server.settings import get_settings

    cfg = get_settings().provisioning
    with _session() as session:
        try:
            code, expires = issue_code(session, device_id, hours)
        except ProvisioningError as exc:
            raise _fail(exc) from exc
        session.commit()
    fp = ca_fingerprint(cfg.ca_file.read_bytes()) if cfg.ca_file else None
    doc = {"device": device_id, "code": code, "expires": expires.isoformat(), "ca_fingerprint": fp}
    click.echo(json.dumps(doc) if as_json else "\n".join(f"{k}: {v}" for k, v in doc.items()))


@device.command("revoke")
@click.option("--id", "device_id", required=True, help="Device id.")
def device_revoke(device_id: str) -> None:
    """Refuse the device at the broker (now, when this server manages the broker's files)."""
    from server.provisioning.service import ProvisioningError, revoke

    with _session() as session:
        try:
            revoke(session, device_id)
        except ProvisioningError as exc:
            raise _fail(exc) from exc
        session.commit()
        _sync(session)
    click.echo(f"{device_id} revoked", err=True)


@click.group()
def broker() -> None:
    """The broker's password file and ACL, made from the registry."""


@broker.command("account")
@click.option("--role", type=click.Choice(["gateway", "server", "uplink"]), required=True)
@click.option("--username", required=True, help="MQTT user name.")
@click.option("--hall", default=None, help="The hall of an uplink account.")
@click.option("--json", "as_json", is_flag=True, help='Print {"username": …, "password": …}.')
def broker_account(role: str, username: str, hall: str | None, as_json: bool) -> None:
    """Create or re-key a service login; the new password is printed only now."""
    from server.provisioning.service import ProvisioningError, set_service_account

    with _session() as session:
        try:
            password = set_service_account(
                session,
                username=username,
                role=role,  # type: ignore[arg-type]
                hall=hall,
            )
        except (ProvisioningError, ValueError) as exc:
            raise _fail(exc) from exc
        session.commit()
        _sync(session)
    if as_json:
        click.echo(json.dumps({"username": username, "password": password}))
    else:
        click.echo(f"user name: {username}\npassword:  {password}")


@broker.command("sync")
def broker_sync() -> None:
    """Rewrite passwd and acl (WR_SERVER_PROVISIONING__BROKER_AUTH_DIR) and reload the broker."""
    from server.settings import get_settings

    if get_settings().provisioning.broker_auth_dir is None:
        raise click.ClickException("set WR_SERVER_PROVISIONING__BROKER_AUTH_DIR first")
    with _session() as session:
        _sync(session)


@click.group()
def pki() -> None:
    """The hall's certificate authority and server certificates."""


@pki.command("init")
@click.option("--dir", "directory", type=click.Path(path_type=Path), required=True)
@click.option("--host", "hosts", multiple=True, required=True, help="Broker/server name or IP.")
@click.option("--name", default="broker", show_default=True, help="Certificate file name.")
def pki_init(directory: Path, hosts: tuple[str, ...], name: str) -> None:
    """Make the CA (once) and issue a server certificate for `--host`s; print the fingerprint."""
    from server.broker.pki import PkiPaths, init_ca, issue_server_cert
    from server.provisioning.service import ca_fingerprint

    paths = PkiPaths(directory)
    made = init_ca(paths)
    issue_server_cert(paths, name, list(hosts))
    click.echo(f"CA {'made' if made else 'kept'}: {paths.ca_cert}", err=True)
    click.echo(f"certificate: {paths.cert(name)} (key {paths.key(name)})", err=True)
    fp = ca_fingerprint(paths.ca_cert.read_bytes())
    click.echo(f"CA fingerprint (give it with provisioning codes): {fp}")


@click.command("provision")
@click.option("--url", required=True, help="Server address, e.g. https://hall-server:8443")
@click.option("--code", required=True, help="One-time provisioning code.")
@click.option("--fingerprint", required=True, help="Hall CA fingerprint (≥ 16 hex digits).")
def kiosk_provision(url: str, code: str, fingerprint: str) -> None:
    """Redeem a provisioning code and save this kiosk's setup (then start `windowrate kiosk`)."""
    from kiosk.core.provision import ProvisionError, Ticket, redeem
    from kiosk.settings import get_settings

    data_dir = Path(get_settings().data_dir)
    try:
        setup = redeem(Ticket.parse(f"{url} {code} {fingerprint}"), data_dir)
    except ProvisionError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"provisioned as {setup.hall}/{setup.device}; setup saved in {data_dir}")


@standalone  # writes a file from its options alone: no installation needed
@broker.command("conf")
@click.option("--pki-dir", type=click.Path(path_type=Path), required=True)
@click.option("--auth-dir", type=click.Path(path_type=Path), required=True)
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("/var/lib/mosquitto"))
@click.option("--plain-port", default=1883, show_default=True, help="Loopback only.")
@click.option("--tls-port", default=8883, show_default=True)
@click.option("--uplink-hall", default=None, help="Hall broker: link this hall to the centre.")
@click.option("--central-host", default=None, help="Central broker host (with --uplink-hall).")
@click.option("--central-port", default=8883, show_default=True)
@click.option("--uplink-user", default=None, help="Uplink login at the centre.")
@click.option("--central-ca", type=click.Path(path_type=Path), default=None)
@click.option("--user", default="mosquitto", show_default=True, help="User the broker runs as.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="File to write.")
def broker_conf(
    pki_dir: Path,
    auth_dir: Path,
    data_dir: Path,
    plain_port: int,
    tls_port: int,
    uplink_hall: str | None,
    central_host: str | None,
    central_port: int,
    uplink_user: str | None,
    central_ca: Path | None,
    user: str,
    out: Path,
) -> None:
    """Write mosquitto.conf for a hall or central broker (uplink password: WR_UPLINK_PASSWORD)."""
    import os

    from pydantic import SecretStr, ValidationError

    from server.broker.conf import BrokerConf, render
    from server.broker.uplink import UplinkSettings

    try:
        uplink = None
        if uplink_hall is not None:
            if central_host is None:
                raise click.ClickException("--uplink-hall needs --central-host")
            pw = os.environ.get("WR_UPLINK_PASSWORD")
            uplink = UplinkSettings(
                hall=uplink_hall,
                central_host=central_host,
                central_port=central_port,
                username=uplink_user,
                password=SecretStr(pw) if pw else None,
                ca_file=central_ca,
            )
        conf = BrokerConf(
            plain_port=plain_port,
            tls_port=tls_port,
            pki_dir=pki_dir,
            auth_dir=auth_dir,
            data_dir=data_dir,
            uplink=uplink,
            user=user,
        )
    except ValidationError as exc:
        raise click.ClickException(str(exc)) from exc
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise (the uplink password)
    with os.fdopen(fd, "w") as f:
        f.write(render(conf))
    click.echo(f"wrote {out}", err=True)
