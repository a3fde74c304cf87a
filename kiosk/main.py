"""`windowrate kiosk`: the Terminal, its setup, GPIO and voice, the Kivy app and the watchdog."""

import logging
import os
import signal

from common.systemd import SystemdNotifier
from kiosk.device import Kiosk
from kiosk.settings import KioskSettings

log = logging.getLogger(__name__)


def prepare_kivy(*, fullscreen: bool, size: tuple[int, int] | None = None) -> None:
    """Set Kivy's environment and window config; call before anything imports kivy's Window."""
    os.environ.setdefault("KIVY_NO_ARGS", "1")  # our command line is not Kivy's
    os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")  # Kivy logs through `logging`
    os.environ.setdefault("KIVY_IMAGE", "sdl2,tex")  # no Pillow: PNGs load through SDL2
    from kivy.config import Config

    Config.set("kivy", "exit_on_escape", "0")
    if not fullscreen:  # a desktop window; on the Pi the input providers come from
        # deploy/pi/kivy-config.ini (mtdev only: a mouse provider would double every touch)
        Config.set("input", "mouse", "mouse,disable_multitouch")
    Config.set("graphics", "fullscreen", "auto" if fullscreen else "0")
    Config.set("graphics", "show_cursor", "0" if fullscreen else "1")
    if size is not None:
        Config.set("graphics", "width", str(size[0]))
        Config.set("graphics", "height", str(size[1]))
        Config.set("graphics", "resizable", "0")


def run(settings: KioskSettings) -> bool:
    """Run the terminal until the window closes, SIGINT or SIGTERM; True to start it again.

    The setup screen asks for a fresh start after saving a new identity or broker: the
    caller then replaces the process (os.execv), so systemd sees the same main PID.
    """
    prepare_kivy(fullscreen=settings.fullscreen)
    # Kivy reads its config when first imported: these imports must follow prepare_kivy().
    from kivy.clock import Clock as KivyClock

    from kiosk.ui.app import KioskApp

    kiosk = Kiosk(settings)
    app = KioskApp(kiosk)

    def stop(_sig: int, _frame: object) -> None:
        KivyClock.schedule_once(lambda _dt: app.stop(), 0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # systemd: READY once the window runs, then a watchdog ping from the UI loop itself,
    # so a hung UI (not just a dead process) gets the terminal restarted.
    notifier = SystemdNotifier()
    KivyClock.schedule_once(lambda _dt: notifier.ready(), 0)
    KivyClock.schedule_interval(lambda _dt: notifier.ping(), (notifier.interval_s() or 30) / 2)
    try:
        app.run()
    finally:
        kiosk.stop()
    return app.restart_requested
