"""The one recorder API behind the touchscreen, the GPIO buttons and the serial bridge."""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import uuid6

from kiosk.core.clock import Clock
from kiosk.core.outbox import Outbox, PressTime, StorageFull
from protocol.messages import EventType, InputKind, RatingEvent, ServiceEvent
from protocol.scales import check_level

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the device is: hall, device id, window and the scale it shows."""

    hall: str
    device: str
    window: str
    scale: int = 5


@dataclass(frozen=True, slots=True)
class Recorded:
    """A rating committed to the outbox."""

    seq: int
    id: str


class Recorder:
    """Turns a press into a committed outbox row; returns only after the fsync."""

    def __init__(
        self,
        outbox: Outbox,
        identity: Identity,
        clock: Clock,
        on_committed: Callable[[], None] | None = None,
    ) -> None:
        """Create a recorder writing to `outbox`; `on_committed` wakes the publisher."""
        self.outbox = outbox
        self.identity = identity
        self.clock = clock
        self.on_committed = on_committed

    def record(
        self,
        level: int,
        *,
        input: InputKind,
        prompted: bool,
        staff: str | None = None,
        ticket: str | None = None,
        item: str | None = None,
        reasons: Sequence[str] = (),
        held: bool = False,
    ) -> Recorded:
        """Record one rating; raise ValueError (before anything is stored) if it is invalid.

        Raises StorageFull (nothing stored) when the disk has no room for it.

        `held=True` keeps it from being sent until `Outbox.release()` (reasons being asked).
        """
        ident = self.identity
        check_level(ident.scale, level)
        press = PressTime(
            wall_ms=self.clock.wall_ms(),
            mono_ns=self.clock.mono_ns(),
            boot=self.clock.boot_id(),
            synced=self.clock.synced(),
        )
        draft: dict[str, Any] = {
            "device": ident.device,
            "hall": ident.hall,
            "window": ident.window,
            "scale": ident.scale,
            "level": level,
            "input": input,
            "prompted": prompted,
            "staff": staff,
            "ticket": ticket,
            "item": item,
            "reasons": list(reasons),
        }
        # Validate against the wire model now, so nothing invalid ever enters the outbox.
        RatingEvent.model_validate(
            {
                **draft,
                "id": uuid6.uuid7(),
                "seq": 1,
                "ts": max(press.wall_ms, 0),
                "clock_synced": True,
            },
            strict=False,
        )
        seq, rid = self.outbox.add_rating(draft, press, held=held)
        log.debug("recorded seq %s level %s", seq, level)
        if self.on_committed is not None:
            self.on_committed()
        return Recorded(seq=seq, id=rid)

    def wake(self) -> None:
        """Tell the publisher something is ready to send."""
        if self.on_committed is not None:
            self.on_committed()

    def event(
        self,
        type_: EventType,
        *,
        staff: str | None = None,
        ticket: str | None = None,
        item: str | None = None,
    ) -> ServiceEvent:
        """Commit a service event (login, logout, prompt, pause …) for publishing.

        On a full disk the event is logged and dropped (ratings are refused meanwhile).
        """
        ident = self.identity
        ev = ServiceEvent(
            id=uuid6.uuid7(),
            device=ident.device,
            hall=ident.hall,
            window=ident.window,
            ts=max(self.clock.wall_ms(), 0),
            clock_synced=self.clock.synced(),
            type=type_,
            staff=staff,
            ticket=ticket,
            item=item,
        )
        try:
            self.outbox.add_event(str(ev.id), ev.model_dump_json())
        except StorageFull:  # a session event is not a rating: logged, the kiosk goes on
            log.error("storage full: %s event not stored", type_)
            return ev
        if self.on_committed is not None:
            self.on_committed()
        return ev


def build_event(row_id: str, seq: int, draft: dict[str, Any], ts: int, synced: bool) -> str:
    """Build the RatingEvent JSON for an outbox row with its fixed ts."""
    event = RatingEvent.model_validate(
        {**draft, "id": row_id, "seq": seq, "ts": ts, "clock_synced": synced}, strict=False
    )
    return event.model_dump_json()
