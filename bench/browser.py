"""Headless Chromium (Playwright) on the hall board: cold page loads, when ratings are painted."""

import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Runs before the page's own scripts (injected by the browser, so the page's CSP does not
# apply). board.js sets body[data-last-rating] when it has redrawn a rating's row; the
# observer reports that id after the next frame (requestAnimationFrame, then a task, so the
# frame with the new row has been produced).
PAINT_WATCH = """
new MutationObserver((records) => {
  for (const r of records) {
    const id = r.target.dataset && r.target.dataset.lastRating;
    if (id) requestAnimationFrame(() => setTimeout(() => window.wrPainted(id), 0));
  }
}).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-last-rating"] });
"""


def _launch(p: Any) -> Any:
    """A headless Chromium of the system."""
    return p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def _wait_board(page: Any, rows: int) -> None:
    """Wait until the board is live and shows `rows` rows (selectors: the CSP forbids eval)."""
    page.wait_for_selector("#live-state.up", timeout=30_000)
    if rows:
        page.wait_for_selector(f"#rows > tr:nth-child({rows})", state="attached", timeout=30_000)


def page_loads(url: str, rows: int, loads: int) -> dict[str, Any]:
    """Milliseconds from navigation until the board is live with `rows` rows.

    Each cold load is in a new browser context (empty cache, no connections); the warm
    loads reload one page, as a wall screen that stays open would. The browser's start
    is timed apart.
    """
    from playwright.sync_api import sync_playwright

    cold: list[float] = []
    warm: list[float] = []
    with sync_playwright() as p:
        t0 = time.perf_counter()
        browser = _launch(p)
        launch_ms = (time.perf_counter() - t0) * 1000
        for _ in range(loads):
            context = browser.new_context()
            page = context.new_page()
            t0 = time.perf_counter()
            page.goto(url)
            _wait_board(page, rows)
            cold.append((time.perf_counter() - t0) * 1000)
            context.close()
        page = browser.new_page()
        page.goto(url)
        _wait_board(page, rows)
        for _ in range(loads):
            t0 = time.perf_counter()
            page.reload()
            _wait_board(page, rows)
            warm.append((time.perf_counter() - t0) * 1000)
        browser.close()
    return {"browser_launch_ms": launch_ms, "cold_ms": cold, "warm_ms": warm}


class PaintWatcher:
    """A board page in its own thread; `painted` maps rating id → time.monotonic() of its frame."""

    def __init__(self, url: str, rows: int) -> None:
        """Open the board and wait until it is live with `rows` rows."""
        self.url = url
        self.rows = rows
        self.painted: dict[str, float] = {}
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="board-page", daemon=True)
        self.thread.start()
        if not self.ready.wait(90) or self.error is not None:
            self.close()
            raise RuntimeError(f"board page did not open: {self.error}")

    def _on_paint(self, _source: Any, rating_id: str) -> None:
        """A rating's row was painted (the browser's binding, in this object's thread)."""
        self.painted.setdefault(rating_id, time.monotonic())

    def _run(self) -> None:
        """Load the page, then let Playwright deliver the bindings until closed."""
        from playwright.sync_api import sync_playwright

        try:
            with sync_playwright() as p:
                browser = _launch(p)
                context = browser.new_context()
                context.expose_binding("wrPainted", self._on_paint)
                context.add_init_script(PAINT_WATCH)
                page = context.new_page()
                page.goto(self.url)
                _wait_board(page, self.rows)
                self.ready.set()
                while not self._stop.is_set():
                    page.wait_for_timeout(50)  # runs Playwright's loop: bindings arrive here
                browser.close()
        except BaseException as exc:
            log.exception("board page failed")
            self.error = exc
            self.ready.set()

    def close(self) -> None:
        """Close the browser."""
        self._stop.set()
        self.thread.join(30)
