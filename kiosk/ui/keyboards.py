"""The kiosk's on-screen keyboards: the clerk's and setup PIN keypad, the text entry."""

import logging
from collections.abc import Callable
from typing import Any

from kivy.core.window import Window
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.gridlayout import GridLayout
from kivy.uix.label import Label
from kivy.uix.modalview import ModalView

from kiosk.ui import theme
from kiosk.ui.i18n import tr
from kiosk.ui.widgets import BigButton, Filled, Targets

log = logging.getLogger(__name__)


class Keypad(ModalView):  # type: ignore[misc]
    """An on-screen numeric keypad for the clerk's staff number or the setup PIN."""

    def __init__(
        self,
        *,
        lang: str,
        title: str,
        on_submit: Callable[[str], str | None],
        targets: Targets,
        unit: float,
        masked: bool = False,
        subtitle: str = "",
        extra: tuple[str, str, Callable[[], None]] | None = None,
        max_len: int = 16,
    ) -> None:
        """Build the keypad; `on_submit` returns an error text or None to close."""
        super().__init__(
            auto_dismiss=False, size_hint=(None, None), background_color=(0, 0, 0, 0.55)
        )
        self.lang = lang
        self.masked = masked
        self.on_submit = on_submit
        self.targets = targets
        self.max_len = max_len
        self.value = ""
        self.size = (unit * 560, unit * 580)
        box = Filled(
            orientation="vertical", padding=unit * 14, spacing=unit * 8, bg=list(theme.WHITE)
        )
        fs = unit * 26
        box.add_widget(
            Label(text=title, color=theme.INK, font_size=fs, size_hint_y=None, height=unit * 40)
        )
        if subtitle:
            box.add_widget(
                Label(
                    text=subtitle,
                    color=theme.MUTED,
                    font_size=fs * 0.8,
                    size_hint_y=None,
                    height=unit * 28,
                )
            )
        self.display = Label(
            text="", color=theme.INK, font_size=fs * 1.5, size_hint_y=None, height=unit * 50
        )
        self.error = Label(
            text="",
            color=theme.OKABE_ITO["vermillion"],
            font_size=fs * 0.8,
            size_hint_y=None,
            height=unit * 28,
        )
        box.add_widget(self.display)
        box.add_widget(self.error)
        grid = GridLayout(cols=3, spacing=unit * 8)
        keys = [*"123456789", "del", "0", "ok"]
        for key in keys:
            text = key if key.isdigit() else tr(lang, f"keypad_{key}")
            btn = BigButton(
                text=text, font_size=fs * (1.3 if key.isdigit() else 0.95), radius=unit * 10
            )
            if key == "ok":
                btn.bg = list(theme.CONFIRM)
                btn.color = theme.WHITE
            btn.bind(on_press=lambda _b, k=key: self._key(k))
            targets[f"keypad.{key}"] = btn
            grid.add_widget(btn)
        box.add_widget(grid)
        row = BoxLayout(size_hint_y=None, height=unit * 64, spacing=unit * 8)
        cancel = BigButton(text=tr(lang, "keypad_cancel"), font_size=fs * 0.95, radius=unit * 10)
        cancel.bind(on_press=lambda _b: self.close())
        targets["keypad.cancel"] = cancel
        row.add_widget(cancel)
        if extra is not None:
            tid, text, action = extra
            extra_btn = BigButton(text=text, font_size=fs * 0.95, radius=unit * 10)
            extra_btn.bind(on_press=lambda _b: self._extra(action))
            targets[f"keypad.{tid}"] = extra_btn
            row.add_widget(extra_btn)
        box.add_widget(row)
        self.add_widget(box)

    def _extra(self, action: Callable[[], None]) -> None:
        """Run the extra key's action (e.g. log out) and close."""
        action()
        self.close()

    def _key(self, key: str) -> None:
        """Handle one key of the pad."""
        if key == "del":
            self.value = self.value[:-1]
        elif key == "ok":
            if not self.value:
                return
            error = self.on_submit(self.value)
            if error is None:
                self.close()
                return
            self.error.text = error
            self.value = ""
        elif len(self.value) < self.max_len:
            self.value += key
            self.error.text = ""
        self.display.text = "●" * len(self.value) if self.masked else self.value

    def close(self) -> None:
        """Close the pad and forget its keys."""
        for key in [k for k in self.targets if k.startswith("keypad.")]:
            del self.targets[key]
        self.dismiss(animation=False)


class TextEntry(ModalView):  # type: ignore[misc]
    """An on-screen keyboard for one setup field (host names, ids, user names, passwords).

    Ours rather than Kivy's VKeyboard: the same big keys, colours and named targets as the
    clerk's keypad, no docked overlay to pan the form around, and a physical keyboard
    (a maintenance keyboard on the Pi's USB) types into it too.
    """

    ROWS = ("1234567890", "qwertyuiop", "asdfghjkl-", "zxcvbnm._:")
    SYMBOLS = "@#$%&*+=!?/"

    def __init__(
        self,
        *,
        lang: str,
        title: str,
        value: str,
        on_submit: Callable[[str], None],
        targets: Targets,
        unit: float,
        masked: bool = False,
        max_len: int = 128,
    ) -> None:
        """Build the keyboard showing `value`; `on_submit` gets the edited text."""
        super().__init__(
            auto_dismiss=False, size_hint=(None, None), background_color=(0, 0, 0, 0.55)
        )
        self.masked = masked
        self.on_submit = on_submit
        self.targets = targets
        self.max_len = max_len
        self.value = value
        self.shift = False
        self.size = (unit * 1000, unit * 590)
        fs = unit * 26
        box = Filled(
            orientation="vertical", padding=unit * 12, spacing=unit * 6, bg=list(theme.WHITE)
        )
        box.add_widget(
            Label(text=title, color=theme.INK, font_size=fs, size_hint_y=None, height=unit * 36)
        )
        self.display = Label(
            text="", color=theme.INK, font_size=fs * 1.2, size_hint_y=None, height=unit * 48
        )
        box.add_widget(self.display)
        self._keys: dict[str, BigButton] = {}
        for row in (*self.ROWS, self.SYMBOLS):
            line = BoxLayout(spacing=unit * 6)
            for ch in row:
                btn = BigButton(text=ch, font_size=fs * 1.1, radius=unit * 8)
                btn.bind(on_press=lambda _b, c=ch: self.type(self._case(c)))
                targets[f"entry.key.{ch}"] = btn
                self._keys[ch] = btn
                line.add_widget(btn)
            box.add_widget(line)
        bottom = BoxLayout(spacing=unit * 6, size_hint_y=None, height=unit * 72)
        for tid, text, action in (
            ("shift", tr(lang, "entry_shift"), self.toggle_shift),
            ("clear", tr(lang, "entry_clear"), self.clear),
            ("del", tr(lang, "keypad_del"), self.backspace),
            ("cancel", tr(lang, "keypad_cancel"), self.close),
            ("ok", tr(lang, "keypad_ok"), self.submit),
        ):
            btn = BigButton(text=text, font_size=fs * 0.95, radius=unit * 8)
            if tid == "ok":
                btn.bg = list(theme.CONFIRM)
                btn.color = theme.WHITE
            btn.bind(on_press=lambda _b, a=action: a())
            targets[f"entry.{tid}"] = btn
            bottom.add_widget(btn)
        box.add_widget(bottom)
        self.add_widget(box)
        self._show()

    def on_open(self) -> None:
        """Let a physical keyboard type here too."""
        Window.bind(on_textinput=self._on_text, on_key_down=self._on_key)

    def on_dismiss(self) -> None:
        """Stop listening to the physical keyboard."""
        Window.unbind(on_textinput=self._on_text, on_key_down=self._on_key)

    def _on_text(self, _win: Any, text: str) -> bool:
        """A typed character."""
        for ch in text:
            if ch.isprintable():
                self.type(ch)
        return True

    def _on_key(self, _win: Any, key: int, *_: Any) -> bool:
        """Backspace, Enter and Escape from a physical keyboard."""
        if key == 8:
            self.backspace()
        elif key in (13, 271):
            self.submit()
        elif key == 27:
            self.close()
        else:
            return False
        return True

    def _case(self, ch: str) -> str:
        """The character in the current case."""
        return ch.upper() if self.shift else ch

    def _show(self) -> None:
        """Show the value (dots for a password) with a cursor."""
        shown = "●" * len(self.value) if self.masked else self.value
        self.display.text = shown + "|"

    def type(self, ch: str) -> None:
        """Add one character."""
        if len(self.value) < self.max_len:
            self.value += ch
            self._show()

    def backspace(self) -> None:
        """Remove the last character."""
        self.value = self.value[:-1]
        self._show()

    def clear(self) -> None:
        """Empty the field."""
        self.value = ""
        self._show()

    def toggle_shift(self) -> None:
        """Switch between lower and upper case letters."""
        self.shift = not self.shift
        for ch, btn in self._keys.items():
            btn.text = self._case(ch)

    def submit(self) -> None:
        """Hand the value over and close."""
        self.on_submit(self.value)
        self.close()

    def close(self) -> None:
        """Close the keyboard and forget its keys."""
        for key in [k for k in self.targets if k.startswith("entry.")]:
            del self.targets[key]
        self.dismiss(animation=False)
