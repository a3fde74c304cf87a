"""What the terminal shows and what a press does: the kiosk's behaviour without a window.

The Kivy screens, the GPIO panel, the serial board and the simulator are thin: they call
these methods (through `kiosk.core.terminal.Terminal`) and draw `view()`.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

from kiosk.core.outbox import StorageFull
from kiosk.core.recorder import Recorded, Recorder
from protocol.messages import FLAG_REPEAT, DeviceConfig, InputKind, ReasonOption
from protocol.scales import offers_reasons

log = logging.getLogger(__name__)


class Screen(StrEnum):
    """The screens of the terminal."""

    WELCOME = "welcome"
    RATING = "rating"
    REASONS = "reasons"
    THANKS = "thanks"
    PAUSED = "paused"
    FULL = "full"  # the data disk is full: ratings refused until space returns


class Refusal(StrEnum):
    """Why a press was not taken."""

    PAUSED = "paused"
    NO_PROMPT = "no_prompt"
    BUSY = "busy"  # no longer given: a press on the reasons screen ends it and is taken
    INVALID = "invalid"
    STORAGE_FULL = "storage_full"


@dataclass(frozen=True, slots=True)
class Prompt:
    """An open per-service prompt: one rating, bound to this ticket, item and clerk."""

    ticket: str | None
    item: str | None
    staff: str | None
    deadline: float


@dataclass(frozen=True, slots=True)
class PressResult:
    """The outcome of a press."""

    recorded: Recorded | None
    refusal: Refusal | None = None
    repeat: bool = False

    @property
    def accepted(self) -> bool:
        """True when the rating was committed to the outbox."""
        return self.recorded is not None


@dataclass(frozen=True, slots=True)
class View:
    """Everything a screen needs to draw."""

    screen: Screen
    scale: int
    language: str
    window: str
    window_name: str | None
    staff: str | None
    staff_name: str | None
    reasons: tuple[ReasonOption, ...]
    prompt: Prompt | None
    identify: bool
    storage_full: bool = False
    asking: int | None = None  # seq of the negative rating whose reasons are asked now


class KioskSession:
    """Thread-safe state machine driven by touches, buttons, MQTT commands and a ticking clock."""

    def __init__(
        self,
        recorder: Recorder,
        config: DeviceConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        thanks_s: float = 2.0,
        reasons_timeout_s: float = 10.0,
        identify_s: float = 10.0,
        asks_reasons: bool = True,
        on_change: Callable[[], None] | None = None,
        on_thanks: Callable[[], None] | None = None,
        on_storage: Callable[[bool], None] | None = None,
    ) -> None:
        """Start on the idle screen of `config`'s prompt mode.

        `asks_reasons=False` is for a terminal without a screen to pick reasons on (serial
        board, simulator): a negative rating goes out at once instead of being held.
        A held negative goes out at the first of: the reasons confirmed, the reasons timeout,
        the next press or prompt, a pause; never later than a positive pressed after it.
        """
        self.recorder = recorder
        self.clock = clock
        self.thanks_s = thanks_s
        self.reasons_timeout_s = reasons_timeout_s
        self.identify_s = identify_s
        self.asks_reasons = asks_reasons
        self.on_change = on_change
        self.on_thanks = on_thanks
        self.on_storage = on_storage  # told at once when the disk fills or has room again
        self._lock = threading.RLock()
        self.config = config
        self._apply_identity(config)
        self.paused = False
        self.staff: str | None = None
        self.prompt_open: Prompt | None = None
        self._full = recorder.outbox.storage_full()
        self._screen = self._idle()
        self._until: float | None = None  # when THANKS or REASONS ends
        self._held: int | None = None  # seq waiting for its reasons
        self._picked: list[str] = []  # reasons ticked so far on the reasons screen
        self._last_press: float | None = None
        self._identify_until = 0.0
        self._unreleased: list[tuple[int, list[str]]] = []  # releases a full disk refused

    # --- queries ---

    @property
    def screen(self) -> Screen:
        """The screen shown now."""
        return self._screen

    def view(self) -> View:
        """A snapshot for drawing."""
        with self._lock:
            cfg = self.config
            names = {s.staff: s.name for s in cfg.staff}
            return View(
                screen=self._screen,
                scale=cfg.scale,
                language=cfg.language,
                window=cfg.window,
                window_name=cfg.window_name,
                staff=self.staff,
                staff_name=names.get(self.staff) if self.staff else None,
                reasons=tuple(cfg.reasons),
                prompt=self.prompt_open,
                identify=self.clock() < self._identify_until,
                storage_full=self._full,
                asking=self._held,
            )

    # --- inputs ---

    def press(self, level: int, input_: InputKind) -> PressResult:
        """A rating button or touch: record it if this screen takes ratings now."""
        with self._lock:
            self._watch_storage()
            if self._full:
                return self._refuse_full()
            if self.paused:
                return PressResult(None, Refusal.PAUSED)
            mode = self.config.prompt_mode
            if self._screen is Screen.REASONS and not (
                mode == "per_service" and self.prompt_open is None
            ):
                # The next press ends the reasons screen (never refused): the held negative
                # goes out first, with the reasons ticked so far, then this press is taken.
                self._close_reasons()
            if mode == "per_service" and (
                self.prompt_open is None or self._screen is not Screen.RATING
            ):
                return PressResult(None, Refusal.NO_PROMPT)
            now = self.clock()
            prompt = self.prompt_open
            repeat = (
                mode == "always"
                and self._last_press is not None
                and now - self._last_press < self.config.repeat_interval_s
            )
            scale = self.config.scale
            low = offers_reasons(scale, level) if 1 <= level <= scale else False
            ask = self.asks_reasons and low and bool(self.config.reasons) and not repeat
            try:
                rec = self.recorder.record(
                    level,
                    input=input_,
                    prompted=prompt is not None,
                    staff=(prompt.staff if prompt and prompt.staff else self.staff),
                    ticket=prompt.ticket if prompt else None,
                    item=prompt.item if prompt else None,
                    reasons=[FLAG_REPEAT] if repeat else [],
                    held=ask,
                )
            except ValueError as exc:
                log.warning("press refused: %s", exc)
                return PressResult(None, Refusal.INVALID)
            except StorageFull:
                if not self._full:
                    self._full = True
                    if self.on_storage is not None:
                        self.on_storage(True)
                return self._refuse_full()
            self._last_press = now
            self.prompt_open = None
            if ask:
                self._held = rec.seq
                self._picked = []
                self._show(Screen.REASONS, now + self.reasons_timeout_s)
            else:
                self._thank(now)
            return PressResult(rec, repeat=repeat)

    def choose_reasons(self, codes: list[str]) -> None:
        """The person picked follow-up reasons (or none) after a negative rating."""
        with self._lock:
            if self._held is None:
                return
            self._picked = list(codes)
            self._release_held()
            self._thank(self.clock())

    def pick_reasons(self, codes: list[str]) -> None:
        """The reasons ticked so far: sent with the rating if the screen ends unconfirmed."""
        with self._lock:
            if self._held is not None:
                self._picked = list(codes)

    def prompt(
        self, ticket: str | None = None, item: str | None = None, staff: str | None = None
    ) -> bool:
        """Open the rating screen for one service (clerk's button, MQTT `prompt`, queue system)."""
        with self._lock:
            if self.paused:
                return False
            self._close_reasons()  # the next service's prompt ends the reasons screen
            self._watch_storage()
            if self._full:
                log.warning("prompt refused: storage full")
                return False
            now = self.clock()
            self.prompt_open = Prompt(
                ticket, item, staff or self.staff, now + self.config.prompt_timeout_s
            )
            self.recorder.event("prompt_shown", staff=staff or self.staff, ticket=ticket, item=item)
            self._show(Screen.RATING)
            return True

    def pause(self) -> None:
        """Stop taking ratings (暂停服务)."""
        with self._lock:
            if self.paused:
                return
            self.paused = True
            self.prompt_open = None
            self._release_held()
            self.recorder.event("pause", staff=self.staff)
            self._show(Screen.PAUSED)

    def resume(self) -> None:
        """Take ratings again."""
        with self._lock:
            if not self.paused:
                return
            self.paused = False
            self.recorder.event("resume", staff=self.staff)
            self._show(self._idle())

    def login(self, staff: str) -> None:
        """A clerk starts a shift at this window."""
        with self._lock:
            if self.staff == staff:
                return
            if self.staff is not None:
                self.recorder.event("staff_logout", staff=self.staff)
            self.staff = staff
            self.recorder.event("staff_login", staff=staff)
            self._changed()

    def logout(self) -> None:
        """The clerk ends the shift."""
        with self._lock:
            if self.staff is None:
                return
            self.recorder.event("staff_logout", staff=self.staff)
            self.staff = None
            self._changed()

    def identify(self) -> None:
        """Flash the screen so the operator can find this device."""
        with self._lock:
            self._identify_until = self.clock() + self.identify_s
            self._changed()

    def apply_config(self, config: DeviceConfig) -> None:
        """Take a new configuration from the centre (relabels the buttons live)."""
        with self._lock:
            self.config = config
            self._apply_identity(config)
            if self._screen in (Screen.WELCOME, Screen.RATING) and self.prompt_open is None:
                self._screen = self._idle()
            self._changed()

    def tick(self) -> None:
        """Advance timeouts: thank-you, reasons, per-service prompt, identify; watch the disk."""
        with self._lock:
            now = self.clock()
            self._watch_storage()
            if self._unreleased and not self._full:
                pending, self._unreleased = self._unreleased, []
                for seq, codes in pending:
                    self._release(seq, codes)
            if self._until is not None and now >= self._until:
                if self._screen is Screen.REASONS:
                    self.recorder.event("reasons_timeout", staff=self.staff)
                    self._release_held()
                self._until = None
                self._show(self._idle())
            p = self.prompt_open
            if p is not None and now >= p.deadline and self._screen is Screen.RATING:
                self.prompt_open = None
                self.recorder.event("prompt_timeout", staff=p.staff, ticket=p.ticket, item=p.item)
                self._show(self._idle())
            if self._identify_until and now >= self._identify_until:
                self._identify_until = 0.0
                self._changed()

    # --- internals ---

    def _apply_identity(self, config: DeviceConfig) -> None:
        """Point the recorder at the configured window and scale."""
        self.recorder.identity = replace(
            self.recorder.identity, window=config.window, scale=config.scale
        )

    def _idle(self) -> Screen:
        """The resting screen: full disk, paused, or rating (always) / welcome (per service)."""
        if self._full:
            return Screen.FULL
        if self.paused:
            return Screen.PAUSED
        return Screen.RATING if self.config.prompt_mode == "always" else Screen.WELCOME

    def _thank(self, now: float) -> None:
        """Show the thank-you screen for a moment."""
        self._show(Screen.THANKS, now + self.thanks_s)
        if self.on_thanks is not None:
            self.on_thanks()

    def _release_held(self) -> None:
        """Send the held rating with the configured reasons picked so far (if any)."""
        if self._held is not None:
            allowed = {r.code for r in self.config.reasons}
            self._release(self._held, [c for c in self._picked if c in allowed])
            self._held = None
            self._picked = []

    def _close_reasons(self) -> None:
        """Leave the reasons screen early (next press or prompt): send the held rating now."""
        if self._screen is Screen.REASONS:
            self._release_held()
            self._show(self._idle())

    def _release(self, seq: int, codes: list[str]) -> None:
        """Let a held rating go out; a full disk keeps it for the next tick (it is stored)."""
        try:
            self.recorder.outbox.release(seq, codes)
        except StorageFull:
            log.error("rating seq %s stays held until the disk has room to release it", seq)
            self._full = True
            self._unreleased.append((seq, codes))
            return
        self.recorder.wake()

    def _watch_storage(self) -> None:
        """Re-read whether the disk is full (checked once a second); switch screens on a change."""
        full = self.recorder.outbox.storage_full()
        if full == self._full:
            return
        self._full = full
        if not full and not self.paused:
            # The status said `paused` while the disk was full, and scores take a status's
            # time as the gateway received it: a broker unreachable now would stretch that
            # pause over the ratings pressed until it returns. A `resume` event carries the
            # device's own time of the recovery and closes the pause there
            # (server.scores.source.read_pauses).
            self.recorder.event("resume", staff=self.staff)
        if self.on_storage is not None:  # before any press is taken again (status first)
            self.on_storage(full)
        if full and self._screen in (Screen.WELCOME, Screen.RATING):
            self._show(Screen.FULL)
        elif not full and self._screen is Screen.FULL:
            self._show(Screen.RATING if self.prompt_open is not None else self._idle())

    def _refuse_full(self) -> PressResult:
        """Refuse a press visibly: the storage-full screen replaces the rating keys."""
        log.warning("press refused: storage full")
        if self._screen is not Screen.REASONS:
            self._show(Screen.FULL)
        return PressResult(None, Refusal.STORAGE_FULL)

    def _show(self, screen: Screen, until: float | None = None) -> None:
        """Switch screens and tell the UI."""
        self._screen = screen
        self._until = until
        self._changed()

    def _changed(self) -> None:
        """Notify the UI (from whatever thread)."""
        if self.on_change is not None:
            self.on_change()
