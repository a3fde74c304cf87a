"""The serial ↔ kiosk-core bridge: a button board's presses become committed outbox ratings.

One thread owns the port. It opens it exclusively, reopens it with backoff when it vanishes,
decodes frames, and for each PRESS in board order: records it (outbox commit and fsync), then
ACKs it, then lights the pressed button's LED. Duplicates are recognised by (board, boot, press)
against a small SQLite table of its own (`bridge-state.sqlite` next to the outbox), so neither
a retransmission nor a bridge restart counts a press twice.
"""

import logging
import secrets
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import serial
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from firmware_bridge.codec import FrameDecoder, encode
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
from firmware_bridge.settings import BridgeSettings
from kiosk.clock import Clock, SystemClock
from kiosk.outbox import Outbox, now_ms
from kiosk.publisher import Publisher
from kiosk.recorder import Identity, Recorder
from protocol.messages import FLAG_REPEAT, Command, DeviceConfig

log = logging.getLogger(__name__)

VERSION = "0.1.0"
OUTBOX_FILE = "outbox.sqlite"
STATE_FILE = "bridge-state.sqlite"
READ_TIMEOUT_S = 0.05
WRITE_TIMEOUT_S = 1.0
BOOTS_KEPT = 32  # per board, in the duplicate table
PROMPT_TIMEOUT_S = 60.0  # until the centre's config says otherwise
HELLO_MIN_GAP_S = 0.3  # between HELLOs asked for by frames from an unknown boot

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    board TEXT NOT NULL,
    boot INTEGER NOT NULL,
    last INTEGER NOT NULL DEFAULT 0,
    firmware TEXT,
    buttons INTEGER,
    pending INTEGER,
    witness INTEGER,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (board, boot)
);
"""


@dataclass(frozen=True, slots=True)
class BoardInfo:
    """A board as its HELLO described it."""

    ident: str
    boot: int
    firmware: str
    buttons: int


# Before recording press n the bridge writes (pending=n, witness=outbox.last_seq()); after
# Recorder.record returned it sets last=n. If the process dies between the two, `recover`
# compares the outbox's seq with the witness: a higher seq means the press was committed.
# This holds because the bridge is the only writer of its device's outbox.
class DedupStore:
    """Last press taken per (board, boot), fsynced; an intent row covers a crash mid-press."""

    def __init__(self, path: Path) -> None:
        """Open (or create) the table at `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def last(self, board: str, boot: int) -> int:
        """The last press taken from this board and boot (0: none)."""
        with self._lock:
            row = self._db.execute(
                "SELECT last FROM seen WHERE board = ? AND boot = ?", (board, boot)
            ).fetchone()
        return 0 if row is None else int(row[0])

    def note_board(self, info: BoardInfo) -> None:
        """Remember a board's HELLO, so that its boot is known after a reopen or restart."""
        with self._lock:
            self._db.execute(
                "INSERT INTO seen (board, boot, firmware, buttons, updated_ms)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (board, boot) DO UPDATE SET"
                " firmware = excluded.firmware, buttons = excluded.buttons,"
                " updated_ms = excluded.updated_ms",
                (info.ident, info.boot, info.firmware, info.buttons, now_ms()),
            )

    def board_for_boot(self, boot: int) -> BoardInfo | None:
        """The board that introduced `boot` earlier, if exactly one did."""
        with self._lock:
            rows = self._db.execute(
                "SELECT board, firmware, buttons FROM seen WHERE boot = ? AND firmware IS NOT NULL",
                (boot,),
            ).fetchall()
        if len(rows) != 1:
            return None
        board, firmware, buttons = rows[0]
        return BoardInfo(str(board), boot, str(firmware), int(buttons))

    def begin(self, board: str, boot: int, press: int, witness: int) -> None:
        """Note that press `press` is about to be recorded; `witness` is the outbox's last seq."""
        with self._lock:
            self._db.execute(
                "INSERT INTO seen (board, boot, last, pending, witness, updated_ms)"
                " VALUES (?, ?, 0, ?, ?, ?) ON CONFLICT (board, boot) DO UPDATE SET"
                " pending = excluded.pending, witness = excluded.witness,"
                " updated_ms = excluded.updated_ms",
                (board, boot, press, witness, now_ms()),
            )

    def commit(self, board: str, boot: int, press: int) -> None:
        """Press `press` was taken: duplicates of it and of earlier presses are dropped."""
        self.advance(board, boot, press)

    def abort(self, board: str, boot: int) -> None:
        """Recording failed before anything was committed: forget the intent."""
        with self._lock:
            self._db.execute(
                "UPDATE seen SET pending = NULL, witness = NULL WHERE board = ? AND boot = ?",
                (board, boot),
            )

    def advance(self, board: str, boot: int, through: int) -> bool:
        """Take every press up to `through` as done; return True if that moved the mark."""
        with self._lock:
            row = self._db.execute(
                "SELECT last FROM seen WHERE board = ? AND boot = ?", (board, boot)
            ).fetchone()
            self._db.execute(
                "INSERT INTO seen (board, boot, last, updated_ms) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (board, boot) DO UPDATE SET last = max(last, excluded.last),"
                " pending = NULL, witness = NULL, updated_ms = excluded.updated_ms",
                (board, boot, through, now_ms()),
            )
        return through > (0 if row is None else int(row[0]))

    def recover(self, outbox_last_seq: int) -> int:
        """Settle intents left by a crash; return how many turned out recorded."""
        done = 0
        with self._lock:
            rows = self._db.execute(
                "SELECT board, boot, pending, witness FROM seen WHERE pending IS NOT NULL"
            ).fetchall()
        for board, boot, pending, witness in rows:
            if witness is not None and outbox_last_seq > int(witness):
                log.warning(
                    "press %s of board %s boot %08x was recorded before a crash; marked taken",
                    pending,
                    board,
                    boot,
                )
                self.advance(board, boot, int(pending))
                done += 1
            else:
                self.abort(board, boot)
        return done

    def prune(self, board: str, keep: int = BOOTS_KEPT) -> None:
        """Keep only the `keep` most recently used boots of a board."""
        with self._lock:
            self._db.execute(
                "DELETE FROM seen WHERE board = ? AND boot NOT IN (SELECT boot FROM seen"
                " WHERE board = ? ORDER BY updated_ms DESC LIMIT ?)",
                (board, board, keep),
            )


@dataclass(frozen=True, slots=True)
class BoardState:
    """What the bridge knows about its line and board right now."""

    port: str
    port_open: bool
    connected: bool
    board: BoardInfo | None
    pending: int  # presses the board reported waiting for ACK (last heartbeat)
    silent_s: float | None  # since the last valid frame


class BridgeMetrics:
    """Prometheus metrics of one bridge, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """Create the metrics in `registry` (a fresh one by default)."""
        self.registry = r = registry or CollectorRegistry()
        self.port_open = Gauge(
            "windowrate_bridge_port_open", "1 while the port is open", registry=r
        )
        self.connected = Gauge(
            "windowrate_bridge_board_connected", "1 while a board is talking", registry=r
        )
        self.board_info = Gauge(
            "windowrate_bridge_board_info",
            "The connected board (1) by id, boot and firmware",
            ["board", "boot", "firmware", "buttons"],
            registry=r,
        )
        self.board_pending = Gauge(
            "windowrate_bridge_board_pending", "Presses the board holds unACKed", registry=r
        )
        self.presses = Counter(
            "windowrate_bridge_presses", "PRESS frames by outcome", ["result"], registry=r
        )
        self.frames = Counter(
            "windowrate_bridge_frames_received", "Valid frames by type", ["type"], registry=r
        )
        self.frame_errors = Counter(
            "windowrate_bridge_frame_errors", "Rejected frames by reason", ["reason"], registry=r
        )
        self.reopens = Counter(
            "windowrate_bridge_port_opens", "Successful opens of the port", registry=r
        )
        self.open_failures = Counter(
            "windowrate_bridge_port_open_failures", "Failed attempts to open the port", registry=r
        )


@dataclass(frozen=True, slots=True)
class _Prompt:
    """A per-service prompt from the centre, taken by the next press."""

    ticket: str | None
    item: str | None
    staff: str | None
    until: float


class Bridge:
    """Reads one board on one serial port and records its presses through `recorder`."""

    def __init__(
        self,
        settings: BridgeSettings,
        recorder: Recorder,
        outbox: Outbox,
        *,
        metrics: BridgeMetrics | None = None,
        version: str = VERSION,
    ) -> None:
        """Prepare (not start) the bridge; settle any press a crash left half-recorded."""
        self.settings = settings
        self.recorder = recorder
        self.outbox = outbox
        self.version = version
        self.metrics = metrics or BridgeMetrics()
        self.store = DedupStore(Path(settings.data_dir) / STATE_FILE)
        self.store.recover(outbox.last_seq())
        self.host_boot = secrets.randbits(32) or 1
        self.repeat_interval_s = float(settings.repeat_interval_s)
        self.prompt_timeout_s = PROMPT_TIMEOUT_S
        self.paused = False
        self._prompt: _Prompt | None = None
        self._last_recorded: float | None = None
        self._cfg_lock = threading.Lock()
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
            port=self.settings.port,
            port_open=self._ser is not None,
            connected=self._board is not None,
            board=self._board,
            pending=self._board_pending,
            silent_s=None if last is None else time.monotonic() - last,
        )

    def send(self, msg: Message) -> None:
        """Queue a message for the board (any thread); dropped while no port is open."""
        self._outq.append(msg)

    def apply_config(self, config: DeviceConfig) -> None:
        """Follow the centre's config: window, scale and repeat interval."""
        with self._cfg_lock:
            self.repeat_interval_s = float(config.repeat_interval_s)
            self.prompt_timeout_s = float(config.prompt_timeout_s)
            self.recorder.identity = replace(
                self.recorder.identity, window=config.window, scale=config.scale
            )
        board = self._board
        if board is not None and board.buttons != config.scale:
            log.warning("board has %d buttons, window scale is %d", board.buttons, config.scale)

    def command(self, cmd: Command) -> None:
        """Run a centre command: prompt, pause, resume, identify (LED and buzzer)."""
        log.info("command %s (%s)", cmd.cmd, cmd.id)
        if cmd.cmd == "pause":
            with self._cfg_lock:
                self.paused = True
                self._prompt = None
            self.recorder.event("pause", staff=cmd.staff)
            self.send(Led(0, LedMode.OFF, 0))
        elif cmd.cmd == "resume":
            with self._cfg_lock:
                self.paused = False
            self.recorder.event("resume", staff=cmd.staff)
        elif cmd.cmd == "prompt":
            with self._cfg_lock:
                if self.paused:
                    log.info("prompt %s ignored: paused", cmd.id)
                    return
                timeout = self.prompt_timeout_s
                self._prompt = _Prompt(cmd.ticket, cmd.item, cmd.staff, time.monotonic() + timeout)
            self.recorder.event("prompt_shown", staff=cmd.staff, ticket=cmd.ticket, item=cmd.item)
            self.send(Led(0, LedMode.BLINK, min(int(timeout * 1000), 0xFFFF)))
        elif cmd.cmd == "identify":
            self.send(Led(0, LedMode.BLINK, 5000))
            self.send(Buzzer(2000, 300))

    # --- the port thread ---

    def _run(self) -> None:
        """Open, read and handle until stopped; reopen with backoff whenever the port fails."""
        delay = self.settings.reopen_min_s
        while not self._stop.is_set():
            if self._ser is None:
                if not self._open():
                    self._stop.wait(delay)
                    delay = min(delay * 2, self.settings.reopen_max_s)
                    continue
                delay = self.settings.reopen_min_s
            try:
                self._poll()
            except (serial.SerialException, OSError) as exc:
                self._close(f"port failed: {exc}")
            except Exception:  # one bad frame or a bug must not stop the bridge
                log.exception("bridge loop failed; reopening the port")
                self._close("internal error")
                self._stop.wait(self.settings.reopen_min_s)

    def _open(self) -> bool:
        """Open the port exclusively; return False (logged once per reason) if it cannot."""
        try:
            ser = serial.Serial(
                self.settings.port,
                self.settings.baudrate,
                timeout=READ_TIMEOUT_S,
                write_timeout=WRITE_TIMEOUT_S,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            self.metrics.open_failures.inc()
            reason = str(exc)
            if reason != self._last_open_error:
                log.warning("cannot open %s (retrying with backoff): %s", self.settings.port, exc)
                self._last_open_error = reason
            else:
                log.debug("cannot open %s: %s", self.settings.port, exc)
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
        log.info("opened %s at %d baud", self.settings.port, self.settings.baudrate)
        return True

    def _close(self, why: str, level: int = logging.WARNING) -> None:
        """Close the port (if open) and forget the board."""
        ser, self._ser = self._ser, None
        if ser is None:
            return
        try:
            ser.close()
        except (serial.SerialException, OSError) as exc:
            log.debug("closing %s: %s", self.settings.port, exc)
        self.metrics.port_open.set(0)
        log.log(level, "closed %s: %s", self.settings.port, why)
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
            self._next_heartbeat = now + self.settings.heartbeat_s
            uptime = int((now - self._started) * 1000) & 0xFFFFFFFF
            self._send(Heartbeat(self.host_boot, uptime, min(self.outbox.backlog(), 255)))
        if self._board is None and now - self._last_hello >= self.settings.hello_retry_s:
            self._send_hello()
        if (
            self._board is not None
            and self._last_rx is not None
            and now - self._last_rx > self.settings.board_timeout_s
        ):
            self._lose_board(f"silent for {now - self._last_rx:.1f} s")

    def _send_hello(self) -> None:
        """Introduce the host; the board answers with its own HELLO."""
        self._last_hello = time.monotonic()
        scale = self.recorder.identity.scale
        self._send(Hello(self.host_boot, scale, 0, self.recorder.identity.device, self.version))

    def _send(self, msg: Message) -> None:
        """Put one frame on the line; a write timeout drops it (the protocol retries)."""
        ser = self._ser
        if ser is None:
            return
        self._tx_seq = (self._tx_seq + 1) & 0xFFFF
        try:
            ser.write(encode(self._tx_seq, msg))
        except serial.SerialTimeoutException:
            log.warning("write to %s timed out; %s dropped", self.settings.port, type(msg).__name__)

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
            self.settings.port,
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
        if info.buttons != self.recorder.identity.scale:
            log.warning(
                "board %s has %d buttons, window scale is %d",
                info.ident,
                info.buttons,
                self.recorder.identity.scale,
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
        """Record the press (or refuse it); None if it could not be recorded now."""
        now = time.monotonic()
        with self._cfg_lock:
            paused = self.paused
            prompt = self._prompt if self._prompt and self._prompt.until > now else None
            repeat = (
                prompt is None
                and self._last_recorded is not None
                and now - self._last_recorded < self.repeat_interval_s
            )
        if paused:
            self.store.advance(board.ident, board.boot, press.press)
            return AckStatus.PAUSED
        # A press left half-done by a failed state commit (disk trouble) is settled from its
        # intent row first, so a retransmission of it is not recorded a second time.
        self.store.recover(self.outbox.last_seq())
        if press.press <= self.store.last(board.ident, board.boot):
            return AckStatus.DUPLICATE
        self.store.begin(board.ident, board.boot, press.press, self.outbox.last_seq())
        try:
            rec = self.recorder.record(
                press.level,
                input="serial",
                prompted=prompt is not None,
                staff=prompt.staff if prompt else None,
                ticket=prompt.ticket if prompt else None,
                item=prompt.item if prompt else None,
                reasons=[FLAG_REPEAT] if repeat else [],
            )
        except ValueError as exc:  # raised before anything is stored
            log.warning("press %d level %d refused: %s", press.press, press.level, exc)
            self.store.commit(board.ident, board.boot, press.press)
            return AckStatus.REJECTED
        except Exception:
            log.exception("press %d could not be recorded; the board will retry", press.press)
            self.store.abort(board.ident, board.boot)
            return None
        self.store.commit(board.ident, board.boot, press.press)
        self._last_recorded = now
        if prompt is not None:  # spent only by a recorded press
            with self._cfg_lock:
                if self._prompt is prompt:
                    self._prompt = None
        log.info(
            "press %d (level %d, try %d) from %s recorded as seq %d",
            press.press,
            press.level,
            press.tries,
            board.ident,
            rec.seq,
        )
        return AckStatus.RECORDED

    def _feedback(self, press: Press, status: AckStatus) -> None:
        """Light the pressed button's LED (or blink all and beep when refused)."""
        ms = self.settings.feedback_ms
        if status is AckStatus.RECORDED:
            self._send(Led(0, LedMode.OFF, 0))  # ends a prompt's blinking or an earlier light
            self._send(Led(press.level, LedMode.ON, ms))
        else:
            self._send(Led(0, LedMode.BLINK, ms))
            self._send(Buzzer(400, 200))


class BridgeService:
    """A whole serial terminal: outbox, recorder, publisher (MQTT) and the bridge."""

    def __init__(
        self,
        settings: BridgeSettings,
        *,
        clock: Clock | None = None,
    ) -> None:
        """Open the outbox and build the parts (nothing connects yet)."""
        self.settings = settings
        data_dir = Path(settings.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.clock = clock or SystemClock(trust_wall=settings.trust_wall_clock)
        identity = Identity(
            hall=settings.hall, device=settings.device, window=settings.window, scale=settings.scale
        )
        self.outbox = Outbox(data_dir / OUTBOX_FILE)
        self.publisher = Publisher(
            self.outbox,
            identity,
            settings.mqtt,
            self.clock,
            version=VERSION,
            on_config=self._on_config,
            on_command=self._on_command,
            status_extra=self._board_status,
        )
        self.recorder = Recorder(self.outbox, identity, self.clock, self.publisher.wake)
        self.bridge = Bridge(settings, self.recorder, self.outbox)
        self.bridge.on_board_change = self.publisher.publish_status
        self._http: object | None = None

    def start(self) -> None:
        """Serve metrics (if configured), connect to the broker and open the port."""
        if self.settings.metrics_port:
            self._http, _ = start_http_server(
                self.settings.metrics_port, registry=self.bridge.metrics.registry
            )
        self.publisher.start()
        self.bridge.start()

    def stop(self) -> None:
        """Close the port, publish offline, close the outbox."""
        self.bridge.stop()
        self.publisher.stop()
        self.outbox.close()
        shutdown = getattr(self._http, "shutdown", None)
        if shutdown is not None:
            shutdown()

    def _board_status(self) -> dict[str, Any]:
        """The board part of the device's retained status."""
        st = self.bridge.state()
        board: dict[str, Any] = {"connected": st.connected}
        if st.board is not None:
            board.update(
                id=st.board.ident[:64],
                firmware=st.board.firmware[:64] or None,
                buttons=st.board.buttons if 1 <= st.board.buttons <= 8 else None,
            )
        return {"board": board}

    def _on_config(self, config: DeviceConfig) -> None:
        """The centre's retained config (paho's thread)."""
        log.info("config: window %s, scale %s", config.window, config.scale)
        self.bridge.apply_config(config)
        self.publisher.identity = replace(self.publisher.identity, window=config.window)

    def _on_command(self, cmd: Command) -> None:
        """A centre command (paho's thread)."""
        self.bridge.command(cmd)
        if cmd.cmd in ("pause", "resume"):
            self.publisher.set_paused(cmd.cmd == "pause")


def run_bridge(settings: BridgeSettings, stop: threading.Event) -> None:
    """Run one serial terminal until `stop` is set."""
    service = BridgeService(settings)
    service.start()
    log.info(
        "bridge for %s/%s on %s (state and outbox in %s)",
        settings.hall,
        settings.device,
        settings.port,
        settings.data_dir,
    )
    last_report = 0.0
    while not stop.wait(1.0):
        if time.monotonic() - last_report > 60:
            last_report = time.monotonic()
            st = service.bridge.state()
            log.info(
                "port %s %s; board %s; outbox backlog %d",
                st.port,
                "open" if st.port_open else "closed",
                f"{st.board.ident} fw {st.board.firmware}" if st.board else "none",
                service.outbox.backlog(),
            )
    service.stop()
