"""Hall server install and upgrade: configs, secrets, PKI, broker and InfluxDB, units, registry.

deploy/hall/install.sh creates the venv and calls these through `windowrate hall …`. Every
path is under `root` (`/` on a real hall; a temporary directory in tests), and every path
written into a file is the absolute one under that root, so a test root runs as written.
Env files are merged: a value already in a file wins over the installer's default, a secret
written inline is moved into a file under `secrets/` and named by its `_FILE` variable.
"""

import grp
import logging
import os
import pwd
import shutil
from pathlib import Path
from typing import Any

from common.installation import write_env_file
from common.secret_files import FILE_SUFFIX, secret_paths
from ops.layout import HALL_ENV, HallSettings, Layout, _read_env, env_of
from ops.units import UnitPaths, render_units
from storage.influxd_conf import influxd_conf

log = logging.getLogger(__name__)

# Renamed env files: the previous release documented scores settings in their own file
# (server/scores/scores.env.sample); an installation reads server.env and gateway.env only.
MERGED_FILES = {"scores.env": "server.env"}


def _owner(user: str) -> tuple[int, int]:
    """The uid and primary gid of `user`."""
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def _chown(path: Path, user: str) -> None:
    """Give `path` to the service user (as root only)."""
    if os.geteuid() == 0:
        uid, gid = _owner(user)
        os.chown(path, uid, gid)


def _chown_tree(path: Path, user: str) -> None:
    """Give everything under `path` to the service user (as root only)."""
    if os.geteuid() != 0:
        return
    uid, gid = _owner(user)
    for top, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(os.path.join(top, name), uid, gid, follow_symlinks=False)


def _dir(path: Path, user: str | None, mode: int = 0o750) -> None:
    """Make a directory with its owner and mode."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    if user is not None:
        _chown(path, user)


def _write(path: Path, text: str, user: str | None, mode: int = 0o640) -> bool:
    """Write a file if its text differs; True when it changed."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        changed = False
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        tmp.replace(path)
        changed = True
    path.chmod(mode)
    if user is not None:
        _chown(path, user)
    return changed


def secret_env_names() -> set[str]:
    """Every secret variable of the server, scores and gateway settings."""
    from gateway.settings import GatewaySettings
    from server.scores.settings import ScoresSettings
    from server.settings import ServerSettings

    names: set[str] = set()
    for cls in (ServerSettings, ScoresSettings, GatewaySettings):
        prefix = cls.model_config.get("env_prefix", "")
        for path in secret_paths(cls, cls.secret_extra):
            names.add((prefix + "__".join(path)).upper())
    return names


def service_defaults(layout: Layout, hall: HallSettings) -> dict[str, dict[str, str]]:
    """The installer's values of each env file (a value already in the file wins)."""
    sec, local = layout.secrets, "127.0.0.1"
    influx = f"http://{local}:{hall.influx_port}"
    gateway = {
        "WR_GATEWAY_MQTT__HOST": local,
        "WR_GATEWAY_MQTT__PORT": str(hall.mqtt_port),
        "WR_GATEWAY_MQTT__USERNAME": "gateway",
        "WR_GATEWAY_MQTT__PASSWORD_FILE": str(sec / "mqtt-gateway"),
        "WR_GATEWAY_INFLUX__URL": influx,
        "WR_GATEWAY_METRICS__HOST": local,
        "WR_GATEWAY_METRICS__PORT": str(hall.metrics_port),
        "WR_GATEWAY_DATA_DIR": str(layout.state / "gateway"),
    }
    metrics = [f"http://{local}:{hall.metrics_port}/metrics"]
    if hall.standby:
        metrics.append(f"http://{local}:{hall.standby_metrics_port}/metrics")
    server = {
        "WR_SERVER_HOST": hall.server_host,
        "WR_SERVER_PORT": str(hall.server_port),
        "WR_SERVER_TIMEZONE": hall.timezone,
        "WR_SERVER_DATABASE_URL": f"sqlite:///{layout.database}",
        "WR_SERVER_INFLUX__URL": influx,
        "WR_SERVER_MQTT__HOST": local,
        "WR_SERVER_MQTT__PORT": str(hall.mqtt_port),
        "WR_SERVER_MQTT__USERNAME": "server",
        "WR_SERVER_MQTT__PASSWORD_FILE": str(sec / "mqtt-server"),
        "WR_SERVER_GATEWAY_METRICS_URLS": "[" + ",".join(f'"{u}"' for u in metrics) + "]",
        "WR_SERVER_PROVISIONING__BROKER_AUTH_DIR": str(layout.auth),
        "WR_SERVER_PROVISIONING__BROKER_PID_FILE": str(layout.pid_file),
        "WR_SERVER_PROVISIONING__BROKER_HOST": hall.hosts[0] if hall.hosts else local,
        "WR_SERVER_PROVISIONING__BROKER_PORT": str(hall.mqtt_tls_port),
        "WR_SERVER_PROVISIONING__CA_FILE": str(layout.pki / "ca.crt"),
        "WR_SCORES_EXPORT_DIR": str(layout.state / "server/exports"),
    }
    standby = {
        "WR_GATEWAY_ROLE": "standby",
        "WR_GATEWAY_METRICS__PORT": str(hall.standby_metrics_port),
        "WR_GATEWAY_DATA_DIR": str(layout.state / "gateway-standby"),
    }
    files = {"server.env": server, "gateway.env": gateway}
    if hall.standby:
        files["gateway-standby.env"] = standby
    return files


def convert_env_files(layout: Layout, user: str) -> list[str]:
    """Merge renamed files and move inline secrets into files; return what was done."""
    done: list[str] = []
    for old, new in MERGED_FILES.items():
        src = layout.etc / old
        if src.is_file():
            merged = _read_env(layout.etc / new)
            for key, value in _read_env(src).items():
                merged.setdefault(key, value)
            write_env_file(layout.etc / new, merged)
            src.rename(src.with_name(old + ".converted"))
            done.append(f"merged {src} into {layout.etc / new} (old file kept as {old}.converted)")
    secrets = secret_env_names()
    for path in sorted(layout.etc.glob("*.env")):
        values = _read_env(path)
        inline = [k for k in values if k in secrets and _holds_secret(k, values[k])]
        for key in inline:
            target = layout.secrets / key.lower().replace("__", "-")
            _dir(layout.secrets, user, 0o700)
            _write(target, values.pop(key) + "\n", user, 0o600)
            values[key + FILE_SUFFIX] = str(target)
            done.append(f"moved {key} of {path.name} into {target}")
        if inline:
            write_env_file(path, values)
    return done


def _holds_secret(key: str, value: str) -> bool:
    """True for a secret's inline value (a database URL only when it holds a password)."""
    if key.endswith("DATABASE_URL"):
        return "@" in value
    return bool(value)


def write_env_files(layout: Layout, hall: HallSettings) -> list[str]:
    """Write each env file: its current values, the installer's defaults for what is missing."""
    done = []
    for name, defaults in service_defaults(layout, hall).items():
        path = layout.etc / name
        have = _read_env(path)
        merged = {k: v for k, v in defaults.items() if k + FILE_SUFFIX not in have}
        merged.update(have)
        for key in list(merged):  # a secret given inline wins over our file of it
            if key.endswith(FILE_SUFFIX) and merged.get(key.removesuffix(FILE_SUFFIX)):
                del merged[key]
        if merged != have or not path.is_file():
            write_env_file(path, merged)
            added = sorted(set(merged) - set(have))
            done.append(f"wrote {path}" + (f" (added {', '.join(added)})" if added else ""))
        _chown(path, hall.user)
        path.chmod(0o600)
    return done


def ensure_accounts(layout: Layout, hall: HallSettings) -> list[str]:
    """The gateway's and server's broker logins (made once, kept in secrets/) and the files."""
    from server.db.engine import Database
    from server.provisioning import service
    from server.settings.provisioning import ProvisioningSettings

    done = []
    db = Database(_database_url(layout))
    try:
        db.upgrade()
        with db.session() as session:
            for role in ("gateway", "server"):
                env = env_of(layout, f"{role}.env")
                prefix = f"WR_{role.upper()}_MQTT__"
                username = env.get(prefix + "USERNAME") or role
                secret = Path(env.get(prefix + "PASSWORD_FILE") or layout.secrets / f"mqtt-{role}")
                if secret.is_file() and _has_account(service, session, username):
                    continue
                password = service.set_service_account(session, username=username, role=role)
                _dir(secret.parent, hall.user, 0o700)
                _write(secret, password + "\n", hall.user, 0o600)
                done.append(f"made the broker login {username!r} (password in {secret})")
            session.commit()
            prov = ProvisioningSettings(broker_auth_dir=layout.auth)
            service.sync_broker(session, prov)
    finally:
        db.close()
    if layout.database.exists():
        _chown(layout.database, hall.user)
    for f in layout.auth.iterdir():
        _chown(f, hall.user)
    return done


def _has_account(service: Any, session: Any, username: str) -> bool:
    """True when the registry holds this broker login."""
    try:
        service.find_account(session, username)
    except service.ProvisioningError:
        return False
    return True


def _database_url(layout: Layout) -> str:
    """The registry URL the server uses (server.env, its _FILE, or the default)."""
    values = _read_env(layout.etc / "server.env")
    url = values.get("WR_SERVER_DATABASE_URL")
    if not url and values.get("WR_SERVER_DATABASE_URL_FILE"):
        url = Path(values["WR_SERVER_DATABASE_URL_FILE"]).read_text(encoding="utf-8").strip()
    return url or f"sqlite:///{layout.database}"


def write_pki(layout: Layout, hall: HallSettings) -> list[str]:
    """The hall CA (once) and the broker's certificate (again when the names change)."""
    from server.broker.pki import PkiPaths, init_ca, issue_server_cert

    paths = PkiPaths(layout.pki)
    if not hall.hosts and not paths.cert("broker").exists():
        raise ValueError("no host names for the certificate: give --host NAME (one or more)")
    _dir(layout.pki, hall.user, 0o750)
    done = ["made the hall CA in " + str(layout.pki)] if init_ca(paths) else []
    stamp = layout.pki / "broker.hosts"
    hosts = "\n".join(hall.hosts) + "\n"
    stale = not paths.cert("broker").exists() or not stamp.is_file() or stamp.read_text() != hosts
    if hall.hosts and stale:  # no names given to a hall made by hand: its certificate stays
        issue_server_cert(paths, "broker", hall.hosts)
        stamp.write_text(hosts)
        done.append(f"issued the broker certificate for {', '.join(hall.hosts)}")
    for f in layout.pki.iterdir():
        _chown(f, hall.user)
        f.chmod(0o600 if f.name.endswith(".key") else 0o644)
    return done


def write_service_configs(layout: Layout, hall: HallSettings) -> list[str]:
    """mosquitto.conf, influxdb.conf, the state directories and the units."""
    from server.broker.conf import BrokerConf, render

    user = hall.user
    _dir(layout.state, None, 0o755)
    for d in ("broker", "broker/auth", "influxdb", "gateway", "server", "server/exports"):
        _dir(layout.state / d, user)
    _chown_tree(layout.state, user)  # data of a release that ran as another user
    if hall.standby:
        _dir(layout.state / "gateway-standby", user)
    _dir(layout.backups, user, 0o700)
    conf = BrokerConf(
        plain_port=hall.mqtt_port,
        tls_port=hall.mqtt_tls_port,
        pki_dir=layout.pki,
        auth_dir=layout.auth,
        data_dir=layout.state / "broker",
        user=user,
        pid_file=layout.pid_file,
    )
    done = []
    if _write(layout.etc / "mosquitto.conf", render(conf), user, 0o640):
        done.append(f"wrote {layout.etc / 'mosquitto.conf'}")
    text = influxd_conf(
        data=layout.state / "influxdb",
        http_port=hall.influx_port,
        rpc_port=hall.influx_rpc_port,
        writer="deploy/hall/install.sh (windowrate hall configure)",
    )
    if _write(layout.etc / "influxdb.conf", text, user, 0o644):
        done.append(f"wrote {layout.etc / 'influxdb.conf'}")
    group = grp.getgrgid(_owner(user)[1]).gr_name
    paths = UnitPaths(
        windowrate=layout.current / "bin/windowrate",
        mosquitto=Path(_binary("mosquitto")),
        influxd=Path(_binary("influxd")),
        etc=layout.etc,
        state=layout.state,
        backups=layout.backups,
        user=user,
        group=group,
    )
    units = render_units(paths, standby=hall.standby)
    layout.units.mkdir(parents=True, exist_ok=True)
    for name, unit in units.items():
        if _write(layout.units / name, unit, None, 0o644):
            done.append(f"wrote {layout.units / name}")
    return done


def _binary(name: str) -> str:
    """The absolute path of a program from the Debian packages."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        raise FileNotFoundError(f"{name} not found: apt-get install {name.replace('d', '')}")
    return path


def save_hall(layout: Layout, hall: HallSettings) -> None:
    """Keep what the installer was told for the next run (hall.env)."""
    values = {
        f"WR_HALL_{name.upper()}": (",".join(v) if isinstance(v, list) else str(v).lower())
        if isinstance(v, (list, bool))
        else str(v)
        for name, v in hall.model_dump().items()
    }
    write_env_file(layout.etc / HALL_ENV, values)


def configure(layout: Layout, hall: HallSettings) -> list[str]:
    """Every file of the installation except the venv; return what changed."""
    _dir(layout.etc, None, 0o755)
    done = convert_env_files(layout, hall.user)
    done += write_pki(layout, hall)
    done += write_env_files(layout, hall)
    done += write_service_configs(layout, hall)
    done += ensure_accounts(layout, hall)
    save_hall(layout, hall)
    return done
