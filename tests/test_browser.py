"""Headless Chromium on the real stack: login, own hall only, live board, case workflow, appeal.

Mosquitto, influxd, the gateway and the server (uvicorn) run on free ports; ratings are pressed
on a real kiosk core (outbox, MQTT publisher) of hall `alpha` and sent by a plain MQTT
publisher for hall `beta`. The same run saves a screenshot of every page in zh and en as
web-{page}-{lang}.png (in a temporary directory; `./wr screenshots` writes docs/screenshots/).
How fast a press reaches the board is measured by `windowrate bench board`, not here.
"""

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from common.mqtt import MqttSettings
from devstack.services import Influxd, Mosquitto
from kiosk.core.terminal import Terminal
from kiosk.settings import KioskSettings
from protocol.topics import Topic, TopicKind
from server.auth.service import create_user
from server.settings.cases import CaseSettings
from tests.support import GatewayProcess, influx_query, rating_doc, raw_client, wait_until
from tests.test_live import ServerThread, server_settings

pw = pytest.importorskip("playwright.sync_api")

PASSWORD = "correct horse battery"
TZ = "Asia/Shanghai"  # the hall's (tests.test_live.server_settings) and the browser's
DAY_RATINGS = 40
A, B = "alpha", "beta"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Stack:
    """The centre side and a kiosk of alpha's window wa1."""

    broker: Mosquitto
    influx: Influxd
    server: ServerThread
    kiosk: Terminal


@pytest.fixture
def stack(tmp_path: Path, broker: Mosquitto, influx: Influxd) -> Iterator[Stack]:
    """Broker, influxd, gateway, server with two halls and users, and a running kiosk core."""
    gw = GatewayProcess(tmp_path / "gw", broker.port, influx.url)
    gw.start()
    cfg = server_settings(broker.port, influx.url, tmp_path / "wr.db").model_copy(
        update={"cases": CaseSettings(poll_s=0.2, sweep_s=2.0)}  # the day's back-filled ratings
    )
    srv = ServerThread(cfg)
    srv.start()
    with srv.app.state.db.session() as session:
        for name, role, hall in (("root", "admin", None), ("office", "office", None)):
            create_user(session, name, PASSWORD, role, hall)
        session.commit()
    admin = httpx.Client(base_url=srv.url, timeout=10)
    assert admin.post("/api/auth/login", json={"username": "root", "password": PASSWORD}).is_success
    admin.headers["X-CSRF-Token"] = admin.cookies["wr_csrf"]
    for path, body in (
        ("halls", {"code": A, "name": "阿尔法市民中心"}),
        ("halls", {"code": B, "name": "贝塔服务大厅"}),
        ("units", {"hall": A, "code": "gaj", "name": "公安局"}),
        ("windows", {"hall": A, "code": "wa1", "name": "1号窗口", "unit": "gaj"}),
        ("windows", {"hall": A, "code": "wa2", "name": "2号窗口", "unit": "gaj"}),
        ("windows", {"hall": B, "code": "wb1", "name": "贝塔1号窗口"}),
        ("devices", {"code": "k-a1", "hall": A, "window": "wa1"}),
        ("devices", {"code": "k-a2", "hall": A, "window": "wa2"}),
        ("devices", {"code": "k-b1", "hall": B, "window": "wb1"}),
        ("staff", {"hall": A, "number": "0457", "name": "张三", "unit": "gaj"}),
    ):
        resp = admin.post(f"/api/registry/{path}", json=body)
        assert resp.status_code == 201, resp.text
    admin.close()
    with srv.app.state.db.session() as session:
        create_user(session, "m1", PASSWORD, "hall_manager", A)
        session.commit()
    kiosk = Terminal.from_settings(
        KioskSettings(
            hall=A,
            device="k-a1",
            window="wa1",
            data_dir=tmp_path / "kiosk",
            mqtt=MqttSettings(port=broker.port),
            voice=False,
            trust_wall_clock=True,
        )
    )
    kiosk.start()
    wait_until(lambda: kiosk.session.config.window == "wa1", 20, what="kiosk config")
    try:
        yield Stack(broker, influx, srv, kiosk)
    finally:
        kiosk.stop()
        srv.stop()
        gw.stop()


def press(kiosk: Terminal, level: int) -> str:
    """Touch a rating key on the kiosk; a negative one also picks a reason. Returns the id."""
    result = kiosk.session.press(level, "touch")
    assert result.accepted and result.recorded is not None, result
    if kiosk.session.screen.name == "REASONS":
        kiosk.session.choose_reasons(["waiting"])
    return str(result.recorded.id)


def shoot(page: Any, shots: Path, name: str, lang: str, full: bool = True) -> None:
    """Save a screenshot (the whole page unless `full` is False) as web-{name}-{lang}.png."""
    page.screenshot(path=str(shots / f"web-{name}-{lang}.png"), full_page=full)


def login_page(page: Any, url: str, username: str) -> None:
    """Log in through the case pages' login form."""
    page.goto(f"{url}/cases")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("form#login button[type=submit]")
    page.wait_for_selector("table.cases, p.empty", timeout=10_000)


def influx_today(url: str, hall: str) -> dict[str, int]:
    """Ratings per window of `hall` straight from InfluxDB (all of them are from today)."""
    series = influx_query(
        url, f'SELECT count("seq") FROM "rating" WHERE "hall" = \'{hall}\' GROUP BY "window"'
    )
    return {s["tags"]["window"]: int(s["values"][0][1]) for s in series}


def board_counts(page: Any) -> dict[str, int]:
    """Ratings per window as the board page shows them."""
    rows: dict[str, int] = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#rows tr')].map(
             (tr) => [tr.dataset.key, Number(tr.querySelector('td.ratings').textContent)]))"""
    )
    return rows


def test_hall_manager_board_cases_and_appeal_in_chromium(
    stack: Stack, screenshot_dir: Path
) -> None:
    """Own hall only; a press shows live; a negative one opens a case, flashes, is closed."""
    url = stack.server.url
    mq = raw_client(stack.broker.port, "kiosk-beta")
    beta_topic = str(Topic(B, "k-b1", TopicKind.RATING))
    for seq, level in ((1, 5), (2, 1)):  # beta: one good rating and one negative (a case)
        doc = rating_doc(B, "k-b1", seq, window="wb1", level=level, staff="9001")
        mq.publish(beta_topic, json.dumps(doc), qos=1).wait_for_publish(5)
    # A simulated day at wa2: ratings spread from the hall's local midnight until now.
    a2_topic = str(Topic(A, "k-a2", TopicKind.RATING))
    now_ms = int(time.time() * 1000)
    midnight = datetime.now(ZoneInfo(TZ)).replace(hour=0, minute=0, second=0, microsecond=0)
    start_ms = int(midnight.timestamp() * 1000)
    day = [(5, 5, 4, 3, 5, 1, 4, 5, 2, 5)[i % 10] for i in range(DAY_RATINGS)]
    for seq, level in enumerate(day, 1):
        ts = start_ms + (now_ms - 1000 - start_ms) * seq // (DAY_RATINGS + 1)
        doc = rating_doc(A, "k-a2", seq, window="wa2", level=level, ts=ts, staff=None)
        mq.publish(a2_topic, json.dumps(doc), qos=1).wait_for_publish(5)
    press(stack.kiosk, 5)
    first_bad = press(stack.kiosk, 2)
    influx = stack.influx.url
    wait_until(
        lambda: sum(influx_today(influx, A).values()) == 2 + DAY_RATINGS, 30, what="alpha stored"
    )
    wait_until(lambda: sum(influx_today(influx, B).values()) == 2, 30, what="beta stored")
    root = httpx.Client(base_url=url, timeout=10)
    assert root.post("/api/auth/login", json={"username": "root", "password": PASSWORD}).is_success
    day_bad = sum(lv <= 2 for lv in day)
    wait_until(lambda: root.get("/api/cases").json()["total"] == 2 + day_bad, 30, what="the cases")
    cases = {c["hall"]: c for c in root.get("/api/cases").json()["cases"] if c["window"] != "wa2"}
    assert cases[A]["rating_id"] == first_bad

    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        errors: list[str] = []
        anon = browser.new_page(viewport={"width": 1280, "height": 800}, timezone_id=TZ)
        anon.on("pageerror", lambda exc: errors.append(str(exc)))
        for lang in ("zh", "en"):
            anon.goto(f"{url}/cases?lang={lang}")
            anon.wait_for_selector("form#login")
            shoot(anon, screenshot_dir, "login", lang)
        # (a) the hall manager logs in through the login page and sees only their hall.
        ctx = browser.new_context(viewport={"width": 1280, "height": 800}, timezone_id=TZ)
        page = ctx.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        login_page(page, url, "m1")
        listed = page.eval_on_selector_all("tr.case", "els => els.map(e => e.dataset.case)")
        assert str(cases[A]["id"]) in listed and str(cases[B]["id"]) not in listed
        assert len(listed) == 1 + day_bad
        assert "beta" not in page.inner_text("table.cases")
        page.goto(f"{url}/")
        page.wait_for_selector("#live-state.up", timeout=10_000)
        page.wait_for_function("() => document.querySelectorAll('#rows tr').length > 0")
        keys = page.eval_on_selector_all("#rows tr", "els => els.map(e => e.dataset.key)")
        assert keys and all(k.startswith(f"{A}/") for k in keys), keys
        # (b) a rating pressed on the kiosk shows on the open board (no reload).
        cell = f'tr[data-key="{A}/wa1"] td.ratings'
        assert page.inner_text(cell) == "2"
        press(stack.kiosk, 4)
        page.wait_for_function(
            f"() => document.querySelector('{cell}').textContent === '3'", timeout=10_000
        )
        # (c) a negative rating opens a case and flashes on the board.
        bad = press(stack.kiosk, 1)
        page.wait_for_function(
            f"() => document.querySelector('{cell}').textContent === '4'", timeout=10_000
        )
        row = f'tr[data-key="{A}/wa1"]'
        assert page.locator(f"{row}.flash").count() == 1
        assert "非常不满意" in page.inner_text(f"{row} td.last-negative")
        shoot(page, screenshot_dir, "board", "zh")
        page.goto(f"{url}/?lang=en")
        page.wait_for_selector("#live-state.up", timeout=10_000)
        page.wait_for_selector(f"{row}.flash", timeout=10_000)
        shoot(page, screenshot_dir, "board", "en")
        new_case = wait_until(
            lambda: next(
                (c for c in root.get("/api/cases").json()["cases"] if c["rating_id"] == bad), None
            ),
            30,
            what="the case of the new negative rating",
        )
        # The board's alert counts the hall's cases to handle and names the newest.
        page.wait_for_function(
            "() => !document.getElementById('case-alert').hidden"
            " && document.querySelector('#case-alert .newest').textContent.includes('wa1')",
            timeout=15_000,
        )
        assert "cases to handle" in page.inner_text("#case-alert")
        # ... and is taken through open → contacted → rectified → closed in the browser.
        page.goto(f"{url}/cases/{new_case['id']}")
        assert page.get_attribute("#state", "class") == "badge state-open"
        for step, note in (("contacted", "已电话回访"), ("rectified", "已整改"), ("closed", "")):
            page.fill("#note", note)
            with page.expect_navigation():
                page.click(f"button[data-to={step}]")
            assert page.get_attribute("#state", "class") == f"badge state-{step}"
        assert "已电话回访" in page.inner_text("table.history")
        done = root.get(f"/api/cases/{new_case['id']}").json()
        assert (done["state"], [e["actor"] for e in done["events"]][1:]) == (
            "closed",
            ["m1", "m1", "m1"],
        )
        # (d) an appeal filed by the hall manager cannot be approved by them ...
        first = cases[A]["id"]
        page.goto(f"{url}/cases/{first}")
        page.fill("#note", "同一人连续按键")
        with page.expect_navigation():
            page.click("button[data-kind=malicious]")
        assert page.locator("button[data-action=decision]").count() == 0
        refused = page.evaluate(
            """async (id) => {
                 const m = document.cookie.match(/(?:^|; )wr_csrf=([^;]*)/);
                 const r = await fetch('/api/cases/' + id + '/decision', {method: 'POST',
                   headers: {'Content-Type': 'application/json', 'X-CSRF-Token': m[1]},
                   body: JSON.stringify({approve: true})});
                 return r.status;
               }""",
            first,
        )
        assert refused == 403
        for lang in ("zh", "en"):
            page.goto(f"{url}/cases?lang={lang}")
            shoot(page, screenshot_dir, "cases", lang)
            page.goto(f"{url}/cases/{first}?lang={lang}")
            shoot(page, screenshot_dir, "case", lang)
        # ... and is approved by the office.
        office = browser.new_context(
            viewport={"width": 1280, "height": 800}, timezone_id=TZ
        ).new_page()
        office.on("pageerror", lambda exc: errors.append(str(exc)))
        login_page(office, url, "office")
        office.goto(f"{url}/cases/{first}")
        office.fill("#note", "核实属实")
        with office.expect_navigation():
            office.click("button[data-approve=true]")
        assert office.get_attribute("#state", "class") == "badge state-closed"
        decided = root.get(f"/api/cases/{first}").json()
        assert (decided["appeal_state"], decided["appeal_decided_by"]) == ("approved", "office")
        # After the day's presses the board's numbers equal InfluxDB's, window by window.
        page.goto(f"{url}/")
        page.wait_for_selector("#live-state.up", timeout=10_000)
        expected = influx_today(influx, A)
        assert expected == {"wa1": 4, "wa2": DAY_RATINGS}
        wait_until(
            lambda: {k.split("/")[1]: n for k, n in board_counts(page).items() if n} == expected,
            10,
            what="board equals InfluxDB",
        )
        # The other pages, in both languages.
        for lang in ("zh", "en"):
            page.goto(f"{url}/window/{A}/wa1?lang={lang}")
            page.wait_for_function(
                "() => document.getElementById('kpi-ratings').textContent === '4'", timeout=10_000
            )
            page.wait_for_selector("#timeline canvas", timeout=10_000)
            shoot(page, screenshot_dir, "window", lang)
            anon.goto(f"{url}/screen?lang={lang}")
            anon.wait_for_selector(f'.tile[data-key="{A}/wa1"]', timeout=10_000)
            assert "0457" not in anon.content()
            shoot(anon, screenshot_dir, "screen", lang)
            office.goto(f"{url}/exports?lang={lang}")
            shoot(office, screenshot_dir, "exports", lang)
            office.goto(f"{url}/docs")
            office.wait_for_selector(".opblock", timeout=10_000)  # Swagger UI served locally
            shoot(office, screenshot_dir, "docs", lang, full=False)
        assert errors == []
        browser.close()
    mq.loop_stop()
    mq.disconnect()
    root.close()
