"""Server tests against a real Mosquitto and a real influxd on free ports."""

import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi.testclient import TestClient

from common.mqtt import MqttSettings
from devstack.services import Influxd, Mosquitto, free_port
from server.app import create_app
from server.settings import ServerSettings, get_settings
from storage.client import InfluxSettings
from tests.support import GatewayProcess

TZ_NAME = "Asia/Shanghai"
TZ = ZoneInfo(TZ_NAME)
DB = "windowrate"


@dataclass
class Stack:
    """The real services of this module and today's local midnight."""

    mosquitto: Mosquitto
    influxd: Influxd
    start_ns: int
    end_ns: int


def _day_ns() -> tuple[int, int]:
    """Return today's local midnight and the next, in ns since the epoch (computed here by hand)."""
    today = datetime.now(TZ).date()
    start = datetime.combine(today, dtime(0), tzinfo=TZ)
    end = datetime.combine(today + timedelta(days=1), dtime(0), tzinfo=TZ)
    return int(start.timestamp()) * 10**9, int(end.timestamp()) * 10**9


def _line(hall: str, window: str, device: str, scale: int, level: int, seq: int, ns: int) -> str:
    """Return one rating point in line protocol, as the gateway writes it."""
    return (
        f"rating,device={device},hall={hall},level={level},window={window} "
        f'seq={seq}i,id="{uuid.uuid4()}",scale={scale}i,input="touch",prompted=true,'
        f"clock_synced=true {ns}"
    )


def write_points(url: str, db: str, lines: list[str]) -> None:
    """Create `db` if needed and write `lines` into it."""
    resp = httpx.post(f"{url}/query", params={"q": f"CREATE DATABASE {db}"})
    assert resp.status_code == 200, resp.text
    resp = httpx.post(
        f"{url}/write", params={"db": db, "precision": "ns"}, content="\n".join(lines)
    )
    assert resp.status_code == 204, resp.text


def seed(url: str, start_ns: int, end_ns: int) -> None:
    """Write today's ratings plus ratings of yesterday and tomorrow that must not count."""
    sec = 10**9
    lines: list[str] = []
    for i, level in enumerate([5, 5, 4, 3, 2, 1]):
        lines.append(_line("h1", "a1", "k-1", 5, level, 10 + i, start_ns + (i + 1) * sec))
    for i, level in enumerate([4, 2, 1]):
        lines.append(_line("h1", "a2", "k-2", 4, level, 1 + i, start_ns + (i + 1) * sec))
    lines.append(_line("h2", "b1", "k-3", 5, 5, 1, start_ns + 30 * sec))
    # Yesterday, local time (the last nanosecond before midnight included) and tomorrow.
    lines.append(_line("h1", "a1", "k-1", 5, 1, 8, start_ns - 1))
    lines.append(_line("h1", "a1", "k-1", 5, 1, 7, start_ns - 6 * 3600 * sec))
    lines.append(_line("h1", "a9", "k-9", 5, 5, 1, start_ns - 3600 * sec))
    lines.append(_line("h1", "a1", "k-1", 5, 1, 99, end_ns))
    write_points(url, DB, lines)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Start Mosquitto and influxd on free ports, seed ratings, stop both at the end."""
    mq = Mosquitto(tmp_path_factory.mktemp("mq"))
    ix = Influxd(tmp_path_factory.mktemp("ix"))
    mq.start()
    try:
        ix.start()
        start_ns, end_ns = _day_ns()
        seed(ix.url, start_ns, end_ns)
        yield Stack(mosquitto=mq, influxd=ix, start_ns=start_ns, end_ns=end_ns)
    finally:
        ix.stop()
        mq.stop()


def _dead_url() -> str:
    """Return a metrics URL on a port where nothing listens."""
    return f"http://127.0.0.1:{free_port()}/metrics"


def make_settings(stack: Stack, **over: Any) -> ServerSettings:
    """Return server settings pointing at the module's services (no gateway by default)."""
    values: dict[str, Any] = {
        "influx": InfluxSettings(url=stack.influxd.url, database=DB),
        "mqtt": MqttSettings(host="127.0.0.1", port=stack.mosquitto.port),
        "gateway_metrics_urls": [_dead_url()],
        "timezone": TZ_NAME,
    }
    values.update(over)
    return ServerSettings(**values)


@pytest.fixture
def gateway_metrics(stack: Stack, tmp_path: Path) -> Iterator[str]:
    """Run the real gateway (`windowrate gateway run`) on the module's services; yield its URL."""
    gw = GatewayProcess(tmp_path / "gateway", stack.mosquitto.port, stack.influxd.url)
    gw.start()
    try:
        yield f"http://127.0.0.1:{gw.metrics_port}/metrics"
    finally:
        gw.stop()


def _by_window(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Index the windows of an /api/today answer by window."""
    return {w["window"]: w for w in body["windows"]}


def test_api_today_counts(stack: Stack) -> None:
    """Today's numbers per window, computed by hand; yesterday and tomorrow do not count."""
    with TestClient(create_app(make_settings(stack))) as client:
        resp = client.get("/api/today")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["date"] == datetime.now(TZ).date().isoformat()
    assert body["timezone"] == TZ_NAME
    assert [(w["hall"], w["window"]) for w in body["windows"]] == [
        ("h1", "a1"),
        ("h1", "a2"),
        ("h2", "b1"),
    ]
    win = _by_window(body)

    a1 = win["a1"]  # five keys: 5 5 4 3 2 1
    assert a1["ratings"] == 6
    assert a1["levels"] == {"1": 1, "2": 1, "3": 1, "4": 1, "5": 2}
    assert a1["scales"] == [5]
    assert a1["satisfaction_rate"] == pytest.approx(4 / 6)
    assert a1["score"] == pytest.approx((100 + 100 + 75 + 50 + 25 + 0) / 6)
    assert a1["negatives"] == 2

    a2 = win["a2"]  # four keys: 4 (非常满意) 2 (基本满意) 1 (不满意)
    assert a2["ratings"] == 3
    assert a2["levels"] == {"1": 1, "2": 1, "3": 0, "4": 1}
    assert a2["satisfaction_rate"] == pytest.approx(2 / 3)
    assert a2["score"] == pytest.approx((100 + 100 / 3 + 0) / 3)
    assert a2["negatives"] == 1

    b1 = win["b1"]
    assert (b1["ratings"], b1["satisfaction_rate"], b1["score"], b1["negatives"]) == (
        1,
        1.0,
        100.0,
        0,
    )


def test_api_today_hall_filter(stack: Stack) -> None:
    """With a hall set, only that hall's windows are shown."""
    with TestClient(create_app(make_settings(stack, hall="h2"))) as client:
        body = client.get("/api/today").json()
    assert [(w["hall"], w["window"]) for w in body["windows"]] == [("h2", "b1")]


def test_board_zh(stack: Stack) -> None:
    """The board renders in Chinese by default with the numbers and a switch to English."""
    with TestClient(create_app(make_settings(stack))) as client:
        resp = client.get("/")
        css = client.get("/static/board.css")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    html = resp.text
    for text in ("今日看板", "窗口", "满意率", "非常不满意", "a1", "a2", "b1", "66.7%", "58.3"):
        assert text in html, text
    assert 'http-equiv="refresh"' in html
    assert 'href="?lang=en"' in html and "English" in html
    assert "今天还没有评价" not in html
    assert "/static/board.css" in html and css.status_code == 200
    assert "://" not in html.split("<body>")[0]  # nothing loaded from elsewhere (no CDN)


def test_board_en(stack: Stack) -> None:
    """?lang=en renders English labels and a switch back to Chinese."""
    with TestClient(create_app(make_settings(stack))) as client:
        resp = client.get("/", params={"lang": "en"})
    assert resp.status_code == 200
    html = resp.text
    for text in ("Ratings today", "Satisfaction", "Very dissatisfied", "Negative", "66.7%"):
        assert text in html, text
    assert 'href="?lang=zh"' in html and "中文" in html
    assert "满意率" not in html


def test_empty_when_database_missing(stack: Stack) -> None:
    """A database that does not exist yet means no ratings, not an error."""
    settings = make_settings(stack, influx=InfluxSettings(url=stack.influxd.url, database="nodb"))
    with TestClient(create_app(settings)) as client:
        api = client.get("/api/today")
        zh = client.get("/")
        en = client.get("/?lang=en")
    assert api.status_code == 200 and api.json()["windows"] == []
    assert zh.status_code == 200 and "今天还没有评价" in zh.text
    assert en.status_code == 200 and "No ratings yet today" in en.text


def test_empty_when_only_other_days(stack: Stack) -> None:
    """A database holding only yesterday's ratings shows the empty state."""
    write_points(
        stack.influxd.url,
        "olddays",
        [_line("h1", "a1", "k-1", 5, 5, 1, stack.start_ns - 10**9)],
    )
    settings = make_settings(
        stack, influx=InfluxSettings(url=stack.influxd.url, database="olddays")
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/today").json()["windows"] == []
        assert "今天还没有评价" in client.get("/").text


def test_three_key_scale(stack: Stack) -> None:
    """Three keys: 3 满意, 2 基本满意, 1 不满意 → two of three satisfied, one negative."""
    lines = [
        _line("h3", "c1", "k-4", 3, level, i + 1, stack.start_ns + (i + 1) * 10**9)
        for i, level in enumerate([3, 2, 1])
    ]
    write_points(stack.influxd.url, "threekeys", lines)
    settings = make_settings(
        stack, influx=InfluxSettings(url=stack.influxd.url, database="threekeys")
    )
    with TestClient(create_app(settings)) as client:
        (c1,) = client.get("/api/today").json()["windows"]
    assert c1["levels"] == {"1": 1, "2": 1, "3": 1}
    assert c1["score"] == pytest.approx(50.0)
    assert c1["negatives"] == 1
    assert c1["satisfaction_rate"] == pytest.approx(2 / 3)


def test_health_gateway_down(stack: Stack) -> None:
    """No gateway running: 503, with InfluxDB and the broker up."""
    with TestClient(create_app(make_settings(stack))) as client:
        resp = client.get("/health")
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "degraded"
    comps = body["components"]
    assert comps["influxdb"]["state"] == "up", comps
    assert comps["mqtt"]["state"] == "up", comps
    assert comps["gateway"]["state"] == "down"
    assert comps["gateway"]["detail"]


def test_health_all_up(stack: Stack, gateway_metrics: str) -> None:
    """With the real gateway running, every component is up: 200."""
    settings = make_settings(stack, gateway_metrics_urls=[gateway_metrics])
    with TestClient(create_app(settings)) as client:
        resp = client.get("/health")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "ok"
    assert {k: v["state"] for k, v in body["components"].items()} == {
        "influxdb": "up",
        "mqtt": "up",
        "gateway": "up",
    }
    assert "0.0 ratings written" in body["components"]["gateway"]["detail"]


def test_health_not_a_gateway(stack: Stack) -> None:
    """A metrics URL that answers without the gateway's counter is down."""
    settings = make_settings(stack, gateway_metrics_urls=[f"{stack.influxd.url}/ping"])
    with TestClient(create_app(settings)) as client:
        resp = client.get("/health")
    assert resp.status_code == 503
    assert resp.json()["components"]["gateway"]["state"] == "down"


def test_health_mqtt_down(stack: Stack, gateway_metrics: str) -> None:
    """No broker on the configured port: mqtt down, 503."""
    settings = make_settings(
        stack,
        mqtt=MqttSettings(host="127.0.0.1", port=free_port()),
        gateway_metrics_urls=[gateway_metrics],
    )
    with TestClient(create_app(settings)) as client:
        resp = client.get("/health")
    assert resp.status_code == 503
    comps = resp.json()["components"]
    assert comps["mqtt"]["state"] == "down"
    assert comps["influxdb"]["state"] == "up" and comps["gateway"]["state"] == "up"


def test_health_answers_when_peers_hang(stack: Stack) -> None:
    """A broker and gateways that accept TCP but never answer are reported down (not a hang)."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)  # connections complete in the kernel backlog; nothing ever answers
        port = hole.getsockname()[1]
        settings = make_settings(
            stack,
            mqtt=MqttSettings(host="127.0.0.1", port=port),
            gateway_metrics_urls=[f"http://127.0.0.1:{port}/a", f"http://127.0.0.1:{port}/b"],
        )
        with TestClient(create_app(settings)) as client:
            resp = client.get("/health")
    assert resp.status_code == 503
    comps = resp.json()["components"]
    assert comps["mqtt"]["state"] == "down" and comps["gateway"]["state"] == "down"
    assert comps["influxdb"]["state"] == "up"
    assert "no answer" in comps["gateway"]["detail"] or "no CONNACK" in comps["mqtt"]["detail"]


def test_influx_down(tmp_path: Path, stack: Stack, gateway_metrics: str) -> None:
    """After influxd stops: /health 503 influxdb down, /api/today 503, / shows the banner."""
    ix = Influxd(tmp_path / "ix")
    ix.start()
    try:
        start_ns, _end_ns = _day_ns()
        write_points(ix.url, DB, [_line("h1", "a1", "k-1", 5, 5, 1, start_ns + 10**9)])
        settings = make_settings(
            stack,
            influx=InfluxSettings(url=ix.url, database=DB, timeout_s=2.0),
            gateway_metrics_urls=[gateway_metrics],
        )
        with TestClient(create_app(settings)) as client:
            assert client.get("/health").status_code == 200
            assert client.get("/api/today").json()["windows"][0]["ratings"] == 1
            ix.stop()

            health = client.get("/health")
            assert health.status_code == 503
            comps = health.json()["components"]
            assert comps["influxdb"]["state"] == "down"
            assert comps["mqtt"]["state"] == "up" and comps["gateway"]["state"] == "up"

            api = client.get("/api/today")
            assert api.status_code == 503
            assert api.json()["error"] == "influxdb_unavailable"
            assert ix.url in api.json()["detail"]

            for lang, banner in (("zh", "无法读取评价数据"), ("en", "Ratings cannot be read")):
                page = client.get("/", params={"lang": lang})
                assert page.status_code in (200, 503)
                assert banner in page.text
                assert "WR_SERVER_INFLUX__URL" in page.text
                assert "Traceback" not in page.text
    finally:
        ix.stop()


def test_docs_served(stack: Stack) -> None:
    """OpenAPI docs are at /docs and list the endpoints."""
    with TestClient(create_app(make_settings(stack))) as client:
        assert client.get("/docs").status_code == 200
        paths = client.get("/openapi.json").json()["paths"]
    assert {"/", "/api/today", "/health"} <= set(paths)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """WR_SERVER_* variables (nested with __) configure the server; bad values are rejected."""
    monkeypatch.setenv("WR_SERVER_PORT", "8123")
    monkeypatch.setenv("WR_SERVER_INFLUX__URL", "http://influx.example:8086")
    monkeypatch.setenv("WR_SERVER_INFLUX__PASSWORD", "s3cret")
    monkeypatch.setenv("WR_SERVER_MQTT__PORT", "1884")
    monkeypatch.setenv("WR_SERVER_GATEWAY_METRICS_URLS", '["http://g1:9108/metrics"]')
    monkeypatch.setenv("WR_SERVER_HALL", "hz-civic")
    get_settings.cache_clear()
    try:
        cfg = get_settings()
        assert get_settings() is cfg
    finally:
        get_settings.cache_clear()
    assert cfg.port == 8123
    assert cfg.influx.url == "http://influx.example:8086"
    assert cfg.influx.database == "windowrate"
    assert cfg.influx.password is not None
    assert cfg.influx.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(cfg)
    assert cfg.mqtt.port == 1884
    assert cfg.gateway_metrics_urls == ["http://g1:9108/metrics"]
    assert cfg.hall == "hz-civic"
    assert cfg.timezone == "Asia/Shanghai"
    with pytest.raises(ValueError, match="time zone"):
        ServerSettings(timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="hall"):
        ServerSettings(hall="Bad Hall")
