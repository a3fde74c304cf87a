"""The one InfluxDB v1 HTTP client (1.x, or 2.x/3.x through v1 compatibility): writes and reads."""

import logging
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from storage.schema import DEFAULT_DATABASE

log = logging.getLogger(__name__)

CHUNK = 20_000  # rows per chunk of a streamed query


class InfluxSettings(BaseModel):
    """InfluxDB v1 HTTP API; the password from the environment or a `_FILE`."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(default="http://127.0.0.1:8086", title="Base URL of the v1 HTTP API")
    database: str = Field(default=DEFAULT_DATABASE, min_length=1, title="Database")
    username: str | None = Field(default=None, title="User name")
    password: SecretStr | None = Field(default=None, title="Password (from env)")
    timeout_s: float = Field(default=10.0, gt=0, le=300, title="HTTP timeout seconds")


class InfluxError(Exception):
    """InfluxDB answered with an error, or its answer could not be read."""


class InfluxUnavailableError(InfluxError):
    """InfluxDB could not be reached or cannot take the request now (down, 5xx, timeout)."""


class InfluxRejectedError(InfluxError):
    """InfluxDB refused a write's content (HTTP 400): retrying the same bytes cannot help."""


class DatabaseNotFoundError(InfluxError):
    """The database does not exist (yet): nothing has been written to it."""


class Series(BaseModel):
    """One series of an InfluxQL statement result."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(default="", title="Measurement")
    tags: dict[str, str] = Field(default_factory=dict, title="Tags of a GROUP BY")
    columns: list[str] = Field(default_factory=list, title="Column names")
    values: list[list[Any]] = Field(default_factory=list, title="Rows")

    def rows(self) -> Iterator[dict[str, Any]]:
        """Yield each row as a dict of column name to value."""
        for values in self.values:
            yield dict(zip(self.columns, values, strict=False))


class Statement(BaseModel):
    """The result of one InfluxQL statement."""

    model_config = ConfigDict(extra="ignore")

    statement_id: int = Field(default=0, title="Statement number")
    series: list[Series] = Field(default_factory=list, title="Series")
    error: str | None = Field(default=None, title="Error of this statement")


class _QueryResponse(BaseModel):
    """The JSON body of /query."""

    model_config = ConfigDict(extra="ignore")

    results: list[Statement] = Field(default_factory=list, title="Statement results")
    error: str | None = Field(default=None, title="Error of the request")


def _statement_error(error: str) -> InfluxError:
    """Return the exception of a statement's error text."""
    if error.startswith("database not found"):
        return DatabaseNotFoundError(error)
    return InfluxError(f"query failed: {error}")


class InfluxClient:
    """One connection pool to InfluxDB's v1 HTTP API: /ping, /query and /write."""

    def __init__(
        self,
        settings: InfluxSettings,
        *,
        timeout_s: float | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """Open an HTTP connection pool to `settings.url` with its credentials (basic auth)."""
        self.settings = settings
        auth: tuple[str, str] | None = None
        if settings.username:
            pw = settings.password.get_secret_value() if settings.password else ""
            auth = (settings.username, pw)
        self._http = httpx.Client(
            base_url=settings.url.rstrip("/"),
            timeout=timeout_s or settings.timeout_s,
            auth=auth,
            transport=transport,
        )
        self._db_ready = False

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return self.settings.url

    @property
    def database(self) -> str:
        """The database written and queried."""
        return self.settings.database

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        """Return self in a with-block."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close on leaving a with-block."""
        self.close()

    # --- health ---

    def ping(self, timeout: float | None = None) -> str:
        """Return the server version from /ping (204); raise InfluxError otherwise."""
        try:
            resp = self._http.get("/ping", timeout=timeout or self.settings.timeout_s)
        except httpx.HTTPError as exc:
            raise InfluxUnavailableError(f"{self.url} unreachable: {exc}") from exc
        if resp.status_code != 204:
            raise InfluxError(f"{self.url}/ping answered {resp.status_code}")
        return str(resp.headers.get("X-Influxdb-Version", "unknown"))

    # --- reads ---

    def query(self, q: str, timeout: float | None = None) -> list[Statement]:
        """Run InfluxQL `q` (times in ms) and return each statement's result."""
        params = {"db": self.database, "q": q, "epoch": "ms"}
        try:
            resp = self._http.get("/query", params=params, timeout=timeout or self._http.timeout)
        except httpx.HTTPError as exc:
            raise InfluxUnavailableError(f"{self.url} unreachable: {exc}") from exc
        try:
            body = _QueryResponse.model_validate_json(resp.content)
        except ValidationError as exc:
            raise InfluxError(
                f"{self.url}/query answered {resp.status_code} with unreadable body"
            ) from exc
        if body.error:
            raise InfluxError(f"{self.url}/query answered {resp.status_code}: {body.error}")
        if resp.status_code != 200:
            raise InfluxError(f"{self.url}/query answered {resp.status_code}")
        for stmt in body.results:
            if stmt.error:
                raise _statement_error(stmt.error)
        return body.results

    def series(self, q: str, timeout: float | None = None) -> list[Series]:
        """Run one statement and return its series; none when the database does not exist."""
        try:
            return [s for stmt in self.query(q, timeout) for s in stmt.series]
        except DatabaseNotFoundError:
            return []

    def rows(self, q: str) -> Iterator[dict[str, Any]]:
        """Yield the rows of a (large) query streamed in chunks; none without the database."""
        params = {"db": self.database, "q": q, "epoch": "ms", "chunked": "true"}
        params["chunk_size"] = str(CHUNK)
        try:
            with self._http.stream("GET", "/query", params=params) as resp:
                if resp.status_code != 200:
                    resp.read()
                    raise InfluxError(f"/query answered {resp.status_code}: {resp.text[:200]}")
                for line in resp.iter_lines():
                    if not line.strip():
                        continue
                    doc = orjson.loads(line)
                    for stmt in doc.get("results", []):
                        err = stmt.get("error")
                        if err:
                            exc = _statement_error(err)
                            if isinstance(exc, DatabaseNotFoundError):
                                return
                            raise exc
                        for series in stmt.get("series", []):
                            cols = series["columns"]
                            for values in series.get("values", []):
                                yield dict(zip(cols, values, strict=True))
        except httpx.HTTPError as exc:
            raise InfluxUnavailableError(f"{self.url} unreachable: {exc}") from exc

    # --- writes ---

    def create_database(self) -> None:
        """Create the database if needed (idempotent); raise InfluxUnavailableError when down."""
        try:
            resp = self._http.post("/query", params={"q": f'CREATE DATABASE "{self.database}"'})
        except httpx.HTTPError as exc:
            raise InfluxUnavailableError(f"InfluxDB at {self.url} unreachable: {exc}") from exc
        if resp.status_code != 200:
            raise InfluxUnavailableError(
                f"CREATE DATABASE answered {resp.status_code}: {resp.text[:200]}"
            )
        self._db_ready = True

    def write(self, lines: list[str]) -> None:
        """Write one batch of line protocol; return only when InfluxDB answered 204 (stored)."""
        if not lines:
            return
        if not self._db_ready:
            self.create_database()
        body = "\n".join(lines).encode()
        try:
            resp = self._http.post(
                "/write", params={"db": self.database, "precision": "ns"}, content=body
            )
        except httpx.HTTPError as exc:
            raise InfluxUnavailableError(f"write failed: {exc}") from exc
        if resp.status_code == 204:
            return
        if resp.status_code == 404:
            self._db_ready = False
            raise InfluxUnavailableError(f"database missing: {resp.text[:200]}")
        if resp.status_code in (400, 413, 422):  # 422: 2.x/3.x v1-compat partial write
            raise InfluxRejectedError(f"{resp.status_code}: {resp.text[:500]}")
        raise InfluxUnavailableError(f"write answered {resp.status_code}: {resp.text[:200]}")
