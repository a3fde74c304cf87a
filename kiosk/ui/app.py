"""The Kivy app of the terminal: draws the session's view, forwards touches, keys and timers."""

import logging
import re
import shutil
import subprocess
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from kivy.app import App
from kivy.clock import Clock
from kivy.core.window import Window
from kivy.graphics import Color, Line
from kivy.metrics import mm
from kivy.uix.floatlayout import FloatLayout
from kivy.uix.screenmanager import NoTransition, ScreenManager

from kiosk.core.badge import BadgeReader
from kiosk.core.local_setup import SetupForm
from kiosk.core.session import Screen
from kiosk.core.setup import Note
from kiosk.device import Kiosk
from kiosk.ui import theme
from kiosk.ui.i18n import tr
from kiosk.ui.keyboards import Keypad, TextEntry
from kiosk.ui.screen_base import KioskScreen
from kiosk.ui.screens import SCREENS, ReasonsScreen
from kiosk.ui.widgets import Badge, Targets

log = logging.getLogger(__name__)
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

SCREEN_HISTORY = 5000
OFFLINE_GRACE_S = 3.0  # no offline badge while the first connection is still being made


class KioskApp(App):  # type: ignore[misc]
    """The touchscreen of one terminal; behaviour lives in the Terminal and SetupController."""

    title = "WindowRate"

    def __init__(self, kiosk: Kiosk, *, tick_s: float = 0.1, **kwargs: Any) -> None:
        """Create the app for `kiosk` (call `run()` to open the window)."""
        super().__init__(**kwargs)
        self.kiosk = kiosk
        self.terminal = kiosk.terminal
        self.setup = kiosk.setup
        self.session = kiosk.terminal.session
        self.tick_s = tick_s
        self.targets: Targets = {}
        # The screens shown, newest last (bounded: a kiosk runs for months).
        self.screen_history: deque[str] = deque(maxlen=SCREEN_HISTORY)
        self.unit = 1.0
        self.setup_enabled = self.setup.enabled
        self.touch_enabled = kiosk.settings.touch
        self.screens: dict[str, KioskScreen] = {}
        self.keypad: Keypad | None = None
        self.redraw_pending = False
        self.entry: TextEntry | None = None
        self.badge_reader = BadgeReader()
        self._shown: str | None = None
        self._lang = self.session.view().language
        self._reasons_deadline = 0.0
        self._asking: int | None = None  # the held rating the reasons screen was reset for
        self._identify = False
        self._blink_on = False
        self._started = time.monotonic()
        self.terminal.dispatch = self.call_soon
        self._player: subprocess.Popen[bytes] | None = None  # the voice playing (aplay)
        self._warned_no_player = False

    @property
    def setup_open(self) -> bool:
        """True while the setup form is shown."""
        return self.setup.is_open

    @property
    def setup_form(self) -> SetupForm | None:
        """The setup form being edited."""
        return self.setup.form

    @property
    def restart_requested(self) -> bool:
        """True once a saved setup or provisioning asks for a fresh start."""
        return self.setup.restart_requested

    # --- thread-safe entry points ---

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the UI thread at the next frame (safe from any thread)."""
        Clock.schedule_once(lambda _dt: fn(), 0)

    def request_redraw(self) -> None:
        """The session changed (any thread): redraw at the next frame."""
        if not self.redraw_pending:
            self.redraw_pending = True
            Clock.schedule_once(self.redraw, 0)

    # --- building ---

    def build(self) -> Any:
        """Create the screens, the offline badge and the identify border."""
        theme.register_font()
        Window.clearcolor = theme.BACKGROUND
        # Sizes are designed for 1024×600 (7"); either orientation scales from that.
        long_side, short_side = max(Window.size), min(Window.size)
        self.unit = min(long_side / 1024, short_side / 600)
        u = self.unit
        root = FloatLayout()
        self.manager = ScreenManager(transition=NoTransition())
        for cls in SCREENS:
            screen = cls(self)
            self.screens[screen.name] = screen
            self.manager.add_widget(screen)
        root.add_widget(self.manager)
        self.badge = Badge(font_size=u * 20, pos_hint={"right": 0.99, "y": 0.012}, opacity=0)
        root.add_widget(self.badge)
        with root.canvas.after:
            self._identify_color = Color(*theme.IDENTIFY[:3], 0)
            self._identify_line = Line(rectangle=(0, 0, 10, 10), width=u * 6)
        root.bind(size=self._frame, pos=self._frame)
        return root

    def _frame(self, root: Any, *_: Any) -> None:
        """Keep the identify border on the window's edge."""
        w = self._identify_line.width
        self._identify_line.rectangle = (
            root.x + w,
            root.y + w,
            root.width - 2 * w,
            root.height - 2 * w,
        )

    def on_start(self) -> None:
        """Start the timers, the keyboard (badge reader) and the broker connection."""
        self.session.on_change = self.request_redraw
        Clock.schedule_interval(lambda _dt: self.session.tick(), self.tick_s)
        Clock.schedule_interval(self._each_second, 1.0)
        Clock.schedule_interval(self._blink, 0.35)
        Clock.schedule_interval(self._reasons_tick, 0.25)
        Window.bind(on_key_down=self._on_key_down)
        self.kiosk.peripherals.play = self._play
        self.kiosk.start()
        self.redraw()
        Clock.schedule_once(self._check_key_size, 2.0)

    def _check_key_size(self, _dt: float) -> None:
        """Warn when the laid-out rating keys are under MIN_TARGET_MM (wrong dpi, tiny screen)."""
        need = mm(theme.MIN_TARGET_MM)
        sizes = [min(b.size) for b in self._rating_buttons()]
        log.info(
            "window %sx%s; %s mm = %.0f px", Window.width, Window.height, theme.MIN_TARGET_MM, need
        )
        if self._shown == Screen.RATING.value and sizes and min(sizes) < need:
            log.warning("rating keys are %.0f px, under %s mm", min(sizes), theme.MIN_TARGET_MM)

    def _play(self, path: Any) -> None:
        """Play a voice recording with ALSA's `aplay`, in a process of its own (UI thread).

        Out of the kiosk process: Kivy's SDL2 audio inside it cost 3.6 MB of resident memory
        for two short recordings (`windowrate bench kiosk`: 53.5 → 49.9 MB over a bare Kivy
        window). A new recording cuts the one still playing; without a sound card `aplay`
        exits at once and the kiosk stays silent.
        """
        aplay = shutil.which("aplay")
        if aplay is None:
            if not self._warned_no_player:
                log.warning("cannot play voice: no aplay (apt-get install alsa-utils)")
                self._warned_no_player = True
            return
        self._stop_player()
        log.info("playing %s", path)
        self._player = subprocess.Popen(
            [aplay, "-q", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _stop_player(self) -> None:
        """End (and reap) the recording still playing, if any."""
        player, self._player = self._player, None
        if player is not None and player.poll() is None:
            player.terminate()
            player.wait(5)

    def on_stop(self) -> None:
        """Stop the voice, disconnect and close the outbox."""
        self._stop_player()
        self.kiosk.stop()

    # --- drawing ---

    def redraw(self, *_: Any) -> None:
        """Draw the session's view on the screen it names."""
        self.redraw_pending = False
        view = self.session.view()
        name = "setup" if self.setup_open else view.screen.value
        if name == Screen.REASONS.value and (self._shown != name or view.asking != self._asking):
            # A new negative (also one pressed on a button while the screen was up): a fresh
            # choice and countdown.
            self._asking = view.asking
            self._reasons_deadline = time.monotonic() + self.session.reasons_timeout_s
            screen = self.screens[name]
            assert isinstance(screen, ReasonsScreen)
            screen.reset()
        self.screens[name].update(view)
        if self._shown != name:
            if self.keypad is not None and name != "setup":
                self.keypad.close()
                self.keypad = None
            self.manager.current = name
            self._shown = name
            self.screen_history.append(name)
            log.info("screen %s", name)
        self._lang = view.language
        self._identify = view.identify
        self._refresh_badge()

    @property
    def shown(self) -> str | None:
        """The screen on display."""
        return self._shown

    def _rating_buttons(self) -> list[Any]:
        """The rating keys now on the rating screen."""
        return [w for k, w in self.targets.items() if k.startswith("rating.")]

    def _each_second(self, _dt: float) -> None:
        """Refresh the offline badge and close an idle setup screen."""
        self._refresh_badge()
        if self.setup.idle():
            self.close_setup()

    def _refresh_badge(self) -> None:
        """Show "离线 · n 条待发送" while the broker is unreachable."""
        offline = not self.terminal.connected and time.monotonic() - self._started > OFFLINE_GRACE_S
        if offline:
            self.badge.text = tr(self._lang, "offline", n=self.terminal.outbox.backlog())
        self.badge.opacity = 1 if offline else 0

    @property
    def offline_shown(self) -> bool:
        """True while the offline badge is visible."""
        return bool(self.badge.opacity > 0)

    def _blink(self, _dt: float) -> None:
        """Flash the border (two alternating colours) while the centre asks for identification."""
        self._blink_on = not self._blink_on
        rgb = theme.IDENTIFY if self._blink_on else theme.OKABE_ITO["orange"]
        self._identify_color.rgba = (*rgb[:3], 1.0 if self._identify else 0.0)

    def _reasons_tick(self, _dt: float) -> None:
        """Count down on the reasons screen."""
        if self._shown == Screen.REASONS.value:
            screen = self.screens[Screen.REASONS.value]
            assert isinstance(screen, ReasonsScreen)
            screen.tick()

    # --- touches from the screens ---

    def rate(self, level: int) -> None:
        """A rating key was touched."""
        self.terminal.press(level, "touch")

    def submit_reasons(self, codes: list[str]) -> None:
        """The person confirmed the follow-up reasons (possibly none)."""
        self.session.choose_reasons(codes)

    def pick_reasons(self, codes: list[str]) -> None:
        """The reasons ticked so far (sent if the screen times out or the next press ends it)."""
        self.session.pick_reasons(codes)

    def staff_photo(self, staff: str | None) -> str | None:
        """The clerk's photo from data_dir/photos/{staff}.png|jpg (provisioned with the roster)."""
        if staff is None or not _SAFE_NAME.fullmatch(staff):  # staff numbers become file names
            return None
        for ext in ("png", "jpg", "jpeg"):
            path = self.terminal.data_dir / "photos" / f"{staff}.{ext}"
            if path.is_file():
                return str(path)
        return None

    def reasons_left_s(self) -> float:
        """Seconds until the reasons screen submits by itself (the session's tick does it)."""
        return max(0.0, self._reasons_deadline - time.monotonic())

    # --- the clerk: keypad, badge reader, setup ---

    def open_staff_keypad(self) -> None:
        """Open the keypad to log in (or out)."""
        view = self.session.view()
        lang = view.language
        extra = None
        subtitle = ""
        if view.staff is not None:
            extra = ("logout", tr(lang, "keypad_logout"), self.session.logout)
            subtitle = tr(lang, "logged_in_as", staff=view.staff)
        self._open_keypad(
            Keypad(
                lang=lang,
                title=tr(lang, "keypad_login"),
                subtitle=subtitle,
                on_submit=self._keypad_login,
                targets=self.targets,
                unit=self.unit,
                extra=extra,
            )
        )

    def _keypad_login(self, staff: str) -> str | None:
        """Log in from the keypad; return an error text to show, or None."""
        if not self.terminal.login(staff):
            return tr(self._lang, "unknown_staff")
        return None

    def open_setup(self) -> None:
        """Ask for the setup PIN."""
        lang = self._lang
        self._open_keypad(
            Keypad(
                lang=lang,
                title=tr(lang, "keypad_pin"),
                on_submit=self._check_pin,
                targets=self.targets,
                unit=self.unit,
                masked=True,
            )
        )

    def _check_pin(self, pin: str) -> str | None:
        """Open the setup screen if `pin` is right."""
        if not self.setup.check_pin(pin):
            return tr(self._lang, "wrong_pin")
        Clock.schedule_once(self.redraw, 0)
        return None

    def close_setup(self) -> None:
        """Leave the setup screen, dropping unsaved edits."""
        if self.entry is not None:
            self.entry.close()
        self.setup.close()
        self.redraw()

    def edit_setup_field(self, name: str) -> None:
        """Open the on-screen keyboard for one field of the setup form."""
        form = self.setup_form
        if form is None:
            return
        self.setup.touch()
        lang = self._lang

        def done(text: str) -> None:
            self.setup.edit(name, text)
            self.redraw()

        self._open_entry(
            TextEntry(
                lang=lang,
                title=tr(lang, f"setup_{name}"),
                value=form.values[name],
                on_submit=done,
                targets=self.targets,
                unit=self.unit,
                masked=name == "password",
            )
        )

    def open_provisioning(self) -> None:
        """Ask for a provisioning code; redeem it in the background, then restart."""
        if self.setup_form is None:
            return
        lang = self._lang
        if not self.setup.may_provision():
            self.redraw()
            return
        self._open_entry(
            TextEntry(
                lang=lang,
                title=tr(lang, "provision_title"),
                value="",
                on_submit=self._provision,
                targets=self.targets,
                unit=self.unit,
                max_len=512,
            )
        )

    def _provision(self, text: str) -> None:
        """Redeem the code off the UI thread (network), then report and restart."""
        self.setup.provision(text, self._provisioned)
        self.redraw()

    def _provisioned(self, restart: bool) -> None:
        """Show the outcome; restart into the new setup after success."""
        self.redraw()
        if restart:
            Clock.schedule_once(lambda _dt: self.stop(), 0.8)

    def save_setup(self) -> None:
        """Check the form; save setup.json and restart, or show what to fix."""
        saved = self.setup.save()
        self.redraw()
        if saved:
            Clock.schedule_once(lambda _dt: self.stop(), 0.3)

    def setup_message(self, lang: str) -> str:
        """The first error of the form, or the save's outcome."""
        error = self.setup.first_error()
        if error is not None:
            name, why = error
            return f"{tr(lang, f'setup_{name}')}: {self._note(lang, why)}"
        note = self.setup.note
        return self._note(lang, note) if note is not None else tr(lang, "setup_edit_hint")

    @staticmethod
    def _note(lang: str, note: Note) -> str:
        """A setup note in `lang`."""
        return tr(lang, note.key, **note.values)

    def _open_entry(self, entry: TextEntry) -> None:
        """Show the on-screen keyboard on top of everything."""
        if self.entry is not None:
            self.entry.close()
        self.entry = entry
        entry.bind(on_dismiss=lambda _e: self._entry_closed(entry))
        entry.open(animation=False)

    def _entry_closed(self, entry: TextEntry) -> None:
        """Forget a closed on-screen keyboard."""
        if self.entry is entry:
            self.entry = None

    def setup_rows(self, lang: str) -> list[tuple[str, str]]:
        """Window, connection, backlog, last seq, mode, scale (identity and broker are the form)."""
        view = self.session.view()
        state = "setup_connected" if self.terminal.connected else "setup_disconnected"
        tls = " (TLS)" if self.kiosk.settings.mqtt.tls_ca else ""
        return [
            (tr(lang, "setup_window"), view.window),
            (tr(lang, "setup_state"), tr(lang, state) + tls),
            (tr(lang, "setup_backlog"), str(self.terminal.outbox.backlog())),
            (tr(lang, "setup_seq"), str(self.terminal.outbox.last_seq())),
            (tr(lang, "setup_mode"), tr(lang, f"mode_{self.session.config.prompt_mode}")),
            (tr(lang, "setup_scale"), str(view.scale)),
        ]

    def _open_keypad(self, pad: Keypad) -> None:
        """Show `pad` on top of everything."""
        if self.keypad is not None:
            self.keypad.close()
        self.keypad = pad
        pad.bind(on_dismiss=lambda _p: self._keypad_closed(pad))
        pad.open(animation=False)

    def _keypad_closed(self, pad: Keypad) -> None:
        """Forget a closed keypad."""
        if self.keypad is pad:
            self.keypad = None

    def _on_key_down(self, _win: Any, key: int, _scancode: int, _text: Any, _mods: Any) -> bool:
        """A badge reader types the staff number and Enter: log that clerk in."""
        if self.setup_open:  # a maintenance keyboard types into the setup form
            return False
        taken, staff = self.badge_reader.key(key)
        if staff is not None:
            self.badge_login(staff)
        return taken

    def badge_login(self, staff: str) -> None:
        """Log in the clerk whose badge was read."""
        if not self.terminal.login(staff):
            return
        log.info("badge login %s", staff)
        if self.keypad is not None:
            self.keypad.close()
