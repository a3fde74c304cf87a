"""Kivy widgets of the kiosk: faces drawn with canvas instructions, big buttons, keypad, badges."""

import logging
from typing import Any

from kivy.graphics import Color, Ellipse, Line, Rectangle, RoundedRectangle
from kivy.properties import BooleanProperty, ListProperty, NumericProperty, StringProperty
from kivy.uix.behaviors import ButtonBehavior, ToggleButtonBehavior
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.label import Label
from kivy.uix.widget import Widget

from kiosk.ui import theme

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
