"""Messages of the serial protocol between a button board and the bridge."""

from dataclasses import dataclass
from enum import IntEnum

PROTOCOL_VERSION = 1
MAX_BUTTONS = 8
MAX_ID_LEN = 32
MAX_FIRMWARE_LEN = 16
MAX_ERROR_TEXT = 48


class MsgType(IntEnum):
    """The type byte of a frame."""

    HELLO = 0x01
    PRESS = 0x02
    ACK = 0x03
    LED = 0x04
    BUZZER = 0x05
    HEARTBEAT = 0x06
    ERROR = 0x07


class AckStatus(IntEnum):
    """What the host did with a PRESS; any status ends the board's retransmission."""

    RECORDED = 0  # committed to the outbox just now
    DUPLICATE = 1  # committed before (a retransmission)
    REJECTED = 2  # invalid for the window's scale: not recorded
    PAUSED = 3  # the window is paused: not recorded
    NO_PROMPT = 4  # per-service window and no rating asked for now: not recorded


class LedMode(IntEnum):
    """How an LED command drives the LED."""

    OFF = 0
    ON = 1
    BLINK = 2


class ErrorCode(IntEnum):
    """Codes of an ERROR message."""

    UNSPECIFIED = 0
    QUEUE_FULL = 1  # board: press queue full, press refused
    BAD_FRAME = 2  # a frame failed its checks (informational)
    UNKNOWN_BOOT = 3  # host: PRESS from a boot it has no HELLO for
    HARDWARE = 4  # board: a pin or peripheral failed
    NOT_READY = 5  # host: outbox or recorder unavailable


@dataclass(frozen=True, slots=True)
class Hello:
    """Who is on the line; the board sends it at boot and when the host sends its own HELLO."""

    boot: int  # random, non-zero, new at every boot (host: new at every start)
    buttons: int  # board: rating buttons fitted; host: the scale it records
    acked_through: int  # board: every press ≤ this was ACKed; host: 0
    ident: str  # board id (host: device id)
    firmware: str  # firmware version (host: bridge version)


@dataclass(frozen=True, slots=True)
class Press:
    """A rating button was pressed (board → host); sent again until ACKed."""

    boot: int
    press: int  # board sequence: 1, 2, 3 … per boot, never skipped
    level: int  # 1 = worst … buttons = best
    tries: int  # 1 at the first transmission, counts retransmissions (saturates at 255)


@dataclass(frozen=True, slots=True)
class Ack:
    """The host's answer to a PRESS, or with press 0 to the board's HELLO (host → board)."""

    boot: int
    press: int  # 0: acknowledges the HELLO of `boot`
    status: AckStatus


@dataclass(frozen=True, slots=True)
class Led:
    """Drive an LED (host → board): 0 = every LED, k = the LED of button k."""

    led: int
    mode: LedMode
    duration_ms: int  # 0: until the next LED command


@dataclass(frozen=True, slots=True)
class Buzzer:
    """Sound the buzzer (host → board); freq 0 silences it."""

    freq_hz: int
    duration_ms: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """I am alive (both directions), with the sender's boot, uptime and pending count."""

    boot: int
    uptime_ms: int
    pending: int  # board: presses waiting for ACK; host: outbox backlog (capped at 255)


@dataclass(frozen=True, slots=True)
class Error:
    """Something went wrong (both directions); informational, never answered."""

    code: int
    ref_seq: int  # frame seq it refers to, 0 for none
    text: str


Message = Hello | Press | Ack | Led | Buzzer | Heartbeat | Error

MSG_TYPE: dict[type[Message], MsgType] = {
    Hello: MsgType.HELLO,
    Press: MsgType.PRESS,
    Ack: MsgType.ACK,
    Led: MsgType.LED,
    Buzzer: MsgType.BUZZER,
    Heartbeat: MsgType.HEARTBEAT,
    Error: MsgType.ERROR,
}

# Which types each side may receive; anything else on the line is rejected.
FROM_BOARD = frozenset({MsgType.HELLO, MsgType.PRESS, MsgType.HEARTBEAT, MsgType.ERROR})
FROM_HOST = frozenset(
    {MsgType.HELLO, MsgType.ACK, MsgType.LED, MsgType.BUZZER, MsgType.HEARTBEAT, MsgType.ERROR}
)


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame: the sender's frame counter and the message."""

    seq: int
    msg: Message
