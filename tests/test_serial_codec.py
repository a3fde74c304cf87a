"""The serial codec: round trips, CRC and strict checks under corruption, firmware agreement."""

import struct

import pytest
from cobs import cobs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz_serial import damaged, frames, messages, presses, run_fuzz
from firmware_bridge.codec import (
    MAX_ENCODED,
    FrameDecoder,
    FrameError,
    crc16,
    decode,
    decode_raw,
    encode,
    encode_raw,
)
from firmware_bridge.firmware import main as fw
from firmware_bridge.messages import (
    FROM_BOARD,
    FROM_HOST,
    Ack,
    AckStatus,
    Frame,
    Heartbeat,
    Hello,
    Led,
    LedMode,
    Press,
)

MANY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_crc_is_ccitt_false_and_golden_frame() -> None:
    """The CRC is CRC-16/CCITT-FALSE and a PRESS frame has the documented bytes."""
    assert crc16(b"123456789") == 0x29B1
    assert fw.crc16(b"123456789") == 0x29B1
    wire = encode(7, Press(boot=0x12345678, press=1, level=5, tries=1))
    # docs/serial-protocol.md, "Example": the same bytes.
    assert wire.hex(" ") == "00 04 01 02 07 06 78 56 34 12 01 01 01 05 05 01 27 be 00"


@MANY
@given(frames)
def test_every_frame_round_trips(frame: Frame) -> None:
    """encode → decode gives back the same frame, and the encoded form has no inner zero."""
    wire = encode(frame.seq, frame.msg)
    assert wire[0] == 0 and wire[-1] == 0 and 0 not in wire[1:-1]
    assert len(wire) - 2 <= MAX_ENCODED
    assert decode(wire[1:-1]) == frame


@MANY
@given(st.lists(frames, min_size=1, max_size=8), st.data())
def test_stream_decoder_in_any_chunks(sent: list[Frame], data: st.DataObject) -> None:
    """A stream of frames cut anywhere into chunks decodes to the same frames, in order."""
    stream = b"".join(encode(f.seq, f.msg) for f in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    dec = FrameDecoder()
    got: list[Frame] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        got += dec.feed(stream[start:cut])
        start = cut
    assert got == sent
    assert not dec.stats.errors


@MANY
@given(frames, st.data())
def test_crc_catches_every_burst_up_to_16_bits(frame: Frame, data: st.DataObject) -> None:
    """Any change confined to two adjacent bytes of a raw frame is rejected (CRC-16 bursts)."""
    raw = bytearray(encode_raw(frame.seq, frame.msg))
    pos = data.draw(st.integers(0, len(raw) - 2))
    mask = data.draw(st.integers(1, 0xFFFF))
    raw[pos] ^= mask >> 8
    raw[pos + 1] ^= mask & 0xFF
    with pytest.raises(FrameError):
        decode_raw(bytes(raw))


@MANY
@given(frames, st.data())
def test_crc_catches_any_three_bit_errors(frame: Frame, data: st.DataObject) -> None:
    """Any 1, 2 or 3 flipped bits anywhere in a raw frame are rejected (Hamming distance 4)."""
    raw = bytearray(encode_raw(frame.seq, frame.msg))
    bits = data.draw(st.sets(st.integers(0, len(raw) * 8 - 1), min_size=1, max_size=3))
    for bit in bits:
        raw[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(FrameError):
        decode_raw(bytes(raw))


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(presses, min_size=1, max_size=4), st.integers(0, 0xFFFF), st.data())
def test_corrupted_presses_never_decode_as_presses_not_sent(
    sent: list[Press], seq: int, data: st.DataObject
) -> None:
    """Flipped, inserted, deleted, zeroed bytes: whatever decodes was sent; no invented press."""
    stream = b"".join(encode((seq + i) & 0xFFFF, p) for i, p in enumerate(sent))
    line = data.draw(damaged(stream))
    got = FrameDecoder(FROM_BOARD).feed(line)
    for frame in got:
        assert isinstance(frame.msg, Press) and frame.msg in sent


@MANY
@given(presses, st.data())
def test_single_corrupted_byte_in_a_press_is_rejected(press: Press, data: st.DataObject) -> None:
    """One bad data byte on the line (not a COBS code byte) always kills the frame."""
    wire = bytearray(encode(1, press))
    body = wire[1:-1]
    # Positions holding data bytes: skip the COBS code bytes.
    codes, i = set(), 0
    while i < len(body):
        codes.add(i)
        i += body[i]
    data_pos = [p for p in range(len(body)) if p not in codes]
    if not data_pos:
        return
    pos = data.draw(st.sampled_from(data_pos))
    new = data.draw(st.integers(1, 255).filter(lambda b: b != body[pos]))
    body[pos] = new
    assert FrameDecoder(FROM_BOARD).feed(b"\x00" + bytes(body) + b"\x00") == []


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x01\x02", "short"),
        (bytes(6), "crc"),
    ],
)
def test_rejections_have_reasons(raw: bytes, reason: str) -> None:
    """Too short and bad CRC are named."""
    with pytest.raises(FrameError) as err:
        decode_raw(raw)
    assert err.value.reason == reason


def _reframe(body: bytes) -> bytes:
    """A raw frame with a correct CRC over `body` (to test the checks after the CRC)."""
    return body + struct.pack(">H", crc16(body))


def test_strict_checks_after_the_crc() -> None:
    """Valid CRC but wrong version, type, direction, length or field: rejected."""
    good = encode_raw(9, Press(1, 1, 1, 1))[:-2]
    cases = {
        "version": b"\x02" + good[1:],
        "type": good[:1] + b"\x09" + good[2:],
        "length": good + b"\x00",
        "field": good[:-2] + b"\x00\x01",  # level 0
    }
    for reason, body in cases.items():
        with pytest.raises(FrameError) as err:
            decode_raw(_reframe(body))
        assert err.value.reason == reason, reason
    with pytest.raises(FrameError) as err:
        decode_raw(encode_raw(1, Ack(1, 1, AckStatus.RECORDED)), FROM_BOARD)
    assert err.value.reason == "direction"
    with pytest.raises(FrameError):
        encode_raw(1, Press(0, 1, 1, 1))  # boot 0 is never sent either


def test_decoder_skips_overlong_noise() -> None:
    """A run of noise longer than any frame is dropped up to the next delimiter."""
    dec = FrameDecoder(FROM_BOARD)
    press = Press(5, 1, 3, 1)
    assert dec.feed(b"\x07" * 500) == []
    assert dec.feed(b"\x01\x02" + encode(1, press)) == [Frame(1, press)]
    assert dec.stats.errors["long"] >= 1


@MANY
@given(st.binary(max_size=600))
def test_firmware_cobs_matches_the_library(data: bytes) -> None:
    """The firmware's COBS is the same as the `cobs` package in both directions."""
    enc = fw.cobs_encode(data)
    assert enc == cobs.encode(data)
    assert fw.cobs_decode(enc) == data


@MANY
@given(st.binary(max_size=80))
def test_firmware_cobs_rejects_what_the_library_rejects(data: bytes) -> None:
    """Malformed COBS is None in the firmware exactly when the library raises."""
    try:
        want: bytes | None = cobs.decode(data)
    except cobs.DecodeError:
        want = None
    assert fw.cobs_decode(data) == want


@MANY
@given(presses, st.integers(0, 0xFFFF))
def test_firmware_press_frames_equal_the_codec(press: Press, seq: int) -> None:
    """The firmware's PRESS, HEARTBEAT and HELLO frames are byte-identical to the codec's."""
    payload = struct.pack("<IIBB", press.boot, press.press, press.level, press.tries)
    assert fw.encode_frame(seq, fw.PRESS, payload) == encode(seq, press)
    hb = struct.pack("<IIB", press.boot, 1234, 3)
    assert fw.encode_frame(seq, fw.HEARTBEAT, hb) == encode(seq, Heartbeat(press.boot, 1234, 3))
    hello = fw.hello_payload(press.boot, 5, 7, "rp2040-e66038b7", fw.VERSION)
    assert fw.encode_frame(seq, fw.HELLO, hello) == encode(
        seq, Hello(press.boot, 5, 7, "rp2040-e66038b7", fw.VERSION)
    )


@MANY
@given(messages.filter(lambda m: type(m).__name__ in {"Hello", "Ack", "Led", "Buzzer"}))
def test_firmware_decodes_host_frames(msg: object) -> None:
    """Every host message the codec encodes is accepted by the firmware's decoder."""
    wire = encode(3, msg)  # type: ignore[arg-type]
    got = fw.decode_frame(wire[1:-1])
    assert got is not None and got[1] == 3
    assert decode(wire[1:-1], FROM_HOST).msg == msg


def test_firmware_board_acts_on_ack_and_led() -> None:
    """The firmware's Board drops an ACKed press and drives the LED the host asks for."""
    out: list[bytes] = []
    lit: list[tuple[int, bool]] = []
    board = fw.Board(out.append, "b1", 42, 5, 0, set_led=lambda k, on: lit.append((k, on)))
    assert board.press(4, 0) == 1
    board.tick(0)
    sent = FrameDecoder(FROM_BOARD).feed(b"".join(out))
    assert Press(42, 1, 4, 1) in [f.msg for f in sent]
    board.feed(encode(1, Ack(42, 1, AckStatus.RECORDED)) + encode(2, Led(4, LedMode.ON, 100)), 5)
    assert board.pending == [] and board.acked_through() == 1
    assert lit == [(4, True)]
    board.tick(200)
    assert lit[-1] == (4, False)
    lit.clear()
    board.feed(encode(3, Led(0, LedMode.BLINK, 0)), 300)  # all LEDs, blinking until told
    board.tick(300)
    board.tick(550)
    board.tick(60_250)
    assert (1, True) in lit and (1, False) in lit and (5, True) in lit
    assert lit[-1] == (5, False)  # a minute later: an "off" phase, still blinking


def test_fuzz_decoders_5000_inputs() -> None:
    """A smaller run of bench/fuzz_serial.py: no crash, no false press."""
    result = run_fuzz(5000, seed_value=1)
    assert result.inputs >= 5000
    assert result.crashes == 0, result.examples
    assert result.false_presses == 0, result.examples
    assert result.false_frames == 0, result.examples
