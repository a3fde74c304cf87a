"""Topic grammar `{prefix}/v1/{hall}/{device}/{kind}`: building and parsing."""

import re
from dataclasses import dataclass
from enum import StrEnum

ID_PATTERN = r"[a-z0-9][a-z0-9_-]{0,63}"
_ID_RE = re.compile(ID_PATTERN)
_PREFIX_RE = re.compile(r"[a-z0-9][a-z0-9_/-]{0,63}")
VERSION = "v1"
DEFAULT_PREFIX = "wr"


class TopicError(ValueError):
    """A topic that does not follow the v1 grammar."""


class TopicKind(StrEnum):
    """The last segment of a device topic."""

    RATING = "rating"
    EVENT = "event"
    STATUS = "status"
    CONFIG = "config"
    CMD = "cmd"


def is_valid_id(value: str) -> bool:
    """Return True if `value` is a valid hall or device id."""
    return bool(_ID_RE.fullmatch(value))


@dataclass(frozen=True, slots=True)
class Topic:
    """One device topic, e.g. wr/v1/hz-civic/k-0001/rating."""

    hall: str
    device: str
    kind: TopicKind
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        """Validate every segment."""
        if not _PREFIX_RE.fullmatch(self.prefix) or self.prefix.endswith("/"):
            raise TopicError(f"bad topic prefix {self.prefix!r}")
        if not is_valid_id(self.hall):
            raise TopicError(f"bad hall id {self.hall!r}")
        if not is_valid_id(self.device):
            raise TopicError(f"bad device id {self.device!r}")

    def __str__(self) -> str:
        """Return the topic string."""
        return f"{self.prefix}/{VERSION}/{self.hall}/{self.device}/{self.kind.value}"

    @classmethod
    def parse(cls, topic: str, prefix: str = DEFAULT_PREFIX) -> "Topic":
        """Parse a topic string; raise TopicError if it is not a v1 device topic."""
        head = f"{prefix}/{VERSION}/"
        if not topic.startswith(head):
            raise TopicError(f"topic {topic[:200]!r} does not start with {head!r}")
        parts = topic[len(head) :].split("/")
        if len(parts) != 3:
            raise TopicError(f"topic {topic[:200]!r} is not {head}{{hall}}/{{device}}/{{kind}}")
        hall, device, kind = parts
        try:
            tkind = TopicKind(kind)
        except ValueError as exc:
            raise TopicError(f"unknown topic kind {kind[:64]!r}") from exc
        return cls(hall=hall, device=device, kind=tkind, prefix=prefix)


def subscription(kind: TopicKind, prefix: str = DEFAULT_PREFIX, share: str | None = None) -> str:
    """Return the wildcard filter for `kind` on all devices, optionally as a shared subscription."""
    flt = f"{prefix}/{VERSION}/+/+/{kind.value}"
    return f"$share/{share}/{flt}" if share else flt
