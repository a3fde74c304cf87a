"""Message models of wire contract v1; unknown keys and loose types are rejected."""

from typing import Annotated, Literal, Self
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictInt,
    StringConstraints,
    model_validator,
)

from protocol.scales import check_level
from protocol.topics import ID_PATTERN

WINDOW_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}"
REASON_PATTERN = r"[a-z0-9][a-z0-9_-]{0,31}"
IdStr = Annotated[str, StringConstraints(pattern=rf"^{ID_PATTERN}$")]
WindowStr = Annotated[str, StringConstraints(pattern=rf"^{WINDOW_PATTERN}$")]
# Free text from a queue system or badge: printable, no control characters, bounded.
TextStr = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")
]
# A software version: printable like TextStr (it is stored and shown), shorter.
VersionStr = Annotated[
    str, StringConstraints(min_length=1, max_length=32, pattern=r"^[^\x00-\x1f\x7f]+$")
]
ReasonStr = Annotated[str, StringConstraints(pattern=rf"^{REASON_PATTERN}$")]
# Reason codes starting with "x-" are flags the device sets, not reasons a person chose.
FLAG_REPEAT = "x-repeat"  # pressed again within the repeat interval (prompt mode "always")
EpochMs = Annotated[int, Field(ge=0, lt=10**14)]
Seq = Annotated[int, Field(ge=1, lt=2**53)]
InputKind = Literal["touch", "button", "serial"]
# Literal[int] lets 1.0 and true through even in strict mode; these do not.
Version = Annotated[int, Strict(), Field(ge=1, le=1)]
ScaleInt = Annotated[int, Strict(), Field(ge=3, le=5)]


class _Message(BaseModel):
    """Base of every wire message: strict types, unknown keys rejected, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RatingEvent(_Message):
    """One rating pressed by a person served (topic `.../rating`)."""

    v: Version = 1
    id: UUID = Field(title="Rating id made on the device at press time")
    device: IdStr
    hall: IdStr
    window: WindowStr
    seq: Seq = Field(title="Per-device counter, 1, 2, 3 … with no gaps")
    ts: EpochMs = Field(title="Press time, ms since the Unix epoch (UTC)")
    clock_synced: bool
    scale: ScaleInt
    level: StrictInt
    input: InputKind
    prompted: bool
    staff: TextStr | None = None
    ticket: TextStr | None = None
    item: TextStr | None = None
    reasons: Annotated[list[ReasonStr], Field(max_length=16)] = Field(default_factory=list)
    # Left out of the JSON while null: a v1 receiver older than `project` rejects the key.
    project: TextStr | None = Field(
        default=None,
        title="办件编号 a business or queue system bound to the service",
        exclude_if=lambda value: value is None,
    )

    @model_validator(mode="after")
    def _level_in_scale(self) -> Self:
        """Reject a level outside 1 … scale."""
        check_level(self.scale, self.level)
        return self


EventType = Literal[
    "staff_login",
    "staff_logout",
    "prompt_shown",
    "prompt_timeout",
    "pause",
    "resume",
    "reasons_timeout",
]


class ServiceEvent(_Message):
    """A session or service event (topic `.../event`)."""

    v: Version = 1
    id: UUID
    device: IdStr
    hall: IdStr
    window: WindowStr | None = None
    ts: EpochMs
    clock_synced: bool
    type: EventType
    staff: TextStr | None = None
    ticket: TextStr | None = None
    item: TextStr | None = None


class BoardStatus(_Message):
    """A serial button board behind the device (firmware bridge), as its HELLO described it."""

    connected: bool
    id: TextStr | None = None
    firmware: TextStr | None = None
    buttons: Annotated[int, Field(ge=1, le=8)] | None = None


class DeviceStatus(_Message):
    """Retained device state (topic `.../status`); also the Last Will with state offline."""

    v: Version = 1
    device: IdStr
    hall: IdStr
    state: Literal["online", "paused", "offline"]
    ts: EpochMs | None = Field(default=None, title="Time of the state; null in the Last Will")
    window: WindowStr | None = None
    last_seq: Annotated[int, Field(ge=0, lt=2**53)] | None = Field(
        default=None, title="Highest seq assigned by the device so far"
    )
    backlog: Annotated[int, Field(ge=0)] | None = Field(default=None, title="Ratings in the outbox")
    clock_synced: bool | None = None
    version: VersionStr | None = None
    board: BoardStatus | None = Field(default=None, title="Serial button board, if any")


class ReasonOption(_Message):
    """A follow-up reason offered after a negative rating."""

    code: ReasonStr
    zh: TextStr
    en: TextStr


class StaffEntry(_Message):
    """A clerk who may log in at the device."""

    staff: TextStr
    name: TextStr


class DeviceConfig(_Message):
    """Configuration pushed by the centre (topic `.../config`, retained)."""

    v: Version = 1
    window: WindowStr
    window_name: TextStr | None = None
    scale: ScaleInt = 5
    language: Literal["zh", "en"] = "zh"
    prompt_mode: Literal["always", "per_service"] = "always"
    repeat_interval_s: Annotated[int, Field(ge=0, le=3600)] = 10
    prompt_timeout_s: Annotated[int, Field(ge=5, le=600)] = 60
    reasons: Annotated[list[ReasonOption], Field(max_length=16)] = Field(default_factory=list)
    staff: Annotated[list[StaffEntry], Field(max_length=500)] = Field(default_factory=list)
    test_device: bool = False


class Command(_Message):
    """A command from the centre (topic `.../cmd`)."""

    v: Version = 1
    id: UUID
    ts: EpochMs
    cmd: Literal["prompt", "pause", "resume", "identify"]
    ticket: TextStr | None = None
    item: TextStr | None = None
    staff: TextStr | None = None
