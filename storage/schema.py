"""The InfluxDB schema: measurements, which keys are tags and which fields, and point times."""

from datetime import UTC, datetime

DEFAULT_DATABASE = "windowrate"

MEASUREMENT_RATING = "rating"
MEASUREMENT_EVENT = "event"
MEASUREMENT_STATUS = "device_status"

# Tags are indexed and can be grouped by; everything else is a field.
RATING_TAGS = ("device", "hall", "level", "window")
RATING_FIELDS = (
    "seq",
    "id",
    "scale",
    "input",
    "prompted",
    "clock_synced",
    "staff",
    "ticket",
    "item",
    "reasons",
    "project",
)
EVENT_TAGS = ("device", "hall", "type")
EVENT_FIELDS = ("id", "clock_synced", "window", "staff", "ticket", "item")
STATUS_TAGS = ("device", "hall")
STATUS_FIELDS = (
    "state",
    "device_ts",
    "window",
    "last_seq",
    "backlog",
    "clock_synced",
    "version",
    "board_connected",
    "board_id",
    "board_firmware",
)

SUB_MS = 1_000_000  # nanoseconds per millisecond: the room a point time has below its ms


def rating_time_ns(ts_ms: int, seq: int) -> int:
    """Point time of a rating: ts ms × 10⁶ + (seq mod 10⁶) ns, unique per device and ms."""
    return ts_ms * SUB_MS + seq % SUB_MS


def event_time_ns(ts_ms: int, id_int: int) -> int:
    """Point time of a service event: ts ms × 10⁶ + (id mod 10⁶) ns (events have no seq)."""
    return ts_ms * SUB_MS + id_int % SUB_MS


def ns(moment: datetime) -> int:
    """Return nanoseconds since the Unix epoch of an aware datetime (exact, no float)."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def literal(value: str) -> str:
    """Quote `value` as an InfluxQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
