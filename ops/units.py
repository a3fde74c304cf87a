"""The hall server's systemd units, rendered from its layout (deploy/hall/install.sh)."""

from dataclasses import dataclass
from pathlib import Path

# Every service: restart on failure without giving up, logs to journald, and a sandbox that
# leaves the process its own state directory only (ReadWritePaths) and the network.
HARDENING = """\
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectHostname=yes
ProtectClock=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
CapabilityBoundingSet=
AmbientCapabilities=
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
StandardOutput=journal
StandardError=journal
"""

BROKER = "windowrate-broker.service"
INFLUXD = "windowrate-influxd.service"
GATEWAY = "windowrate-gateway.service"
STANDBY = "windowrate-gateway-standby.service"
SERVER = "windowrate-server.service"
BACKUP = "windowrate-backup.service"
BACKUP_TIMER = "windowrate-backup.timer"
# Restart order of an upgrade: storage and broker first, then the gateway(s), then the server.
START_ORDER = (INFLUXD, BROKER, GATEWAY, STANDBY, SERVER)


@dataclass(frozen=True)
class UnitPaths:
    """Absolute paths the units name (under the install root)."""

    windowrate: Path
    mosquitto: Path
    influxd: Path
    etc: Path
    state: Path
    backups: Path
    user: str
    group: str


# The gateway and the server say READY=1 once they serve and ping the watchdog while their
# loops go round (common.systemd): a hung process is restarted, not only a dead one.
NOTIFY = "Type=notify\nNotifyAccess=main\nWatchdogSec=30\n"


def _service(
    description: str,
    *,
    after: list[str],
    requires: list[str],
    exec_start: str,
    p: UnitPaths,
    rw: list[Path],
    env_files: list[Path],
    extra: str = "",
    groups: str = "",
    notify: bool = False,
) -> str:
    """One long-running service unit."""
    env = "".join(f"EnvironmentFile={f}\n" for f in env_files)
    deps = " ".join(after)
    req = f"Requires={' '.join(requires)}\n" if requires else ""
    supp = f"SupplementaryGroups={groups}\n" if groups else ""
    return (
        "# Written by deploy/hall/install.sh (windowrate hall configure); edits are overwritten.\n"
        "[Unit]\n"
        f"Description={description}\n"
        "Documentation=https://github.com/windowrate/windowrate/blob/main/docs/operations.md\n"
        f"After=network-online.target {deps}\n".replace(" \n", "\n")
        + "Wants=network-online.target\n"
        + req
        + "StartLimitIntervalSec=0\n\n"
        "[Service]\n" + (NOTIFY if notify else "Type=simple\n") + f"User={p.user}\n"
        f"Group={p.group}\n"
        + supp
        + f"WorkingDirectory={p.state}\n"
        + env
        + "Environment=PYTHONUNBUFFERED=1\n"
        f"ExecStart={exec_start}\n" + extra + "Restart=always\n"
        "RestartSec=2\n"
        "TimeoutStopSec=30\n"
        "UMask=0027\n"
        f"ReadWritePaths={' '.join(str(d) for d in rw)}\n" + HARDENING + "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def render_units(p: UnitPaths, *, standby: bool) -> dict[str, str]:
    """Every unit file's name and text."""
    units = {
        INFLUXD: _service(
            "WindowRate InfluxDB (ratings)",
            after=[],
            requires=[],
            exec_start=f"{p.influxd} run -config {p.etc / 'influxdb.conf'}",
            p=p,
            rw=[p.state / "influxdb"],
            env_files=[],
        ),
        BROKER: _service(
            "WindowRate MQTT broker (Mosquitto)",
            after=[],
            requires=[],
            exec_start=f"{p.mosquitto} -c {p.etc / 'mosquitto.conf'}",
            p=p,
            rw=[p.state / "broker"],
            env_files=[],
            # passwd/acl written by `windowrate device add` as root are root:mosquitto 0640
            extra="ExecReload=/bin/kill -HUP $MAINPID\n",
            groups="mosquitto",
        ),
        GATEWAY: _gateway(p, [p.etc / "gateway.env"], "WindowRate gateway (MQTT to InfluxDB)"),
        SERVER: _service(
            "WindowRate server (boards, registry, cases, exports)",
            after=[INFLUXD, BROKER, GATEWAY],
            requires=[],
            exec_start=f"{p.windowrate} server run",
            notify=True,
            p=p,
            rw=[p.state / "server", p.state / "broker"],
            env_files=[p.etc / "server.env"],
        ),
        BACKUP: _backup(p),
        BACKUP_TIMER: _timer(),
    }
    if standby:
        units[STANDBY] = _gateway(
            p,
            [p.etc / "gateway.env", p.etc / "gateway-standby.env"],
            "WindowRate standby gateway (takes over while the primary is away)",
        )
    return units


def _gateway(p: UnitPaths, env_files: list[Path], description: str) -> str:
    """A gateway unit (primary or standby: the second env file overrides the first)."""
    return _service(
        description,
        after=[INFLUXD, BROKER],
        requires=[],
        exec_start=f"{p.windowrate} gateway run",
        notify=True,
        p=p,
        rw=[p.state / "gateway"],
        env_files=env_files,
    )


def _backup(p: UnitPaths) -> str:
    """The nightly backup (run by its timer)."""
    return (
        "# Written by deploy/hall/install.sh (windowrate hall configure); edits are overwritten.\n"
        "[Unit]\n"
        "Description=WindowRate backup (registry, InfluxDB, dead letters, PKI, configs)\n"
        f"After={INFLUXD} {SERVER}\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        # As root: it reads every part (the broker's files are root's) and records the
        # backup in the config directory (backup-state.json, read by `windowrate doctor`).
        f"WorkingDirectory={p.state}\n"
        f"ExecStart={p.windowrate} backup --config {p.etc} --out {p.backups} --keep 14\n"
        "UMask=0077\n"
        f"ReadWritePaths={p.backups} {p.state} {p.etc}\n" + HARDENING
    )


def _timer() -> str:
    """Every night at 02:30 (a missed run is made up at the next boot)."""
    return (
        "# Written by deploy/hall/install.sh (windowrate hall configure); edits are overwritten.\n"
        "[Unit]\n"
        "Description=Nightly WindowRate backup\n\n"
        "[Timer]\n"
        "OnCalendar=*-*-* 02:30:00\n"
        "RandomizedDelaySec=10min\n"
        "Persistent=true\n"
        f"Unit={BACKUP}\n\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
