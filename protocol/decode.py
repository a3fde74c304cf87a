"""The one decode of a device message: topic and payload → message, or a rejection with its reason.

The gateway (which stores what it accepts and keeps the rest as dead letters) and the
server's live MQTT link (which shows what it accepts) use this same function, so both
accept exactly the same messages.
"""

from dataclasses import dataclass
from functools import lru_cache

from pydantic import ValidationError

from protocol.clock import TsVerdict, check_ts
from protocol.messages import DeviceStatus, RatingEvent, ServiceEvent
from protocol.topics import DEFAULT_PREFIX, Topic, TopicError, TopicKind

Message = RatingEvent | ServiceEvent | DeviceStatus

MAX_PAYLOAD_BYTES = 65_536
# The longest valid topic is 204 characters (64 prefix, /v1/, 64 hall, 64 device, status).
# Longer ones are refused before the cache, which must not keep a flood of 64 KiB topics.
MAX_TOPIC_CHARS = 256
# Every reason code a rejection can carry (the gateway also uses id_conflict,
# time_conflict, influx_rejected and internal_error for its dead letters).
REASONS = (
    "too_large",
    "bad_topic",
    "bad_json",
    "unknown_key",
    "missing_key",
    "level_out_of_scale",
    "invalid_field",
    "topic_mismatch",
    TsVerdict.TOO_OLD.value,
    TsVerdict.IN_FUTURE.value,
)
_MODELS: dict[TopicKind, type[Message]] = {
    TopicKind.RATING: RatingEvent,
    TopicKind.EVENT: ServiceEvent,
    TopicKind.STATUS: DeviceStatus,
}


@dataclass(frozen=True, slots=True)
class Decoded:
    """A valid message and the topic it came on."""

    topic: Topic
    message: Message


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message that is not accepted, with a short reason code and a human detail."""

    reason: str
    detail: str


def schema_reason(exc: ValidationError) -> str:
    """Map pydantic's errors to a reason code an operator can act on."""
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


@lru_cache(maxsize=65_536)
def parse_topic(topic: str, prefix: str = DEFAULT_PREFIX) -> Topic | str:
    """Parse a topic once per device (topics repeat); return the error text if invalid."""
    if len(topic) > MAX_TOPIC_CHARS:  # never reached through decode(), which checks first
        return f"topic of {len(topic)} characters > {MAX_TOPIC_CHARS}"
    try:
        return Topic.parse(topic, prefix)
    except TopicError as exc:
        return str(exc)


# The fast path calls each model's own compiled pydantic-core validator: the same schema,
# built once from the models in protocol.messages, so no rule exists twice (decode_reference
# below is the path as it was, kept for tests/test_decode_equivalence.py, which feeds the
# fuzz corpus through both and finds the same verdict for every case). `python -m
# bench.stages --ratings 100000` (2 shared cores, µs per valid rating, median of 5 rounds):
# model_validate_json 5.24, the validator's validate_json 4.84 (model_validate_json forwards
# five keyword arguments per call), TypeAdapter(RatingEvent) 5.31, and orjson.loads +
# model_construct with no check at all 11.07 — so no hand-checked Python path can win.
_VALIDATE_JSON = {
    kind: model.__pydantic_validator__.validate_json for kind, model in _MODELS.items()
}
_TIMED = (RatingEvent, ServiceEvent)
_OK = TsVerdict.OK


def decode(
    topic: str,
    payload: bytes | bytearray,
    now_ms: int,
    *,
    prefix: str = DEFAULT_PREFIX,
    max_bytes: int = MAX_PAYLOAD_BYTES,
) -> Decoded | Rejection:
    """Validate `payload` against the model of its topic; `now_ms` is the receiver's clock."""
    if len(payload) > max_bytes:
        return Rejection("too_large", f"payload of {len(payload)} bytes > {max_bytes}")
    if len(topic) > MAX_TOPIC_CHARS:
        return Rejection("bad_topic", f"topic of {len(topic)} characters > {MAX_TOPIC_CHARS}")
    t = parse_topic(topic, prefix)
    if isinstance(t, str):
        return Rejection("bad_topic", t)
    validate = _VALIDATE_JSON.get(t.kind)
    if validate is None:
        return Rejection("bad_topic", f"devices do not send {t.kind.value}")
    try:
        msg: Message = validate(payload)
    except ValidationError as exc:
        return Rejection(schema_reason(exc), _short(exc))
    if msg.hall != t.hall or msg.device != t.device:
        return Rejection(
            "topic_mismatch",
            f"payload says {msg.hall}/{msg.device}, topic says {t.hall}/{t.device}",
        )
    if isinstance(msg, _TIMED):
        verdict = check_ts(msg.ts, now_ms)
        if verdict is not _OK:
            return Rejection(verdict.value, f"ts {msg.ts} against receiver time {now_ms}")
    return Decoded(t, msg)


def decode_reference(
    topic: str,
    payload: bytes | bytearray,
    now_ms: int,
    *,
    prefix: str = DEFAULT_PREFIX,
    max_bytes: int = MAX_PAYLOAD_BYTES,
) -> Decoded | Rejection:
    """The decode as it was before the fast path: kept as the reference the tests compare with."""
    if len(payload) > max_bytes:
        return Rejection("too_large", f"payload of {len(payload)} bytes > {max_bytes}")
    if len(topic) > MAX_TOPIC_CHARS:
        return Rejection("bad_topic", f"topic of {len(topic)} characters > {MAX_TOPIC_CHARS}")
    t = parse_topic(topic, prefix)
    if isinstance(t, str):
        return Rejection("bad_topic", t)
    model = _MODELS.get(t.kind)
    if model is None:
        return Rejection("bad_topic", f"devices do not send {t.kind.value}")
    try:
        msg = model.model_validate_json(payload)
    except ValidationError as exc:
        return Rejection(schema_reason(exc), _short(exc))
    if msg.hall != t.hall or msg.device != t.device:
        return Rejection(
            "topic_mismatch",
            f"payload says {msg.hall}/{msg.device}, topic says {t.hall}/{t.device}",
        )
    if isinstance(msg, RatingEvent | ServiceEvent):
        verdict = check_ts(msg.ts, now_ms)
        if verdict is not TsVerdict.OK:
            return Rejection(verdict.value, f"ts {msg.ts} against receiver time {now_ms}")
    return Decoded(t, msg)
