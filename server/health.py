"""Health of the components the server depends on: InfluxDB, the MQTT broker, the gateways."""

import asyncio
import contextlib
import functools
import logging
import re
import secrets
import time
from collections.abc import Callable
from typing import Any, Literal

import httpx
import paho.mqtt.client as mqtt
from pydantic import BaseModel, Field

from common.mqtt import MqttSettings, make_client
from server.settings import ServerSettings
from storage.client import InfluxClient, InfluxError

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 2.0
# Hard upper bound of one check, so /health answers within about 3 s whatever hangs.
CHECK_DEADLINE_S = 2.6
GATEWAY_METRIC = "windowrate_gateway_ratings_written_total"
_METRIC_RE = re.compile(rf"^{GATEWAY_METRIC}(?:\{{[^}}]*\}})?\s+(\S+)", re.MULTILINE)


class ComponentHealth(BaseModel):
    """The state of one component and a human-readable detail."""

    state: Literal["up", "down"] = Field(title="up or down")
    detail: str = Field(title="What was checked and what was found")


class HealthReport(BaseModel):
    """Overall health: ok when every component is up, else degraded."""

    status: Literal["ok", "degraded"]
    components: dict[str, ComponentHealth]


def _up(detail: str) -> ComponentHealth:
    """Return an up state."""
    return ComponentHealth(state="up", detail=detail)


def _down(detail: str) -> ComponentHealth:
    """Return a down state."""
    return ComponentHealth(state="down", detail=detail)


def check_influx(client: InfluxClient, timeout: float = CHECK_TIMEOUT_S) -> ComponentHealth:
    """Check InfluxDB with GET /ping (204 expected)."""
    try:
        version = client.ping(timeout=timeout)
    except InfluxError as exc:
        return _down(str(exc))
    return _up(f"{client.url} answers /ping (version {version})")


def check_mqtt(settings: MqttSettings, timeout: float = CHECK_TIMEOUT_S) -> ComponentHealth:
    """Check the broker with a real MQTT 5 CONNECT, waiting for CONNACK, then disconnect."""
    where = f"{settings.host}:{settings.port}"
    client = make_client(settings, f"wr-server-health-{secrets.token_hex(4)}")
    client.connect_timeout = timeout
    outcome: dict[str, Any] = {}

    def on_connect(
        _client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any, _props: Any
    ) -> None:
        """Record the CONNACK reason code."""
        outcome["rc"] = reason_code

    client.on_connect = on_connect
    deadline = time.monotonic() + timeout
    try:
        client.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
        while "rc" not in outcome and time.monotonic() < deadline:
            if client.socket() is None:  # the broker closed the connection
                break
            client.loop(timeout=0.05)
    except (OSError, ValueError) as exc:
        return _down(f"broker {where} unreachable: {exc}")
    finally:
        if client.socket() is not None:
            with contextlib.suppress(Exception):
                client.disconnect()  # without a loop thread, sent at once and the socket closed
                if client.socket() is not None:
                    client.loop(timeout=0.05)
    if "rc" not in outcome:
        return _down(f"broker {where}: no CONNACK (closed, or nothing within {timeout:g} s)")
    rc = outcome["rc"]
    if rc.is_failure:
        return _down(f"broker {where} refused the connection: {rc}")
    return _up(f"broker {where} accepted an MQTT 5 connection")


def check_gateway(url: str, timeout: float = CHECK_TIMEOUT_S) -> ComponentHealth:
    """Check one gateway: its metrics page answers 200 and has the ratings-written counter."""
    try:
        resp = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return _down(f"{url} unreachable: {exc or type(exc).__name__}")
    if resp.status_code != 200:
        return _down(f"{url} answered {resp.status_code}")
    match = _METRIC_RE.search(resp.text)
    if match is None:
        return _down(f"{url} has no {GATEWAY_METRIC}: not a WindowRate gateway?")
    return _up(f"{url}: {match.group(1)} ratings written")


async def _bounded(fn: Callable[[], ComponentHealth], what: str) -> ComponentHealth:
    """Run a blocking check in a thread, giving up after CHECK_DEADLINE_S."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(fn), CHECK_DEADLINE_S)
    except TimeoutError:
        return _down(f"{what}: no answer within {CHECK_DEADLINE_S:g} s")
    except Exception as exc:  # a failed check is a down component, never a 500
        log.exception("health check of %s failed", what)
        return _down(f"{what}: check failed: {exc}")


async def check_all(settings: ServerSettings, influx: InfluxClient) -> HealthReport:
    """Check all components concurrently and return the report."""
    urls = settings.gateway_metrics_urls
    results = await asyncio.gather(
        _bounded(lambda: check_influx(influx), "influxdb"),
        _bounded(lambda: check_mqtt(settings.mqtt), "mqtt"),
        *(_bounded(functools.partial(check_gateway, url), url) for url in urls),
    )
    influx_state, mqtt_state, *gateways = results
    if not gateways:
        gateway_state = _down("no gateway_metrics_urls configured")
    else:
        gateway_state = ComponentHealth(
            state="up" if all(g.state == "up" for g in gateways) else "down",
            detail="; ".join(g.detail for g in gateways),
        )
    components = {"influxdb": influx_state, "mqtt": mqtt_state, "gateway": gateway_state}
    status: Literal["ok", "degraded"] = (
        "ok" if all(c.state == "up" for c in components.values()) else "degraded"
    )
    if status != "ok":
        log.warning(
            "health degraded: %s",
            ", ".join(f"{name} {c.state}" for name, c in components.items()),
        )
    return HealthReport(status=status, components=components)
