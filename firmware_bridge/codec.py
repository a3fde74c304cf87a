"""Frames of the serial protocol: binary layout, CRC-16, COBS framing and a stream decoder.

Raw frame (before COBS), multi-byte fields little-endian except the CRC:

    version u8 (=1) | type u8 | seq u16 | payload (exact length per type) | crc u16 (big-endian)

The CRC is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, not reflected, no final xor; check
value 0x29B1 for b"123456789") over version, type, seq and payload, computed with the standard
library's `binascii.crc_hqx(data, 0xFFFF)` (crc_hqx is the CCITT polynomial; with init 0 it is
CRC-16/XMODEM, which cannot see leading zero bytes, hence the 0xFFFF init). Each raw frame is
COBS-encoded (the `cobs` package from PyPI, a small C extension) and sent as
0x00 | cobs(raw) | 0x00: the leading delimiter ends whatever line noise came before.

A frame is accepted only if it COBS-decodes, its CRC matches, its version and type are known,
the type is one the receiver takes from that direction, the payload has exactly the type's
length (strings: their length bytes consume the payload exactly) and every field is in range.
"""

import binascii
import struct
from collections import Counter
from dataclasses import dataclass, field

from cobs import cobs  # type: ignore[import-untyped]  # no type hints shipped; wrapped below

from firmware_bridge.messages import (
    MAX_BUTTONS,
    MAX_ERROR_TEXT,
    MAX_FIRMWARE_LEN,
    MAX_ID_LEN,
    MSG_TYPE,
    PROTOCOL_VERSION,
    Ack,
    AckStatus,
    Buzzer,
    Error,
    Frame,
    Heartbeat,
    Hello,
    Led,
    LedMode,
    Message,
    MsgType,
    Press,
)

DELIMITER = b"\x00"
HEADER = struct.Struct("<BBH")
CRC = struct.Struct(">H")
CRC_INIT = 0xFFFF
# Longest raw frame: HELLO with a 32-byte id and a 16-byte firmware version.
MAX_RAW = HEADER.size + 4 + 1 + 4 + 1 + MAX_ID_LEN + 1 + MAX_FIRMWARE_LEN + CRC.size
# COBS adds one byte per 254 (one here); anything longer between delimiters is noise.
MAX_ENCODED = MAX_RAW + 2

_HELLO_HEAD = struct.Struct("<IBI")
_PRESS = struct.Struct("<IIBB")
_ACK = struct.Struct("<IIB")
_LED = struct.Struct("<BBH")
_BUZZER = struct.Struct("<HH")
_HEARTBEAT = struct.Struct("<IIB")
_ERROR_HEAD = struct.Struct("<BH")
_ID_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-")
U16 = 0xFFFF
U32 = 0xFFFFFFFF
MAX_BUZZER_HZ = 20_000


class FrameError(ValueError):
    """A frame failed one of its checks; `reason` names which (for counters)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        """Create with a short reason code and optional detail."""
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE of `data`."""
    return binascii.crc_hqx(data, CRC_INIT)


def cobs_encode(raw: bytes) -> bytes:
    """COBS-encode `raw` (the result holds no zero byte)."""
    out: bytes = cobs.encode(raw)
    return out


def cobs_decode(encoded: bytes) -> bytes:
    """COBS-decode one frame; raise FrameError('cobs') if it is malformed."""
    try:
        out: bytes = cobs.decode(encoded)
    except cobs.DecodeError as exc:
        raise FrameError("cobs", str(exc)) from exc
    return out


# --- field checks (shared by encoder and decoder, so that whatever encodes also decodes) ---


def _check(ok: bool, what: str) -> None:
    """Raise FrameError('field') unless `ok`."""
    if not ok:
        raise FrameError("field", what)


def _check_boot(boot: int) -> None:
    """A boot id is a non-zero u32."""
    _check(0 < boot <= U32, f"boot {boot}")


def _check_text(raw: bytes, max_len: int, min_len: int, ident: bool, what: str) -> str:
    """Validate a length-prefixed string: ASCII, printable (or id characters), bounded."""
    _check(min_len <= len(raw) <= max_len, f"{what} length {len(raw)}")
    if ident:
        _check(all(b in _ID_CHARS for b in raw), f"{what} characters")
    else:
        _check(all(0x20 <= b <= 0x7E for b in raw), f"{what} characters")
    return raw.decode("ascii")


def _check_message(msg: Message) -> None:
    """Check every field of a message against the protocol's ranges."""
    match msg:
        case Hello():
            _check_boot(msg.boot)
            _check(1 <= msg.buttons <= MAX_BUTTONS, f"buttons {msg.buttons}")
            _check(0 <= msg.acked_through <= U32, f"acked_through {msg.acked_through}")
            _check_text(_ascii(msg.ident), MAX_ID_LEN, 1, True, "id")
            _check_text(_ascii(msg.firmware), MAX_FIRMWARE_LEN, 1, False, "firmware")
        case Press():
            _check_boot(msg.boot)
            _check(1 <= msg.press <= U32, f"press {msg.press}")
            _check(1 <= msg.level <= MAX_BUTTONS, f"level {msg.level}")
            _check(1 <= msg.tries <= 0xFF, f"tries {msg.tries}")
        case Ack():
            _check_boot(msg.boot)
            _check(0 <= msg.press <= U32, f"press {msg.press}")  # 0: the HELLO of that boot
            _check(msg.status in AckStatus._value2member_map_, f"status {msg.status}")
        case Led():
            _check(0 <= msg.led <= MAX_BUTTONS, f"led {msg.led}")
            _check(msg.mode in LedMode._value2member_map_, f"mode {msg.mode}")
            _check(0 <= msg.duration_ms <= U16, f"duration {msg.duration_ms}")
        case Buzzer():
            _check(0 <= msg.freq_hz <= MAX_BUZZER_HZ, f"freq {msg.freq_hz}")
            _check(0 <= msg.duration_ms <= U16, f"duration {msg.duration_ms}")
        case Heartbeat():
            _check_boot(msg.boot)
            _check(0 <= msg.uptime_ms <= U32, f"uptime {msg.uptime_ms}")
            _check(0 <= msg.pending <= 0xFF, f"pending {msg.pending}")
        case Error():
            _check(0 <= msg.code <= 0xFF, f"code {msg.code}")
            _check(0 <= msg.ref_seq <= U16, f"ref_seq {msg.ref_seq}")
            _check_text(_ascii(msg.text), MAX_ERROR_TEXT, 0, False, "text")


def _ascii(text: str) -> bytes:
    """Encode a protocol string; non-ASCII is a field error."""
    try:
        return text.encode("ascii")
    except UnicodeEncodeError as exc:
        raise FrameError("field", "not ASCII") from exc


# --- payloads ---


def _payload(msg: Message) -> bytes:
    """Serialise a (checked) message's payload."""
    match msg:
        case Hello():
            ident, fw = _ascii(msg.ident), _ascii(msg.firmware)
            return b"".join(
                (
                    _HELLO_HEAD.pack(msg.boot, msg.buttons, msg.acked_through),
                    bytes((len(ident),)),
                    ident,
                    bytes((len(fw),)),
                    fw,
                )
            )
        case Press():
            return _PRESS.pack(msg.boot, msg.press, msg.level, msg.tries)
        case Ack():
            return _ACK.pack(msg.boot, msg.press, int(msg.status))
        case Led():
            return _LED.pack(msg.led, int(msg.mode), msg.duration_ms)
        case Buzzer():
            return _BUZZER.pack(msg.freq_hz, msg.duration_ms)
        case Heartbeat():
            return _HEARTBEAT.pack(msg.boot, msg.uptime_ms, msg.pending)
        case Error():
            text = _ascii(msg.text)
            return _ERROR_HEAD.pack(msg.code, msg.ref_seq) + bytes((len(text),)) + text


def _take_string(payload: bytes, at: int) -> tuple[bytes, int]:
    """Read a u8-length-prefixed string at `at`; return it and the offset after it."""
    _check(at < len(payload), "string length missing")
    n = payload[at]
    end = at + 1 + n
    _check(end <= len(payload), "string overruns payload")
    return payload[at + 1 : end], end


def _exact(payload: bytes, st: struct.Struct) -> tuple[int, ...]:
    """Unpack a fixed-size payload, which must be exactly `st.size` bytes."""
    if len(payload) != st.size:
        raise FrameError("length", f"{len(payload)} != {st.size}")
    return st.unpack(payload)


def _parse_payload(kind: MsgType, payload: bytes) -> Message:
    """Build and check the message of type `kind` from its payload."""
    msg: Message
    match kind:
        case MsgType.HELLO:
            if len(payload) < _HELLO_HEAD.size:
                raise FrameError("length", f"hello {len(payload)}")
            boot, buttons, acked = _HELLO_HEAD.unpack_from(payload)
            ident, at = _take_string(payload, _HELLO_HEAD.size)
            fw, at = _take_string(payload, at)
            if at != len(payload):
                raise FrameError("length", "trailing bytes after hello")
            msg = Hello(
                boot,
                buttons,
                acked,
                _check_text(ident, MAX_ID_LEN, 1, True, "id"),
                _check_text(fw, MAX_FIRMWARE_LEN, 1, False, "firmware"),
            )
        case MsgType.PRESS:
            boot, press, level, tries = _exact(payload, _PRESS)
            msg = Press(boot, press, level, tries)
        case MsgType.ACK:
            boot, press, status = _exact(payload, _ACK)
            _check(status in AckStatus._value2member_map_, f"status {status}")
            msg = Ack(boot, press, AckStatus(status))
        case MsgType.LED:
            led, mode, duration = _exact(payload, _LED)
            _check(mode in LedMode._value2member_map_, f"mode {mode}")
            msg = Led(led, LedMode(mode), duration)
        case MsgType.BUZZER:
            freq, duration = _exact(payload, _BUZZER)
            msg = Buzzer(freq, duration)
        case MsgType.HEARTBEAT:
            boot, uptime, pending = _exact(payload, _HEARTBEAT)
            msg = Heartbeat(boot, uptime, pending)
        case MsgType.ERROR:
            if len(payload) < _ERROR_HEAD.size:
                raise FrameError("length", f"error {len(payload)}")
            code, ref = _ERROR_HEAD.unpack_from(payload)
            text, at = _take_string(payload, _ERROR_HEAD.size)
            if at != len(payload):
                raise FrameError("length", "trailing bytes after error")
            msg = Error(code, ref, _check_text(text, MAX_ERROR_TEXT, 0, False, "text"))
    _check_message(msg)
    return msg


# --- frames ---


def encode_raw(seq: int, msg: Message) -> bytes:
    """Build the raw frame (header, payload, CRC) of `msg`; raise FrameError if a field is bad."""
    if not 0 <= seq <= U16:
        raise FrameError("field", f"seq {seq}")
    _check_message(msg)
    body = HEADER.pack(PROTOCOL_VERSION, MSG_TYPE[type(msg)], seq) + _payload(msg)
    return body + CRC.pack(crc16(body))


def encode(seq: int, msg: Message) -> bytes:
    """Return the bytes to put on the line for `msg`: 0x00, COBS(raw frame), 0x00."""
    return DELIMITER + cobs_encode(encode_raw(seq, msg)) + DELIMITER


def decode_raw(raw: bytes, accept: frozenset[MsgType] | None = None) -> Frame:
    """Check and parse one raw (COBS-decoded) frame; raise FrameError on any failure."""
    if len(raw) < HEADER.size + CRC.size:
        raise FrameError("short", f"{len(raw)} bytes")
    if len(raw) > MAX_RAW:
        raise FrameError("long", f"{len(raw)} bytes")
    body, (crc,) = raw[: -CRC.size], CRC.unpack(raw[-CRC.size :])
    if crc16(body) != crc:
        raise FrameError("crc")
    version, kind, seq = HEADER.unpack_from(body)
    if version != PROTOCOL_VERSION:
        raise FrameError("version", str(version))
    if kind not in MsgType._value2member_map_:
        raise FrameError("type", str(kind))
    mtype = MsgType(kind)
    if accept is not None and mtype not in accept:
        raise FrameError("direction", mtype.name)
    return Frame(seq, _parse_payload(mtype, body[HEADER.size :]))


def decode(encoded: bytes, accept: frozenset[MsgType] | None = None) -> Frame:
    """Decode one COBS-encoded frame (without delimiters)."""
    if len(encoded) > MAX_ENCODED:
        raise FrameError("long", f"{len(encoded)} encoded bytes")
    return decode_raw(cobs_decode(encoded), accept)


@dataclass
class DecoderStats:
    """What a stream decoder has seen."""

    bytes: int = 0
    frames: int = 0
    errors: Counter[str] = field(default_factory=Counter)


class FrameDecoder:
    """Splits a byte stream at 0x00 delimiters and decodes the frames between them."""

    def __init__(self, accept: frozenset[MsgType] | None = None) -> None:
        """Create a decoder taking only the message types in `accept` (None: all)."""
        self.accept = accept
        self.stats = DecoderStats()
        self._buf = bytearray()
        self._discarding = False

    def reset(self) -> None:
        """Forget any partial frame (after the line was reopened)."""
        self._buf.clear()
        self._discarding = False

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes from the line; return the frames completed by them, in order."""
        self.stats.bytes += len(data)
        self._buf += data
        out: list[Frame] = []
        while True:
            end = self._buf.find(0)
            if end < 0:
                break
            chunk = bytes(self._buf[:end])
            del self._buf[: end + 1]
            if self._discarding:
                # The tail of an over-long run of noise: drop it.
                self._discarding = False
                continue
            if not chunk:
                continue  # back-to-back delimiters
            try:
                out.append(decode(chunk, self.accept))
            except FrameError as exc:
                self.stats.errors[exc.reason] += 1
                continue
            self.stats.frames += 1
        if len(self._buf) > MAX_ENCODED:
            # No delimiter in longer than any frame can be: noise; skip to the next delimiter.
            self.stats.errors["long"] += 1
            self._buf.clear()
            self._discarding = True
        return out
