"""What a technician sets on the terminal's setup screen: identity and broker, kept in data_dir.

The file `setup.json` (mode 0600: it holds the MQTT password) overrides the WR_KIOSK_*
variables it names, because it is the latest thing someone decided at the device itself.
Each identity (hall, device) keeps its own outbox (kiosk.core.identity), so a terminal
re-provisioned as another device starts that device's `seq` from its own history.
"""

import contextlib
import ipaddress
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from kiosk.core.identity import adopt_legacy
from kiosk.settings import KioskSettings
from protocol.topics import ID_PATTERN, is_valid_id

log = logging.getLogger(__name__)

SETUP_FILE = "setup.json"
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
FIELDS = ("hall", "device", "host", "port", "username", "password")


class LocalSetup(BaseModel):
    """Identity and broker as set on the device."""

    model_config = ConfigDict(extra="forbid")

    hall: str = Field(pattern=f"^{ID_PATTERN}$", title="Hall id")
    device: str = Field(pattern=f"^{ID_PATTERN}$", title="Device id")
    host: str = Field(min_length=1, max_length=253, title="Broker host")
    port: int = Field(ge=1, le=65535, title="Broker port")
    username: str | None = Field(default=None, max_length=128, title="MQTT user name")
    password: SecretStr | None = Field(default=None, title="MQTT password")
    tls_ca: str | None = Field(default=None, title="Hall CA file; TLS to the broker when set")


def valid_host(host: str) -> bool:
    """True for an IP address or a DNS name."""
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return True
    labels = host.rstrip(".").split(".")
    return 0 < len(host) <= 253 and all(_HOST_LABEL.fullmatch(x) for x in labels)


def load(data_dir: Path) -> LocalSetup | None:
    """Read `setup.json`; None when absent or unreadable (the environment's settings apply)."""
    path = Path(data_dir) / SETUP_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.error("cannot read %s, using WR_KIOSK_* settings: %s", path, exc)
        return None
    try:
        return LocalSetup.model_validate_json(raw)
    except ValidationError as exc:
        log.error("ignoring invalid %s, using WR_KIOSK_* settings: %s", path, exc)
        return None


def save(data_dir: Path, setup: LocalSetup) -> None:
    """Write `setup.json` atomically (0600, fsync, rename): a power cut leaves old or new."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    payload = setup.model_dump(mode="json", exclude_none=True, exclude={"password"})
    if setup.password is not None:  # model_dump masks a SecretStr; the file needs the value
        payload["password"] = setup.password.get_secret_value()
    doc = json.dumps(payload, indent=2, ensure_ascii=False)
    fd, tmp = tempfile.mkstemp(prefix=".setup-", dir=data_dir)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(doc.encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, data_dir / SETUP_FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def apply(settings: KioskSettings, setup: LocalSetup | None) -> KioskSettings:
    """Return `settings` with what the setup screen saved laid over it."""
    if setup is None:
        return settings
    mqtt = settings.mqtt.model_copy(
        update={
            "host": setup.host,
            "port": setup.port,
            "username": setup.username,
            "password": setup.password,
            "tls_ca": setup.tls_ca,
        }
    )
    log.info("setup.json overrides hall, device and broker (%s:%d)", setup.host, setup.port)
    return settings.model_copy(update={"hall": setup.hall, "device": setup.device, "mqtt": mqtt})


def effective(settings: KioskSettings) -> KioskSettings:
    """The settings a terminal runs with: the environment's, then its `setup.json`."""
    adopt_legacy(Path(settings.data_dir), (settings.hall, settings.device))
    return apply(settings, load(Path(settings.data_dir)))


@dataclass
class SetupForm:
    """The setup screen's editable values as typed, their checks and the result to save."""

    values: dict[str, str]
    current: tuple[str, str]
    backlog: int = 0
    errors: dict[str, str] = field(default_factory=dict)
    tls_ca: str | None = None  # kept as provisioned; not edited on the screen

    @classmethod
    def from_settings(cls, settings: KioskSettings, backlog: int) -> "SetupForm":
        """A form holding what the terminal runs with now."""
        m = settings.mqtt
        return cls(
            values={
                "hall": settings.hall,
                "device": settings.device,
                "host": m.host,
                "port": str(m.port),
                "username": m.username or "",
                "password": m.password.get_secret_value() if m.password else "",
            },
            current=(settings.hall, settings.device),
            backlog=backlog,
            tls_ca=m.tls_ca,
        )

    def set(self, name: str, text: str) -> None:
        """Take a typed value."""
        if name not in FIELDS:
            raise KeyError(name)
        self.values[name] = text.strip() if name != "password" else text
        self.errors.pop(name, None)

    @property
    def identity_changed(self) -> bool:
        """True when the hall or device differs from what runs now."""
        return (self.values["hall"], self.values["device"]) != self.current

    def check(self) -> LocalSetup | None:
        """The setup to save, or None with `errors` (field -> message key) filled in."""
        v = self.values
        errors: dict[str, str] = {}
        for name in ("hall", "device"):
            if not is_valid_id(v[name]):
                errors[name] = "setup_err_id"
        if not valid_host(v["host"]):
            errors["host"] = "setup_err_host"
        port = int(v["port"]) if v["port"].isdigit() else 0
        if not 1 <= port <= 65535:
            errors["port"] = "setup_err_port"
        if len(v["username"]) > 128:
            errors["username"] = "setup_err_user"
        if v["password"] and not v["username"]:
            errors["username"] = "setup_err_user_needed"
        if not errors and self.identity_changed and self.backlog > 0:
            errors["device"] = "setup_err_backlog"
        self.errors = errors
        if errors:
            return None
        return LocalSetup(
            hall=v["hall"],
            device=v["device"],
            host=v["host"],
            port=port,
            username=v["username"] or None,
            password=SecretStr(v["password"]) if v["password"] else None,
            tls_ca=self.tls_ca,
        )
