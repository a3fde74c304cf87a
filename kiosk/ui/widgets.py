"""Kivy widgets of the kiosk: faces drawn with canvas instructions, big buttons, keypad, badges."""

import logging
from collections.abc import Callable
from typing import Any

from kivy.core.window import Window
from kivy.graphics import Color, Ellipse, Line, Rectangle, RoundedRectangle
from kivy.properties import BooleanProperty, ListProperty, NumericProperty, StringProperty
from kivy.uix.behaviors import ButtonBehavior, ToggleButtonBehavior
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.gridlayout import GridLayout
from kivy.uix.label import Label
from kivy.uix.modalview import ModalView
from kivy.uix.widget import Widget

from kiosk.ui import theme
from kiosk.ui.i18n import tr

log = logging.getLogger(__name__)

Targets = dict[str, Any]  # id → widget that a scripted touch may hit (harness, tests)


class Face(Widget):  # type: ignore[misc]
    """A face drawn with canvas instructions; mouth curve, brows and open mouth carry the level."""

    mood = NumericProperty(0.0)
    sad_brows = BooleanProperty(False)
    open_mouth = BooleanProperty(False)
    fill = ListProperty(list(theme.WHITE))
    ink = ListProperty(list(theme.INK))
    fit = NumericProperty(1.0)  # share of the box the face's diameter takes

    def __init__(self, **kwargs: Any) -> None:
        """Create and draw."""
        super().__init__(**kwargs)
        self.bind(
            pos=self._draw,
            size=self._draw,
            mood=self._draw,
            sad_brows=self._draw,
            open_mouth=self._draw,
            fill=self._draw,
            ink=self._draw,
        )
        self._draw()

    def set_shape(self, shape: theme.FaceShape) -> None:
        """Take the mood, brows and mouth of `shape`."""
        self.mood = shape.mood
        self.sad_brows = shape.sad_brows
        self.open_mouth = shape.open_mouth

    def _draw(self, *_: Any) -> None:
        """Redraw the face in the widget's box."""
        self.canvas.clear()
        d = min(self.width, self.height) * float(self.fit)
        if d <= 2:
            return
        r = d / 2
        cx, cy = self.center
        lw = max(1.5, d * 0.035)
        er = d * 0.065  # eye radius
        ex, ey = r * 0.36, cy + r * 0.2
        my, mw = cy - r * 0.32, r * 0.5  # mouth centre height, half width
        with self.canvas:
            Color(*self.fill)
            Ellipse(pos=(cx - r, cy - r), size=(d, d))
            Color(*self.ink)
            Line(circle=(cx, cy, r - lw / 2), width=lw)
            for sx in (-1, 1):
                Ellipse(pos=(cx + sx * ex - er, ey - er), size=(2 * er, 2 * er))
            if self.sad_brows:
                for sx in (-1, 1):
                    outer = (cx + sx * (ex + er * 1.8), ey + er * 2.0)
                    inner = (cx + sx * (ex - er * 1.6), ey + er * 3.4)
                    Line(points=[*outer, *inner], width=lw * 0.8, cap="round")
            if self.open_mouth:
                # Laughing: a filled half disc, flat edge up.
                Ellipse(
                    pos=(cx - mw, my + mw * 0.3 - mw),
                    size=(2 * mw, 2 * mw),
                    angle_start=90,
                    angle_end=270,
                )
            else:
                k = float(self.mood) * r * 0.3
                pts: list[float] = []
                for i in range(25):
                    t = -1 + 2 * i / 24
                    pts += [cx + t * mw, my + k * (t * t - 0.5)]
                Line(points=pts, width=lw, cap="round", joint="round")


class _Card:
    """Mixin drawing a rounded coloured card behind a widget, with a thick border when pressed."""

    bg = ListProperty(list(theme.WHITE))
    border = ListProperty(list(theme.INK))
    down = BooleanProperty(False)
    radius = NumericProperty(16.0)

    def _init_card(self) -> None:
        """Create the card's canvas instructions and keep them on the widget's box."""
        w: Any = self
        with w.canvas.before:
            self._bg_color = Color(*self.bg)
            self._bg_rect = RoundedRectangle(pos=w.pos, size=w.size, radius=[self.radius])
            self._border_color = Color(*self.border)
            self._border = Line(rounded_rectangle=(*w.pos, *w.size, self.radius), width=1.5)
        w.bind(pos=self._card, size=self._card, bg=self._card, border=self._card, down=self._card)

    def _card(self, *_: Any) -> None:
        """Update the card."""
        w: Any = self
        self._bg_color.rgba = self.bg
        self._bg_rect.pos, self._bg_rect.size = w.pos, w.size
        self._border_color.rgba = self.border
        width = 5.0 if self.down else 1.5
        inset = width
        self._border.width = width
        self._border.rounded_rectangle = (
            w.x + inset,
            w.y + inset,
            max(0.0, w.width - 2 * inset),
            max(0.0, w.height - 2 * inset),
            self.radius,
        )


class RatingButton(_Card, ButtonBehavior, BoxLayout):  # type: ignore[misc]
    """One big rating key: a coloured card with a face and the level's label."""

    level = NumericProperty(0)
    text = StringProperty("")
    touch_enabled = BooleanProperty(True)

    def __init__(self, scale: int, level: int, text: str, **kwargs: Any) -> None:
        """Create the key for `level` on `scale`."""
        super().__init__(orientation="vertical", **kwargs)
        self.level = level
        self.bg = list(theme.level_colour(scale, level))
        self._init_card()
        self.face = Face(size_hint=(1, 0.6), fit=0.84)
        self.face.set_shape(theme.face_shape(scale, level))
        self.label = Label(
            text=text, color=theme.INK, halign="center", valign="middle", size_hint=(1, 0.4)
        )
        self.label.bind(size=lambda lbl, size: setattr(lbl, "text_size", (size[0] * 0.94, size[1])))
        self.add_widget(self.face)
        self.add_widget(self.label)
        self.bind(text=lambda _w, value: setattr(self.label, "text", value), state=self._on_state)
        self.text = text

    def _on_state(self, _w: Any, state: str) -> None:
        """Show the press with a thick border."""
        self.down = state == "down"

    def on_touch_down(self, touch: Any) -> bool:
        """Take touches only when the touchscreen is enabled for ratings."""
        if not self.touch_enabled:
            return False
        return bool(super().on_touch_down(touch))


class BigButton(_Card, ButtonBehavior, Label):  # type: ignore[misc]
    """A large text button on a card."""

    def __init__(self, **kwargs: Any) -> None:
        """Create the button."""
        kwargs.setdefault("color", theme.INK)
        kwargs.setdefault("halign", "center")
        kwargs.setdefault("valign", "middle")
        super().__init__(**kwargs)
        self._init_card()
        self.bind(size=lambda w, size: setattr(w, "text_size", (size[0] * 0.92, size[1])))
        self.bind(state=lambda _w, s: setattr(self, "down", s == "down"))


class ReasonToggle(_Card, ToggleButtonBehavior, Label):  # type: ignore[misc]
    """A big toggle for one follow-up reason; a tick and a thick border show the choice too."""

    code = StringProperty("")
    caption = StringProperty("")

    def __init__(self, code: str, caption: str, **kwargs: Any) -> None:
        """Create the toggle for reason `code`."""
        super().__init__(color=theme.INK, halign="center", valign="middle", **kwargs)
        self.code = code
        self.caption = caption
        self._init_card()
        self.bind(size=lambda w, size: setattr(w, "text_size", (size[0] * 0.92, size[1])))
        self.bind(state=self._show, caption=self._show)
        self._show()

    def _show(self, *_: Any) -> None:
        """Draw the selected state: tick, thick border, colour."""
        on = self.state == "down"
        self.down = on
        self.bg = list(theme.TOGGLE_ON if on else theme.TOGGLE_OFF)
        self.text = f"√  {self.caption}" if on else self.caption

    @property
    def chosen(self) -> bool:
        """True when selected."""
        return bool(self.state == "down")


class Badge(Label):  # type: ignore[misc]
    """A small rounded label drawn on a dark background (the offline indicator)."""

    bg = ListProperty(list(theme.OFFLINE_BG))

    def __init__(self, **kwargs: Any) -> None:
        """Create the badge."""
        super().__init__(color=theme.WHITE, size_hint=(None, None), **kwargs)
        with self.canvas.before:
            self._c = Color(*self.bg)
            self._r = RoundedRectangle(pos=self.pos, size=self.size, radius=[10])
            self._dot_c = Color(*theme.OKABE_ITO["orange"])
            self._dot = Ellipse(pos=self.pos, size=(0, 0))
        self.bind(texture_size=self._fit, pos=self._place, size=self._place)

    def _fit(self, *_: Any) -> None:
        """Size the badge to its text plus room for the dot."""
        tw, th = self.texture_size
        self.size = (tw + th * 2.2, th * 1.6)

    def _place(self, *_: Any) -> None:
        """Keep the background and the dot on the badge."""
        self._r.pos, self._r.size = self.pos, self.size
        dot = self.height * 0.36
        self._dot.pos = (self.x + self.height * 0.4, self.center_y - dot / 2)
        self._dot.size = (dot, dot)
        self.padding = [self.height * 0.6, 0, 0, 0]


class Filled(BoxLayout):  # type: ignore[misc]
    """A box layout painted with a solid background colour."""

    bg = ListProperty(list(theme.BACKGROUND))

    def __init__(self, **kwargs: Any) -> None:
        """Create the layout and its background."""
        super().__init__(**kwargs)
        with self.canvas.before:
            self._c = Color(*self.bg)
            self._r = Rectangle(pos=self.pos, size=self.size)
        self.bind(pos=self._sync, size=self._sync, bg=self._sync)

    def _sync(self, *_: Any) -> None:
        """Follow position, size and colour."""
        self._c.rgba = self.bg
        self._r.pos, self._r.size = self.pos, self.size


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
