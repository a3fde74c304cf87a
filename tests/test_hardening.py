"""Server hardening: security headers and a CSP the pages live with, secrets from files, no
secret in any log line, and an audit row for every login, logout and change.

The pages run in headless Chromium against the real server (uvicorn, Mosquitto, influxd); the
log test drives real flows (logins, MQTT and InfluxDB with passwords, signed webhooks to a real
HTTP server, a provisioning redeem, `windowrate device add --json`) with known secret values and
reads every log record at DEBUG and the CLI's stderr. The audit test calls every POST, PUT,
PATCH and DELETE route of the app (walked from `app.routes`) as an admin.
"""

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select

from common.mqtt import MqttSettings
from common.secret_files import SecretFileError
from devstack.services import Influxd, Mosquitto, free_port
from gateway.settings import GatewaySettings
from kiosk.settings import KioskSettings
from server.app import create_app
from server.auth.service import create_user
from server.cases.service import NegativeRating, open_cases
from server.db.models import AuditLog
from server.security_headers import DOCS_CSP, HSTS, PAGE_CSP
from server.settings import ServerSettings
from server.settings.cases import CaseSettings
from server.settings.provisioning import ProvisioningSettings
from storage.client import InfluxSettings
from tests.support import REPO, wait_until
from tests.test_api_rights import PASSWORD, Call, World, _calls, _client_of, _routes, _send, world
from tests.test_cases import _Hook, hook
from tests.test_live import ServerThread, server_settings

__all__ = ["hook", "world"]  # fixtures used here, defined in the modules they come from

ADMIN_PW = "admin-pass-Q7vX2mLw"
WRONG_PW = "wrong-pass-Z9kR4tNe"
MQTT_PW = "mqtt-pass-H3cB8yUa"
INFLUX_PW = "influx-pass-P5dM1wKs"
WEBHOOK_SECRET = "hook-secret-F6nJ0qVr"
HOOK_TOKEN = "hook-token-T2gL7sXc"
TZ = "Asia/Shanghai"
CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def test_headers_on_pages_api_and_docs(tmp_path: Path) -> None:
    """CSP, nosniff, DENY, no-referrer, permissions on every answer; no-store on API answers."""
    db = f"sqlite:///{tmp_path / 'wr.db'}"
    plain = ServerSettings(
        database_url=db, gateway_metrics_urls=[], cases=CaseSettings(poller=False)
    )
    with TestClient(create_app(plain)) as c:
        for path in ("/", "/api/today", "/cases", "/static/board.js", "/nowhere"):
            h = c.get(path).headers
            assert h["content-security-policy"] == PAGE_CSP, path
            assert h["x-content-type-options"] == "nosniff"
            assert h["x-frame-options"] == "DENY"
            assert h["referrer-policy"] == "no-referrer"
            assert "camera=()" in h["permissions-policy"]
            assert "strict-transport-security" not in h
        assert "frame-ancestors 'none'" in PAGE_CSP and "'unsafe-inline'" not in PAGE_CSP
        assert c.get("/api/auth/me").headers["cache-control"] == "no-store"
        assert c.get("/cases").headers["cache-control"] == "no-store"
        assert c.get("/admin/registry").headers["cache-control"] == "no-store"
        assert "no-store" not in c.get("/static/board.js").headers.get("cache-control", "")
        docs = c.get("/docs")
        assert docs.status_code == 200 and docs.headers["content-security-policy"] == DOCS_CSP
    secure = plain.model_copy(update={"cookie_secure": True})
    with TestClient(create_app(secure)) as c:
        assert c.get("/").headers["strict-transport-security"] == HSTS
    with TestClient(create_app(plain), base_url="https://wr.example") as c:
        assert c.get("/").headers["strict-transport-security"] == HSTS


def test_pages_work_in_chromium_under_the_csp(
    tmp_path: Path, broker: Mosquitto, influx: Influxd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every page loads with no CSP violation; the case pages log in and act through their JS."""
    pw = pytest.importorskip("playwright.sync_api")
    monkeypatch.setenv("WR_SCORES_EXPORT_DIR", str(tmp_path / "exports"))
    srv = ServerThread(
        server_settings(broker.port, influx.url, tmp_path / "wr.db").model_copy(
            update={"cases": CaseSettings(poller=False)}
        )
    )
    srv.start()
    with srv.app.state.db.session() as session:
        create_user(session, "root", ADMIN_PW, "admin")
        pressed = datetime.now(UTC)
        (case,) = open_cases(
            session,
            [NegativeRating("r-1", "h1", "w01", "k-1", 1, 5, pressed)],
            srv.app.state.settings.tz,
            15,
        )
        session.commit()
        case_id = case.id
    try:
        with pw.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = browser.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.on(
                "console",
                lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None,
            )
            page.goto(f"{srv.url}/cases")
            page.fill("input[name=username]", "root")
            page.fill("input[name=password]", WRONG_PW)
            page.click("button[type=submit]")
            pw.expect(page.locator("#login-error")).to_contain_text("401")
            page.fill("input[name=password]", ADMIN_PW)
            page.click("button[type=submit]")
            page.wait_for_selector(f"a[href*='/cases/{case_id}']", timeout=10_000)
            page.goto(f"{srv.url}/cases/{case_id}")
            page.fill("#note", "回访已完成")
            page.click("button[data-action=notes]")
            page.wait_for_selector("text=回访已完成", timeout=10_000)
            admin = ("/admin/registry", "/admin/registry?entity=devices", "/admin/devices")
            for path in ("/", "/screen", "/window/h1/w01", *admin, "/admin/users", "/exports"):
                page.goto(f"{srv.url}{path}")
                page.wait_for_load_state("networkidle")
            page.click("#start")
            page.wait_for_selector("#links:not([hidden])", timeout=20_000)
            browser.close()
        assert problems == []
    finally:
        srv.stop()


def test_secrets_come_from_files_and_stay_out_of_reprs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`WR_…_FILE` fills each secret from a file; both forms at once or an unreadable file fail."""
    for key in [k for k in os.environ if k.startswith("WR_")]:
        monkeypatch.delenv(key)
    files = {}
    db_url = f"postgresql+psycopg://wr:{ADMIN_PW}@db/wr"
    values = {"mqtt": MQTT_PW, "influx": INFLUX_PW, "hook": WEBHOOK_SECRET, "db": db_url}
    for name, value in (values | {"pin": "2468"}).items():
        files[name] = tmp_path / name
        files[name].write_text(value + "\n")
    env = {
        "WR_SERVER_MQTT__PASSWORD_FILE": files["mqtt"],
        "WR_SERVER_INFLUX__PASSWORD_FILE": files["influx"],
        "WR_SERVER_CASES__WEBHOOK_SECRET_FILE": files["hook"],
        "WR_SERVER_DATABASE_URL_FILE": files["db"],
        "WR_SERVER_MQTT__USERNAME": "server",
        "WR_GATEWAY_MQTT__PASSWORD_FILE": files["mqtt"],
        "WR_GATEWAY_INFLUX__PASSWORD_FILE": files["influx"],
        "WR_KIOSK_MQTT__PASSWORD_FILE": files["mqtt"],
        "WR_KIOSK_SETUP_PIN_FILE": files["pin"],
        "WR_KIOSK_GPIO_FILE": str(tmp_path / "gpio.toml"),  # a path setting, not a secret
    }
    for key, where in env.items():
        monkeypatch.setenv(key, str(where))

    def plain(secret: SecretStr | None) -> str | None:
        """The secret's value."""
        return None if secret is None else secret.get_secret_value()

    s = ServerSettings()
    assert plain(s.mqtt.password) == MQTT_PW and s.mqtt.username == "server"
    assert plain(s.influx.password) == INFLUX_PW
    assert plain(s.cases.webhook_secret) == WEBHOOK_SECRET
    assert s.database_url == f"postgresql+psycopg://wr:{ADMIN_PW}@db/wr"
    g = GatewaySettings()
    assert plain(g.mqtt.password) == MQTT_PW and plain(g.influx.password) == INFLUX_PW
    k = KioskSettings()
    assert plain(k.mqtt.password) == MQTT_PW and plain(k.setup_pin) == "2468"
    assert k.gpio_file == tmp_path / "gpio.toml"
    for obj in (s, g, k):
        text = f"{obj!r} {obj}"
        assert not any(x in text for x in (MQTT_PW, INFLUX_PW, WEBHOOK_SECRET, ADMIN_PW, "2468"))
    monkeypatch.setenv("WR_SERVER_MQTT__PASSWORD", "also-set")
    with pytest.raises(SecretFileError, match="WR_SERVER_MQTT__PASSWORD"):
        ServerSettings()
    monkeypatch.delenv("WR_SERVER_MQTT__PASSWORD")
    monkeypatch.setenv("WR_GATEWAY_MQTT__PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(SecretFileError, match="cannot read"):
        GatewaySettings()


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every log record at DEBUG, also from loggers that do not propagate (uvicorn's)."""
    caplog.set_level(logging.DEBUG)
    closed = [
        logging.getLogger(name)
        for name, lg in logging.root.manager.loggerDict.items()
        if isinstance(lg, logging.Logger) and not lg.propagate
    ]
    for lg in closed:
        lg.addHandler(caplog.handler)
    yield caplog
    for lg in closed:
        lg.removeHandler(caplog.handler)


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    """The messages, arguments and tracebacks of every captured record."""
    fmt = logging.Formatter()
    parts = []
    for r in caplog.records:
        parts.append(f"{r.name} {r.getMessage()}")
        if r.exc_info:
            parts.append(fmt.formatException(r.exc_info))
    return "\n".join(parts)


def test_no_secret_reaches_a_log(
    tmp_path: Path,
    broker: Mosquitto,
    influx: Influxd,
    hook: str,
    all_logs: pytest.LogCaptureFixture,
) -> None:
    """Logins, MQTT and InfluxDB logins, signed webhooks, a redeem and the CLI log no secret."""
    refused = f"http://127.0.0.1:{free_port()}/hook?token={HOOK_TOKEN}"
    cfg = ServerSettings(
        database_url=f"sqlite:///{tmp_path / 'wr.db'}",
        gateway_metrics_urls=[],
        timezone=TZ,
        influx=InfluxSettings(url=influx.url, username="wr", password=SecretStr(INFLUX_PW)),
        mqtt=MqttSettings(port=broker.port, username="server", password=SecretStr(MQTT_PW)),
        cases=CaseSettings(
            poller=False,
            webhook_urls=[hook, refused],
            webhook_secret=SecretStr(WEBHOOK_SECRET),
            webhook_retries=1,
        ),
        provisioning=ProvisioningSettings(broker_auth_dir=tmp_path / "auth", allow_plain_http=True),
    )
    logging.getLogger("tests.hardening").debug("server settings %r / %s", cfg, cfg)
    secrets = [ADMIN_PW, WRONG_PW, MQTT_PW, INFLUX_PW, WEBHOOK_SECRET, HOOK_TOKEN]
    with TestClient(create_app(cfg)) as c:
        app: Any = c.app
        wait_until(lambda: app.state.live.link.connected, 30, what="MQTT login")
        with app.state.db.session() as session:
            create_user(session, "root", ADMIN_PW, "admin")
            (case,) = open_cases(
                session,
                [NegativeRating("r-1", "h1", "w01", "k-1", 1, 5, datetime.now(UTC))],
                cfg.tz,
                15,
            )
            session.commit()
            case_id = case.id
        bad = c.post("/api/auth/login", json={"username": "root", "password": WRONG_PW})
        assert bad.status_code == 401
        assert c.post("/api/auth/login", json={"username": "root", "password": ADMIN_PW}).is_success
        secrets += [c.cookies["wr_session"], c.cookies["wr_csrf"]]
        c.headers["X-CSRF-Token"] = c.cookies["wr_csrf"]
        assert c.get("/api/today").status_code == 200  # InfluxDB with its password
        made = c.post("/api/provisioning/devices", json={"hall": "h1", "device": "k-1"})
        assert made.status_code == 201, made.text
        code = made.json()["code"]
        got = c.post("/api/provisioning/redeem", json={"code": code})
        assert got.status_code == 200, got.text
        secrets += [code, got.json()["mqtt"]["password"]]
        assert c.post(f"/api/cases/{case_id}/notes", json={"note": "回访"}).status_code == 200
        wait_until(lambda: _Hook.received, 30, what="signed webhook")
        sender = app.state.case_webhooks
        wait_until(lambda: sender.failed >= 1, 30, what="refused webhook given up")
        headers = {k.lower(): v for k, v in _Hook.received[0][0].items()}
        secrets.append(headers["x-windowrate-signature"].split("=", 1)[1])
        assert c.post("/api/auth/logout").status_code == 204
    env = {k: v for k, v in os.environ.items() if not k.startswith("WR_")}
    pw_file = tmp_path / "mqtt-pw"
    pw_file.write_text(MQTT_PW)
    env |= {
        "WR_SERVER_DATABASE_URL": cfg.database_url,
        "WR_SERVER_PROVISIONING__BROKER_AUTH_DIR": str(tmp_path / "auth"),
        "WR_SERVER_MQTT__PASSWORD_FILE": str(pw_file),
        "WR_LOG_LEVEL": "DEBUG",
    }
    out = subprocess.run(
        [sys.executable, "-m", "windowrate", "device", "add", "--hall", "h1", "--id", "k-2",
         "--window", "w02", "--json"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    cli_pw = json.loads(out.stdout)["password"]
    text = _log_text(all_logs)
    assert "webhook" in text and "token=***" in text  # the refused hook was logged, masked
    leaked = [s for s in secrets if s in text]
    assert not leaked, f"secrets in the logs: {leaked}"
    assert not [s for s in [*secrets, cli_pw] if s in out.stderr], out.stderr


def _audit_rows(w: World) -> int:
    """Number of rows in the audit log."""
    with w.srv.app.state.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(AuditLog)) or 0)


def _last_actions(w: World, n: int) -> list[str]:
    """The actions of the newest `n` audit rows."""
    with w.srv.app.state.db.session() as session:
        rows = session.scalars(select(AuditLog).order_by(AuditLog.id.desc()).limit(n)).all()
        return [r.action for r in rows]


def test_every_change_and_every_login_is_audited(world: World) -> None:
    """Each state-changing route, called by an admin with valid input, writes an audit row."""
    w = world
    calls = _calls(w)
    routes = {r for r in _routes(w.srv.app.routes) if r[0] in CHANGES}
    assert routes and routes <= set(calls)
    logins = {("POST", "/api/auth/login"), ("POST", "/api/auth/logout")}
    # Creates and actions first, deletes last, so each call finds what it acts on.
    order = sorted(routes - logins, key=_rank)
    calls |= _admin_calls()
    admin = _client_of(w.srv, "root")
    unaudited: list[str] = []
    codes: list[str] = []
    for route in order:
        done, last = False, ""
        for call in calls[route]:
            before = _audit_rows(w)
            if route == ("POST", "/api/provisioning/redeem"):
                # Over HTTPS as a TLS proxy in front of the server reports it.
                resp = admin.post(call.path, json={"code": codes[-1]},
                                  headers={"X-Forwarded-Proto": "https"})  # fmt: skip
                status, body = resp.status_code, resp.text
            else:
                status, body = _send(admin, call)
            if route == ("POST", "/api/provisioning/devices/{device}/code") and status == 201:
                codes.append(json.loads(body)["code"])
            assert status < 500, (route, status, body[:300])
            last = f"{status} {body[:200]}"
            done = done or (200 <= status < 300 and _audit_rows(w) > before)
        if not done:
            unaudited.append(f"{route}: {last}")
    assert not unaudited, "\n".join(unaudited)
    # Logins (refused and accepted) and logouts.
    c = httpx.Client(base_url=w.srv.url, timeout=30)
    assert (
        c.post("/api/auth/login", json={"username": "root", "password": WRONG_PW}).status_code
        == 401
    )
    assert _last_actions(w, 1) == ["auth.login_failed"]
    assert c.post("/api/auth/login", json={"username": "root", "password": PASSWORD}).is_success
    assert _last_actions(w, 1) == ["auth.login"]
    c.headers["X-CSRF-Token"] = c.cookies["wr_csrf"]
    assert c.post("/api/auth/logout").status_code == 204
    assert _last_actions(w, 1) == ["auth.logout"]
    c.close()
    admin.close()


# Run in this order (first match), so that each call finds what it acts on.
RANK = ("/transition", "/notes", "/appeal", "/decision", "/code", "/redeem", "/revoke")


def _rank(route: tuple[str, str]) -> tuple[bool, int, tuple[str, str]]:
    """Creates and actions first (case steps in workflow order), deletes last."""
    pos = next((i for i, part in enumerate(RANK) if part in route[1]), len(RANK))
    return route[0] == "DELETE", pos, route


def _admin_calls() -> dict[tuple[str, str], list[Call]]:
    """Valid admin input where the rights test aims at a refusal (imports, in-use deletes)."""
    csv = {
        "halls": "code,name\ngamma2,x\n",
        "units": "hall,code,name\nalpha,u8,x\n",
        "devices": "code,hall\ndev-8,alpha\n",
        "staff": "hall,number,name\nalpha,s8,x\n",
        "items": "code,name\ni8,x\n",
    }
    out = {
        ("POST", f"/api/registry/{ent}/import"): [
            Call("POST", f"/api/registry/{ent}/import", params={"dry_run": "false"},
                 content=text.encode())
        ]
        for ent, text in csv.items()
    }  # fmt: skip
    out[("DELETE", "/api/registry/halls/{code}")] = [Call("DELETE", "/api/registry/halls/gamma")]
    out[("DELETE", "/api/registry/units/{hall}/{code}")] = [
        Call("DELETE", "/api/registry/units/alpha/u9")
    ]
    return out
