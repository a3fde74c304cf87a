"""What every kiosk screen shares: the app interface it calls and its base class."""

import logging
from typing import Any, Protocol

from kivy.uix.label import Label
from kivy.uix.screenmanager import Screen

from kiosk.core.local_setup import SetupForm
from kiosk.core.session import View
from kiosk.ui import theme
from kiosk.ui.widgets import Targets

log = logging.getLogger(__name__)


class Ui(Protocol):
    """What the screens need from the app."""

    unit: float
    targets: Targets
    setup_enabled: bool
    touch_enabled: bool
    setup_form: SetupForm | None

    def rate(self, level: int) -> None:
        """A rating key was touched."""

    def submit_reasons(self, codes: list[str]) -> None:
        """The person confirmed the follow-up reasons."""

    def pick_reasons(self, codes: list[str]) -> None:
        """The reasons ticked so far, before (or without) the confirmation."""

    def open_staff_keypad(self) -> None:
        """Open the clerk's login keypad."""

    def open_setup(self) -> None:
        """Ask for the setup PIN."""

    def close_setup(self) -> None:
        """Leave the setup screen."""

    def setup_rows(self, lang: str) -> list[tuple[str, str]]:
        """The lines of the setup screen."""

    def edit_setup_field(self, name: str) -> None:
        """Open the on-screen keyboard for one setup field."""

    def open_provisioning(self) -> None:
        """Ask for a provisioning code (typed, or scanned by a reader that types)."""

    def save_setup(self) -> None:
        """Check and save the setup form, then restart."""

    def setup_message(self, lang: str) -> str:
        """The error or progress line under the setup form."""

    def reasons_left_s(self) -> float:
        """Seconds until the reasons screen submits by itself."""

    def staff_photo(self, staff: str | None) -> str | None:
        """Path of the clerk's photo, when one is provisioned for this staff number."""


def wrapped_label(text: str = "", **kwargs: Any) -> Label:
    """A label that wraps inside its box."""
    kwargs.setdefault("color", theme.INK)
    kwargs.setdefault("halign", "center")
    kwargs.setdefault("valign", "middle")
    lbl = Label(text=text, **kwargs)
    lbl.bind(size=lambda w, size: setattr(w, "text_size", (size[0], size[1])))
    return lbl


class KioskScreen(Screen):  # type: ignore[misc]
    """Base of the screens: a painted background and an `update(view)`."""

    screen_name = ""

    def __init__(self, ui: Ui) -> None:
        """Create the screen named `screen_name`."""
        super().__init__(name=self.screen_name)
        self.ui = ui

    def update(self, view: View) -> None:
        """Draw `view`."""
        raise NotImplementedError
