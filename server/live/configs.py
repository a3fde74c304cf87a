"""The retained `config` of every registered device, built from the registry."""

import logging

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol.messages import DeviceConfig, StaffEntry
from protocol.topics import is_valid_id
from server.db.models import Device, Staff, Window
from server.settings.live import LiveSettings

log = logging.getLogger(__name__)

MAX_TEXT = 64
MAX_STAFF = 500

DeviceKey = tuple[str, str]  # (hall, device)


def _text(value: str) -> str:
    """Return `value` cut to the wire's text limit."""
    return value[:MAX_TEXT]


def _roster(staff: list[Staff], window: Window) -> list[StaffEntry]:
    """Return the clerks who may log in at `window`: its unit's, or the hall's without a unit."""
    chosen = [
        s for s in staff if s.hall_id == window.hall_id and (
            window.unit_id is None or s.unit_id is None or s.unit_id == window.unit_id
        )
    ]  # fmt: skip
    return [StaffEntry(staff=_text(s.number), name=_text(s.name)) for s in chosen[:MAX_STAFF]]


def device_configs(session: Session, live: LiveSettings) -> dict[DeviceKey, DeviceConfig]:
    """Return the config of every registered device bound to a window, by (hall, device)."""
    staff = list(session.scalars(select(Staff).order_by(Staff.number)).unique())
    out: dict[DeviceKey, DeviceConfig] = {}
    for dev in session.scalars(select(Device).order_by(Device.code)).unique():
        if dev.window is None:
            continue
        key = (dev.hall.code, dev.code)
        if not (is_valid_id(key[0]) and is_valid_id(key[1])):
            log.warning("device %s/%s has no valid topic id: no config published", *key)
            continue
        try:
            out[key] = DeviceConfig(
                window=dev.window.code,
                window_name=_text(dev.window.name) or None,
                scale=live.scale,
                language=live.language,
                prompt_mode=live.prompt_mode,
                reasons=list(live.reasons),
                staff=_roster(staff, dev.window),
                test_device=dev.test_device,
            )
        except ValidationError as exc:
            log.warning("device %s/%s: config not valid on the wire: %s", *key, exc)
    return out


def window_names(session: Session) -> dict[tuple[str, str], str]:
    """Return the name of every registered window by (hall, window)."""
    return {(w.hall.code, w.code): w.name for w in session.scalars(select(Window)).unique()}


def registered_devices(session: Session) -> set[DeviceKey]:
    """Return (hall, device) of every registered device."""
    return {(d.hall.code, d.code) for d in session.scalars(select(Device)).unique()}
