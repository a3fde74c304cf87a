"""Broker logins of devices and services, one-time codes, and the broker's files made from them."""

import base64
import hashlib
import logging
import os
import secrets
import signal
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from protocol.topics import is_valid_id
from server.auth.service import audit
from server.broker import accounts as broker_auth
from server.broker.accounts import Account, Role
from server.db.models import Device, Hall, Window, utcnow
from server.provisioning.models import BrokerAccount, ProvisioningCode
from server.settings.provisioning import ProvisioningSettings

log = logging.getLogger(__name__)

SERVICE_ROLES: tuple[Role, ...] = ("gateway", "server", "uplink")
# Crockford's base32 without look-alikes (no I, L, O, U): easy to read aloud and to type.
_CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_GROUPS, CODE_GROUP_LEN = 4, 4  # 16 symbols = 80 bits


class ProvisioningError(ValueError):
    """A request that cannot be carried out; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        """Keep the message and status."""
        super().__init__(message)
        self.status = status


def new_code() -> str:
    """A random code like `7K3M-Q9XD-2HVA-WB4T`."""
    symbols = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(CODE_GROUPS * CODE_GROUP_LEN))
    return "-".join(symbols[i : i + CODE_GROUP_LEN] for i in range(0, len(symbols), CODE_GROUP_LEN))


def normalize_code(code: str) -> str:
    """Upper-case, drop spaces and dashes, read O as 0 and I/L as 1 (as typed on a keypad)."""
    raw = code.upper().replace("-", "").replace(" ", "")
    return raw.translate(str.maketrans("OIL", "011"))


def code_hash(code: str) -> str:
    """What is stored of a code: its SHA-256 (the code itself is shown once)."""
    return hashlib.sha256(normalize_code(code).encode()).hexdigest()


def _ensure_hall(session: Session, code: str) -> tuple[Hall, bool]:
    """The hall `code`, made (named after its code) when missing."""
    hall = session.scalar(select(Hall).where(Hall.code == code))
    if hall is not None:
        return hall, False
    hall = Hall(code=code, name=code)
    session.add(hall)
    session.flush()
    return hall, True


def _ensure_window(session: Session, hall: Hall, code: str) -> tuple[Window, bool]:
    """The window `code` of `hall`, made when missing."""
    win = session.scalar(select(Window).where(Window.hall_id == hall.id, Window.code == code))
    if win is not None:
        return win, False
    win = Window(hall=hall, code=code, name=code)
    session.add(win)
    session.flush()
    return win, True


def account_hall(acc: BrokerAccount) -> str | None:
    """The hall an account belongs to now: a device's current hall in the registry."""
    if acc.device is not None:
        return acc.device.hall.code
    return acc.hall


def find_account(session: Session, username: str) -> BrokerAccount:
    """The account `username`; 404 when unknown."""
    acc = session.scalar(select(BrokerAccount).where(BrokerAccount.username == username))
    if acc is None:
        raise ProvisioningError(f"no broker account {username!r}", 404)
    return acc


def add_device(
    session: Session,
    *,
    hall: str,
    device: str,
    window: str | None,
    test_device: bool = False,
    actor: str | None = None,
) -> tuple[BrokerAccount, str, list[str]]:
    """Register `device` (and its hall and window when new) with a broker login.

    Returns the account, its password (shown once) and what was created. A device that
    already has a login is refused (409); revoke it first or issue a provisioning code.
    """
    for value in (hall, device, window):
        if value is not None and not is_valid_id(value):
            raise ProvisioningError(f"bad id {value!r}: lower-case letters, digits, - and _")
    created: list[str] = []
    h, made = _ensure_hall(session, hall)
    if made:
        created.append(f"hall {hall}")
    w = None
    if window is not None:
        w, made = _ensure_window(session, h, window)
        if made:
            created.append(f"window {hall}/{window}")
    dev = session.scalar(select(Device).where(Device.code == device))
    if dev is None:
        dev = Device(code=device, hall=h, window=w, test_device=test_device)
        session.add(dev)
        session.flush()
        created.append(f"device {device}")
    elif dev.hall_id != h.id:
        raise ProvisioningError(f"device {device} belongs to hall {dev.hall.code}", 409)
    elif w is not None and dev.window_id != w.id:
        dev.window = w
    exists = session.scalar(select(BrokerAccount).where(BrokerAccount.username == device))
    if exists is not None:
        raise ProvisioningError(f"device {device} already has a broker login", 409)
    password = broker_auth.new_password()
    acc = BrokerAccount(
        username=device,
        role="device",
        hall=hall,
        device=dev,
        password_hash=broker_auth.mosquitto_hash(password),
        revoked=False,
    )
    session.add(acc)
    session.flush()
    audit(session, actor, "broker.device_added", device, {"hall": hall, "window": window})
    _mark_registry_changed(session)
    return acc, password, created


def rekey(session: Session, username: str, actor: str | None = None) -> str:
    """Give an account a new password (and lift a revocation); return the password."""
    acc = find_account(session, username)
    password = broker_auth.new_password()
    acc.password_hash = broker_auth.mosquitto_hash(password)
    acc.revoked = False
    acc.updated = utcnow()
    session.flush()
    audit(session, actor, "broker.rekeyed", username)
    return password


def _mark_registry_changed(session: Session) -> None:
    """Let the registry's change hooks run after the commit (configs are republished)."""
    from server.registry.service import _mark_changed

    _mark_changed(session)


def set_service_account(
    session: Session,
    *,
    username: str,
    role: Role,
    hall: str | None = None,
    actor: str | None = None,
) -> str:
    """Create or re-key a service login (gateway, server, uplink); return its new password."""
    if role not in SERVICE_ROLES:
        raise ProvisioningError(f"role must be one of {', '.join(SERVICE_ROLES)}")
    password = broker_auth.new_password()
    Account(username, broker_auth.mosquitto_hash(password), role, hall)  # validates the names
    acc = session.scalar(select(BrokerAccount).where(BrokerAccount.username == username))
    if acc is not None and acc.role != role:
        raise ProvisioningError(f"{username} is a {acc.role} account", 409)
    if acc is None:
        acc = BrokerAccount(username=username, role=role, hall=hall, revoked=False)
        session.add(acc)
    acc.password_hash = broker_auth.mosquitto_hash(password)
    acc.hall = hall
    acc.revoked = False
    acc.updated = utcnow()
    session.flush()
    audit(session, actor, "broker.service_keyed", username, {"role": role})
    return password


def revoke(session: Session, username: str, actor: str | None = None) -> BrokerAccount:
    """Refuse `username` from the next broker reload on; its unused codes die with it."""
    acc = find_account(session, username)
    acc.revoked = True
    acc.updated = utcnow()
    for code in session.scalars(
        select(ProvisioningCode).where(
            ProvisioningCode.account_id == acc.id, ProvisioningCode.used.is_(None)
        )
    ):
        code.used = utcnow()
    audit(session, actor, "broker.revoked", username)
    return acc


def issue_code(
    session: Session, username: str, hours: int, actor: str | None = None
) -> tuple[str, datetime]:
    """A one-time code for device `username`; return it (shown once) and its expiry."""
    acc = find_account(session, username)
    if acc.role != "device":
        raise ProvisioningError("provisioning codes are for devices")
    if acc.revoked:
        raise ProvisioningError(f"{username} is revoked; add it again first", 409)
    code = new_code()
    expires = utcnow() + timedelta(hours=hours)
    session.add(
        ProvisioningCode(
            account_id=acc.id, code_hash=code_hash(code), expires=expires, created_by=actor
        )
    )
    session.flush()
    audit(session, actor, "broker.code_issued", username, {"expires": expires.isoformat()})
    return code, expires


def redeem(session: Session, code: str, now: datetime | None = None) -> tuple[BrokerAccount, str]:
    """Spend a code: the device gets a new password (its old one stops at the next reload).

    A used, expired, unknown or revoked code is refused with 410 or 404.
    """
    now = now or utcnow()
    row = session.scalar(
        select(ProvisioningCode).where(ProvisioningCode.code_hash == code_hash(code))
    )
    if row is None:
        raise ProvisioningError("unknown provisioning code", 404)
    if row.used is not None:
        raise ProvisioningError("this provisioning code was used already", 410)
    if row.expires <= now:
        raise ProvisioningError("this provisioning code has expired", 410)
    acc = row.account
    if acc.revoked:
        raise ProvisioningError("this device is revoked", 410)
    # Spend it only if still unused: of two redeems that both read it unused, one wins.
    spent = session.execute(
        update(ProvisioningCode)
        .where(ProvisioningCode.id == row.id, ProvisioningCode.used.is_(None))
        .values(used=now)
        .execution_options(synchronize_session=False)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        raise ProvisioningError("this provisioning code was used already", 410)
    row.used = now
    password = broker_auth.new_password()
    acc.password_hash = broker_auth.mosquitto_hash(password)
    acc.updated = now
    session.flush()
    audit(session, None, "broker.code_redeemed", acc.username)
    return acc, password


def broker_accounts(session: Session) -> list[Account]:
    """Every login the broker should accept now, for its passwd and acl."""
    out: list[Account] = []
    rows = session.scalars(
        select(BrokerAccount)
        .where(BrokerAccount.revoked.is_(False))
        .order_by(BrokerAccount.username)
    )
    for acc in rows:
        role: Role = acc.role  # type: ignore[assignment]
        try:
            if role == "device":
                if acc.device is None:
                    continue
                out.append(
                    Account(
                        acc.username, acc.password_hash, role, acc.device.hall.code, acc.device.code
                    )
                )
            else:
                out.append(Account(acc.username, acc.password_hash, role, acc.hall))
        except ValueError as exc:  # a row that would break the files is left out, loudly
            log.error("broker account %s left out: %s", acc.username, exc)
    return out


def sync_broker(session: Session, cfg: ProvisioningSettings) -> int:
    """Write the broker's passwd and acl from the database and ask it to reload; return count."""
    if cfg.broker_auth_dir is None:
        return 0
    accounts = broker_accounts(session)
    broker_auth.write_files(cfg.broker_auth_dir, accounts, cfg.prefix)
    log.info("wrote %d broker accounts to %s", len(accounts), cfg.broker_auth_dir)
    if cfg.broker_pid_file is not None:
        try:
            pid = int(cfg.broker_pid_file.read_text().strip())
            os.kill(pid, signal.SIGHUP)
            log.info("asked the broker (pid %d) to reload", pid)
        except (OSError, ValueError) as exc:
            log.error("could not signal the broker via %s: %s", cfg.broker_pid_file, exc)
    return len(accounts)


def ca_fingerprint(pem: bytes) -> str:
    """SHA-256 of the CA certificate (DER), hex: what a kiosk checks before trusting it."""
    body = b"".join(
        line for line in pem.strip().splitlines() if line and not line.startswith(b"-----")
    )
    return hashlib.sha256(base64.b64decode(body)).hexdigest()
