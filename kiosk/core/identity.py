"""A device identity's files: `identities/{hall}.{device}/` holds its outbox and cached config.

Every input of a terminal (touch, GPIO, serial board, simulator) writes to the outbox of
its identity here, so a terminal re-provisioned as another device never continues the old
device's `seq` (the centre would see a gap), nor restarts it if it comes back (repeats).
"""

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from protocol.messages import DeviceConfig

log = logging.getLogger(__name__)

IDENTITIES_DIR = "identities"
OUTBOX_FILE = "outbox.sqlite"
CONFIG_CACHE = "config.json"
# Files of one identity: the outbox (with SQLite's WAL side files) and the centre's cached
# config. Voice prompts and staff photos are the hall's, not the device's.
IDENTITY_FILES = (OUTBOX_FILE, f"{OUTBOX_FILE}-wal", f"{OUTBOX_FILE}-shm", CONFIG_CACHE)


def identity_dir(data_dir: Path, hall: str, device: str) -> Path:
    """Where one identity's outbox and cached config live: its own `seq` history."""
    return Path(data_dir) / IDENTITIES_DIR / f"{hall}.{device}"


def load_cached_config(path: Path) -> DeviceConfig | None:
    """Read the last config received from the centre; None when missing or unreadable."""
    try:
        return DeviceConfig.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError, ValueError) as exc:
        log.warning("ignoring cached config %s: %s", path, exc)
        return None


def save_cached_config(path: Path, config: DeviceConfig) -> None:
    """Write the config atomically (temp file, fsync, rename) so a power cut leaves a valid file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(config.model_dump_json(indent=2).encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def adopt_legacy(data_dir: Path, owner: tuple[str, str], extra: Iterable[str] = ()) -> None:
    """Move an outbox kept straight in data_dir (before identities) to `owner`'s place.

    It was written before the identity could change, so it belongs to the identity the
    environment names. `extra` are further files of that identity (the serial board's
    duplicate table).
    """
    data_dir = Path(data_dir)
    if not (data_dir / OUTBOX_FILE).exists():
        return
    target = identity_dir(data_dir, *owner)
    if (target / OUTBOX_FILE).exists():
        log.error("both %s and %s hold an outbox; leaving both for an operator", data_dir, target)
        return
    target.mkdir(parents=True, exist_ok=True)
    for name in reversed((*IDENTITY_FILES, *extra)):  # the outbox itself last: a crash is retried
        src = data_dir / name
        if src.exists():
            os.replace(src, target / name)
    log.warning("moved the outbox of %s/%s to %s", *owner, target)
