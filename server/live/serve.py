"""uvicorn for the server: open SSE streams are ended when the server is told to stop."""

from types import FrameType

import uvicorn
from fastapi import FastAPI


class _Server(uvicorn.Server):
    """uvicorn that ends the live streams first on SIGINT/SIGTERM (it waits for open responses)."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        """Keep the app to find its live service."""
        super().__init__(config)
        self._app = app

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
