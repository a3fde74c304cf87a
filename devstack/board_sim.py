"""A button board simulator speaking the serial protocol on a pseudo-terminal, with line noise.

The board end holds the pty master; the slave's path is published through a stable symlink
(like /dev/serial/by-id/…) that the bridge opens. `unplug()` closes the pty and removes the
link, `replug()` makes a new pty and points the link at it. Noise is applied by the simulator
in both directions: each byte is corrupted with probability `corrupt` (bit flip, replacement,
deletion or insertion) and each frame dropped with probability `drop`, from a seeded RNG.
"""

import contextlib
import logging
import os
import random
import select
import threading
import time
import tty
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from firmware_bridge.codec import FrameDecoder, encode
from firmware_bridge.messages import (
    FROM_HOST,
    Ack,
    AckStatus,
    Buzzer,
    Error,
    ErrorCode,
    Frame,
    Heartbeat,
    Hello,
    Led,
    Message,
    Press,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LineNoise:
    """Noise on one direction of the line."""

    corrupt: float = 0.0  # probability that a byte is corrupted
    drop: float = 0.0  # probability that a whole frame is lost


class NoisyLine:
    """Applies `LineNoise` to bytes travelling one way, from its own seeded RNG."""

    def __init__(self, noise: LineNoise, rng: random.Random) -> None:
        """Create for `noise`, drawing from `rng`."""
        self.noise = noise
        self.rng = rng
        self._partial = bytearray()
        self.frames = 0
        self.dropped = 0
        self.corrupted = 0

    def _corrupt(self, data: bytes) -> bytes:
        """Corrupt each byte with the configured probability."""
        p = self.noise.corrupt
        if p <= 0:
            return data
        out = bytearray()
        rng = self.rng
        for b in data:
            if rng.random() >= p:
                out.append(b)
                continue
            self.corrupted += 1
            op = rng.random()
            if op < 0.5:
                out.append(b ^ (1 << rng.randrange(8)))  # bit flip
            elif op < 0.75:
                out.append(rng.randrange(256))  # replaced
            elif op < 0.875:
                pass  # deleted
            else:
                out += bytes((b, rng.randrange(256)))  # a byte inserted after it
        return bytes(out)

    def frame(self, wire: bytes) -> bytes:
        """Pass one whole frame (as sent): maybe drop it, maybe corrupt some bytes."""
        self.frames += 1
        if self.rng.random() < self.noise.drop:
            self.dropped += 1
            return b""
        return self._corrupt(wire)

    def stream(self, data: bytes) -> bytes:
        """Pass a stream of bytes: cut at delimiters, drop or corrupt each frame."""
        self._partial += data
        out = bytearray()
        while (end := self._partial.find(0)) >= 0:
            chunk = bytes(self._partial[: end + 1])
            del self._partial[: end + 1]
            if len(chunk) == 1:  # a lone delimiter, not a frame
                out += self._corrupt(chunk)
                continue
            out += self.frame(chunk)
        return bytes(out)


@dataclass
class _Pending:
    """A press waiting for its ACK."""

    level: int
    tries: int = 0
    due: float = 0.0


@dataclass
class BoardLog:
    """Everything the simulated board did and got, for tests and the simulator's report."""

    made: list[tuple[int, int, int]] = field(default_factory=list)  # (boot, press, level)
    acked: dict[tuple[int, int], AckStatus] = field(default_factory=dict)
    lost: list[tuple[int, int, int]] = field(default_factory=list)  # pending at a reboot
    leds: list[Led] = field(default_factory=list)
    buzzes: list[Buzzer] = field(default_factory=list)
    errors: list[Error] = field(default_factory=list)
    hellos_from_host: int = 0
    refused: int = 0  # presses refused because the queue was full


class BoardSimulator:
    """A board with `buttons` rating buttons on a pty, following docs/serial-protocol.md."""

    def __init__(
        self,
        link: Path,
        *,
        board_id: str = "sim-board",
        buttons: int = 5,
        firmware: str = "sim-1.0",
        to_host: LineNoise | None = None,
        to_board: LineNoise | None = None,
        seed: int = 0,
        retry_s: float = 0.1,
        window: int = 4,
        heartbeat_s: float = 1.0,
        queue_size: int = 64,
    ) -> None:
        """Prepare the board; `start()` plugs it in."""
        self.link = Path(link)
        self.board_id = board_id
        self.buttons = buttons
        self.firmware = firmware
        self.retry_s = retry_s
        self.window = window
        self.heartbeat_s = heartbeat_s
        self.queue_size = queue_size
        self._rng = random.Random(f"{seed}-board")
        self.up = NoisyLine(to_host or LineNoise(), random.Random(f"{seed}-up"))
        self.down = NoisyLine(to_board or LineNoise(), random.Random(f"{seed}-down"))
        self.log = BoardLog()
        self._lock = threading.RLock()
        self._master: int | None = None
        self._slave: int | None = None
        self._decoder = FrameDecoder(FROM_HOST)
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tx_seq = 0
        self._boot_t = time.monotonic()
        self.boot = 0
        self._last_press = 0
        self._next_heartbeat = 0.0
        self._introduced = False  # the host ACKed our HELLO (or a press) in this boot
        self._hello_due = 0.0
        self._new_boot()

    # --- control ---

    def start(self) -> None:
        """Plug the board in and start its loop."""
        self.replug()
        self._thread = threading.Thread(
            target=self._run, name=f"board-{self.board_id}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and unplug."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.unplug()

    def unplug(self) -> None:
        """Pull the cable: close the pty (the bridge's reads fail) and remove the link."""
        with self._lock:
            for fd in (self._master, self._slave):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._master = self._slave = None
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
            self._decoder.reset()

    def replug(self) -> None:
        """Plug the cable in again: a new pty pair behind the same link; the board says HELLO."""
        with self._lock:
            if self._master is not None:
                self.unplug()
            master, slave = os.openpty()
            tty.setraw(slave)  # no echo or line editing before the bridge configures it
            os.set_blocking(master, False)
            self._master, self._slave = master, slave
            self.link.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.link.with_name(self.link.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(os.ttyname(slave))
            os.replace(tmp, self.link)
            self._say_hello()

    def reboot(self) -> None:
        """Power-cycle the board: a new boot id, press numbers from 1, unACKed presses lost."""
        with self._lock:
            self._new_boot()
            self._say_hello()

    def press(self, level: int) -> int | None:
        """Press button `level`; return its press number, or None if the queue is full."""
        with self._lock:
            if len(self._pending) >= self.queue_size:
                self.log.refused += 1
                return None
            self._last_press += 1
            n = self._last_press
            self._pending[n] = _Pending(level)
            self.log.made.append((self.boot, n, level))
            return n

    def pending(self) -> int:
        """How many presses wait for their ACK."""
        with self._lock:
            return len(self._pending)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every press has been ACKed; return True if so."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.pending():
                return True
            time.sleep(0.02)
        return not self.pending()

    @property
    def acked_through(self) -> int:
        """Every press of this boot up to this number has been ACKed."""
        with self._lock:
            return next(iter(self._pending)) - 1 if self._pending else self._last_press

    # --- internals ---

    def _new_boot(self) -> None:
        """Start a new boot (lock held or during construction)."""
        for n, p in self._pending.items():
            self.log.lost.append((self.boot, n, p.level))
        self._pending.clear()
        self.boot = self._rng.getrandbits(32) or 1
        self._last_press = 0
        self._boot_t = time.monotonic()

    def _say_hello(self) -> None:
        """Send HELLO now and again every `retry_s` until the host ACKs it (lock held)."""
        self._introduced = False
        self._hello_due = time.monotonic() + self.retry_s
        self._send(Hello(self.boot, self.buttons, self.acked_through, self.board_id, self.firmware))

    def _send(self, msg: Message) -> None:
        """Put one frame on the (noisy) line; a full line loses it, as a UART would."""
        with self._lock:
            fd = self._master
            if fd is None:
                return
            self._tx_seq = (self._tx_seq + 1) & 0xFFFF
            data = self.up.frame(encode(self._tx_seq, msg))
            if not data:
                return
            try:
                os.write(fd, data)
            except (BlockingIOError, OSError) as exc:
                log.debug("board %s: line write lost: %s", self.board_id, exc)

    def _run(self) -> None:
        """Read host frames, retransmit presses, send heartbeats."""
        while not self._stop.is_set():
            with self._lock:
                fd = self._master
            if fd is None:
                self._stop.wait(0.02)
                continue
            try:
                ready, _, _ = select.select([fd], [], [], 0.02)
                data = os.read(fd, 4096) if ready else b""
            except (BlockingIOError, InterruptedError):
                data = b""
            except (OSError, ValueError):  # unplugged under us
                self._stop.wait(0.02)
                continue
            if data:
                with self._lock:
                    frames = self._decoder.feed(self.down.stream(data))
                    for frame in frames:
                        self._handle(frame)
            self._tick()

    def _tick(self) -> None:
        """Send due presses (oldest first, at most `window`) and the heartbeat."""
        now = time.monotonic()
        with self._lock:
            if not self._introduced and now >= self._hello_due:
                self._say_hello()
            for n, p in list(self._pending.items())[: self.window]:
                if p.due <= now:
                    p.tries = min(p.tries + 1, 255)
                    p.due = now + self.retry_s
                    self._send(Press(self.boot, n, p.level, p.tries))
            if now >= self._next_heartbeat:
                self._next_heartbeat = now + self.heartbeat_s
                uptime = int((now - self._boot_t) * 1000) & 0xFFFFFFFF
                self._send(Heartbeat(self.boot, uptime, min(len(self._pending), 255)))

    def _handle(self, frame: Frame) -> None:
        """Act on one frame from the host (lock held)."""
        msg = frame.msg
        if isinstance(msg, Hello):
            self.log.hellos_from_host += 1
            self._say_hello()
        elif isinstance(msg, Ack):
            if msg.boot != self.boot:
                return
            self._introduced = True  # any ACK of this boot: the host knows us
            if msg.press and self._pending.pop(msg.press, None) is not None:
                self.log.acked[(msg.boot, msg.press)] = msg.status
        elif isinstance(msg, Led):
            self.log.leds.append(msg)
        elif isinstance(msg, Buzzer):
            self.log.buzzes.append(msg)
        elif isinstance(msg, Error):
            self.log.errors.append(msg)
            if msg.code == ErrorCode.UNKNOWN_BOOT:
                self._say_hello()
