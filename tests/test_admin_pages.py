"""Admin pages in headless Chromium on the real server, Mosquitto, influxd and a real kiosk core.

An admin imports windows from an XLSX file through the registry page (the preview shows a
row error, the fixed file is imported), adds, edits and deletes a record; another hall's
manager sees none of this hall and gets the API's refusal on the page; the device page
pauses the kiosk and registers a device with its one-time code and QR; the user page
creates and deactivates a user. Any script error or CSP violation fails the test. The run
saves web-admin-{registry,devices,users}-{zh,en}.png (`./wr screenshots`: docs/screenshots/).
"""

import re
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook

from kiosk.core.terminal import Terminal
from tests.support import wait_until
from tests.test_browser import CHROMIUM_ARGS, PASSWORD
from tests.test_devices import HALL, kiosk, server
from tests.test_live import ServerThread

pw = pytest.importorskip("playwright.sync_api")

__all__ = ["kiosk", "server"]  # fixtures from tests.test_devices


def _xlsx(path: Path, rows: list[list[Any]]) -> str:
    """Write `rows` as the first sheet of an XLSX file and return its path."""
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    book.save(path)
    return str(path)


def _shoot(page: Any, shots: Path, name: str, lang: str) -> None:
    """Save the whole page as web-admin-{name}-{lang}.png in `shots`."""
    page.screenshot(path=str(shots / f"web-admin-{name}-{lang}.png"), full_page=True)


def _watch(page: Any, errors: list[str]) -> Any:
    """Collect script errors and console errors (CSP violations) of `page`; return it."""
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def console(msg: Any) -> None:
        csp = "Content Security Policy" in msg.text
        if csp or (msg.type == "error" and "Failed to load resource" not in msg.text):
            errors.append(msg.text)

    page.on("console", console)
    return page


def _login(page: Any, url: str, username: str) -> None:
    """Open `url` (an admin page, showing the login form) and log in."""
    page.goto(url)
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("form#login button[type=submit]")
    page.wait_for_selector("form#login", state="detached", timeout=10_000)


def _registry(page: Any, url: str, tmp_path: Path) -> None:
    """Import windows from XLSX (row error first), then add, edit and delete a window."""
    expect = pw.expect
    page.wait_for_selector(f'#records tr[data-key="{HALL}/a12"]', timeout=10_000)
    bad = _xlsx(
        tmp_path / "windows-bad.xlsx",
        [
            ["大厅", "窗口编码", "名称", "部门"],
            [HALL, 20, "20号窗口", "gaj"],
            [HALL, "a21", None, None],
        ],
    )
    page.set_input_files("#import-file", bad)
    page.click("#preview")
    row = page.locator('#import-rows tr[data-row="3"].bad')
    expect(row).to_contain_text("name")
    expect(page.locator('#import-rows tr[data-row="2"].ok')).to_contain_text("code=20")
    expect(page.locator("#do-import")).to_be_disabled()
    good = _xlsx(
        tmp_path / "windows.xlsx",
        [
            ["大厅", "窗口编码", "名称", "部门"],
            [HALL, 20, "20号窗口", "gaj"],
            [HALL, "a21", "21号窗口", None],
        ],
    )
    page.set_input_files("#import-file", good)
    page.click("#preview")
    expect(page.locator("#do-import")).to_be_enabled()
    page.click("#do-import")
    page.wait_for_selector(f'#records tr[data-key="{HALL}/a21"]', timeout=10_000)
    expect(page.locator(f'#records tr[data-key="{HALL}/20"]')).to_contain_text("20号窗口")
    # Add, edit and delete a record through the form and the row buttons.
    form = page.locator("#record-form")
    form.locator("input[name=hall]").fill(HALL)
    form.locator("input[name=code]").fill("a30")
    form.locator("input[name=name]").fill("30号窗口")
    page.click("#save")
    added = page.locator(f'#records tr[data-key="{HALL}/a30"]')
    expect(added).to_contain_text("30号窗口")
    added.locator("button.edit").click()
    expect(form.locator("input[name=code]")).to_be_disabled()
    form.locator("input[name=name]").fill("三十号窗口")
    page.click("#save")
    expect(added).to_contain_text("三十号窗口")
    added.locator("button.delete").click()
    added.locator("button.delete").click()
    expect(added).to_have_count(0)


def test_admin_pages_in_chromium(
    server: ServerThread, kiosk: Terminal, tmp_path: Path, screenshot_dir: Path
) -> None:
    """Registry import and editing, devices with commands and provisioning, users; hall scope."""
    expect = pw.expect
    url = server.url
    errors: list[str] = []
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        ctx = browser.new_context(viewport={"width": 1280, "height": 800})
        page = _watch(ctx.new_page(), errors)
        _login(page, f"{url}/admin/registry?entity=windows", "root")
        _registry(page, url, tmp_path)
        page.reload()
        page.wait_for_selector(f'#records tr[data-key="{HALL}/a21"]')
        _shoot(page, screenshot_dir, "registry", "zh")
        page.goto(f"{url}/admin/registry?entity=windows&lang=en")
        page.wait_for_selector(f'#records tr[data-key="{HALL}/a21"]')
        expect(page.locator("nav.tabs a.active")).to_have_text("Windows")
        _shoot(page, screenshot_dir, "registry", "en")

        # Devices: the kiosk shows online; pause it from the page; register a device.
        page.goto(f"{url}/admin/devices")
        dev = page.locator('#devices tr[data-device="k-0001"]')
        expect(dev.locator("[data-state=online]")).to_have_count(1, timeout=20_000)
        dev.locator("button.cmd-pause").click()
        expect(dev.locator("[data-state=paused]")).to_have_count(1, timeout=10_000)
        wait_until(lambda: kiosk.session.paused, 10, what="kiosk paused")
        form = page.locator("#provision-form")
        form.locator("input[name=hall]").fill(HALL)
        form.locator("input[name=device]").fill("k-0009")
        form.locator("input[name=window]").fill("a21")
        form.locator("button[type=submit]").click()
        expect(page.locator("#code-box")).to_be_visible()
        code = page.inner_text("#code-value")
        assert re.fullmatch(r"[0-9A-Z]{4}(-[0-9A-Z]{4})+", code), code
        assert page.inner_text("#code-expires").startswith("20")
        qr = page.locator("#code-qr")
        assert qr.get_attribute("src").startswith("data:image/svg+xml;base64,")
        wait_until(lambda: qr.evaluate("img => img.complete && img.naturalWidth > 0"), 5, what="QR")
        expect(page.locator('#accounts tr[data-account="k-0009"]')).to_have_count(1)
        _shoot(page, screenshot_dir, "devices", "zh")
        page.locator('#accounts tr[data-account="k-0009"] button.revoke').click()
        expect(page.locator('#accounts tr[data-account="k-0009"] button.revoke')).to_have_count(0)
        dev.locator("button.cmd-resume").click()
        expect(dev.locator("[data-state=online]")).to_have_count(1, timeout=10_000)
        page.goto(f"{url}/admin/devices?lang=en")
        form.locator("input[name=hall]").fill(HALL)
        form.locator("input[name=device]").fill("k-0010")
        form.locator("button[type=submit]").click()
        expect(page.locator("#code-box")).to_be_visible()
        expect(dev.locator("[data-state=online]")).to_have_count(1, timeout=10_000)
        _shoot(page, screenshot_dir, "devices", "en")

        # Users: create a user, deactivate them.
        page.goto(f"{url}/admin/users")
        form = page.locator("#user-form")
        form.locator("input[name=username]").fill("clerk-7")
        form.locator("input[name=password]").fill(PASSWORD)
        form.locator("select[name=role]").select_option("viewer")
        form.locator("button[type=submit]").click()
        user = page.locator('#users tr[data-user="clerk-7"]')
        expect(user).to_contain_text("只读用户")
        user.locator("button.deactivate").click()
        expect(user.locator("td.active")).to_have_text("否")
        _shoot(page, screenshot_dir, "users", "zh")
        page.goto(f"{url}/admin/users?lang=en")
        expect(page.locator('#users tr[data-user="clerk-7"] td.active')).to_have_text("no")
        _shoot(page, screenshot_dir, "users", "en")

        # The other hall's manager sees none of this hall and gets the API's refusal.
        other = _watch(browser.new_context().new_page(), errors)
        _login(other, f"{url}/admin/registry?entity=windows", "mgr2")
        expect(other.locator("#records-empty")).to_be_visible()
        assert other.locator("#records tbody tr").count() == 0
        form = other.locator("#record-form")
        expect(form.locator("input[name=hall]")).to_have_value("other")
        form.locator("input[name=hall]").fill(HALL)
        form.locator("input[name=code]").fill("a99")
        form.locator("input[name=name]").fill("越权窗口")
        other.click("#save")
        expect(other.locator("#msg.error")).to_contain_text("403")
        expect(other.locator("#msg.error")).to_contain_text("own hall")
        other.goto(f"{url}/admin/devices")
        expect(other.locator("#devices-empty")).to_be_visible()
        other.goto(f"{url}/admin/users")
        expect(other.locator("p.error")).to_contain_text("仅管理员")
        browser.close()
    assert errors == []
