"""Live boards against real Mosquitto, gateway, influxd and the server under uvicorn."""

import json
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from common.mqtt import MqttSettings
from devstack.services import Influxd, Mosquitto, free_port
from protocol.topics import Topic, TopicKind
from server.app import create_app
from server.auth.service import create_user
from server.db.models import Hall
from server.scores.policy import Policy
from server.settings import ServerSettings
from server.settings.live import LiveSettings
from storage.client import InfluxSettings
from tests.support import (
    GatewayProcess,
    influx_query,
    rating_count,
    rating_doc,
    raw_client,
    simulate_proc,
    wait_until,
)

TZ = "Asia/Shanghai"
POLICY = Policy()  # the policy in force in these tests (WR_SCORES_POLICY_FILE unset)
HALL = "h-live"


class ServerThread:
    """The real server app under uvicorn on a free port, in a thread of the test process."""

    def __init__(self, settings: ServerSettings) -> None:
        """Prepare (not start)."""
        self.port = settings.port
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start and wait until it answers and its MQTT link is up."""
        self.thread.start()
        wait_until(lambda: self.server.started, 30, what="uvicorn started")
        wait_until(lambda: self.app.state.live.link.connected, 30, what="server MQTT link")

    def stop(self) -> None:
        """Stop and wait."""
        self.server.should_exit = True
        self.thread.join(30)


def server_settings(mqtt_port: int, influx_url: str, db: Path, **live: Any) -> ServerSettings:
    """Server settings on the test's services, with a fast re-sync."""
    return ServerSettings(
        port=free_port(),
        influx=InfluxSettings(url=influx_url),
        mqtt=MqttSettings(port=mqtt_port),
        gateway_metrics_urls=[],
        timezone=TZ,
        database_url=f"sqlite:///{db}",
        live=LiveSettings(**({"resync_s": 1.0} | live)),
    )


class SseClient:
    """Reads an SSE stream in a thread; events land in a queue as (name, data)."""

    def __init__(self, url: str) -> None:
        """Connect and start reading."""
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._stop = threading.Event()
        self.connected = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(url,), daemon=True)
        self.thread.start()
        assert self.connected.wait(10), "SSE stream did not open"

    def _run(self, url: str) -> None:
        name = "message"
        with httpx.stream("GET", url, timeout=httpx.Timeout(5, read=None)) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            self.connected.set()
            for line in resp.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    self.events.put((name, json.loads(line[6:])))

    def ratings(self, timeout: float, want: int) -> dict[str, dict[str, Any]]:
        """Collect `window` events with a rating until `want` distinct ids arrived."""
        seen: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while len(seen) < want and time.monotonic() < deadline:
            try:
                name, data = self.events.get(timeout=0.5)
            except queue.Empty:
                continue
            if name == "window" and "rating" in data:
                seen[data["rating"]["id"]] = data
        return seen

    def close(self) -> None:
        """Stop reading (the thread ends with the next line)."""
        self._stop.set()


@dataclass
class LiveStack:
    """Broker, influxd, gateway and server."""

    broker: Mosquitto
    influx: Influxd
    gateway: GatewayProcess
    server: ServerThread


@pytest.fixture
def live_stack(tmp_path: Path, broker: Mosquitto, influx: Influxd) -> Iterator[LiveStack]:
    """The whole centre side running on free ports."""
    gw = GatewayProcess(tmp_path / "gw", broker.port, influx.url)
    gw.start()
    srv = ServerThread(server_settings(broker.port, influx.url, tmp_path / "wr.db"))
    srv.start()
    try:
        yield LiveStack(broker, influx, gw, srv)
    finally:
        srv.stop()
        gw.stop()


def influx_windows(url: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Count each window's ratings, negatives and score straight from InfluxDB (by hand)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for series in influx_query(
        url, 'SELECT "scale", "level" FROM "rating" GROUP BY "hall", "window"'
    ):
        key = (series["tags"]["hall"], series["tags"]["window"])
        cols = series["columns"]
        rows = [dict(zip(cols, v, strict=True)) for v in series["values"]]
        levels = [(int(r["scale"]), int(r["level"])) for r in rows]
        out[key] = {
            "ratings": len(levels),
            "negatives": sum(POLICY.negative(s, lv) for s, lv in levels),
            "score": round(sum(POLICY.index(s, lv) for s, lv in levels) / len(levels), 2),
        }
    return out


def board_windows(url: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The live board's numbers per window."""
    rows = httpx.get(f"{url}/api/live/board", timeout=10).json()["rows"]
    return {
        (r["hall"], r["window"]): {k: r[k] for k in ("ratings", "negatives", "score")}
        for r in rows
        if r["ratings"]
    }


def test_simulated_kiosks_reach_the_stream_and_the_board_agrees_with_influx(
    tmp_path: Path, live_stack: LiveStack
) -> None:
    """Every rating of simulated kiosks arrives on SSE once; the board equals InfluxDB."""
    srv = live_stack.server
    sse = SseClient(f"{srv.url}/api/live/stream")
    name, snap = sse.events.get(timeout=10)
    assert name == "snapshot" and snap["rows"] == []
    kiosks, per = 4, 25
    sim = simulate_proc(
        live_stack.broker.port,
        tmp_path / "sim",
        hall=HALL,
        first=1,
        kiosks=kiosks,
        per_kiosk=per,
        rate=20,
        log_path=tmp_path / "sim.log",
    )
    got = sse.ratings(60, kiosks * per)
    assert len(got) == kiosks * per
    assert sim.wait(60) == 0
    wait_until(lambda: rating_count(live_stack.influx.url) == kiosks * per, 60, what="stored")
    # A redelivered rating (same id) and an invalid one change nothing.
    live = srv.app.state.live
    rid = next(iter(got))
    first = got[rid]["row"]
    (stored,) = influx_query(
        live_stack.influx.url, f'SELECT * FROM "rating" WHERE "id" = \'{rid}\'', epoch="ms"
    )
    doc = dict(zip(stored["columns"], stored["values"][0], strict=True))
    again = rating_doc(
        HALL,
        doc["device"],
        int(doc["seq"]),
        id=rid,
        window=first["window"],
        ts=int(doc["time"]),
        level=int(doc["level"]),
        scale=int(doc["scale"]),
    )
    mq = raw_client(live_stack.broker.port, "replay")
    topic = str(Topic(HALL, doc["device"], TopicKind.RATING))
    mq.publish(topic, json.dumps(again), qos=1).wait_for_publish(5)
    mq.publish(topic, b'{"v": 1, "bogus": true}', qos=1).wait_for_publish(5)
    wait_until(lambda: live.link.invalid["rating"] == 1, 10, what="invalid counted")
    wait_until(lambda: live.board.duplicates >= 1, 10, what="duplicate seen")
    mq.loop_stop()
    mq.disconnect()
    # After the re-syncs the board's numbers equal what InfluxDB holds, window by window.
    expected = influx_windows(live_stack.influx.url)
    assert len(expected) == kiosks
    wait_until(lambda: board_windows(srv.url) == expected, 30, what="board equals InfluxDB")
    assert sum(w["ratings"] for w in expected.values()) == kiosks * per
    sse.close()


def test_public_stream_has_no_staff(live_stack: LiveStack) -> None:
    """The public view never carries staff numbers, tickets or items."""
    srv = live_stack.server
    sse = SseClient(f"{srv.url}/api/live/stream?view=public")
    assert sse.events.get(timeout=10)[0] == "snapshot"
    mq = raw_client(live_stack.broker.port, "pub")
    doc = rating_doc(HALL, "k-0009", 1, window="w09", staff="0457", ticket="A0123")
    topic = str(Topic(HALL, "k-0009", TopicKind.RATING))
    mq.publish(topic, json.dumps(doc), qos=1).wait_for_publish(5)
    (event,) = sse.ratings(20, 1).values()
    text = json.dumps(event)
    assert "0457" not in text and "A0123" not in text and "330100-001" not in text
    assert event["row"]["staff"] is None and event["row"]["ratings"] == 1
    # The logged-out board API is the public view too, and the npm tree is not served.
    rows = httpx.get(f"{srv.url}/api/live/board").json()["rows"]
    assert rows[0]["staff"] is None
    assert httpx.get(f"{srv.url}/static/node_modules/echarts/package.json").status_code == 404
    assert httpx.get(f"{srv.url}/static/package-lock.json").status_code == 404
    assert httpx.get(f"{srv.url}/vendor/echarts.min.js").status_code == 200
    mq.loop_stop()
    mq.disconnect()
    sse.close()


def test_board_in_chromium_updates_on_a_new_rating(live_stack: LiveStack) -> None:
    """Headless Chromium: the hall board shows a new rating as it comes; window page and screen.

    How fast is measured by `windowrate bench board` (press to board over SSE).
    """
    pw = pytest.importorskip("playwright.sync_api")
    srv = live_stack.server
    mq = raw_client(live_stack.broker.port, "chromium-test")
    topic = str(Topic(HALL, "k-0001", TopicKind.RATING))
    mq.publish(topic, json.dumps(rating_doc(HALL, "k-0001", 1, window="w01")), qos=1)
    wait_until(lambda: rating_count(live_stack.influx.url) == 1, 30, what="first stored")
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        def console(msg: Any) -> None:
            if msg.type == "error" and "Failed to load resource" not in msg.text:
                errors.append(msg.text)  # a script error or a CSP violation

        def response(resp: Any) -> None:
            if resp.status >= 400 and not resp.url.endswith("/favicon.ico"):
                errors.append(f"{resp.status} {resp.url}")

        page.on("console", console)
        page.on("response", response)
        page.goto(f"{srv.url}/")
        page.wait_for_selector("#live-state.up", timeout=10_000)
        cell = f'tr[data-key="{HALL}/w01"] td.ratings'
        assert page.inner_text(cell) == "1"
        doc = rating_doc(HALL, "k-0001", 2, window="w01", level=1)
        mq.publish(topic, json.dumps(doc), qos=1)
        page.wait_for_selector(f'{cell}:text-is("2")', timeout=10_000)
        assert page.locator(f'tr[data-key="{HALL}/w01"].flash').count() == 1
        assert "非常不满意" in page.inner_text(f'tr[data-key="{HALL}/w01"] td.last-negative')
        page.goto(f"{srv.url}/?lang=en")
        page.wait_for_selector("#live-state.up", timeout=10_000)
        assert "Very dissatisfied" in page.inner_text(f'tr[data-key="{HALL}/w01"]')
        page.goto(f"{srv.url}/window/{HALL}/w01")
        page.wait_for_selector('#kpi-ratings:text-is("2")', timeout=10_000)
        assert page.evaluate("typeof echarts") == "object"
        page.wait_for_selector("#timeline canvas", timeout=10_000)
        page.goto(f"{srv.url}/screen")
        page.wait_for_selector(f'.tile[data-key="{HALL}/w01"]', timeout=10_000)
        assert "0457" not in page.content()
        assert errors == []
        browser.close()
    mq.loop_stop()
    mq.disconnect()


def test_hall_manager_stream_and_window_history(live_stack: LiveStack) -> None:
    """A logged-in hall manager sees their own hall only, with the clerk; the window's charts."""
    srv = live_stack.server
    with srv.app.state.db.session() as session:
        session.add_all([Hall(code=HALL, name="市民中心"), Hall(code="h-other", name="别处")])
        session.flush()
        create_user(session, "mgr", "correct horse battery", "hall_manager", HALL)
        session.commit()
    mq = raw_client(live_stack.broker.port, "mgr-test")
    docs = [
        rating_doc(HALL, "k-0001", 1, window="w01", staff="0457", level=5),
        rating_doc(HALL, "k-0001", 2, window="w01", staff="0457", level=2),
        rating_doc("h-other", "k-0002", 1, window="x01", staff="9999"),
    ]
    for doc in docs:
        topic = str(Topic(doc["hall"], doc["device"], TopicKind.RATING))
        mq.publish(topic, json.dumps(doc), qos=1).wait_for_publish(5)
    wait_until(lambda: rating_count(live_stack.influx.url) == 3, 30, what="stored")
    c = httpx.Client(base_url=srv.url, timeout=10)
    resp = c.post("/api/auth/login", json={"username": "mgr", "password": "correct horse battery"})
    assert resp.status_code == 200, resp.text
    (row,) = c.get("/api/live/board").json()["rows"]
    assert (row["hall"], row["window"], row["staff"], row["ratings"]) == (HALL, "w01", "0457", 2)
    assert row["negatives"] == 1 and row["last_negative"]["id"] == docs[1]["id"]
    assert c.get("/api/live/board", params={"view": "public"}).json()["rows"][0]["staff"] is None
    assert len(httpx.get(f"{srv.url}/api/live/board").json()["rows"]) == 2  # public: all halls
    assert c.get("/api/live/windows/h-other/x01").status_code == 404
    hist = c.get(f"/api/live/windows/{HALL}/w01").json()
    assert [(p["level"], p["ts"]) for p in hist["timeline"]] == [
        (5, docs[0]["ts"]),
        (2, docs[1]["ts"]),
    ]
    assert sum(cell[2] for cell in hist["heatmap"]) == 2
    (day,) = hist["trend"]
    assert day["ratings"] == 2 and day["score"] == pytest.approx((100 + 25) / 2)
    assert day["satisfaction_rate"] == pytest.approx(0.5)
    for lang, title in (("zh", "窗口评价详情"), ("en", "Window ratings")):
        assert title in httpx.get(f"{srv.url}/window/{HALL}/w01", params={"lang": lang}).text
    assert "公示" in httpx.get(f"{srv.url}/screen").text
    mq.loop_stop()
    mq.disconnect()


def test_rating_stored_before_the_server_hears_it_counts_once(live_stack: LiveStack) -> None:
    """A rating already in InfluxDB when it arrives on MQTT is known from the re-sync."""
    srv = live_stack.server
    board = srv.app.state.live.board
    doc = rating_doc(HALL, "k-0042", 1, window="w42", level=4)
    line = (
        f"rating,device=k-0042,hall={HALL},level=4,window=w42 seq=1i,scale=5i,"
        f'id="{doc["id"]}",input="touch",prompted=true,clock_synced=true '
        f"{doc['ts'] * 10**6 + 1}"
    )
    url = live_stack.influx.url
    assert httpx.post(f"{url}/query", params={"q": "CREATE DATABASE windowrate"}).is_success
    resp = httpx.post(f"{url}/write", params={"db": "windowrate"}, content=line)
    assert resp.status_code == 204, resp.text
    synced = board.synced_at
    wait_until(lambda: board.synced_at != synced, 10, what="a re-sync")
    mq = raw_client(live_stack.broker.port, "late")
    topic = str(Topic(HALL, "k-0042", TopicKind.RATING))
    mq.publish(topic, json.dumps(doc), qos=1).wait_for_publish(5)
    wait_until(lambda: board.duplicates == 1, 10, what="known as stored")
    assert board_windows(srv.url)[(HALL, "w42")]["ratings"] == 1
    mq.loop_stop()
    mq.disconnect()
