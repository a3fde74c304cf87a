"""The setup screen: device state, and the identity and broker form with save and provision."""

from kivy.uix.boxlayout import BoxLayout
from kivy.uix.gridlayout import GridLayout
from kivy.uix.label import Label

from kiosk.core.local_setup import FIELDS
from kiosk.core.session import View
from kiosk.ui import theme
from kiosk.ui.i18n import tr
from kiosk.ui.screen_base import KioskScreen, Ui, wrapped_label
from kiosk.ui.widgets import BigButton, Filled


class SetupScreen(KioskScreen):
    """Device state on the left; hall, device, broker and login to edit on the right."""

    screen_name = "setup"

    def __init__(self, ui: Ui) -> None:
        """Build the screen."""
        super().__init__(ui)
        u = ui.unit
        root = Filled(orientation="vertical", padding=[u * 32, u * 16], spacing=u * 10)
        self.title = wrapped_label(font_size=u * 34, bold=True, size_hint_y=None, height=u * 52)
        root.add_widget(self.title)
        body = BoxLayout(spacing=u * 28)
        self.info = GridLayout(cols=2, spacing=[u * 16, u * 2], size_hint_x=0.42)
        self.form = GridLayout(cols=2, spacing=[u * 12, u * 8], size_hint_x=0.58)
        self.fields: dict[str, BigButton] = {}
        self.field_labels: dict[str, Label] = {}
        for name in FIELDS:
            key = wrapped_label(
                font_size=u * 22, color=theme.MUTED, halign="right", size_hint_x=0.38
            )
            btn = BigButton(text="", font_size=u * 24, radius=u * 10, size_hint_x=0.62)
            btn.bind(on_press=lambda _b, n=name: self.ui.edit_setup_field(n))
            ui.targets[f"setup.{name}"] = btn
            self.fields[name] = btn
            self.field_labels[name] = key
            self.form.add_widget(key)
            self.form.add_widget(btn)
        body.add_widget(self.info)
        body.add_widget(self.form)
        root.add_widget(body)
        self.message = wrapped_label(
            font_size=u * 22,
            color=theme.OKABE_ITO["vermillion"],
            size_hint_y=None,
            height=u * 56,
        )
        root.add_widget(self.message)
        row = BoxLayout(size_hint_y=None, height=u * 80, spacing=u * 20, padding=[u * 40, 0])
        self.provision = BigButton(text="", font_size=u * 26, radius=u * 12)
        self.provision.bind(on_press=lambda _b: self.ui.open_provisioning())
        ui.targets["setup.provision"] = self.provision
        row.add_widget(self.provision)
        self.save = BigButton(text="", font_size=u * 28, radius=u * 12)
        self.save.bg = list(theme.CONFIRM)
        self.save.color = theme.WHITE
        self.save.bind(on_press=lambda _b: self.ui.save_setup())
        ui.targets["setup.save"] = self.save
        self.close = BigButton(text="", font_size=u * 28, radius=u * 12)
        self.close.bind(on_press=lambda _b: self.ui.close_setup())
        ui.targets["setup.close"] = self.close
        row.add_widget(self.save)
        row.add_widget(self.close)
        root.add_widget(row)
        self.add_widget(root)

    def update(self, view: View) -> None:
        """Draw `view`, the device's state and the form as typed."""
        u = self.ui.unit
        lang = view.language
        self.title.text = tr(lang, "setup_title")
        self.save.text = tr(lang, "setup_save")
        self.provision.text = tr(lang, "setup_provision")
        self.close.text = tr(lang, "close")
        self.info.clear_widgets()
        for key, value in self.ui.setup_rows(lang):
            self.info.add_widget(
                wrapped_label(key, font_size=u * 20, color=theme.MUTED, halign="right")
            )
            self.info.add_widget(wrapped_label(value, font_size=u * 20, halign="left"))
        form = self.ui.setup_form
        if form is None:
            return
        for name in FIELDS:
            self.field_labels[name].text = tr(lang, f"setup_{name}")
            value = form.values[name]
            shown = "●" * len(value) if name == "password" else value
            self.fields[name].text = shown or "—"
            bad = name in form.errors
            self.fields[name].color = theme.OKABE_ITO["vermillion"] if bad else theme.INK
        self.message.text = self.ui.setup_message(lang)
