"""The kiosk's screens; each draws a `View` and forwards touches to the app (no logic here)."""

import logging
from typing import Any

from kivy.graphics import Color, RoundedRectangle
from kivy.uix.anchorlayout import AnchorLayout
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.gridlayout import GridLayout
from kivy.uix.image import Image
from kivy.uix.label import Label
from kivy.uix.widget import Widget

from kiosk.core.session import View
from kiosk.ui import theme
from kiosk.ui.i18n import tr
from kiosk.ui.screen_base import KioskScreen, Ui, wrapped_label
from kiosk.ui.setup_screen import SetupScreen
from kiosk.ui.widgets import BigButton, Face, Filled, RatingButton, ReasonToggle
from protocol.scales import level_label

log = logging.getLogger(__name__)


def _window_title(view: View) -> str:
    """E.g. "A12 号窗口 · 不动产登记"."""
    head = tr(view.language, "window", window=view.window.upper())
    return f"{head} · {view.window_name}" if view.window_name else head


def _clerk(view: View) -> str:
    """The clerk line: name and staff number, number only, or not logged in."""
    if view.staff is None:
        return tr(view.language, "no_clerk")
    if view.staff_name:
        return tr(view.language, "clerk", name=view.staff_name, staff=view.staff)
    return tr(view.language, "clerk_number", staff=view.staff)


# Label size of the rating keys (px at 1024×600) by language and number of keys.
_KEY_FONT = {"zh": {5: 30, 4: 34, 3: 40}, "en": {5: 26, 4: 28, 3: 32}}


class Header(Filled):
    """The bar on top: window, clerk, and the clerk's small staff and setup buttons."""

    def __init__(self, ui: Ui, prefix: str) -> None:
        """Build the bar; targets are registered as `{prefix}/staff_button` etc."""
        u = ui.unit
        super().__init__(
            orientation="horizontal",
            size_hint_y=None,
            height=u * 64,
            padding=[u * 18, u * 8],
            spacing=u * 12,
            bg=list(theme.HEADER),
        )
        self.window = wrapped_label(color=theme.WHITE, font_size=u * 26, halign="left", max_lines=1)
        self.clerk = wrapped_label(color=theme.WHITE, font_size=u * 22, halign="right", max_lines=1)
        for lbl in (self.window, self.clerk):
            lbl.shorten, lbl.shorten_from = True, "right"
        self.add_widget(self.window)
        self.add_widget(self.clerk)
        # The clerk's controls: small (not for the person served) but still a finger's width.
        self.staff = BigButton(
            text="", font_size=u * 18, size_hint=(None, 1), width=u * 120, radius=u * 8
        )
        self.staff.bind(on_press=lambda _b: ui.open_staff_keypad())
        ui.targets[f"{prefix}/staff_button"] = self.staff
        self.add_widget(self.staff)
        self.setup: BigButton | None = None
        if ui.setup_enabled:
            self.setup = BigButton(
                text="", font_size=u * 18, size_hint=(None, 1), width=u * 90, radius=u * 8
            )
            self.setup.bind(on_press=lambda _b: ui.open_setup())
            ui.targets[f"{prefix}/setup_button"] = self.setup
            self.add_widget(self.setup)

    def update(self, view: View) -> None:
        """Show the window and the clerk."""
        self.window.text = _window_title(view)
        self.clerk.text = _clerk(view)
        self.staff.text = tr(view.language, "staff_button")
        if self.setup is not None:
            self.setup.text = tr(view.language, "setup_button")


class WelcomeScreen(KioskScreen):
    """Idle screen of per-service mode: window, clerk and the invitation to rate."""

    screen_name = "welcome"

    def __init__(self, ui: Ui) -> None:
        """Build the screen."""
        super().__init__(ui)
        u = ui.unit
        root = Filled(orientation="vertical")
        self.header = Header(ui, self.screen_name)
        root.add_widget(self.header)
        body = BoxLayout(orientation="vertical", padding=[u * 40, u * 24], spacing=u * 10)
        self.window = wrapped_label(font_size=u * 64, bold=True, size_hint_y=1.3)
        self.window_name = wrapped_label(font_size=u * 40, color=theme.MUTED)
        # One line, as wide as its text (a wrapping label would shrink with its own width).
        self.clerk = Label(font_size=u * 34, color=theme.INK, size_hint_x=None)
        self.clerk.bind(texture_size=lambda w, ts: setattr(w, "width", ts[0]))
        self.photo = Image(fit_mode="contain", size_hint_x=None, width=0, opacity=0)
        self._pair = BoxLayout(spacing=u * 16, size_hint_x=None)
        self._pair.add_widget(self.photo)
        self._pair.add_widget(self.clerk)
        for w in (self.photo, self.clerk):
            w.bind(width=self._fit_pair)
        clerk_row = AnchorLayout(anchor_x="center", size_hint_y=1.6)
        clerk_row.add_widget(self._pair)
        self.invite = wrapped_label(
            font_size=u * 48, bold=True, color=theme.HEADER, size_hint_y=1.4
        )
        self.hint = wrapped_label(font_size=u * 24, color=theme.MUTED, size_hint_y=0.7)
        for w in (self.window, self.window_name, clerk_row, self.invite, self.hint):
            body.add_widget(w)
        root.add_widget(body)
        self.add_widget(root)

    def _fit_pair(self, *_: Any) -> None:
        """Size the photo-and-name row to its content, so it sits centred."""
        gap = self._pair.spacing if self.photo.width else 0
        self._pair.width = self.photo.width + gap + self.clerk.width

    def update(self, view: View) -> None:
        """Draw `view`."""
        lang = view.language
        self.header.update(view)
        self.window.text = tr(lang, "window", window=view.window.upper())
        self.window_name.text = view.window_name or ""
        self.clerk.text = _clerk(view)
        photo = self.ui.staff_photo(view.staff)
        if photo != (self.photo.source or None):
            self.photo.source = photo or ""
            self.photo.width = self.ui.unit * 150 if photo else 0
            self.photo.opacity = 1 if photo else 0
        self.invite.text = tr(lang, "invite")
        self.hint.text = tr(lang, "welcome_hint")


class RatingScreen(KioskScreen):
    """The rating keys, best first (left, or top on a portrait screen)."""

    screen_name = "rating"

    def __init__(self, ui: Ui) -> None:
        """Build the screen (keys are made by `update`)."""
        super().__init__(ui)
        u = ui.unit
        root = Filled(orientation="vertical")
        self.header = Header(ui, self.screen_name)
        root.add_widget(self.header)
        self.title = wrapped_label(font_size=u * 42, bold=True, size_hint_y=None, height=u * 96)
        root.add_widget(self.title)
        self.keys = BoxLayout(padding=[u * 20, u * 6, u * 20, u * 50], spacing=u * 16)
        root.add_widget(self.keys)
        self.add_widget(root)
        self.buttons: dict[int, RatingButton] = {}
        self._made: tuple[int, str, bool] | None = None
        self.bind(size=self._orient)

    def update(self, view: View) -> None:
        """Draw `view`; remake the keys when the scale, language or orientation changed."""
        self.header.update(view)
        self.title.text = tr(view.language, "invite" if self.ui.touch_enabled else "invite_buttons")
        key = (view.scale, view.language, self.ui.touch_enabled)
        if key != self._made:
            self._make_keys(view.scale, view.language)
            self._made = key

    def _orient(self, *_: Any) -> None:
        """Keys side by side on a landscape screen, stacked (best on top) on a portrait one."""
        self.keys.orientation = "vertical" if self.height > self.width * 1.05 else "horizontal"

    def _make_keys(self, scale: int, lang: str) -> None:
        """Create one key per level, best first."""
        u = self.ui.unit
        for level in list(self.buttons):
            self.ui.targets.pop(f"rating.{level}", None)
        self.keys.clear_widgets()
        self.buttons = {}
        size = _KEY_FONT["en" if lang == "en" else "zh"][scale]
        for level in range(scale, 0, -1):
            btn = RatingButton(scale, level, level_label(scale, level, lang), radius=u * 18)
            btn.padding = [u * 8, u * 14, u * 8, u * 6]
            btn.label.font_size = u * size
            btn.touch_enabled = self.ui.touch_enabled
            btn.bind(on_press=lambda b: self.ui.rate(int(b.level)))
            self.buttons[level] = btn
            self.ui.targets[f"rating.{level}"] = btn
            self.keys.add_widget(btn)
        log.info("rating keys: scale %s, language %s", scale, lang)


class ReasonsScreen(KioskScreen):
    """Follow-up reasons after a negative rating: big toggles, a submit key and a countdown."""

    screen_name = "reasons"

    def __init__(self, ui: Ui) -> None:
        """Build the screen (toggles are made by `update`)."""
        super().__init__(ui)
        u = ui.unit
        root = Filled(orientation="vertical", padding=[u * 24, u * 16], spacing=u * 14)
        self.title = wrapped_label(font_size=u * 38, bold=True, size_hint_y=None, height=u * 70)
        root.add_widget(self.title)
        self.grid = GridLayout(cols=2, spacing=u * 14)
        root.add_widget(self.grid)
        bottom = BoxLayout(size_hint_y=None, height=u * 96, spacing=u * 20)
        self.countdown = wrapped_label(font_size=u * 26, color=theme.MUTED)
        self.confirm = BigButton(
            text="",
            font_size=u * 36,
            bold=True,
            size_hint_x=None,
            width=u * 300,
            radius=u * 16,
            color=theme.WHITE,
        )
        self.confirm.bg = list(theme.CONFIRM)
        self.confirm.bind(on_press=lambda _b: self.ui.submit_reasons(self.chosen()))
        ui.targets["confirm_reasons"] = self.confirm
        bottom.add_widget(self.countdown)
        bottom.add_widget(self.confirm)
        root.add_widget(bottom)
        self.add_widget(root)
        self.toggles: dict[str, ReasonToggle] = {}
        self._made: tuple[Any, ...] | None = None
        self.lang = "zh"

    def reset(self) -> None:
        """Clear the choice (a new negative rating)."""
        for t in self.toggles.values():
            t.state = "normal"

    def chosen(self) -> list[str]:
        """The codes selected now."""
        return [code for code, t in self.toggles.items() if t.chosen]

    def update(self, view: View) -> None:
        """Draw `view`; remake the toggles when the reasons or the language changed."""
        u = self.ui.unit
        lang = self.lang = view.language
        self.title.text = tr(lang, "reasons_title")
        self.confirm.text = tr(lang, "confirm")
        self.tick()
        key = (view.reasons, lang)
        if key == self._made:
            return
        self._made = key
        for code in self.toggles:
            self.ui.targets.pop(f"reason.{code}", None)
        self.grid.clear_widgets()
        self.toggles = {}
        n = len(view.reasons)
        self.grid.cols = 2 if n <= 6 else 3 if n <= 9 else 4
        for r in view.reasons:
            t = ReasonToggle(r.code, r.en if lang == "en" else r.zh, radius=u * 14)
            t.font_size = u * (30 if n <= 6 else 24)
            t.bind(state=lambda *_: self.ui.pick_reasons(self.chosen()))
            self.toggles[r.code] = t
            self.ui.targets[f"reason.{r.code}"] = t
            self.grid.add_widget(t)

    def tick(self) -> None:
        """Update the countdown."""
        left = max(0, round(self.ui.reasons_left_s()))
        self.countdown.text = tr(self.lang, "countdown", n=left)


class ThanksScreen(KioskScreen):
    """Thank-you for about two seconds."""

    screen_name = "thanks"

    def __init__(self, ui: Ui) -> None:
        """Build the screen."""
        super().__init__(ui)
        u = ui.unit
        root = Filled(orientation="vertical", padding=[u * 40, u * 40], spacing=u * 20)
        holder = AnchorLayout(size_hint_y=1.5)
        face = Face(size_hint=(None, None), size=(u * 220, u * 220))
        face.fill = list(theme.OKABE_ITO["bluish_green"])
        face.set_shape(theme.FaceShape(mood=1.0, open_mouth=True))
        holder.add_widget(face)
        root.add_widget(holder)
        self.text = wrapped_label(font_size=u * 64, bold=True)
        self.hint = wrapped_label(font_size=u * 28, color=theme.MUTED, size_hint_y=0.5)
        root.add_widget(self.text)
        root.add_widget(self.hint)
        self.add_widget(root)

    def update(self, view: View) -> None:
        """Draw `view`."""
        self.text.text = tr(view.language, "thanks")
        self.hint.text = tr(view.language, "thanks_hint")


class PauseIcon(Widget):  # type: ignore[misc]
    """Two bars: the pause sign."""

    def __init__(self, **kwargs: Any) -> None:
        """Create and draw."""
        super().__init__(**kwargs)
        self.bind(pos=self._draw, size=self._draw)

    def _draw(self, *_: Any) -> None:
        """Draw the bars."""
        self.canvas.clear()
        w, h = self.size
        bar = w * 0.3
        with self.canvas:
            Color(*theme.MUTED)
            RoundedRectangle(pos=(self.x + w * 0.1, self.y), size=(bar, h), radius=[bar * 0.2])
            RoundedRectangle(
                pos=(self.right - w * 0.1 - bar, self.y), size=(bar, h), radius=[bar * 0.2]
            )


class PausedScreen(KioskScreen):
    """暂停服务: no ratings are taken."""

    screen_name = "paused"

    def __init__(self, ui: Ui) -> None:
        """Build the screen."""
        super().__init__(ui)
        u = ui.unit
        root = Filled(orientation="vertical", padding=[u * 40, u * 50], spacing=u * 24)
        root.bg = list(theme.PAUSED_BG)
        holder = AnchorLayout(size_hint_y=1.2)
        holder.add_widget(PauseIcon(size_hint=(None, None), size=(u * 130, u * 150)))
        root.add_widget(holder)
        self.window = wrapped_label(font_size=u * 32, color=theme.MUTED, size_hint_y=0.5)
        self.text = wrapped_label(font_size=u * 88, bold=True)
        self.hint = wrapped_label(font_size=u * 32, color=theme.MUTED, size_hint_y=0.6)
        for w in (self.text, self.window, self.hint):
            root.add_widget(w)
        self.add_widget(root)

    def update(self, view: View) -> None:
        """Draw `view`."""
        self.text.text = tr(view.language, "paused")
        self.window.text = _window_title(view)
        self.hint.text = tr(view.language, "paused_hint")


class FullScreen(KioskScreen):
    """存储空间已满: the data disk is full, so presses are refused until space returns."""

    screen_name = "full"

    def __init__(self, ui: Ui) -> None:
        """Build the screen."""
        super().__init__(ui)
        u = ui.unit
        root = Filled(orientation="vertical", padding=[u * 40, u * 50], spacing=u * 24)
        root.bg = list(theme.PAUSED_BG)
        self.window = wrapped_label(font_size=u * 32, color=theme.MUTED, size_hint_y=0.5)
        self.text = wrapped_label(font_size=u * 64, bold=True, size_hint_y=1.4)
        self.hint = wrapped_label(font_size=u * 30, color=theme.MUTED, size_hint_y=0.8)
        for w in (self.window, self.text, self.hint):
            root.add_widget(w)
        self.add_widget(root)

    def update(self, view: View) -> None:
        """Draw `view`."""
        self.text.text = tr(view.language, "storage_full")
        self.window.text = _window_title(view)
        self.hint.text = tr(view.language, "storage_full_hint")


SCREENS: tuple[type[KioskScreen], ...] = (
    WelcomeScreen,
    RatingScreen,
    ReasonsScreen,
    ThanksScreen,
    PausedScreen,
    FullScreen,
    SetupScreen,
)
