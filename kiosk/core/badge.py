"""A badge reader types a staff number and Enter like a keyboard: tell it from a person typing."""

import time
from collections.abc import Callable

BADGE_GAP_S = 1.0  # a badge reader types a whole number faster than this between keys
# SDL key codes (as Kivy reports them): digits of the main row and of the keypad, Enter.
DIGIT_KEYS = {**{48 + d: str(d) for d in range(10)}, **{256 + d: str(d) for d in range(10)}}
ENTER_KEYS = (13, 271)
MAX_DIGITS = 32


class BadgeReader:
    """Collects quickly typed digits; Enter hands over the number read."""

    def __init__(
        self, gap_s: float = BADGE_GAP_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Read badges whose keys come closer than `gap_s` apart."""
        self.gap_s = gap_s
        self.clock = clock
        self._digits = ""
        self._last = 0.0

    def key(self, code: int) -> tuple[bool, str | None]:
        """Take one key: (whether it was the reader's, the staff number once Enter completes it)."""
        now = self.clock()
        if now - self._last > self.gap_s:
            self._digits = ""
        self._last = now
        if code in DIGIT_KEYS:
            self._digits = (self._digits + DIGIT_KEYS[code])[-MAX_DIGITS:]
            return True, None
        if code in ENTER_KEYS:
            staff, self._digits = self._digits, ""
            return True, staff or None
        return False, None
