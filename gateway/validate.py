"""Turn one MQTT message into a point to write, or a dead letter with its reason."""

import time
from dataclasses import dataclass
from functools import lru_cache

from pydantic import ValidationError

from gateway.lineproto import event_line, rating_line, status_line
from protocol.clock import TsVerdict, check_ts
from protocol.messages import DeviceStatus, RatingEvent, ServiceEvent
from protocol.topics import Topic, TopicError, TopicKind


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid message and its line-protocol point."""

    kind: TopicKind
    line: str
    rating: RatingEvent | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that cannot be stored, with a short reason code and a human detail."""

    reason: str
    detail: str


def _schema_reason(exc: ValidationError) -> str:
    """Map pydantic's first error to a reason code an operator can act on."""
    errors = exc.errors(include_url=False, include_input=False)
    types = {e["type"] for e in errors}
    if "json_invalid" in types or "json_type" in types:
        return "bad_json"
    if "extra_forbidden" in types:
        return "unknown_key"
    if "missing" in types:
        return "missing_key"
    if "value_error" in types:  # the only value check is level within 1 … scale
        return "level_out_of_scale"
    return "invalid_field"


def _short(exc: ValidationError) -> str:
    """A compact, bounded description of a validation error."""
    parts = []
    for e in exc.errors(include_url=False, include_input=False)[:5]:
        loc = ".".join(str(p) for p in e["loc"]) or "payload"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)[:500]


# The longest valid topic is 204 characters (64 prefix, /v1/, 64 hall, 64 device, status).
# Longer ones are refused before the cache, which must not keep a flood of 64 KiB topics.
MAX_TOPIC_CHARS = 256


@lru_cache(maxsize=65_536)
def _parse_topic(topic: str, prefix: str) -> Topic | str:
    """Parse a topic once per device (topics repeat); return the error text if invalid."""
    try:
        return Topic.parse(topic, prefix)
    except TopicError as exc:
        return str(exc)


def decode(
    topic: str,
    payload: bytes,
    *,
    prefix: str,
    max_bytes: int,
    now_ms: int | None = None,
    received_ns: int | None = None,
) -> Accepted | Rejected:
    """Validate `payload` against the model of its topic and build its point."""
    if len(payload) > max_bytes:
        return Rejected("too_large", f"payload of {len(payload)} bytes > {max_bytes}")
    if len(topic) > MAX_TOPIC_CHARS:
        return Rejected("bad_topic", f"topic of {len(topic)} characters > {MAX_TOPIC_CHARS}")
    t = _parse_topic(topic, prefix)
    if isinstance(t, str):
        return Rejected("bad_topic", t)
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    msg: RatingEvent | ServiceEvent | DeviceStatus
    try:
        if t.kind is TopicKind.RATING:
            msg = RatingEvent.model_validate_json(payload)
        elif t.kind is TopicKind.EVENT:
            msg = ServiceEvent.model_validate_json(payload)
        elif t.kind is TopicKind.STATUS:
            msg = DeviceStatus.model_validate_json(payload)
        else:
            return Rejected("bad_topic", f"the gateway does not consume {t.kind.value}")
    except ValidationError as exc:
        return Rejected(_schema_reason(exc), _short(exc))
    if msg.hall != t.hall or msg.device != t.device:
        return Rejected(
            "topic_mismatch",
            f"payload says {msg.hall}/{msg.device}, topic says {t.hall}/{t.device}",
        )
    if isinstance(msg, RatingEvent | ServiceEvent):
        verdict = check_ts(msg.ts, now)
        if verdict is not TsVerdict.OK:
            return Rejected(verdict.value, f"ts {msg.ts} against gateway time {now}")
    if isinstance(msg, RatingEvent):
        return Accepted(TopicKind.RATING, rating_line(msg), msg)
    if isinstance(msg, ServiceEvent):
        return Accepted(TopicKind.EVENT, event_line(msg))
    return Accepted(TopicKind.STATUS, status_line(msg, received_ns or time.time_ns()))
