"""WindowRate wire contract v1: message models, topic grammar and rating scales."""

from protocol.messages import (
    Command,
    DeviceConfig,
    DeviceStatus,
    RatingEvent,
    ServiceEvent,
)
from protocol.scales import Scale, level_index, level_label, offers_reasons
from protocol.topics import Topic, TopicError, TopicKind

__all__ = [
    "Command",
    "DeviceConfig",
    "DeviceStatus",
    "RatingEvent",
    "Scale",
    "ServiceEvent",
    "Topic",
    "TopicError",
    "TopicKind",
    "level_index",
    "level_label",
    "offers_reasons",
]
