"""Negative-rating cases: opened from a real influxd, workflow, appeals, rights, calendar, webhook.

Ratings are written to a real influxd as the gateway's line protocol; the server app runs
with its real poller; webhooks go to a real local HTTP server. The workflow test also runs
against a real PostgreSQL (the cluster fixture of tests/test_registry.py).
"""

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import uuid6
from fastapi.testclient import TestClient
from sqlalchemy import select

from devstack.services import Influxd
from protocol.messages import RatingEvent
from server.app import create_app
from server.cases.calendar import Calendar
from server.cases.models import Case
from server.cases.service import NegativeRating, excluded_rating_ids, open_cases
from server.cases.webhook import SIGNATURE_HEADER, verify
from server.db.models import AuditLog
from server.settings import ServerSettings
from server.settings.cases import CaseSettings
from storage.client import InfluxSettings
from storage.lineproto import rating_line
from tests.support import rating_doc, wait_until
from tests.test_registry import PASSWORD, db_url, login, make_user

__all__ = ["db_url"]  # fixture used here (pg comes from conftest)

SECRET = "webhook-test-secret"
TZ = "Asia/Shanghai"


def _ok(resp: Any, status: int = 200) -> Any:
    """Assert the status and return the JSON body."""
    assert resp.status_code == status, resp.text
    return resp.json() if resp.content else None


def _write(url: str, docs: list[dict[str, Any]]) -> None:
    """Write ratings to influxd exactly as the gateway does (line protocol over /write)."""
    httpx.post(f"{url}/query", params={"q": 'CREATE DATABASE "windowrate"'}).raise_for_status()
    body = "\n".join(rating_line(RatingEvent.model_validate_json(json.dumps(d))) for d in docs)
    resp = httpx.post(f"{url}/write", params={"db": "windowrate"}, content=body.encode())
    assert resp.status_code == 204, resp.text


class _Hook(BaseHTTPRequestHandler):
    """Webhook receiver: answers 500 to the first delivery (to force a retry), then 204."""

    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []
    failures_left = 1

    def do_POST(self) -> None:
        """Record the request."""
        body = self.rfile.read(int(self.headers["Content-Length"]))
        cls = type(self)
        if cls.failures_left > 0:
            cls.failures_left -= 1
            self.send_response(500)
        else:
            cls.received.append((dict(self.headers.items()), body))
            self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet."""


@pytest.fixture
def hook() -> Iterator[str]:
    """A real HTTP server on a free port; yields its URL."""
    _Hook.received = []
    _Hook.failures_left = 1
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def _settings(db: str, **extra: Any) -> ServerSettings:
    """Server settings on database `db`."""
    return ServerSettings(database_url=db, timezone=TZ, **extra)


def _count(c: TestClient) -> int:
    """Number of cases in the app's database."""
    with c.app.state.db.session() as session:  # type: ignore[attr-defined]
        return len(session.scalars(select(Case.id)).all())


def test_negative_ratings_open_one_case_each_also_after_restart(
    influx: Influxd, hook: str, tmp_path: Path
) -> None:
    """Only negative ratings open a case, exactly once, across redelivery and poller restarts."""
    now_ms = int(time.time() * 1000)
    docs = [
        rating_doc("h1", "k-1", 1, scale=5, level=1, ts=now_ms - 5000),
        rating_doc("h1", "k-1", 2, scale=5, level=2, ts=now_ms - 4000, reasons=["wait"]),
        rating_doc("h1", "k-1", 3, scale=5, level=3, ts=now_ms - 3000),
        rating_doc("h1", "k-2", 1, scale=3, level=1, ts=now_ms - 2000, window="b01"),
        rating_doc("h1", "k-3", 1, scale=4, level=2, ts=now_ms - 1000, window="b02"),
        rating_doc("h1", "k-3", 2, scale=4, level=1, ts=now_ms - 900, window="b02"),
        # pressed two days ago, reached InfluxDB only now (an outbox after an outage)
        rating_doc("h1", "k-4", 7, scale=5, level=1, ts=now_ms - 2 * 86_400_000, window="c03"),
    ]
    negative_ids = {d["id"] for i, d in enumerate(docs) if i in (0, 1, 3, 5, 6)}
    _write(influx.url, docs)
    db = f"sqlite:///{tmp_path / 'wr.db'}"
    cfg = _settings(
        db,
        influx=InfluxSettings(url=influx.url),
        cases=CaseSettings(poll_s=0.2, webhook_urls=[hook], webhook_secret=SECRET),
    )
    with TestClient(create_app(cfg)) as c:
        wait_until(lambda: _count(c) == 5, 20, what="5 cases")
        _write(influx.url, docs)  # redelivered: the same points again
        poller = c.app.state.case_poller  # type: ignore[attr-defined]
        scans = poller.scans
        wait_until(lambda: poller.scans >= scans + 3, 20, what="three more scans")
        assert _count(c) == 5
        wait_until(lambda: len(_Hook.received) == 5, 30, what="5 signed webhooks")
    for headers, body in _Hook.received:
        assert verify(SECRET.encode(), body, headers[SIGNATURE_HEADER])
        assert not verify(b"another secret", body, headers[SIGNATURE_HEADER])
        assert headers["X-WindowRate-Event"] == "case.opened"
    opened = {json.loads(body)["rating_id"] for _h, body in _Hook.received}
    assert opened == negative_ids
    first = json.loads(_Hook.received[0][1])
    assert first["event"] == "case.opened" and first["state"] == "open"

    # A restarted server (fresh poller, same database) opens nothing twice, only the new one.
    late = rating_doc("h1", "k-1", 4, scale=5, level=2, ts=int(time.time() * 1000))
    with TestClient(create_app(cfg)) as c:
        _write(influx.url, [late])
        wait_until(lambda: _count(c) == 6, 20, what="the new case")
        poller = c.app.state.case_poller  # type: ignore[attr-defined]
        scans = poller.scans
        wait_until(lambda: poller.scans >= scans + 3, 20, what="three more scans")
        assert _count(c) == 6
        with c.app.state.db.session() as session:  # type: ignore[attr-defined]
            rows = {r.rating_id: r for r in session.scalars(select(Case))}
        assert set(rows) == negative_ids | {late["id"]}
        assert rows[docs[1]["id"]].reasons == "wait"
        assert rows[docs[3]["id"]].window == "b01"
        assert all(r.state == "open" for r in rows.values())


# --- workflow and rights -------------------------------------------------------------------


def _seed_cases(c: TestClient) -> dict[str, int]:
    """Halls h1 and h2, users of every role, and one case in each hall; return the case ids."""
    for code in ("h1", "h2"):
        _ok(c.post("/api/registry/halls", json={"code": code, "name": code.upper()}), 201)
    for name, role, hall in [
        ("office", "office", None),
        ("m1", "hall_manager", "h1"),
        ("m2", "hall_manager", "h2"),
        ("viewer", "viewer", None),
        ("viewer2", "viewer", "h2"),
    ]:
        make_user(c, name, role, hall)
    now = datetime.now(UTC)
    ratings = [
        NegativeRating(str(uuid6.uuid7()), hall, "a1", f"k-{hall}", 1, 5, now - timedelta(hours=1))
        for hall in ("h1", "h2")
    ]
    with c.app.state.db.session() as session:  # type: ignore[attr-defined]
        cases = open_cases(session, ratings, c.app.state.settings.tz, 15)  # type: ignore[attr-defined]
        session.commit()
        return {case.hall: case.id for case in cases}


def _as(c: TestClient, username: str) -> None:
    """Log the client in as `username`."""
    c.cookies.clear()
    c.headers.pop("X-CSRF-Token", None)
    login(c, username)


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    """A client of an app on SQLite or PostgreSQL, poller off, logged in as admin `root`."""
    with TestClient(create_app(_settings(db_url, cases=CaseSettings(poller=False)))) as c:
        make_user(c, "root", "admin")
        login(c, "root")
        yield c


def test_workflow_appeal_and_rights(client: TestClient) -> None:
    """The full workflow; appeals need the office; nobody reads or changes beyond their rights."""
    c = client
    ids = _seed_cases(c)
    h1, h2 = ids["h1"], ids["h2"]

    assert c.get("/api/cases/999").status_code == 404
    assert c.get(f"/api/cases/{2**63}").status_code == 422
    # Another hall's manager and a viewer of h2 neither read nor change h1's case.
    for who in ("m2", "viewer2"):
        _as(c, who)
        assert c.get(f"/api/cases/{h1}").status_code == 404
        listed = _ok(c.get("/api/cases"))
        assert [x["hall"] for x in listed["cases"]] == ["h2"]
        assert _ok(c.get("/api/cases", params={"hall": "h1"}))["total"] == 0
        body = {"to": "contacted", "note": "x"}
        assert c.post(f"/api/cases/{h1}/transition", json=body).status_code == 404
        assert (
            c.post(f"/api/cases/{h1}/appeal", json={"kind": "mistaken", "reason": "x"}).status_code
            == 404
        )
        assert c.get(f"/cases/{h1}").status_code == 404
        day = {"date": "2026-10-01", "working": False}
        assert c.put("/api/calendar/holidays", json=day).status_code == 403
        assert c.delete("/api/calendar/holidays/2026-10-01").status_code == 403
        csv_body = b"date,working\n2026-10-01,0\n"
        imported = c.post("/api/calendar/holidays/import", content=csv_body)
        assert imported.status_code == 403
        assert c.get("/api/audit").status_code == 403
        assert c.get("/api/users").status_code == 403
    _as(c, "viewer2")
    assert c.post(f"/api/cases/{h2}/transition", json={"to": "contacted"}).status_code == 403
    _as(c, "viewer")
    assert {x["hall"] for x in _ok(c.get("/api/cases"))["cases"]} == {"h1", "h2"}
    assert c.post(f"/api/cases/{h1}/transition", json={"to": "contacted"}).status_code == 403
    assert c.post(f"/api/cases/{h1}/notes", json={"note": "x"}).status_code == 403
    assert _ok(c.get(f"/api/cases/{h1}"))["allowed"] == []
    _as(c, "office")
    assert c.post(f"/api/cases/{h1}/transition", json={"to": "contacted"}).status_code == 403
    assert (
        c.post(f"/api/cases/{h1}/appeal", json={"kind": "mistaken", "reason": "x"}).status_code
        == 403
    )
    assert c.get("/api/calendar/holidays").status_code == 200

    # The manager of h1 takes the case through the workflow, one step at a time.
    _as(c, "m1")
    assert c.post(f"/api/cases/{h1}/transition", json={"to": "rectified"}).status_code == 409
    for step, note in [("contacted", "已电话回访"), ("rectified", "已整改"), ("closed", "")]:
        case = _ok(c.post(f"/api/cases/{h1}/transition", json={"to": step, "note": note}))
        assert case["state"] == step
    assert case["closed"] is not None and case["allowed"] == ["note"]
    assert [(e["action"], e["actor"]) for e in case["events"]] == [
        ("opened", None), ("contacted", "m1"), ("rectified", "m1"), ("closed", "m1"),
    ]  # fmt: skip
    assert case["events"][1]["note"] == "已电话回访"
    assert (
        c.post(f"/api/cases/{h1}/appeal", json={"kind": "mistaken", "reason": "x"}).status_code
        == 409
    )
    page = c.get(f"/cases/{h1}", params={"lang": "en"})
    assert page.status_code == 200 and "Closed" in page.text
    assert "已办结" in c.get(f"/cases/{h1}").text

    # h2's case: its manager appeals; only the office decides; approval closes and excludes.
    _as(c, "m2")
    appeal = {"kind": "malicious", "reason": "同一人连续按键"}
    case = _ok(c.post(f"/api/cases/{h2}/appeal", json=appeal))
    assert (case["appeal_state"], case["state"]) == ("pending", "open")
    assert c.post(f"/api/cases/{h2}/decision", json={"approve": True}).status_code == 403
    assert c.post(f"/api/cases/{h2}/appeal", json=appeal).status_code == 409
    _as(c, "viewer2")
    assert c.post(f"/api/cases/{h2}/decision", json={"approve": True}).status_code == 403
    _as(c, "office")
    assert _ok(c.get(f"/api/cases/{h2}"))["allowed"] == ["approve", "reject", "note"]
    case = _ok(c.post(f"/api/cases/{h2}/decision", json={"approve": True, "note": "核实"}))
    assert (case["appeal_state"], case["state"]) == ("approved", "closed")
    assert case["appeal_decided_by"] == "office"
    assert c.post(f"/api/cases/{h2}/decision", json={"approve": False}).status_code == 409
    with c.app.state.db.session() as session:  # type: ignore[attr-defined]
        rid = session.get(Case, h2).rating_id
        now = datetime.now(UTC)
        assert excluded_rating_ids(session, now - timedelta(days=1), now) == {
            rid: "appeal_malicious"
        }
        assert excluded_rating_ids(session, now - timedelta(days=3), now - timedelta(days=2)) == {}
        actions = [a for a in session.scalars(select(AuditLog.action)) if a.startswith("case.")]
    assert actions.count("case.opened") == 2
    assert {"case.contacted", "case.rectified", "case.closed", "case.appeal_filed",
            "case.appeal_approved"} <= set(actions)  # fmt: skip
    assert _ok(c.get("/api/cases", params={"state": "closed"}))["total"] == 2

    # The audit log is for the admin and the office only.
    audit = _ok(c.get("/api/audit", params={"action": "case."}))
    assert audit["total"] == len(actions)
    for who in ("m1", "viewer"):
        _as(c, who)
        assert c.get("/api/audit").status_code == 403


# --- calendar and deadlines ----------------------------------------------------------------


def test_working_day_calendar() -> None:
    """Weekends and holidays are skipped; a make-up working day (调休) counts."""
    plain = Calendar({})
    assert plain.add_working_days(date(2026, 11, 27), 1) == date(2026, 11, 30)  # Fri → Mon
    assert plain.add_working_days(date(2026, 11, 23), 15) == date(2026, 12, 14)
    national = {date(2026, 10, d): False for d in range(1, 8)}
    national[date(2026, 9, 27)] = True  # Sunday worked
    national[date(2026, 10, 10)] = True  # Saturday worked
    cal = Calendar(national)
    assert cal.add_working_days(date(2026, 9, 26), 1) == date(2026, 9, 27)
    assert cal.add_working_days(date(2026, 9, 30), 1) == date(2026, 10, 8)
    assert cal.add_working_days(date(2026, 9, 30), 3) == date(2026, 10, 10)
    assert cal.add_working_days(date(2026, 9, 30), 4) == date(2026, 10, 12)


def test_deadline_holidays_overdue_and_webhook(tmp_path: Path, hook: str) -> None:
    """Due dates follow the calendar API, recompute on change; overdue is flagged and sent."""
    cfg = _settings(
        f"sqlite:///{tmp_path / 'wr.db'}",
        cases=CaseSettings(
            poller=False, deadline_days=3, webhook_urls=[hook], webhook_secret=SECRET
        ),
    )
    with TestClient(create_app(cfg)) as c:
        make_user(c, "root", "admin")
        make_user(c, "office", "office")
        _as(c, "office")
        # Wed 2026-09-30 10:00 in Shanghai; 3 working days → Mon 2026-10-05 without holidays.
        pressed = datetime(2026, 9, 30, 2, 0, tzinfo=UTC)
        recent = datetime.now(UTC) - timedelta(hours=2)
        with c.app.state.db.session() as session:  # type: ignore[attr-defined]
            old, new = open_cases(
                session,
                [
                    NegativeRating(
                        "00000000-0000-7000-8000-000000000001", "h1", "a1", "k", 2, 5, pressed
                    ),
                    NegativeRating(str(uuid6.uuid7()), "h1", "a1", "k", 1, 3, recent),
                ],
                cfg.tz,
                cfg.cases.deadline_days,
            )
            session.commit()
            old_id, new_id = old.id, new.id
        assert _ok(c.get(f"/api/cases/{old_id}"))["due"] == "2026-10-05"
        for d in range(1, 8):
            day = {"date": f"2026-10-0{d}", "working": False, "name": "国庆节"}
            _ok(c.put("/api/calendar/holidays", json=day))
        _ok(
            c.put(
                "/api/calendar/holidays",
                json={"date": "2026-10-10", "working": True, "name": "调休"},
            )
        )
        assert _ok(c.get(f"/api/cases/{old_id}"))["due"] == "2026-10-10"
        # A hall's own row wins over the general one: h1 does not work that Saturday.
        _ok(
            c.put(
                "/api/calendar/holidays",
                json={"date": "2026-10-10", "hall": "h1", "working": False},
            )
        )
        assert _ok(c.get(f"/api/cases/{old_id}"))["due"] == "2026-10-12"
        assert (
            c.delete("/api/calendar/holidays/2026-10-10", params={"hall": "h1"}).status_code == 204
        )
        csv_text = "date,working,name\n2026-10-08,0,extra\n"
        imported = _ok(
            c.post("/api/calendar/holidays/import", content=csv_text.encode(),
                   headers={"content-type": "text/csv"})
        )  # fmt: skip
        assert imported == {"rows": 1, "recomputed": 1}
        assert _ok(c.get(f"/api/cases/{old_id}"))["due"] == "2026-10-12"
        listed = _ok(c.get("/api/calendar/holidays", params={"start": "2026-10-01"}))
        assert len(listed) == 9

        assert _ok(c.get(f"/api/cases/{old_id}"))["overdue"] is True
        assert _ok(c.get(f"/api/cases/{new_id}"))["overdue"] is False
        overdue = _ok(c.get("/api/cases", params={"overdue": True}))
        assert [x["id"] for x in overdue["cases"]] == [old_id]
        assert "overdue" in c.get("/cases", params={"overdue": "true"}).text

        # The poller's overdue pass flags the case once, in its history and by webhook.
        from server.cases.poller import NegativeRatingPoller

        sender = c.app.state.case_webhooks  # type: ignore[attr-defined]
        poller = NegativeRatingPoller(c.app.state.db, c.app.state.influx, cfg, sender)  # type: ignore[attr-defined]
        assert poller.flag_overdue(datetime.now(UTC)) == [old_id]
        assert poller.flag_overdue(datetime.now(UTC)) == []
        events = _ok(c.get(f"/api/cases/{old_id}"))["events"]
        assert [e["action"] for e in events] == ["opened", "overdue"]
        wait_until(lambda: _Hook.received, 15, what="overdue webhook")

        # A state change is sent too.
        _as(c, "root")
        _ok(c.post(f"/api/cases/{new_id}/transition", json={"to": "contacted"}))
        wait_until(lambda: len(_Hook.received) == 2, 15, what="state webhook")
    kinds = [json.loads(body)["event"] for _h, body in _Hook.received]
    assert kinds == ["case.overdue", "case.state_changed"]
    for headers, body in _Hook.received:
        assert verify(SECRET.encode(), body, headers[SIGNATURE_HEADER])
    assert json.loads(_Hook.received[1][1])["actor"] == "root"
    assert _Hook.failures_left == 0  # the first attempt failed and was retried


# --- users ---------------------------------------------------------------------------------


def test_user_management(tmp_path: Path) -> None:
    """An admin lists, creates, deactivates users and resets passwords; nobody else can."""
    with TestClient(
        create_app(_settings(f"sqlite:///{tmp_path / 'u.db'}", cases=CaseSettings(poller=False)))
    ) as c:
        make_user(c, "root", "admin")
        make_user(c, "office", "office")
        _as(c, "root")
        _ok(c.post("/api/registry/halls", json={"code": "h1", "name": "H1"}), 201)
        new = {"username": "m1", "password": PASSWORD, "role": "hall_manager", "hall": "h1"}
        made = _ok(c.post("/api/users", json=new), 201)
        assert (made["role"], made["hall"], made["active"]) == ("hall_manager", "h1", True)
        assert "password" not in json.dumps(made)
        assert c.post("/api/users", json=new).status_code == 409
        assert c.post("/api/users", json={**new, "username": "x", "hall": None}).status_code == 409
        assert (
            c.post("/api/users", json={**new, "username": "y", "password": "short"}).status_code
            == 422
        )
        names = [u["username"] for u in _ok(c.get("/api/users"))]
        assert names == ["m1", "office", "root"]
        assert c.post("/api/users/root/deactivate").status_code == 409
        assert c.post("/api/users/nobody/deactivate").status_code == 404

        anonymous = TestClient(c.app).get("/cases")
        assert anonymous.status_code == 401 and "请先登录" in anonymous.text
        m1 = TestClient(c.app)
        login(m1, "m1")
        assert m1.get("/api/users").status_code == 403
        assert m1.post("/api/users", json={**new, "username": "z"}).status_code == 403
        assert m1.post("/api/users/office/deactivate").status_code == 403
        assert _ok(c.post("/api/users/m1/deactivate"))["active"] is False
        assert m1.get("/api/auth/me").status_code == 401  # the session ended at once
        _ok(c.post("/api/users/m1/activate"))
        fresh = "another long password"
        assert c.post("/api/users/m1/password", json={"password": fresh}).status_code == 204
        bad = c.post("/api/auth/login", json={"username": "m1", "password": PASSWORD})
        assert bad.status_code == 401
        login(m1, "m1", fresh)

        _as(c, "office")
        assert c.get("/api/users").status_code == 403
        actions = [
            r["action"] for r in _ok(c.get("/api/audit", params={"action": "user."}))["rows"]
        ]
        assert actions == ["user.password_reset", "user.activate", "user.deactivate", "user.create"]
