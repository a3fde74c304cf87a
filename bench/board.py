"""Press-to-paint latency and hall board load time, on real services and real kiosk presses.

Mosquitto, influxd, the gateway (seq-gap checker on, as in production) and the server run
as separate processes. `windows` kiosk cores (each the kiosk's own `Terminal`: outbox
fsync, MQTT connection, session with the real thank-you time) are pressed round-robin at
`rate` presses per second; headless Chromium shows the hall board, and each rating is
timed from the call of `Terminal.press` to the frame after the board redrew its row.
Before that, a board of `page_windows` windows is loaded cold (a new browser context each
time) and warm (a reload). Readiness is waited for, never slept: each kiosk's status must
have reached the server's board and the gateway's InfluxDB before the first press.
"""

import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import uuid6
from paho.mqtt.enums import CallbackAPIVersion

from bench.browser import PaintWatcher, page_loads
from bench.stack import Stack, metrics
from common.mqtt import MqttSettings
from kiosk.core.clock import SystemClock
from kiosk.core.terminal import Terminal, TerminalSpec
from protocol.messages import DeviceConfig, RatingEvent
from protocol.topics import Topic, TopicKind
from storage.client import InfluxClient, InfluxSettings
from storage.schema import MEASUREMENT_RATING, MEASUREMENT_STATUS

log = logging.getLogger(__name__)

LIVE_HALL = "hall-live"
PAGE_HALL = "hall-page"
# Press levels in turn (1 … 5). No reasons are configured, so a low rating is sent at once
# (`bench kiosk` covers the reasons screen).
LEVELS = (5, 4, 5, 3, 5, 2, 5, 4, 1, 5)
GAP_CHECKS = "windowrate_gateway_gap_checks_total"
GAP_WAIT_S = 90.0


def _percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0–1) of `values`, rounded; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def _board_rows(base: str) -> list[dict[str, Any]]:
    """The rows of the server's board snapshot."""
    rows: list[dict[str, Any]] = httpx.get(f"{base}/api/live/board", timeout=10).json()["rows"]
    return rows


def _series_tags(client: InfluxClient, q: str, tag: str) -> set[str]:
    """The values of `tag` among the series of a GROUP BY query."""
    return {s.tags.get(tag, "") for s in client.series(q)}


def _wait(what: str, check: Any, timeout: float) -> float:
    """Poll `check()` until true; return the seconds it took (RuntimeError after `timeout`)."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - t0


def _kiosks(stack: Stack, data_dir: Path, windows: int) -> list[Terminal]:
    """Start `windows` kiosk terminals of the live hall, each on its own connection."""
    out = []
    for i in range(1, windows + 1):
        spec = TerminalSpec(
            hall=LIVE_HALL,
            device=f"k-{i:04d}",
            data_dir=data_dir,
            mqtt=MqttSettings(port=stack.broker.port),
            config=DeviceConfig(window=f"w{i:03d}", repeat_interval_s=0),
        )
        term = Terminal(spec, clock=SystemClock(trust_wall=True))  # production thank-you time
        term.start()
        out.append(term)
    return out


def _wait_subscribed(stack: Stack, influx: InfluxClient, kiosks: list[Terminal]) -> float:
    """Wait until every kiosk's status reached the server's board and the gateway's InfluxDB."""
    windows = {t.session.config.window for t in kiosks}
    devices = {t.spec.device for t in kiosks}
    q = (
        f'SELECT count("state") FROM "{MEASUREMENT_STATUS}" '
        f'WHERE "hall" = \'{LIVE_HALL}\' GROUP BY "device"'
    )

    def server() -> bool:
        online = {r["window"] for r in _board_rows(stack.base) if r["state"] != "unknown"}
        return windows <= online

    t = _wait("the kiosks' connections", lambda: all(k.connected for k in kiosks), 60)
    t += _wait("the server's subscription (kiosk status on the board)", server, 60)
    t += _wait(
        "the gateway's subscription (kiosk status in InfluxDB)",
        lambda: devices <= _series_tags(influx, q, "device"),
        60,
    )
    return t


def _seed_page_hall(stack: Stack, influx: InfluxClient, windows: int) -> float:
    """One rating for each window of the page hall; wait until board and InfluxDB have them."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="bench-board-seed",
        protocol=mqtt.MQTTv5,
    )
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", stack.broker.port)
    client.loop_start()
    t0 = time.monotonic()
    try:
        infos = []
        for i in range(windows):
            ev = RatingEvent(
                id=uuid6.uuid7(), device=f"p-{i:04d}", hall=PAGE_HALL, window=f"p{i:03d}", seq=1,
                ts=int(time.time() * 1000), clock_synced=True, scale=5, level=1 + i % 5,
                input="touch", prompted=True,
            )  # fmt: skip
            topic = str(Topic(PAGE_HALL, ev.device, TopicKind.RATING))
            infos.append(client.publish(topic, ev.model_dump_json(), qos=1))
        for info in infos:
            info.wait_for_publish(30)
    finally:
        client.loop_stop()
        client.disconnect()
    q = f'SELECT count("id") FROM "{MEASUREMENT_RATING}" WHERE "hall" = \'{PAGE_HALL}\''

    def stored() -> int:
        return sum(int(r.get("count", 0)) for s in influx.series(q) for r in s.rows())

    _wait(
        "the page hall on the board",
        lambda: sum(r["hall"] == PAGE_HALL for r in _board_rows(stack.base)) >= windows,
        60,
    )
    _wait("the page hall in InfluxDB", lambda: stored() >= windows, 60)
    return time.monotonic() - t0


def _press(
    kiosks: list[Terminal], rate: float, seconds: float
) -> tuple[dict[str, float], list[float], int]:
    """Press the kiosks round-robin at `rate`/s; return press times by id, commit ms, refusals."""
    pressed: dict[str, float] = {}
    commit_ms: list[float] = []
    refused = 0
    total = int(rate * seconds)
    start = time.monotonic()
    for n in range(total):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        term = kiosks[n % len(kiosks)]
        t0 = time.monotonic()
        result = term.press(LEVELS[n % len(LEVELS)], "touch")
        t1 = time.monotonic()
        if result.recorded is None:
            refused += 1
            continue
        pressed[result.recorded.id] = t0
        commit_ms.append((t1 - t0) * 1000)
    return pressed, commit_ms, refused


def run_bench(
    windows: int = 100,
    rate: float = 50.0,
    seconds: float = 15.0,
    page_windows: int = 200,
    loads: int = 5,
) -> dict[str, Any]:
    """Start the services and kiosks, measure page loads and press-to-paint; return the row."""
    t_setup = time.monotonic()
    kiosks: list[Terminal] = []
    watcher: PaintWatcher | None = None
    with Stack("wr-bench-board-") as stack, tempfile.TemporaryDirectory() as kdir:
        influx = InfluxClient(InfluxSettings(url=stack.influx.url))
        try:
            kiosks = _kiosks(stack, Path(kdir), windows)
            subscribed_s = _wait_subscribed(stack, influx, kiosks)
            seed_s = _seed_page_hall(stack, influx, page_windows)
            rows = len(_board_rows(stack.base))
            setup_s = time.monotonic() - t_setup
            loads_ms = page_loads(f"{stack.base}/", rows, loads)
            watcher = PaintWatcher(f"{stack.base}/", rows)
            t_press = time.monotonic()
            pressed, commit_ms, refused = _press(kiosks, rate, seconds)
            press_s = time.monotonic() - t_press
            deadline = time.monotonic() + 30
            while not pressed.keys() <= watcher.painted.keys() and time.monotonic() < deadline:
                time.sleep(0.05)
            painted = dict(watcher.painted)
            q = f'SELECT count("id") FROM "{MEASUREMENT_RATING}" WHERE "hall" = \'{LIVE_HALL}\''

            def stored() -> int:
                return sum(int(r.get("count", 0)) for x in influx.series(q) for r in x.rows())

            deadline = time.monotonic() + 30
            while stored() < len(pressed) and time.monotonic() < deadline:
                time.sleep(0.1)
            n_stored = stored()
            # The gateway's seq-gap check of the pressed kiosks: wait for one that ran after
            # the presses (its interval is the production default, 30 s).
            checks = metrics(stack.gateway_metrics).get(GAP_CHECKS, 0.0)
            gap_wait_s = _wait(
                "a gateway gap check after the presses",
                lambda: metrics(stack.gateway_metrics).get(GAP_CHECKS, 0.0) > checks,
                GAP_WAIT_S,
            )
            gw = metrics(stack.gateway_metrics)
        finally:
            if watcher is not None:
                watcher.close()
            for k in kiosks:
                k.stop()
            influx.close()
    lat = [(painted[i] - t) * 1000 for i, t in pressed.items() if i in painted]
    received = len(lat)
    lost = len(pressed) - received
    errors = []
    missing = gw.get("windowrate_gateway_seq_missing_total", 0.0)
    if missing:
        errors.append(f"the gateway's gap check misses {missing:.0f} seqs")
    if lost:
        errors.append(f"{lost} of {len(pressed)} committed ratings never reached the board")
    if n_stored != len(pressed):
        errors.append(f"{len(pressed)} committed but {n_stored} stored by the gateway")
    if refused:
        errors.append(f"{refused} presses were refused by the kiosk session")
    cold = loads_ms["cold_ms"]
    return {
        "kiosks": windows,
        "presses": int(rate * seconds),
        "rate_per_s": round(len(pressed) / press_s, 1) if press_s else 0.0,
        "press_interval_per_kiosk_s": round(windows / rate, 2),
        "thanks_s": kiosks[0].session.thanks_s if kiosks else None,
        "committed": len(pressed),
        "refused": refused,
        "received": received,
        "lost": lost,
        "stored": n_stored,
        "p50_ms": _percentile(lat, 0.50),
        "p99_ms": _percentile(lat, 0.99),
        "max_ms": round(max(lat), 1) if lat else None,
        "commit_p50_ms": _percentile(commit_ms, 0.50),
        "commit_p99_ms": _percentile(commit_ms, 0.99),
        "page_windows": page_windows,
        "page_rows": rows,
        "browser_launch_ms": round(loads_ms["browser_launch_ms"], 1),
        "page_load_first_cold_ms": round(cold[0], 1),
        "page_load_ms": round(statistics.median(cold), 1),
        "page_loads_cold_ms": [round(x, 1) for x in cold],
        "page_load_warm_ms": round(statistics.median(loads_ms["warm_ms"]), 1),
        "gateway_gap_checks": gw.get(GAP_CHECKS, 0.0),
        "gateway_seq_missing": missing,
        "gap_check_wait_s": round(gap_wait_s, 1),
        "subscribed_wait_s": round(subscribed_s, 2),
        "seed_page_hall_s": round(seed_s, 2),
        "setup_s": round(setup_s, 1),
        "measured": "Terminal.press call to the frame after the row's redraw; all in one machine",
        "not_measured": "a kiosk's real network and the wall screen's GPU",
        "error": "; ".join(errors) or None,
    }
