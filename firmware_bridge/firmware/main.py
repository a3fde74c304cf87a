"""WindowRate button board: reference firmware for an RP2040 (MicroPython), docs/serial-protocol.md.

Copy this file to the board as main.py (e.g. `mpremote cp main.py :main.py`). The protocol part
(CRC, COBS, frames, the Board class) uses only what MicroPython and CPython share, so the test
suite runs it on CPython against the real bridge; `main()` wires it to pins on the board.
Type hints are comments, which MicroPython ignores and mypy reads.
"""

import struct
import time

try:  # noqa: SIM105  (MicroPython has no contextlib)
    from collections.abc import Callable  # noqa: F401  (named in type comments; CPython only)
except ImportError:  # MicroPython
    pass

VERSION = "1.0.0"
PROTOCOL_VERSION = 1
HELLO, PRESS, ACK, LED, BUZZER, HEARTBEAT, ERROR = 1, 2, 3, 4, 5, 6, 7
FROM_HOST = (HELLO, ACK, LED, BUZZER, HEARTBEAT, ERROR)
LED_OFF, LED_ON, LED_BLINK = 0, 1, 2
ERR_QUEUE_FULL, ERR_UNKNOWN_BOOT = 1, 3
MAX_ENCODED = 67  # the longest frame (HELLO) after COBS
PAYLOAD_LEN = {ACK: 9, LED: 4, BUZZER: 4, HEARTBEAT: 9}  # HELLO and ERROR: variable


def _plain_diff(a, b):
    # type: (int, int) -> int
    """Milliseconds from b to a on a clock that does not wrap (CPython)."""
    return a - b


def _plain_add(a, b):
    # type: (int, int) -> int
    """a + b milliseconds on a clock that does not wrap (CPython)."""
    return a + b


# MicroPython's ticks_ms() wraps around: ticks_add() and ticks_diff() work across the wrap.
ticks_diff = getattr(time, "ticks_diff", None) or _plain_diff
ticks_add = getattr(time, "ticks_add", None) or _plain_add


def crc16(data):
    # type: (bytes) -> int
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor."""
    crc = 0xFFFF
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def cobs_encode(data):
    # type: (bytes) -> bytes
    """COBS-encode `data` (no zero byte in the result)."""
    out = bytearray(b"\x00")
    code_at, code = 0, 1
    for b in data:
        if b == 0:
            out[code_at] = code
            code_at, code = len(out), 1
            out.append(0)
            continue
        out.append(b)
        code += 1
        if code == 0xFF:
            out[code_at] = code
            code_at, code = len(out), 1
            out.append(0)
    out[code_at] = code
    return bytes(out)


def cobs_decode(data):
    # type: (bytes) -> bytes | None
    """COBS-decode one frame; None if it is malformed."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0 or i + code > n:
            return None
        for j in range(i + 1, i + code):
            if data[j] == 0:
                return None
            out.append(data[j])
        i += code
        if code < 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode_frame(seq, kind, payload):
    # type: (int, int, bytes) -> bytes
    """Bytes for the line: 0x00, COBS(version, type, seq, payload, CRC big-endian), 0x00."""
    body = struct.pack("<BBH", PROTOCOL_VERSION, kind, seq & 0xFFFF) + payload
    crc = crc16(body)
    return b"\x00" + cobs_encode(body + bytes(((crc >> 8) & 0xFF, crc & 0xFF))) + b"\x00"


def decode_frame(encoded):
    # type: (bytes) -> tuple[int, int, bytes] | None
    """(type, seq, payload) of a frame from the host, or None if any check fails."""
    if len(encoded) > MAX_ENCODED:
        return None
    raw = cobs_decode(encoded)
    if raw is None or len(raw) < 6:
        return None
    body = raw[:-2]
    if crc16(body) != (raw[-2] << 8) | raw[-1]:
        return None
    version, kind, seq = struct.unpack("<BBH", body[:4])
    payload = body[4:]
    if version != PROTOCOL_VERSION or kind not in FROM_HOST:
        return None
    want = PAYLOAD_LEN.get(kind)
    if want is not None and len(payload) != want:
        return None
    return kind, seq, payload


def hello_payload(boot, buttons, acked_through, board_id, firmware):
    # type: (int, int, int, str, str) -> bytes
    """The payload of this board's HELLO."""
    ident, fw = board_id.encode(), firmware.encode()
    head = struct.pack("<IBI", boot, buttons, acked_through)
    return head + bytes((len(ident),)) + ident + bytes((len(fw),)) + fw


class Board:
    """The protocol state of one board: press queue, retransmission, HELLO, LEDs, buzzer."""

    def __init__(
        self,
        write,  # type: Callable[[bytes], object]
        board_id,  # type: str
        boot,  # type: int
        buttons,  # type: int
        now,  # type: int
        set_led=None,  # type: Callable[[int, bool], None] | None
        buzz=None,  # type: Callable[[int, int], None] | None
        retry_ms=150,  # type: int
        window=4,  # type: int
        heartbeat_ms=1000,  # type: int
        queue_size=32,  # type: int
    ):
        # type: (...) -> None
        """Create; `write` puts bytes on the line, `now` is the current ticks_ms()."""
        self.write = write
        self.board_id = board_id
        self.boot = boot
        self.buttons = buttons
        self.set_led = set_led
        self.buzz = buzz
        self.retry_ms = retry_ms
        self.window = window
        self.heartbeat_ms = heartbeat_ms
        self.queue_size = queue_size
        self.started = now
        self.seq = 0
        self.last_press = 0
        self.pending = []  # type: list[list[int]]  # [press, level, tries, due]
        self.introduced = False
        self.hello_due = now
        self.heartbeat_due = now
        self.host_seen = None  # type: int | None
        self.led_until = [None] * (buttons + 1)  # type: list[int | None]
        self.led_blink = [False] * (buttons + 1)
        self.rx = bytearray()
        self.rx_discard = False
        self.rx_errors = 0

    # --- events from the hardware loop ---

    def press(self, level, now):
        # type: (int, int) -> int
        """A button was pressed: queue it (sent at once); return its number, 0 if refused."""
        if len(self.pending) >= self.queue_size:
            self.send(ERROR, struct.pack("<BHB", ERR_QUEUE_FULL, 0, 0))
            return 0
        self.last_press += 1
        self.pending.append([self.last_press, level, 0, now])
        return self.last_press

    def feed(self, data, now):
        # type: (bytes, int) -> None
        """Bytes from the host: split at 0x00 and act on every valid frame."""
        for b in data:
            if b != 0:
                if len(self.rx) < MAX_ENCODED:
                    self.rx.append(b)
                else:
                    self.rx_discard = True
                continue
            if self.rx and not self.rx_discard:
                frame = decode_frame(bytes(self.rx))
                if frame is None:
                    self.rx_errors += 1
                else:
                    self.handle(frame[0], frame[2], now)
            self.rx = bytearray()
            self.rx_discard = False

    def tick(self, now):
        # type: (int) -> None
        """Retransmit what is due, say HELLO until ACKed, heartbeat, run LED timers."""
        if not self.introduced and ticks_diff(now, self.hello_due) >= 0:
            self.say_hello(now)
        for entry in self.pending[: self.window]:
            if ticks_diff(now, entry[3]) >= 0:
                entry[2] = min(entry[2] + 1, 255)
                entry[3] = ticks_add(now, self.retry_ms)
                self.send(PRESS, struct.pack("<IIBB", self.boot, entry[0], entry[1], entry[2]))
        if ticks_diff(now, self.heartbeat_due) >= 0:
            self.heartbeat_due = ticks_add(now, self.heartbeat_ms)
            uptime = ticks_diff(now, self.started) & 0xFFFFFFFF
            self.send(
                HEARTBEAT, struct.pack("<IIB", self.boot, uptime, min(len(self.pending), 255))
            )
        for led in range(1, self.buttons + 1):
            until = self.led_until[led]
            if until is not None and ticks_diff(now, until) >= 0:
                self.led_until[led] = None
                self.led_blink[led] = False
                self.led(led, False)
            elif self.led_blink[led]:
                self.led(led, (now // 250) % 2 == 0)

    # --- protocol ---

    def acked_through(self):
        # type: () -> int
        """Every press up to this number has been ACKed."""
        return self.pending[0][0] - 1 if self.pending else self.last_press

    def send(self, kind, payload):
        # type: (int, bytes) -> None
        """Put one frame on the line."""
        self.seq = (self.seq + 1) & 0xFFFF
        self.write(encode_frame(self.seq, kind, payload))

    def say_hello(self, now):
        # type: (int) -> None
        """Send HELLO, again every retry until the host ACKs it."""
        self.introduced = False
        self.hello_due = ticks_add(now, self.retry_ms)
        payload = hello_payload(
            self.boot, self.buttons, self.acked_through(), self.board_id, VERSION
        )
        self.send(HELLO, payload)

    def handle(self, kind, payload, now):
        # type: (int, bytes, int) -> None
        """Act on one valid frame from the host."""
        self.host_seen = now
        if kind == HELLO:
            self.say_hello(now)
        elif kind == ACK:
            boot, press, _status = struct.unpack("<IIB", payload)
            if boot != self.boot:
                return
            self.introduced = True
            for i, entry in enumerate(self.pending):
                if entry[0] == press:
                    del self.pending[i]
                    break
        elif kind == LED:
            led, mode, duration = struct.unpack("<BBH", payload)
            targets = range(1, self.buttons + 1) if led == 0 else (led,)
            for k in targets:
                if 1 <= k <= self.buttons:
                    self.led(k, mode != LED_OFF)
                    self.led_blink[k] = mode == LED_BLINK
                    self.led_until[k] = (
                        ticks_add(now, duration) if duration and mode != LED_OFF else None
                    )
        elif kind == BUZZER:
            freq, duration = struct.unpack("<HH", payload)
            if self.buzz is not None:
                self.buzz(freq, duration)
        elif kind == ERROR and payload and payload[0] == ERR_UNKNOWN_BOOT:
            self.say_hello(now)

    def led(self, k, on):
        # type: (int, bool) -> None
        """Switch the LED of button k."""
        if self.set_led is not None:
            self.set_led(k, on)


# --- the board (MicroPython only) ---

BUTTON_PINS = (2, 3, 4, 5, 6)  # GP2 … GP6: level 1 (worst) … 5 (best), to GND
LED_PINS = (10, 11, 12, 13, 14)  # GP10 … GP14: the LED of each button, via 330 Ω
BUZZER_PIN = 15  # GP15: passive buzzer (through a transistor)
STATUS_LED_PIN = 25  # the Pico's own LED: on = host talking, blinking = no host
LINK = "usb"  # "usb": USB CDC (sys.stdin/stdout); "uart": UART0 on GP0 (TX) / GP1 (RX)
BAUD = 115200
DEBOUNCE_MS = 20  # a button must read the same for this long to change state
SAMPLE_MS = 5


def main():
    # type: () -> None
    """Run the board: read buttons, talk to the host, drive LEDs and the buzzer."""
    import os

    import machine  # type: ignore[import-not-found]

    buttons = [machine.Pin(p, machine.Pin.IN, machine.Pin.PULL_UP) for p in BUTTON_PINS]
    leds = [machine.Pin(p, machine.Pin.OUT, value=0) for p in LED_PINS]
    status = machine.Pin(STATUS_LED_PIN, machine.Pin.OUT, value=0)
    pwm = machine.PWM(machine.Pin(BUZZER_PIN))
    pwm.duty_u16(0)
    buzz_until = [None]  # type: list[int | None]

    def set_led(k, on):
        # type: (int, bool) -> None
        """Switch LED k."""
        leds[k - 1].value(1 if on else 0)

    def buzz(freq, duration):
        # type: (int, int) -> None
        """Sound the buzzer at `freq` Hz for `duration` ms (0: silence)."""
        if freq == 0 or duration == 0:
            pwm.duty_u16(0)
            buzz_until[0] = None
            return
        pwm.freq(freq)
        pwm.duty_u16(32768)
        buzz_until[0] = ticks_add(time.ticks_ms(), duration)  # type: ignore[attr-defined]

    if LINK == "uart":
        uart = machine.UART(0, baudrate=BAUD, tx=machine.Pin(0), rx=machine.Pin(1))
        write = uart.write

        def read():
            # type: () -> bytes
            """What the UART has received."""
            n = uart.any()
            return uart.read(n) if n else b""
    else:
        import select
        import sys

        import micropython  # type: ignore[import-not-found]

        micropython.kbd_intr(-1)  # 0x03 in a frame must not raise KeyboardInterrupt
        poll = select.poll()
        poll.register(sys.stdin, select.POLLIN)
        out = sys.stdout.buffer

        def write(data):
            # type: (bytes) -> None
            """Send on USB."""
            out.write(data)

        def read():
            # type: () -> bytes
            """What USB has received (up to 64 bytes, never blocking)."""
            got = bytearray()
            while len(got) < 64 and poll.poll(0):
                got += sys.stdin.buffer.read(1)
            return bytes(got)

    boot = struct.unpack("<I", os.urandom(4))[0] or 1
    uid = "".join(f"{b:02x}" for b in machine.unique_id())
    now = time.ticks_ms()  # type: ignore[attr-defined]
    board = Board(write, "rp2040-" + uid, boot, len(BUTTON_PINS), now, set_led, buzz)
    stable = [1] * len(buttons)  # pulled up: 1 = released
    since = [now] * len(buttons)
    while True:
        now = time.ticks_ms()  # type: ignore[attr-defined]
        data = read()
        if data:
            board.feed(data, now)
        for i, pin in enumerate(buttons):
            v = pin.value()
            if v == stable[i]:
                since[i] = now
            elif ticks_diff(now, since[i]) >= DEBOUNCE_MS:
                stable[i] = v
                held = sum(1 for s in stable if s == 0)
                if v == 0 and held == 1:  # a press, and no other button held
                    board.press(i + 1, now)
        board.tick(now)
        if buzz_until[0] is not None and ticks_diff(now, buzz_until[0]) >= 0:
            buzz(0, 0)
        host_ok = board.host_seen is not None and ticks_diff(now, board.host_seen) < 3000
        status.value(1 if host_ok or (now // 500) % 2 else 0)
        time.sleep_ms(SAMPLE_MS)  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
