"""In-memory table of the devices the server has heard from over MQTT."""

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from protocol.messages import DeviceStatus, RatingEvent, ServiceEvent

State = Literal["online", "paused", "offline", "unknown"]


class DeviceView(BaseModel):
    """What the server knows of one device."""

    model_config = ConfigDict(extra="forbid")

    hall: str = Field(title="Hall")
    device: str = Field(title="Device code")
    window: str | None = Field(default=None, title="Window the device last reported")
    state: State = Field(title="online, paused or offline (unknown: never heard from)")
    last_seen: datetime | None = Field(default=None, title="When the server last heard from it")
    status_ts: datetime | None = Field(default=None, title="Device time of its last status")
    backlog: int | None = Field(default=None, title="Ratings waiting in the device's outbox")
    last_seq: int | None = Field(default=None, title="Highest seq the device assigned")
    version: str | None = Field(default=None, title="Software version")
    clock_synced: bool | None = Field(default=None, title="Device clock synchronised")
    staff: str | None = Field(default=None, title="Clerk logged in (staff number)")
    board_connected: bool | None = Field(default=None, title="Serial button board connected")
    registered: bool = Field(default=False, title="Listed in the registry")


@dataclass
class _Device:
    """Mutable record of one device."""

    hall: str
    device: str
    window: str | None = None
    state: State = "unknown"
    last_seen_ms: int | None = None
    status_ts: int | None = None
    backlog: int | None = None
    last_seq: int | None = None
    version: str | None = None
    clock_synced: bool | None = None
    staff: str | None = None
    board_connected: bool | None = None


def _dt(ms: int | None) -> datetime | None:
    """Return an aware UTC datetime of epoch milliseconds."""
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def now_ms() -> int:
    """Return the server's wall time in ms since the epoch."""
    return int(time.time() * 1000)


class DeviceTable:
    """Thread-safe device states, fed from the MQTT thread and read by the API."""

    def __init__(self) -> None:
        """Start empty."""
        self._lock = threading.Lock()
        self._devices: dict[tuple[str, str], _Device] = {}

    def _get(self, hall: str, device: str) -> _Device:
        """Return the record of a device, made on first sight (lock held)."""
        key = (hall, device)
        rec = self._devices.get(key)
        if rec is None:
            rec = self._devices[key] = _Device(hall=hall, device=device)
        return rec

    def status(self, st: DeviceStatus, received_ms: int | None = None) -> bool:
        """Apply a retained status; return True if the state changed."""
        with self._lock:
            rec = self._get(st.hall, st.device)
            before = (rec.state, rec.staff)
            rec.state = st.state
            rec.window = st.window or rec.window
            if st.state != "offline":
                rec.last_seen_ms = received_ms or now_ms()
            rec.status_ts = st.ts if st.ts is not None else rec.status_ts
            for name in ("backlog", "last_seq", "version", "clock_synced"):
                value = getattr(st, name)
                if value is not None:
                    setattr(rec, name, value)
            if st.board is not None:
                rec.board_connected = st.board.connected
            if st.state == "offline":
                rec.staff = None
            return before != (rec.state, rec.staff)

    def rating(self, ev: RatingEvent, received_ms: int | None = None) -> None:
        """Note a rating: the device is alive and its window and clerk are known."""
        with self._lock:
            rec = self._get(ev.hall, ev.device)
            rec.last_seen_ms = received_ms or now_ms()
            rec.window = ev.window
            if rec.state in ("unknown", "offline"):
                rec.state = "online"
            if ev.staff:
                rec.staff = ev.staff

    def event(self, ev: ServiceEvent, received_ms: int | None = None) -> bool:
        """Apply a login, logout, pause or resume; return True if the shown state changed."""
        with self._lock:
            rec = self._get(ev.hall, ev.device)
            before = (rec.state, rec.staff)
            rec.last_seen_ms = received_ms or now_ms()
            rec.window = ev.window or rec.window
            if ev.type == "staff_login":
                rec.staff = ev.staff
            elif ev.type == "staff_logout":
                rec.staff = None
            elif ev.type == "pause":
                rec.state = "paused"
            elif ev.type == "resume":
                rec.state = "online"
            return before != (rec.state, rec.staff)

    def views(self, registered: set[tuple[str, str]] | None = None) -> list[DeviceView]:
        """Return every device heard from, plus the registered ones never heard from."""
        reg = registered or set()
        with self._lock:
            recs = dict(self._devices)
            for key in reg - recs.keys():
                recs[key] = _Device(hall=key[0], device=key[1])
            return [
                DeviceView(
                    hall=r.hall,
                    device=r.device,
                    window=r.window,
                    state=r.state,
                    last_seen=_dt(r.last_seen_ms),
                    status_ts=_dt(r.status_ts),
                    backlog=r.backlog,
                    last_seq=r.last_seq,
                    version=r.version,
                    clock_synced=r.clock_synced,
                    staff=r.staff,
                    board_connected=r.board_connected,
                    registered=key in reg,
                )
                for key, r in sorted(recs.items())
            ]

    def by_window(self) -> dict[tuple[str, str], tuple[State, str | None]]:
        """Return (state, staff on duty) per (hall, window) of the devices that reported one."""
        out: dict[tuple[str, str], tuple[State, str | None]] = {}
        rank = {"online": 3, "paused": 2, "offline": 1, "unknown": 0}
        with self._lock:
            for r in self._devices.values():
                if r.window is None:
                    continue
                key = (r.hall, r.window)
                old = out.get(key)
                if old is None or rank[r.state] > rank[old[0]]:
                    out[key] = (r.state, r.staff or (old[1] if old else None))
        return out
