"""A virtual X server for the kiosk app in tests and benchmarks."""

import logging
import os
import select
import subprocess
import time
from pathlib import Path

from devstack.services import die_with_parent, require_binary

log = logging.getLogger(__name__)


class Xvfb:
    """A virtual X server on a free display number (Xvfb picks it: -displayfd)."""

    def __init__(self, screen: str = "1280x800x24", log_path: Path | None = None) -> None:
        """Prepare the server (call start())."""
        self.screen = screen
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.display = ""

    def start(self, timeout: float = 15.0) -> str:
        """Start Xvfb and return its DISPLAY, e.g. ":3"."""
        binary = require_binary("Xvfb", "xvfb")
        rfd, wfd = os.pipe()
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [binary, "-displayfd", str(wfd), "-screen", "0", self.screen, "-nolisten", "tcp"],
                pass_fds=(wfd,),
                stdout=out,
                stderr=out,
                preexec_fn=die_with_parent,
            )
        finally:
            os.close(wfd)
            if out is not subprocess.DEVNULL:
                out.close()  # type: ignore[union-attr]
        data = b""
        deadline = time.monotonic() + timeout
        try:
            while not data.endswith(b"\n"):
                left = deadline - time.monotonic()
                ready, _, _ = select.select([rfd], [], [], max(0.0, left))
                if not ready:
                    self.stop()
                    raise RuntimeError(f"Xvfb did not report a display within {timeout} s")
                chunk = os.read(rfd, 64)
                if not chunk:
                    self.stop()
                    raise RuntimeError("Xvfb exited before reporting a display")
                data += chunk
        finally:
            os.close(rfd)
        self.display = f":{int(data.strip())}"
        log.info("Xvfb on %s (pid %s)", self.display, self.proc.pid)
        return self.display

    def stop(self) -> None:
        """Stop the server."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
