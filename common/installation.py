"""Which installation an admin command manages: its config directory and how it was found.

An installation is a directory of environment files, one per service (`server.env`,
`gateway.env`, …, `KEY=VALUE` lines, mode 0600): `/etc/windowrate/` on an installed hall,
`<run dir>/config/` of a `windowrate up` dev stack. The services read them as their
environment (systemd `EnvironmentFile=`, or the dev stack's children); an admin command
(`windowrate device add`, `export`, `doctor`, `backup` …) loads the same files before it
reads its settings, so it always works on the database, broker and InfluxDB the running
services use.

Found in this order: `--config DIR`, `--run-dir DIR` (its `config/`), `WR_CONFIG_DIR`,
`/etc/windowrate` when it holds `server.env`, the run directory of a `windowrate up` that is
running now (its pointer file names it), `./var/run/config` when it exists.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

ENV_FILES = ("server.env", "gateway.env")
SYSTEM_DIR = Path("/etc/windowrate")
DEFAULT_RUN_DIR = Path("var/run")
CONFIG_SUBDIR = "config"
CONFIG_ENV = "WR_CONFIG_DIR"


@dataclass(frozen=True)
class Installation:
    """A config directory of env files, how it was found, and the dev stack's run dir if any."""

    config_dir: Path
    how: str
    run_dir: Path | None = None

    def env_file(self, name: str) -> Path:
        """The path of one env file (`server.env`, `gateway.env`, …)."""
        return self.config_dir / name

    def values(self) -> dict[str, str]:
        """Every variable of the env files that exist (a later file wins on the same name)."""
        merged: dict[str, str] = {}
        for name in ENV_FILES:
            path = self.env_file(name)
            if path.is_file():
                values = dotenv_values(path, interpolate=False)  # a "$" in a secret stays
                merged.update({k: v for k, v in values.items() if v is not None})
        return merged

    def describe(self) -> str:
        """One line for the operator: which installation, found how."""
        return f"{self.config_dir} ({self.how})"


def pointer_file() -> Path:
    """Where a running `windowrate up` records its run directory and pid."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "windowrate" / "up.json"


def _alive(pid: int) -> bool:
    """True if a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_stack() -> Path | None:
    """The run directory of the `windowrate up` running now, if its pointer names a live pid."""
    try:
        data = json.loads(pointer_file().read_text(encoding="utf-8"))
        run_dir, pid = Path(data["run_dir"]), int(data["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return run_dir if _alive(pid) and (run_dir / CONFIG_SUBDIR).is_dir() else None


def record_running_stack(run_dir: Path, pid: int) -> None:
    """Write the pointer of a starting `windowrate up`."""
    path = pointer_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"run_dir": str(run_dir), "pid": pid}), encoding="utf-8")
    tmp.replace(path)


def clear_running_stack(run_dir: Path) -> None:
    """Remove the pointer if it still names `run_dir`."""
    path = pointer_file()
    try:
        if Path(json.loads(path.read_text(encoding="utf-8"))["run_dir"]) == run_dir:
            path.unlink()
    except (OSError, ValueError, KeyError, TypeError):
        pass


def find(config: Path | None = None, run_dir: Path | None = None) -> Installation | None:
    """Return the installation to manage, or None when there is none to be found."""
    if config is not None:
        return Installation(config.resolve(), "--config")
    if run_dir is not None:
        run = run_dir.resolve()
        return Installation(run / CONFIG_SUBDIR, "--run-dir", run)
    if os.environ.get(CONFIG_ENV):
        return Installation(Path(os.environ[CONFIG_ENV]).resolve(), CONFIG_ENV)
    if (SYSTEM_DIR / "server.env").is_file():
        return Installation(SYSTEM_DIR, "installed hall")
    running = running_stack()
    if running is not None:
        return Installation(running / CONFIG_SUBDIR, "running windowrate up", running)
    default = DEFAULT_RUN_DIR.resolve()
    if (default / CONFIG_SUBDIR).is_dir():
        return Installation(default / CONFIG_SUBDIR, "windowrate up run dir (not running)", default)
    return None


def activate(inst: Installation) -> list[str]:
    """Put the installation's variables into this process's environment; return their names.

    A variable already set in the environment wins (an operator's explicit override); the
    names (never the values) of those kept are returned so the caller can say so.
    """
    kept = []
    for key, value in inst.values().items():
        if key in os.environ and os.environ[key] != value:
            kept.append(key)
            continue
        os.environ[key] = value
    return kept


def write_env_file(path: Path, values: dict[str, str]) -> None:
    """Write `KEY=VALUE` lines (values double-quoted) atomically, mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("# Written by WindowRate; one variable per line (see docs/operations.md).\n")
        for key, value in values.items():
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            f.write(f'{key}="{escaped}"\n')
    os.chmod(tmp, 0o600)
    tmp.replace(path)
