"""Fan-out of live board events to the SSE clients, safe to feed from any thread."""

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

QUEUE_SIZE = 2000


@dataclass(eq=False)
class Subscriber:
    """One SSE client: its queue and what it may see."""

    hall: str | None
    public: bool
    queue: asyncio.Queue[dict[str, Any] | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_SIZE)
    )
    overflowed: bool = False


class Hub:
    """Delivers events to the subscribers on the server's event loop."""

    def __init__(self) -> None:
        """Start without a loop; bind() sets it when the app starts."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subs: set[Subscriber] = set()
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver on `loop` from now on."""
        self._loop = loop

    def subscribe(self, hall: str | None, public: bool) -> Subscriber:
        """Add a subscriber (on the loop)."""
        sub = Subscriber(hall=hall, public=public)
        with self._lock:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Remove a subscriber."""
        with self._lock:
            self._subs.discard(sub)

    @property
    def count(self) -> int:
        """Number of connected subscribers."""
        with self._lock:
            return len(self._subs)

    def publish(self, event: dict[str, Any]) -> None:
        """Queue `event` for every subscriber (from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._deliver, event)
        except RuntimeError:  # the loop closed meanwhile
            return

    def _deliver(self, event: dict[str, Any]) -> None:
        """Put `event` into the queues of the subscribers allowed to see it (on the loop)."""
        hall = event.get("hall")
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            if hall is not None and sub.hall is not None and hall != sub.hall:
                continue
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                # A client too slow to keep up gets a fresh snapshot instead of the backlog.
                sub.overflowed = True
                log.warning("SSE client too slow, %d events queued: resyncing it", QUEUE_SIZE)

    def close(self) -> None:
        """Tell every subscriber to end its stream."""
        loop = self._loop
        with self._lock:
            subs = list(self._subs)
        if loop is None or loop.is_closed():
            return
        for sub in subs:
            try:
                loop.call_soon_threadsafe(sub.queue.put_nowait, None)
            except (RuntimeError, asyncio.QueueFull):
                continue
