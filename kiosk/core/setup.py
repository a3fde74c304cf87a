"""The setup screen's logic without a screen: PIN check, form, saving, provisioning, restart.

Notes for the person are message keys with their values (`Note`); the UI translates them.
"""

import hmac
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kiosk.core import local_setup
from kiosk.core.local_setup import FIELDS, SetupForm
from kiosk.core.provision import ProvisionError, Ticket, redeem
from kiosk.core.terminal import Terminal
from kiosk.settings import KioskSettings

log = logging.getLogger(__name__)

SETUP_IDLE_S = 120.0  # the setup screen closes by itself


@dataclass(frozen=True)
class Note:
    """A message for the setup screen: an i18n key and its values."""

    key: str
    values: dict[str, Any] = field(default_factory=dict)


class SetupController:
    """What the technician does on the terminal: open with the PIN, edit, save or provision."""

    def __init__(
        self,
        settings: KioskSettings,
        terminal: Terminal,
        *,
        clock: Callable[[], float] = time.monotonic,
        idle_s: float = SETUP_IDLE_S,
    ) -> None:
        """Control the setup of `terminal`, which runs with `settings`."""
        self.settings = settings
        self.terminal = terminal
        self.clock = clock
        self.idle_s = idle_s
        self.form: SetupForm | None = None
        self.note: Note | None = None
        self.restart_requested = False
        self._since = 0.0

    @property
    def enabled(self) -> bool:
        """True when a setup PIN is configured."""
        return self.settings.setup_pin is not None

    @property
    def is_open(self) -> bool:
        """True while the setup form is shown."""
        return self.form is not None

    def touch(self) -> None:
        """The technician did something: restart the idle timer."""
        self._since = self.clock()

    def idle(self) -> bool:
        """True when the open form has been left alone too long."""
        return self.is_open and self.clock() - self._since > self.idle_s

    def check_pin(self, pin: str) -> bool:
        """Open the form if `pin` is the setup PIN."""
        secret = self.settings.setup_pin
        if secret is None or not hmac.compare_digest(pin, secret.get_secret_value()):
            log.warning("wrong setup PIN entered")
            return False
        self.form = SetupForm.from_settings(self.settings, self.terminal.outbox.backlog())
        self.note = None
        self.touch()
        return True

    def close(self) -> None:
        """Drop the form and its unsaved edits."""
        self.form = None

    def edit(self, name: str, text: str) -> None:
        """Take a typed value for one field."""
        if self.form is None:
            return
        self.form.set(name, text)
        self.note = None
        self.touch()

    def save(self) -> bool:
        """Check the form and save setup.json; True when saved (a restart is then requested)."""
        form = self.form
        if form is None:
            return False
        self.touch()
        form.backlog = self.terminal.outbox.backlog()
        setup = form.check()
        if setup is None:
            log.warning("setup not saved: %s", form.errors)
            return False
        try:
            local_setup.save(self.terminal.data_dir, setup)
        except OSError as exc:
            log.exception("cannot save the setup")
            self.note = Note("setup_err_save", {"error": exc.strerror or exc})
            return False
        log.warning(
            "setup saved: hall %s, device %s, broker %s:%d; restarting",
            setup.hall,
            setup.device,
            setup.host,
            setup.port,
        )
        self.note = Note("setup_saved")
        self.restart_requested = True
        return True

    def may_provision(self) -> bool:
        """True when a code may be redeemed now (nothing waits in the outbox)."""
        self.touch()
        backlog = self.terminal.outbox.backlog()
        if backlog:
            self.note = Note("setup_err_backlog", {"n": backlog})
            return False
        return True

    def provision(self, text: str, done: Callable[[bool], None]) -> None:
        """Redeem a code off the calling thread; `done(restart)` runs through the dispatcher."""
        self.note = Note("provision_busy")
        data_dir = self.terminal.data_dir

        def work() -> None:
            try:
                setup = redeem(Ticket.parse(text), data_dir)
            except ProvisionError as exc:
                log.warning("provisioning failed: %s", exc)
                note = Note("provision_failed", {"error": str(exc)})
                self.terminal.dispatch(lambda: self._provisioned(note, False, done))
                return
            note = Note("provision_done", {"hall": setup.hall, "device": setup.device})
            self.terminal.dispatch(lambda: self._provisioned(note, True, done))

        threading.Thread(target=work, name="provision", daemon=True).start()

    def _provisioned(self, note: Note, restart: bool, done: Callable[[bool], None]) -> None:
        """Keep the outcome; a success asks for a restart into the new setup."""
        self.note = note
        self.touch()
        if restart:
            self.restart_requested = True
        done(restart)

    def first_error(self) -> tuple[str, Note] | None:
        """The first refused field of the form and why, if any."""
        form = self.form
        if form is None:
            return None
        for name in FIELDS:
            key = form.errors.get(name)
            if key is not None:
                return name, Note(key, {"n": form.backlog})
        return None
