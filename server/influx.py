"""A small InfluxDB v1 HTTP query client and today's per-window rating counts."""

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from types import TracebackType
from typing import Any, Self
from zoneinfo import ZoneInfo

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from protocol.scales import check_level, is_negative, is_satisfied, level_index, level_label
from protocol.storage import MEASUREMENT_RATING, InfluxSettings, open_http

log = logging.getLogger(__name__)

MEASUREMENT = MEASUREMENT_RATING
SCALES: tuple[int, ...] = (5, 4, 3)


class InfluxError(Exception):
    """InfluxDB answered with an error, or its answer could not be read."""


class InfluxUnavailableError(InfluxError):
    """InfluxDB could not be reached (connection refused, timeout, DNS)."""


class DatabaseNotFoundError(InfluxError):
    """The database does not exist (yet): nothing has been written to it."""


class _Series(BaseModel):
    """One series of an InfluxQL statement result."""

    model_config = ConfigDict(extra="ignore")

    name: str = ""
    tags: dict[str, str] = {}
    columns: list[str] = []
    values: list[list[Any]] = []


class _Statement(BaseModel):
    """The result of one InfluxQL statement."""

    model_config = ConfigDict(extra="ignore")

    statement_id: int = 0
    series: list[_Series] = []
    error: str | None = None


class _QueryResponse(BaseModel):
    """The JSON body of /query."""

    model_config = ConfigDict(extra="ignore")

    results: list[_Statement] = []
    error: str | None = None


class InfluxClient:
    """Query client for InfluxDB's v1 HTTP API (`/query`, `/ping`), also served by 2.x/3.x."""

    def __init__(
        self, settings: InfluxSettings, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        """Open an HTTP connection pool to `settings.url`."""
        self.settings = settings
        self._http = open_http(settings, transport=transport)

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return self.settings.url

    @property
    def database(self) -> str:
        """The database queried."""
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

    def ping(self, timeout: float | None = None) -> str:
        """Return the server version from /ping (204); raise InfluxError otherwise."""
        try:
            resp = self._http.get("/ping", timeout=timeout or self.settings.timeout_s)
        except httpx.HTTPError as exc:
            raise InfluxUnavailableError(f"{self.url} unreachable: {exc}") from exc
        if resp.status_code != 204:
            raise InfluxError(f"{self.url}/ping answered {resp.status_code}")
        return str(resp.headers.get("X-Influxdb-Version", "unknown"))

    def query(self, q: str) -> list[_Statement]:
        """Run InfluxQL `q` (one or more `;`-separated statements) and return each result."""
        params = {"db": self.database, "q": q, "epoch": "ms"}
        try:
            resp = self._http.get("/query", params=params)
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
                if stmt.error.startswith("database not found"):
                    raise DatabaseNotFoundError(stmt.error)
                raise InfluxError(f"query failed: {stmt.error}")
        return body.results


@dataclass(slots=True)
class WindowCount:
    """Today's ratings of one window, counted per (scale, level)."""

    hall: str
    window: str
    counts: Counter[tuple[int, int]] = field(default_factory=Counter)

    @property
    def ratings(self) -> int:
        """Number of ratings."""
        return sum(self.counts.values())

    @property
    def levels(self) -> dict[int, int]:
        """Number of ratings per level number (all scales added up)."""
        out: Counter[int] = Counter()
        for (_scale, level), n in self.counts.items():
            out[level] += n
        return dict(sorted(out.items()))

    @property
    def scales(self) -> list[int]:
        """The scales the window's ratings were given on."""
        return sorted({scale for scale, _level in self.counts})

    @property
    def satisfied(self) -> int:
        """Number of ratings at 基本满意 (fairly satisfied) or better."""
        return sum(n for (s, lv), n in self.counts.items() if is_satisfied(s, lv))

    @property
    def negatives(self) -> int:
        """Number of negative ratings."""
        return sum(n for (s, lv), n in self.counts.items() if is_negative(s, lv))

    @property
    def satisfaction_rate(self) -> float | None:
        """Share of satisfied ratings in [0, 1]; None without ratings."""
        total = self.ratings
        return self.satisfied / total if total else None

    @property
    def score(self) -> float | None:
        """Mean rating index (0–100); None without ratings."""
        total = self.ratings
        if not total:
            return None
        return sum(level_index(s, lv) * n for (s, lv), n in self.counts.items()) / total

    def label_counts(self) -> dict[str, int]:
        """Number of ratings per zh level label (the same label means the same on every scale)."""
        out: Counter[str] = Counter()
        for (scale, level), n in self.counts.items():
            out[level_label(scale, level, "zh")] += n
        return dict(out)


def day_bounds(tz: ZoneInfo, now: datetime | None = None) -> tuple[date, datetime, datetime]:
    """Return today's date in `tz` and its local midnight and next local midnight."""
    local_now = (now or datetime.now(tz)).astimezone(tz)
    today = local_now.date()
    start = datetime.combine(today, time(0), tzinfo=tz)
    end = datetime.combine(today + timedelta(days=1), time(0), tzinfo=tz)
    return today, start, end


def _ns(moment: datetime) -> int:
    """Return nanoseconds since the Unix epoch of an aware datetime."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def _string_literal(value: str) -> str:
    """Quote `value` as an InfluxQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def counts_between(
    client: InfluxClient, start: datetime, end: datetime, hall: str | None = None
) -> list[WindowCount]:
    """Count ratings per window, scale and level with start <= time < end (optionally one hall)."""
    where = f"time >= {_ns(start)} AND time < {_ns(end)}"
    if hall is not None:
        where += f' AND "hall" = {_string_literal(hall)}'
    # One request per scale (`scale` is a field, not a tag, so it cannot be grouped by).
    # Not one multi-statement request: InfluxDB 1.6 then reports a missing database
    # only as "not executed".
    series_of_scale: list[tuple[int, list[_Series]]] = []
    for scale in SCALES:
        q = (
            f'SELECT count("seq") FROM "{MEASUREMENT}" WHERE {where} AND "scale" = {scale} '
            'GROUP BY "hall", "window", "level"'
        )
        try:
            results = client.query(q)
        except DatabaseNotFoundError:
            log.info("database %s does not exist yet: no ratings", client.database)
            return []
        series_of_scale.append((scale, [s for stmt in results for s in stmt.series]))
    windows: dict[tuple[str, str], WindowCount] = {}
    for scale, all_series in series_of_scale:
        for series in all_series:
            hall_tag = series.tags.get("hall", "")
            window_tag = series.tags.get("window", "")
            try:
                level = int(series.tags.get("level", ""))
                check_level(scale, level)
                count = int(series.values[0][series.columns.index("count")])
            except (ValueError, IndexError, TypeError) as exc:
                log.warning(
                    "skipping series %s of hall %s window %s: %s",
                    series.tags,
                    hall_tag,
                    window_tag,
                    exc,
                )
                continue
            key = (hall_tag, window_tag)
            wc = windows.get(key)
            if wc is None:
                wc = windows[key] = WindowCount(hall=hall_tag, window=window_tag)
            wc.counts[(scale, level)] += count
    return [windows[key] for key in sorted(windows)]


def today_counts(
    client: InfluxClient,
    tz: ZoneInfo,
    *,
    hall: str | None = None,
    now: datetime | None = None,
) -> list[WindowCount]:
    """Count today's ratings (local midnight in `tz` until the next) per window."""
    _today, start, end = day_bounds(tz, now)
    return counts_between(client, start, end, hall)
