"""Each service answers on its port: broker (plain and TLS), InfluxDB, gateway metrics, server."""

import httpx

from common.mqtt import MqttSettings
from ops.doctor.context import Context
from ops.doctor.report import Check, ok, problem
from server.health import check_gateway, check_mqtt
from storage.client import InfluxError

PART = "services"


def _down(ctx: Context, name: str, part: str, value: str, what_zh: str, what_en: str) -> Check:
    """A failed service with the restart line for it."""
    zh, en = ctx.restart(part)
    return problem(PART, name, "fail", value, f"{what_zh}：{zh}", f"{what_en}: {en}")


def broker(ctx: Context) -> Check:
    """The broker's plain listener accepts the server's MQTT 5 login."""
    health = check_mqtt(ctx.server.mqtt, ctx.doctor.timeout_s)
    if health.state == "up":
        return ok(PART, "broker", health.detail)
    return _down(ctx, "broker", "broker", health.detail, "启动 MQTT 代理", "start the broker")


def broker_tls(ctx: Context) -> Check:
    """The TLS listener kiosks use accepts a login over TLS verified against the hall CA."""
    prov = ctx.server.provisioning
    if prov.ca_file is None:
        return problem(
            PART,
            "broker_tls",
            "warn",
            "no CA configured (WR_SERVER_PROVISIONING__CA_FILE)",
            "用 windowrate pki init 建立大厅 CA，并设置 WR_SERVER_PROVISIONING__CA_FILE",
            "make the hall CA with `windowrate pki init` and set WR_SERVER_PROVISIONING__CA_FILE",
        )
    settings = MqttSettings(
        host=prov.broker_host,
        port=prov.broker_port,
        username=ctx.server.mqtt.username,
        password=ctx.server.mqtt.password,
        tls_ca=str(prov.ca_file),
    )
    health = check_mqtt(settings, ctx.doctor.timeout_s)
    if health.state == "up":
        return ok(PART, "broker_tls", f"TLS: {health.detail}")
    return _down(
        ctx,
        "broker_tls",
        "broker",
        f"TLS: {health.detail}",
        "检查代理的 TLS 监听端口与证书（windowrate pki）",
        "check the broker's TLS listener and certificate (windowrate pki)",
    )


def influxdb(ctx: Context) -> Check:
    """InfluxDB answers /ping."""
    with ctx.influx() as client:
        try:
            version = client.ping(timeout=ctx.doctor.timeout_s)
        except InfluxError as exc:
            ctx.influx_up = False
            return _down(ctx, "influxdb", "influxdb", str(exc), "启动 InfluxDB", "start InfluxDB")
        return ok(PART, "influxdb", f"{client.url}/ping: version {version}", version=version)


def gateway(ctx: Context) -> list[Check]:
    """Each gateway's metrics page answers with the ratings-written counter (kept for later)."""
    out = []
    for i, url in enumerate(ctx.server.gateway_metrics_urls):
        name = "gateway" if i == 0 else f"gateway{i + 1}"
        health = check_gateway(url, ctx.doctor.timeout_s)
        if health.state == "up":
            try:
                ctx.metrics[url] = httpx.get(url, timeout=ctx.doctor.timeout_s).text
            except httpx.HTTPError:
                ctx.metrics[url] = None
            out.append(ok(PART, name, health.detail, url=url))
        else:
            ctx.metrics[url] = None
            out.append(_down(ctx, name, "gateway", health.detail, "启动网关", "start the gateway"))
    if not out:
        out.append(
            problem(
                PART,
                "gateway",
                "warn",
                "no gateway metrics URL configured",
                "设置 WR_SERVER_GATEWAY_METRICS_URLS",
                "set WR_SERVER_GATEWAY_METRICS_URLS",
            )
        )
    return out


def server(ctx: Context) -> Check:
    """The server's /health answers and says every component is up."""
    s = ctx.server
    host = "127.0.0.1" if s.host in ("0.0.0.0", "::", "") else s.host
    url = f"http://{host}:{s.port}/health"
    try:
        resp = httpx.get(url, timeout=ctx.doctor.timeout_s * 2)
        body = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        return _down(
            ctx,
            "server",
            "server",
            f"{url}: {exc or type(exc).__name__}",
            "启动服务器",
            "start the server",
        )
    status = body.get("status") if isinstance(body, dict) else None
    if resp.status_code == 200 and status == "ok":
        return ok(PART, "server", f"{url}: ok")
    down = [
        name
        for name, comp in (body.get("components") or {}).items()
        if isinstance(comp, dict) and comp.get("state") != "up"
    ]
    return problem(
        PART,
        "server",
        "warn",
        f"{url}: {resp.status_code} {status}, down: {', '.join(down) or '?'}",
        "服务器运行中，但它依赖的组件有故障：见本报告其他项",
        "the server runs but a part it needs is down: see the other checks",
    )


def run(ctx: Context) -> list[Check]:
    """Every service check, InfluxDB first (later checks skip queries when it is down)."""
    return [influxdb(ctx), broker(ctx), broker_tls(ctx), *gateway(ctx), server(ctx)]
