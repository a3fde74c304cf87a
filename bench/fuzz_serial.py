"""Fuzz the serial decoders (bridge and reference firmware) with hypothesis; JSON on the last line.

Each input is either random bytes, or a stream of valid frames (all types, both directions)
damaged by 1–4 mutations: bit flips, replaced, inserted, deleted or zeroed bytes, duplicated
segments, truncation. The stream is fed to a fresh `FrameDecoder` in random chunks and to the
firmware's `Board.feed`. A crash is any exception; a false press is a decoded PRESS that is not
one of the presses in the input's original frames. False frames (any decoded frame that was not
sent) are counted too and reported on the line before the summary.

    python -m bench.fuzz_serial --inputs 100000
"""

import argparse
import json
import time
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from firmware_bridge.codec import FrameDecoder, encode
from firmware_bridge.firmware import main as firmware
from firmware_bridge.messages import (
    FROM_BOARD,
    MAX_BUTTONS,
    MAX_ERROR_TEXT,
    MAX_FIRMWARE_LEN,
    MAX_ID_LEN,
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
    Press,
)

U16 = 0xFFFF
U32 = 0xFFFFFFFF
ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-"
PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))

boots = st.integers(1, U32)
hellos = st.builds(
    Hello,
    boots,
    st.integers(1, MAX_BUTTONS),
    st.integers(0, U32),
    st.text(ID_ALPHABET, min_size=1, max_size=MAX_ID_LEN),
    st.text(PRINTABLE, min_size=1, max_size=MAX_FIRMWARE_LEN),
)
presses = st.builds(
    Press, boots, st.integers(1, U32), st.integers(1, MAX_BUTTONS), st.integers(1, 255)
)
acks = st.builds(Ack, boots, st.integers(0, U32), st.sampled_from(AckStatus))
leds = st.builds(Led, st.integers(0, MAX_BUTTONS), st.sampled_from(LedMode), st.integers(0, U16))
buzzers = st.builds(Buzzer, st.integers(0, 20_000), st.integers(0, U16))
heartbeats = st.builds(Heartbeat, boots, st.integers(0, U32), st.integers(0, 255))
errors = st.builds(
    Error, st.integers(0, 255), st.integers(0, U16), st.text(PRINTABLE, max_size=MAX_ERROR_TEXT)
)
messages: st.SearchStrategy[Message] = st.one_of(
    hellos, presses, acks, leds, buzzers, heartbeats, errors
)
frames = st.builds(Frame, st.integers(0, U16), messages)


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """Apply 1–4 random mutations to `data`."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("flip", "replace", "insert", "delete", "zero", "dup", "cut")))
        pos = draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "insert":
            buf.insert(pos, draw(st.integers(0, 255)))
        elif not buf:
            continue
        elif op == "flip":
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "replace":
            buf[pos] = draw(st.integers(0, 255))
        elif op == "delete":
            del buf[pos]
        elif op == "zero":
            buf[pos] = 0
        elif op == "dup":
            end = min(len(buf), pos + draw(st.integers(1, 24)))
            buf[pos:pos] = buf[pos:end]
        else:
            del buf[pos:]
    return bytes(buf)


@st.composite
def cases(draw: st.DrawFn) -> tuple[bytes, list[Frame], list[int]]:
    """One fuzz input: (bytes on the line, frames originally sent, chunk boundaries)."""
    if draw(st.integers(0, 3)) == 0:
        sent: list[Frame] = []
        data = draw(st.binary(max_size=300))
    else:
        sent = draw(st.lists(frames, min_size=1, max_size=3))
        data = draw(damaged(b"".join(encode(f.seq, f.msg) for f in sent)))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    return data, sent, cuts


@dataclass
class FuzzResult:
    """What a fuzz run found."""

    inputs: int = 0
    crashes: int = 0
    false_presses: int = 0
    false_frames: int = 0
    decoded: int = 0
    examples: list[str] = field(default_factory=list)


def check_one(data: bytes, sent: list[Frame], cuts: list[int], result: FuzzResult) -> None:
    """Feed one input to both decoders and count what went wrong."""
    result.inputs += 1
    sent_presses = {f.msg for f in sent if isinstance(f.msg, Press)}
    try:
        decoder = FrameDecoder(FROM_BOARD)
        got: list[Frame] = []
        start = 0
        for cut in [*cuts, len(data)]:
            got += decoder.feed(data[start:cut])
            start = cut
        board = firmware.Board(lambda _b: None, "fuzz", 1, 5, 0)
        board.feed(data, 0)
        board.tick(0)
    except Exception as exc:  # every exception is a finding
        result.crashes += 1
        if len(result.examples) < 5:
            result.examples.append(f"crash {exc!r} on {data.hex()}")
        return
    result.decoded += len(got)
    for frame in got:
        if frame not in sent:
            result.false_frames += 1
        if isinstance(frame.msg, Press) and frame.msg not in sent_presses:
            result.false_presses += 1
            if len(result.examples) < 5:
                result.examples.append(f"false press {frame.msg} from {data.hex()}")


def run_fuzz(inputs: int, seed_value: int = 0) -> FuzzResult:
    """Run `inputs` hypothesis-generated inputs through the decoders."""
    result = FuzzResult()

    @seed(seed_value)
    @settings(
        max_examples=inputs,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(cases())
    def fuzz(case: tuple[bytes, list[Frame], list[int]]) -> None:
        """One input."""
        check_one(*case, result)

    fuzz()
    return result


def main() -> None:
    """Run the fuzz and print its findings, the summary JSON last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t0 = time.monotonic()
    r = run_fuzz(args.inputs, args.seed)
    seconds = round(time.monotonic() - t0, 1)
    detail: dict[str, Any] = {
        "decoded_frames": r.decoded,
        "false_frames": r.false_frames,
        "examples": r.examples,
    }
    print(json.dumps(detail))
    print(
        json.dumps(
            {
                "inputs": r.inputs,
                "crashes": r.crashes,
                "false_presses": r.false_presses,
                "seconds": seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
