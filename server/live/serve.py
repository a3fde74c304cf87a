"""uvicorn for the server: open SSE streams are ended when the server is told to stop.

Under systemd (`Type=notify`, `WatchdogSec=`) it says READY=1 once it listens, and pings the
watchdog while its event loop runs: a loop that stops going round gets the unit restarted.
"""

import asyncio
import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI

from common.systemd import Heartbeat, Watchdog, notify

BEAT_S = 1.0


class _Server(uvicorn.Server):
    """uvicorn that ends the live streams first on SIGINT/SIGTERM (it waits for open responses)."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        """Keep the app to find its live service."""
        super().__init__(config)
        self._app = app
        self._loop_beat = Heartbeat()
        self._watchdog = Watchdog(self._alive)
        self._beating: asyncio.Task[None] | None = None

    def _alive(self) -> bool:
        """True while the event loop went round within half the watchdog interval."""
        return self._loop_beat.fresh(max((self._watchdog.interval_s or 0) / 2, 2 * BEAT_S))

    async def _beat(self) -> None:
        """Beat the event loop's heartbeat until cancelled."""
        while True:
            self._loop_beat.beat()
            await asyncio.sleep(BEAT_S)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start as uvicorn does, then tell systemd the server is ready."""
        await super().startup(sockets)
        if self.should_exit:  # it could not start (e.g. the port is taken)
            return
        self._beating = asyncio.create_task(self._beat())
        self._watchdog.start()
        notify("READY=1")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Tell systemd, stop the heartbeat, then shut down as uvicorn does."""
        notify("STOPPING=1")
        self._watchdog.stop()
        if self._beating is not None:
            self._beating.cancel()
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """End every SSE stream, then stop as uvicorn does."""
        live = getattr(self._app.state, "live", None)
        if live is not None:
            live.hub.close()
        super().handle_exit(sig, frame)


def serve(app: FastAPI, host: str, port: int) -> None:
    """Serve `app` until SIGINT or SIGTERM."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5
    )
    _Server(config, app).run()
