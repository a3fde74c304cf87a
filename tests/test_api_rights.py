"""Every route of the server, called as another hall's manager and as viewers: no leak, no change.

Two halls (`alpha`, `beta`) with registry rows, ratings in a real influxd, a case, a fraud flag,
an export job and users; the server runs under uvicorn with its live MQTT link on a real
Mosquitto. Every route of the app (walked from `app.routes`) must have a call below, or the
test fails naming it. Each call is made as `m2` (manager of beta), `viewer` (every hall, read
only) and `viewer2` (viewer of beta); afterwards no alpha value that an anonymous visitor
cannot see has appeared in any body, the database is unchanged, and nothing was published to
alpha's devices.
"""

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from fastapi.routing import APIRoute, _IncludedRouter
from sqlalchemy import MetaData, select
from starlette.routing import BaseRoute, Mount, Route

from devstack.services import Influxd, Mosquitto
from protocol.messages import RatingEvent
from server.auth.service import create_user
from server.cases.service import NegativeRating, open_cases
from server.scores import settings as scores_settings
from server.scores.models import RatingFlag
from server.settings.cases import CaseSettings
from storage.lineproto import rating_line
from tests.support import rating_doc, raw_client, wait_until
from tests.test_live import ServerThread, server_settings

PASSWORD = "correct horse battery"
A, B = "alpha", "beta"
# Tables whose rows change by logging in and out, or record refused attempts.
VOLATILE = frozenset(
    {"auth_sessions", "audit_log", "alembic_version", "case_pollers", "login_failures"}
)
# Values of hall alpha that nobody outside it may read (unless anonymous visitors may).
SECRET = {
    "hall_name": "阿尔法秘密大厅",
    "unit": "unit-alpha",
    "unit_name": "阿尔法公安局",
    "window_name": "阿尔法窗口一号",
    "device": "dev-alpha",
    "staff": "sa-7731",
    "staff_name": "阿尔法张三",
    "ticket": "TKALPHA99",
    "manager": "mgr-alpha",
    "case_note": "阿尔法回访记录",
}


@dataclass
class Call:
    """One request: method, concrete path, query, JSON or raw body, and its content type."""

    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    stream: bool = False

    def text(self) -> str:
        """Everything the caller sends (values echoed from it are not a leak)."""
        return f"{self.path} {self.params} {self.json} {self.content!r}"


@dataclass
class World:
    """The running server and the ids of alpha's records."""

    srv: ServerThread
    case_id: int
    flag_id: int
    job_id: str
    rating_id: str
    secrets: dict[str, str]
    published: list[str]


def _calls(w: World) -> dict[tuple[str, str], list[Call]]:
    """Return the calls per route (method, path template), aimed at alpha wherever possible."""
    cid, fid, job = w.case_id, w.flag_id, w.job_id
    today = datetime.now(UTC).date()
    week = {"from": (today - timedelta(days=7)).isoformat(), "to": today.isoformat()}
    csv = b"hall,code,name\nalpha,u9,x\n"
    out: dict[tuple[str, str], list[Call]] = {
        ("GET", "/openapi.json"): [Call("GET", "/openapi.json")],
        ("GET", "/docs"): [Call("GET", "/docs")],
        ("GET", "/vendor/swagger-ui/{name}"): [Call("GET", "/vendor/swagger-ui/swagger-ui.css")],
        ("GET", "/vendor/echarts.min.js"): [Call("GET", "/vendor/echarts.min.js")],
        ("MOUNT", "/static"): [Call("GET", "/static/board.js")],
        ("POST", "/api/auth/login"): [
            Call("POST", "/api/auth/login", json={"username": "mgr-alpha", "password": "x" * 12})
        ],
        ("POST", "/api/auth/logout"): [Call("POST", "/api/auth/logout")],
        ("GET", "/api/auth/me"): [Call("GET", "/api/auth/me")],
        ("GET", "/api/users"): [Call("GET", "/api/users")],
        ("POST", "/api/users"): [
            Call(
                "POST",
                "/api/users",
                json={"username": "evil", "password": PASSWORD, "role": "admin", "hall": None},
            ),
            Call(
                "POST",
                "/api/users",
                json={"username": "evil2", "password": PASSWORD, "role": "hall_manager", "hall": A},
            ),
        ],
        ("POST", "/api/users/{username}/deactivate"): [
            Call("POST", "/api/users/mgr-alpha/deactivate")
        ],
        ("POST", "/api/users/{username}/activate"): [Call("POST", "/api/users/mgr-alpha/activate")],
        ("POST", "/api/users/{username}/password"): [
            Call("POST", "/api/users/mgr-alpha/password", json={"password": "y" * 16})
        ],
        ("GET", "/api/audit"): [Call("GET", "/api/audit")],
        ("GET", "/api/scores"): [
            Call("GET", "/api/scores", params=week),
            Call("GET", "/api/scores", params=week | {"hall": A, "level": "staff"}),
        ],
        ("POST", "/api/exports"): [
            Call("POST", "/api/exports", json={"from": week["from"], "to": week["to"], "hall": A}),
        ],
        ("GET", "/api/exports"): [Call("GET", "/api/exports")],
        ("GET", "/api/exports/{job_id}"): [Call("GET", f"/api/exports/{job}")],
        ("GET", "/api/exports/{job_id}/file"): [Call("GET", f"/api/exports/{job}/file")],
        ("GET", "/api/exports/{job_id}/manifest"): [Call("GET", f"/api/exports/{job}/manifest")],
        ("GET", "/api/scores/flags"): [
            Call("GET", "/api/scores/flags"),
            Call("GET", "/api/scores/flags", params={"hall": A}),
        ],
        ("POST", "/api/scores/flags/{flag_id}/review"): [
            Call("POST", f"/api/scores/flags/{fid}/review", json={"verdict": "fraud", "note": "x"})
        ],
        ("GET", "/exports"): [Call("GET", "/exports")],
        ("GET", "/admin/registry"): [
            Call("GET", "/admin/registry"),
            Call("GET", "/admin/registry", params={"entity": "windows"}),
        ],
        ("GET", "/admin/devices"): [Call("GET", "/admin/devices")],
        ("GET", "/admin/users"): [Call("GET", "/admin/users")],
        ("GET", "/api/cases/summary"): [Call("GET", "/api/cases/summary")],
        ("GET", "/api/cases"): [
            Call("GET", "/api/cases"),
            Call("GET", "/api/cases", params={"hall": A}),
        ],
        ("GET", "/api/cases/{case_id}"): [Call("GET", f"/api/cases/{cid}")],
        ("POST", "/api/cases/{case_id}/transition"): [
            Call("POST", f"/api/cases/{cid}/transition", json={"to": "contacted", "note": "x"})
        ],
        ("POST", "/api/cases/{case_id}/notes"): [
            Call("POST", f"/api/cases/{cid}/notes", json={"note": "x"})
        ],
        ("POST", "/api/cases/{case_id}/appeal"): [
            Call("POST", f"/api/cases/{cid}/appeal", json={"kind": "mistaken", "reason": "x"})
        ],
        ("POST", "/api/cases/{case_id}/decision"): [
            Call("POST", f"/api/cases/{cid}/decision", json={"approve": True})
        ],
        ("GET", "/api/calendar/holidays"): [Call("GET", "/api/calendar/holidays")],
        ("PUT", "/api/calendar/holidays"): [
            Call(
                "PUT",
                "/api/calendar/holidays",
                json={"date": "2026-10-01", "working": True, "hall": A},
            ),
        ],
        ("DELETE", "/api/calendar/holidays/{day}"): [
            Call("DELETE", "/api/calendar/holidays/2026-10-01", params={"hall": A}),
            Call("DELETE", "/api/calendar/holidays/2026-10-02"),
        ],
        ("POST", "/api/calendar/holidays/import"): [
            Call("POST", "/api/calendar/holidays/import", content=b"date,working\n2026-10-01,1\n")
        ],
        ("GET", "/cases"): [Call("GET", "/cases"), Call("GET", "/cases", params={"hall": A})],
        ("GET", "/cases/{case_id}"): [Call("GET", f"/cases/{cid}")],
        ("GET", "/api/devices"): [Call("GET", "/api/devices")],
        ("POST", "/api/devices/{code}/commands"): [
            Call("POST", "/api/devices/dev-alpha/commands", json={"cmd": c})
            for c in ("pause", "identify")
        ],
        ("GET", "/api/live/board"): [Call("GET", "/api/live/board")],
        ("GET", "/api/live/stream"): [Call("GET", "/api/live/stream", stream=True)],
        ("GET", "/api/live/windows/{hall}/{window}"): [Call("GET", f"/api/live/windows/{A}/wa1")],
        ("GET", "/window/{hall}/{window}"): [Call("GET", f"/window/{A}/wa1")],
        ("GET", "/screen"): [Call("GET", "/screen")],
        ("GET", "/api/today"): [Call("GET", "/api/today")],
        ("GET", "/"): [Call("GET", "/")],
        ("GET", "/health"): [Call("GET", "/health")],
        ("GET", "/api/provisioning/accounts"): [Call("GET", "/api/provisioning/accounts")],
        ("GET", "/api/provisioning/ca"): [Call("GET", "/api/provisioning/ca")],
        ("POST", "/api/provisioning/devices"): [
            Call("POST", "/api/provisioning/devices", json={"hall": A, "device": "dev-a9"}),
            Call("POST", "/api/provisioning/devices", json={"hall": A, "device": "dev-alpha"}),
        ],
        ("POST", "/api/provisioning/devices/{device}/code"): [
            Call("POST", "/api/provisioning/devices/dev-alpha/code")
        ],
        ("POST", "/api/provisioning/devices/{device}/revoke"): [
            Call("POST", "/api/provisioning/devices/dev-alpha/revoke")
        ],
        ("POST", "/api/provisioning/redeem"): [
            Call("POST", "/api/provisioning/redeem", json={"code": "AAAA-BBBB-CCCC-DDDD"})
        ],
    }
    scoped = {"units": "unit-alpha", "windows": "wa1", "staff": "sa-7731"}
    bodies: dict[str, dict[str, Any]] = {
        "halls": {"code": "gamma", "name": "x"},
        "units": {"hall": A, "code": "u9", "name": "x"},
        "windows": {"hall": A, "code": "w9", "name": "x"},
        "devices": {"code": "dev-9", "hall": A},
        "staff": {"hall": A, "number": "s9", "name": "x"},
        "items": {"code": "i9", "name": "x"},
    }
    global_keys = {"halls": A, "devices": "dev-alpha", "items": "330100-001"}
    for ent, body in bodies.items():
        base = f"/api/registry/{ent}"
        tmpl = f"{base}/{{hall}}/{{code}}" if ent in scoped else f"{base}/{{code}}"
        one = f"{base}/{A}/{scoped[ent]}" if ent in scoped else f"{base}/{global_keys[ent]}"
        patch = {"name": "changed"} if ent != "devices" else {"test_device": True}
        out[("GET", base)] = [Call("GET", base), Call("GET", base, params={"hall": A})]
        out[("POST", base)] = [Call("POST", base, json=body)]
        out[("POST", f"{base}/import")] = [
            Call("POST", f"{base}/import", params={"dry_run": "false"}, content=csv)
        ]
        out[("GET", tmpl)] = [Call("GET", one)]
        out[("PATCH", tmpl)] = [Call("PATCH", one, json=patch)]
        out[("DELETE", tmpl)] = [Call("DELETE", one)]
    return out


def _routes(routes: list[BaseRoute]) -> Iterator[tuple[str, str]]:
    """Yield (method, path) of every route, walking included routers; mounts as MOUNT."""
    for r in routes:
        if isinstance(r, _IncludedRouter):
            yield from _routes(r.original_router.routes)
        elif isinstance(r, Mount):
            yield ("MOUNT", r.path)
        elif isinstance(r, APIRoute | Route):
            for m in sorted(r.methods or ()):
                if m != "HEAD":
                    yield (m, r.path)
        else:
            raise AssertionError(f"route of unknown kind {r!r}: add it to test_api_rights")


def _client(w: World, username: str | None) -> httpx.Client:
    """A client of the server, logged in as `username` (anonymous when None)."""
    c = httpx.Client(base_url=w.srv.url, timeout=30)
    if username is not None:
        resp = c.post("/api/auth/login", json={"username": username, "password": PASSWORD})
        assert resp.status_code == 200, resp.text
        c.headers["X-CSRF-Token"] = c.cookies["wr_csrf"]
    return c


def _send(c: httpx.Client, call: Call) -> tuple[int, str]:
    """Make the call; return its status and body (the first SSE snapshot for a stream)."""
    headers = {"content-type": "text/csv"} if call.content is not None else {}
    if call.stream:
        with c.stream("GET", call.path, params=call.params) as resp:
            text = ""
            for line in resp.iter_lines():
                text += line + "\n"
                if line.startswith("data: "):
                    break
            return resp.status_code, text
    resp = c.request(
        call.method, call.path, params=call.params, json=call.json, content=call.content,
        headers=headers,
    )  # fmt: skip
    return resp.status_code, resp.text


def _db_state(w: World) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table that is not volatile."""
    db = w.srv.app.state.db
    meta = MetaData()
    with db.session() as session:
        meta.reflect(bind=session.get_bind())
        return {
            name: sorted(map(tuple, session.execute(select(table)).all()), key=repr)
            for name, table in meta.tables.items()
            if name not in VOLATILE
        }


def _write_ratings(url: str, docs: list[dict[str, Any]]) -> None:
    """Write ratings to influxd exactly as the gateway does."""
    httpx.post(f"{url}/query", params={"q": 'CREATE DATABASE "windowrate"'}).raise_for_status()
    body = "\n".join(rating_line(RatingEvent.model_validate_json(json.dumps(d))) for d in docs)
    assert httpx.post(f"{url}/write", params={"db": "windowrate"}, content=body).status_code == 204


@pytest.fixture
def world(
    tmp_path: Path, broker: Mosquitto, influx: Influxd, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    """The server with two halls of data; an MQTT listener on alpha's device topics."""
    monkeypatch.setenv("WR_SCORES_EXPORT_DIR", str(tmp_path / "exports"))
    scores_settings.get_settings.cache_clear()
    now_ms = int(time.time() * 1000)
    ratings = [
        rating_doc(A, "dev-alpha", 1, window="wa1", staff="sa-7731", ticket="TKALPHA99",
                   level=1, ts=now_ms - 60_000),
        rating_doc(A, "dev-alpha", 2, window="wa1", staff="sa-7731", ticket="TKALPHA99",
                   level=5, ts=now_ms - 50_000),
        rating_doc(B, "dev-beta", 1, window="wb1", staff="sb-1", ticket="B1", level=4,
                   ts=now_ms - 40_000),
    ]  # fmt: skip
    _write_ratings(influx.url, ratings)
    srv = ServerThread(
        server_settings(broker.port, influx.url, tmp_path / "wr.db").model_copy(
            update={"cases": CaseSettings(poller=False)}
        )
    )
    srv.start()
    with srv.app.state.db.session() as session:
        for name, role, hall in (("root", "admin", None), ("office", "office", None),
                                 ("viewer", "viewer", None)):  # fmt: skip
            create_user(session, name, PASSWORD, role, hall)
        session.commit()
    admin = _client_of(srv, "root")
    for path, body in (
        ("halls", {"code": A, "name": SECRET["hall_name"]}),
        ("halls", {"code": B, "name": "贝塔大厅"}),
        ("units", {"hall": A, "code": SECRET["unit"], "name": SECRET["unit_name"]}),
        ("units", {"hall": B, "code": "unit-b", "name": "贝塔公安局"}),
        ("windows", {"hall": A, "code": "wa1", "name": SECRET["window_name"],
                     "unit": SECRET["unit"]}),
        ("windows", {"hall": B, "code": "wb1", "name": "贝塔窗口", "unit": "unit-b"}),
        ("devices", {"code": SECRET["device"], "hall": A, "window": "wa1"}),
        ("devices", {"code": "dev-beta", "hall": B, "window": "wb1"}),
        ("staff", {"hall": A, "number": SECRET["staff"], "name": SECRET["staff_name"],
                   "unit": SECRET["unit"]}),
        ("staff", {"hall": B, "number": "sb-1", "name": "贝塔李四", "unit": "unit-b"}),
        ("items", {"code": "330100-001", "name": "身份证办理"}),
    ):  # fmt: skip
        resp = admin.post(f"/api/registry/{path}", json=body)
        assert resp.status_code == 201, resp.text
    resp = admin.post("/api/provisioning/devices", json={"hall": A, "device": SECRET["device"]})
    assert resp.status_code == 201, resp.text
    code = resp.json()["code"]
    day = {"date": "2026-10-01", "working": False, "name": "国庆节", "hall": A}
    assert admin.put("/api/calendar/holidays", json=day).status_code == 200
    with srv.app.state.db.session() as session:
        for name, role, hall in ((SECRET["manager"], "hall_manager", A), ("m2", "hall_manager", B),
                                 ("viewer2", "viewer", B)):  # fmt: skip
            create_user(session, name, PASSWORD, role, hall)
        neg = ratings[0]
        pressed = datetime.fromtimestamp(neg["ts"] / 1000, UTC)
        (case,) = open_cases(
            session,
            [NegativeRating(neg["id"], A, "wa1", SECRET["device"], 1, 5, pressed,
                            staff=SECRET["staff"], ticket=SECRET["ticket"])],
            srv.app.state.settings.tz,
            15,
        )  # fmt: skip
        flag = RatingFlag(
            rating_id=ratings[1]["id"], rule="burst", detail="", day=date.today(),
            ts_ms=ratings[1]["ts"], hall=A, window="wa1", device=SECRET["device"],
            staff=SECRET["staff"], ticket=SECRET["ticket"], scale=5, level=5,
        )  # fmt: skip
        session.add(flag)
        session.commit()
        case_id, flag_id = case.id, flag.id
    resp = admin.post(f"/api/cases/{case_id}/notes", json={"note": SECRET["case_note"]})
    assert resp.status_code == 200, resp.text
    today = date.today().isoformat()
    resp = admin.post("/api/exports", json={"from": today, "to": today, "hall": A})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    wait_until(
        lambda: admin.get(f"/api/exports/{job_id}").json()["state"] == "done", 30, what="export"
    )
    wait_until(
        lambda: any(r["ratings"] for r in admin.get("/api/live/board").json()["rows"]),
        30,
        what="board synced",
    )
    published: list[str] = []
    lock = threading.Lock()
    listener = raw_client(broker.port, "rights-listener")

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if not msg.retain:
            with lock:
                published.append(msg.topic)

    listener.on_message = on_message
    listener.subscribe(f"wr/v1/{A}/#", qos=1)
    time.sleep(0.5)  # let retained configs arrive (ignored) before the calls
    secrets = dict(SECRET) | {"rating": ratings[0]["id"], "flag_rating": ratings[1]["id"],
                              "job": job_id, "code": code}  # fmt: skip
    try:
        yield World(srv, case_id, flag_id, job_id, ratings[0]["id"], secrets, published)
    finally:
        listener.loop_stop()
        listener.disconnect()
        admin.close()
        srv.stop()
        scores_settings.get_settings.cache_clear()


def _client_of(srv: ServerThread, username: str) -> httpx.Client:
    """A logged-in client of `srv`."""
    c = httpx.Client(base_url=srv.url, timeout=30)
    resp = c.post("/api/auth/login", json={"username": username, "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    c.headers["X-CSRF-Token"] = c.cookies["wr_csrf"]
    return c


def test_every_route_respects_the_other_hall_and_viewers(world: World) -> None:
    """Another hall's manager and viewers read nothing outside their rights and change nothing."""
    w = world
    calls = _calls(w)
    routes = set(_routes(w.srv.app.routes))
    unknown = routes - set(calls)
    assert not unknown, f"routes this test does not know how to call: {sorted(unknown)}"
    stale = set(calls) - routes
    assert not stale, f"calls for routes that no longer exist: {sorted(stale)}"
    # What an anonymous visitor is shown is public (the public board and screen).
    anonymous = _client(w, None)
    public = {
        (call.method, call.path, repr(call.params)): _send(anonymous, call)[1]
        for group in calls.values()
        for call in group
        if call.method == "GET"
    }
    anonymous.close()
    before = _db_state(w)
    leaks: list[str] = []
    for who, private in (("m2", True), ("viewer2", True), ("viewer", False)):
        c = _client(w, who)
        for route, group in sorted(calls.items()):
            for call in group:
                status, body = _send(c, call)
                health = route == ("GET", "/health") and status == 503  # no gateway here
                assert status < 500 or health, (who, route, status, body[:300])
                if call.method != "GET" and route != ("POST", "/api/auth/login"):
                    own = route in (("POST", "/api/auth/logout"), ("POST", "/api/exports"))
                    assert own or status in (403, 404, 409, 422), (who, route, status, body[:300])
                if private:
                    seen = public.get((call.method, call.path, repr(call.params)), "")
                    leaked = [
                        k for k, v in w.secrets.items()
                        if v in body and v not in seen and v not in call.text()
                    ]  # fmt: skip
                    if leaked:
                        leaks.append(f"{who} {call.method} {call.path} {call.params}: {leaked}")
                if route == ("POST", "/api/auth/logout"):
                    c.close()
                    c = _client(w, who)
        c.close()
        assert _db_state(w) == before, f"{who} changed the database"
    assert not leaks, "\n".join(leaks)
    time.sleep(0.5)
    assert w.published == [], "a command reached alpha's devices"
    # The logged-in manager's board and devices are their own hall only (not just public).
    m2 = _client(w, "m2")
    assert {r["hall"] for r in m2.get("/api/live/board").json()["rows"]} == {B}
    assert {d["hall"] for d in m2.get("/api/devices").json()} <= {B}
    assert {x["hall"] for x in m2.get("/api/cases").json()["cases"]} == set()
    assert m2.get("/api/cases/summary").json() == {"unclosed": 0, "overdue": 0, "newest": None}
    m2.close()
