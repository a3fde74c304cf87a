"""Turn one MQTT message into a point to write, or a rejection to keep as a dead letter."""

import time
from dataclasses import dataclass

from protocol.decode import Decoded, Rejection, decode
from protocol.messages import RatingEvent, ServiceEvent
from protocol.topics import TopicKind
from storage.lineproto import event_line, rating_line, status_line


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid message and its line-protocol point."""

    kind: TopicKind
    line: str
    rating: RatingEvent | None = None
    rid: str = ""  # str(rating.id), made once (UUID.__str__ is Python code)


def point_of(
    topic: str,
    payload: bytes,
    *,
    prefix: str,
    max_bytes: int,
    now_ms: int | None = None,
    received_ns: int | None = None,
) -> Accepted | Rejection:
    """Decode a message (protocol.decode) and build its point."""
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    res = decode(topic, payload, now, prefix=prefix, max_bytes=max_bytes)
    if isinstance(res, Rejection):
        return res
    assert isinstance(res, Decoded)
    msg = res.message
    if isinstance(msg, RatingEvent):
        rid = str(msg.id)
        return Accepted(TopicKind.RATING, rating_line(msg, rid), msg, rid)
    if isinstance(msg, ServiceEvent):
        return Accepted(TopicKind.EVENT, event_line(msg))
    return Accepted(TopicKind.STATUS, status_line(msg, received_ns or time.time_ns()))
