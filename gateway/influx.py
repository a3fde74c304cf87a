"""InfluxDB v1 HTTP output, Telegraf-style: connect / write(batch) / close."""

import logging

import httpx

from protocol.storage import InfluxSettings, open_http

log = logging.getLogger(__name__)


class InfluxUnavailable(Exception):
    """InfluxDB did not accept the batch for a reason that may pass (down, 5xx, timeout)."""


class InfluxRejected(Exception):
    """InfluxDB refused the batch's content (HTTP 400): retrying the same bytes cannot help."""


class InfluxOutput:
    """Writes line protocol to `/write` of the InfluxDB v1 API."""

    def __init__(self, settings: InfluxSettings) -> None:
        """Prepare the output; connect() creates the database."""
        self.settings = settings
        self._http = open_http(settings)
        self._db_ready = False

    def connect(self) -> None:
        """Create the database if needed (idempotent); raise InfluxUnavailable when down."""
        try:
            resp = self._http.post(
                "/query", params={"q": f'CREATE DATABASE "{self.settings.database}"'}
            )
        except httpx.HTTPError as exc:
            raise InfluxUnavailable(f"InfluxDB at {self.settings.url} unreachable: {exc}") from exc
        if resp.status_code != 200:
            raise InfluxUnavailable(
                f"CREATE DATABASE answered {resp.status_code}: {resp.text[:200]}"
            )
        self._db_ready = True

    def write(self, lines: list[str]) -> None:
        """Write one batch; return only when InfluxDB answered 204 (stored and fsynced)."""
        if not lines:
            return
        if not self._db_ready:
            self.connect()
        body = "\n".join(lines).encode()
        try:
            resp = self._http.post(
                "/write", params={"db": self.settings.database, "precision": "ns"}, content=body
            )
        except httpx.HTTPError as exc:
            raise InfluxUnavailable(f"write failed: {exc}") from exc
        if resp.status_code == 204:
            return
        if resp.status_code == 404:
            self._db_ready = False
            raise InfluxUnavailable(f"database missing: {resp.text[:200]}")
        if resp.status_code in (400, 413, 422):  # 422: 2.x/3.x v1-compat partial write
            raise InfluxRejected(f"{resp.status_code}: {resp.text[:500]}")
        raise InfluxUnavailable(f"write answered {resp.status_code}: {resp.text[:200]}")

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()
