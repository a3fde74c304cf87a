"""The serial button board as an input of a Terminal: its presses follow the touchscreen's rules.

One thread owns the port. It opens it exclusively, reopens it with backoff when it vanishes,
decodes frames, and for each PRESS in board order: hands it to `Terminal.press` (outbox
commit and fsync when taken), then ACKs it, then lights the pressed button's LED.
Duplicates are recognised by (board, boot, press) in `firmware_bridge.dedup`.
"""

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import serial

from firmware_bridge.codec import FrameDecoder, encode
from firmware_bridge.dedup import STATE_FILE, BoardInfo, DedupStore
from firmware_bridge.messages import (
    FROM_BOARD,
    Ack,
    AckStatus,
    Buzzer,
    Error,
    ErrorCode,
    Frame,
    Heartbeat,
    Hello,
    Led,
    LedMode,
    Message,
    Press,
)
from firmware_bridge.metrics import BridgeMetrics
from firmware_bridge.settings import BridgeSettings
from kiosk.core.session import Refusal
from kiosk.core.terminal import Terminal, TerminalOutput

log = logging.getLogger(__name__)

VERSION = "0.1.0"
READ_TIMEOUT_S = 0.05
WRITE_TIMEOUT_S = 1.0
HELLO_MIN_GAP_S = 0.3  # between HELLOs asked for by frames from an unknown boot

# What the board hears when the terminal does not take a press; BUSY (reasons being asked on
# a screen) is not final: the board retries.
_STATUS: dict[Refusal, AckStatus] = {
    Refusal.PAUSED: AckStatus.PAUSED,
    Refusal.NO_PROMPT: AckStatus.NO_PROMPT,
    Refusal.INVALID: AckStatus.REJECTED,
}


@dataclass(frozen=True, slots=True)
class BoardState:
    """What the bridge knows about its line and board right now."""

    port: str
    port_open: bool
    connected: bool
    board: BoardInfo | None
    pending: int  # presses the board reported waiting for ACK (last heartbeat)
    silent_s: float | None  # since the last valid frame


class Bridge(TerminalOutput):
    """Reads one board on one serial port: an input (and LED output) of one `Terminal`."""

    def __init__(
        self,
        settings: BridgeSettings,
        terminal: Terminal,
        *,
        metrics: BridgeMetrics | None = None,
        version: str = VERSION,
    ) -> None:
        """Prepare (not start) the bridge; settle any press a crash left half-recorded."""
        self.settings = settings
        self.line = settings.serial
        self.terminal = terminal
        self.outbox = terminal.outbox
        self.version = version
        self.metrics = metrics or BridgeMetrics()
        self.store = DedupStore(terminal.state_dir / STATE_FILE)
        self.store.recover(self.outbox.last_seq())
        self.host_boot = secrets.randbits(32) or 1
        self._outq: deque[Message] = deque(maxlen=64)  # from other threads, sent by the loop
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ser: serial.Serial | None = None
        self._decoder = FrameDecoder(FROM_BOARD)
        self._seen_errors: dict[str, int] = {}
        self._tx_seq = 0
        self._started = time.monotonic()
        self._board: BoardInfo | None = None
        self._board_pending = 0
        self._last_rx: float | None = None
        self._last_hello = -1e9
        self._next_heartbeat = 0.0
        self._last_open_error = ""
        self.on_board_change: Callable[[], None] | None = None
        terminal.outputs.append(self)

    # --- public ---

    def start(self) -> None:
        """Start the port thread."""
        self._thread = threading.Thread(target=self._run, name="serial-bridge", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, close the port and the duplicate table."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._close("bridge stopped", logging.INFO)
        self.store.close()

    def state(self) -> BoardState:
        """A snapshot of the line and the board."""
        last = self._last_rx
        return BoardState(
            port=self.line.port,
            port_open=self._ser is not None,
            connected=self._board is not None,
            board=self._board,
            pending=self._board_pending,
            silent_s=None if last is None else time.monotonic() - last,
        )

    def send(self, msg: Message) -> None:
        """Queue a message for the board (any thread); dropped while no port is open."""
        self._outq.append(msg)

    @property
    def scale(self) -> int:
        """The number of rating keys the window shows now."""
        return self.terminal.session.config.scale

    # --- terminal outputs (any thread): the board's LEDs and buzzer ---

    def prompted(self, terminal: Terminal) -> None:
        """Blink every LED while the prompt is open."""
        timeout_ms = terminal.session.config.prompt_timeout_s * 1000
        self.send(Led(0, LedMode.BLINK, min(timeout_ms, 0xFFFF)))

    def paused(self, terminal: Terminal) -> None:
        """Every LED off."""
        self.send(Led(0, LedMode.OFF, 0))

    def identified(self, terminal: Terminal) -> None:
        """Blink and beep so the operator finds the board."""
        self.send(Led(0, LedMode.BLINK, 5000))
        self.send(Buzzer(2000, 300))

    # --- the port thread ---

    def _run(self) -> None:
        """Open, read and handle until stopped; reopen with backoff whenever the port fails."""
        delay = self.line.reopen_min_s
        while not self._stop.is_set():
            if self._ser is None:
                if not self._open():
                    self._stop.wait(delay)
                    delay = min(delay * 2, self.line.reopen_max_s)
                    continue
                delay = self.line.reopen_min_s
            try:
                self._poll()
            except (serial.SerialException, OSError) as exc:
                self._close(f"port failed: {exc}")
            except Exception:  # one bad frame or a bug must not stop the bridge
                log.exception("bridge loop failed; reopening the port")
                self._close("internal error")
                self._stop.wait(self.line.reopen_min_s)

    def _open(self) -> bool:
        """Open the port exclusively; return False (logged once per reason) if it cannot."""
        try:
            ser = serial.Serial(
                self.line.port,
                self.line.baudrate,
                timeout=READ_TIMEOUT_S,
                write_timeout=WRITE_TIMEOUT_S,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            self.metrics.open_failures.inc()
            reason = str(exc)
            if reason != self._last_open_error:
                log.warning("cannot open %s (retrying with backoff): %s", self.line.port, exc)
                self._last_open_error = reason
            else:
                log.debug("cannot open %s: %s", self.line.port, exc)
            return False
        self._last_open_error = ""
        self._ser = ser
        self._outq.clear()  # LED and buzzer commands meant for the moment, not for later
        self._decoder.reset()
        self._board = None
        self._last_rx = None
        self._last_hello = -1e9
        self._next_heartbeat = 0.0
        self.metrics.port_open.set(1)
        self.metrics.reopens.inc()
        log.info("opened %s at %d baud", self.line.port, self.line.baudrate)
        return True

    def _close(self, why: str, level: int = logging.WARNING) -> None:
        """Close the port (if open) and forget the board."""
        ser, self._ser = self._ser, None
        if ser is None:
            return
        try:
            ser.close()
        except (serial.SerialException, OSError) as exc:
            log.debug("closing %s: %s", self.line.port, exc)
        self.metrics.port_open.set(0)
        log.log(level, "closed %s: %s", self.line.port, why)
        self._lose_board("port closed", level)

    def _poll(self) -> None:
        """Read what the line has (up to the read timeout), handle frames, run the timers."""
        ser = self._ser
        assert ser is not None
        data = ser.read(ser.in_waiting or 1)
        if data:
            for frame in self._decoder.feed(data):
                self._last_rx = time.monotonic()
                self.metrics.frames.labels(type(frame.msg).__name__.lower()).inc()
                self._handle(frame)
            self._count_errors()
        while self._outq:
            self._send(self._outq.popleft())
        self._timers()

    def _count_errors(self) -> None:
        """Copy the decoder's error counts into the metrics."""
        for reason, n in self._decoder.stats.errors.items():
            seen = self._seen_errors.get(reason, 0)
            if n > seen:
                self.metrics.frame_errors.labels(reason).inc(n - seen)
                self._seen_errors[reason] = n

    def _timers(self) -> None:
        """Heartbeat, HELLO while no board is known, and the board's silence timeout."""
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.line.heartbeat_s
            uptime = int((now - self._started) * 1000) & 0xFFFFFFFF
            self._send(Heartbeat(self.host_boot, uptime, min(self.outbox.backlog(), 255)))
        if self._board is None and now - self._last_hello >= self.line.hello_retry_s:
            self._send_hello()
        if (
            self._board is not None
            and self._last_rx is not None
            and now - self._last_rx > self.line.board_timeout_s
        ):
            self._lose_board(f"silent for {now - self._last_rx:.1f} s")

    def _send_hello(self) -> None:
        """Introduce the host; the board answers with its own HELLO."""
        self._last_hello = time.monotonic()
        device = self.terminal.spec.device
        self._send(Hello(self.host_boot, self.scale, 0, device, self.version))

    def _send(self, msg: Message) -> None:
        """Put one frame on the line; a write timeout drops it (the protocol retries)."""
        ser = self._ser
        if ser is None:
            return
        self._tx_seq = (self._tx_seq + 1) & 0xFFFF
        try:
            ser.write(encode(self._tx_seq, msg))
        except serial.SerialTimeoutException:
            log.warning("write to %s timed out; %s dropped", self.line.port, type(msg).__name__)

    # --- frames ---

    def _handle(self, frame: Frame) -> None:
        """Dispatch one valid frame from the board."""
        msg = frame.msg
        if isinstance(msg, Hello):
            self._on_hello(msg)
        elif isinstance(msg, Press):
            self._on_press(frame.seq, msg)
        elif isinstance(msg, Heartbeat):
            self._board_pending = msg.pending
            self.metrics.board_pending.set(msg.pending)
            self._known(msg.boot)
        elif isinstance(msg, Error):
            log.warning("board error %d (frame %d): %s", msg.code, msg.ref_seq, msg.text)

    def _known(self, boot: int) -> BoardInfo | None:
        """The board of `boot`: the current one, or one whose HELLO we kept; else ask HELLO."""
        board = self._board
        if board is not None and board.boot == boot:
            return board
        info = self.store.board_for_boot(boot)
        if info is None:
            self._request_hello()
            return None
        self._connect(info, "known boot")
        return info

    def _request_hello(self) -> None:
        """Ask for the board's HELLO (rate-limited): a frame came from a boot we do not know."""
        if time.monotonic() - self._last_hello >= HELLO_MIN_GAP_S:
            self._send_hello()

    def _on_hello(self, hello: Hello) -> None:
        """A board introduced itself: remember it, ACK the HELLO, skip presses ACKed before."""
        info = BoardInfo(hello.ident, hello.boot, hello.firmware, hello.buttons)
        if info != self._board:
            self.store.note_board(info)
            self.store.prune(info.ident)
            self._connect(info, "HELLO")
        self._send(Ack(hello.boot, 0, AckStatus.RECORDED))
        if hello.acked_through and self.store.advance(info.ident, info.boot, hello.acked_through):
            # Only when this table was lost or the board was ACKed by another host.
            log.warning(
                "board %s boot %08x: presses through %d were ACKed elsewhere; skipping them",
                info.ident,
                info.boot,
                hello.acked_through,
            )

    def _connect(self, info: BoardInfo, how: str) -> None:
        """Take `info` as the board on the line."""
        if self._board is not None:
            self._lose_board("replaced")
        log.info(
            "board %s connected on %s (%s): firmware %s, boot %08x, %d buttons",
            info.ident,
            self.line.port,
            how,
            info.firmware,
            info.boot,
            info.buttons,
        )
        self.metrics.board_info.labels(
            info.ident, f"{info.boot:08x}", info.firmware, str(info.buttons)
        ).set(1)
        self.metrics.connected.set(1)
        self._board = info
        if self.on_board_change is not None:
            self.on_board_change()
        if info.buttons != self.scale:
            log.warning(
                "board %s has %d buttons, window scale is %d", info.ident, info.buttons, self.scale
            )

    def _lose_board(self, why: str, level: int = logging.WARNING) -> None:
        """Forget the board (it will have to say HELLO again)."""
        board, self._board = self._board, None
        if board is None:
            return
        log.log(level, "board %s disconnected: %s", board.ident, why)
        self._board_pending = 0
        self.metrics.connected.set(0)
        self.metrics.board_info.clear()
        if self.on_board_change is not None:
            self.on_board_change()

    def _on_press(self, frame_seq: int, press: Press) -> None:
        """Record a press exactly once, in board order; ACK only after the outbox commit."""
        board = self._known(press.boot)
        if board is None:
            self.metrics.presses.labels("unknown_boot").inc()
            log.debug("press %d from unknown boot %08x: asked HELLO", press.press, press.boot)
            return
        last = self.store.last(board.ident, board.boot)
        if press.press <= last:
            self.metrics.presses.labels("duplicate").inc()
            self._send(Ack(press.boot, press.press, AckStatus.DUPLICATE))
            return
        if press.press > last + 1:
            # An earlier press is still on its way: take presses in board order only.
            self.metrics.presses.labels("out_of_order").inc()
            return
        status = self._take(board, press)
        if status is None:
            self._send(Error(ErrorCode.NOT_READY, frame_seq, "not recorded; retry"))
            return
        self.metrics.presses.labels(status.name.lower()).inc()
        self._send(Ack(press.boot, press.press, status))
        self._feedback(press, status)

    def _take(self, board: BoardInfo, press: Press) -> AckStatus | None:
        """Hand the press to the terminal's rules; None if it could not be recorded now."""
        # A press left half-done by a failed state commit (disk trouble) is settled from its
        # intent row first, so a retransmission of it is not recorded a second time.
        self.store.recover(self.outbox.last_seq())
        if press.press <= self.store.last(board.ident, board.boot):
            return AckStatus.DUPLICATE
        self.store.begin(board.ident, board.boot, press.press, self.outbox.last_seq())
        try:
            result = self.terminal.press(press.level, "serial")
        except Exception:
            log.exception("press %d could not be recorded; the board will retry", press.press)
            self.store.abort(board.ident, board.boot)
            return None
        status = _STATUS.get(result.refusal) if result.refusal else AckStatus.RECORDED
        if status is None:  # busy for a moment: nothing stored, the board retries
            self.store.abort(board.ident, board.boot)
            return None
        self.store.commit(board.ident, board.boot, press.press)
        if result.recorded is not None:
            log.info(
                "press %d (level %d, try %d) from %s recorded as seq %d",
                press.press,
                press.level,
                press.tries,
                board.ident,
                result.recorded.seq,
            )
        return status

    def _feedback(self, press: Press, status: AckStatus) -> None:
        """Light the pressed button's LED (or blink all and beep when refused)."""
        ms = self.line.feedback_ms
        if status is AckStatus.RECORDED:
            self._send(Led(0, LedMode.OFF, 0))  # ends a prompt's blinking or an earlier light
            self._send(Led(press.level, LedMode.ON, ms))
        else:
            self._send(Led(0, LedMode.BLINK, ms))
            self._send(Buzzer(400, 200))
