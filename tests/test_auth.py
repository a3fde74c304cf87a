"""Users and roles: create-admin, login sessions, CSRF, rate limit, audit and registry rights."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from server.app import create_app
from server.auth.service import verify_password
from server.db.models import AuditLog, User
from server.settings import ServerSettings, get_settings
from tests.test_registry import PASSWORD, db_url, login, make_user
from windowrate.cli import main

__all__ = ["db_url"]  # fixture used here (pg comes from conftest)

CSV = {"content-type": "text/csv"}
SECRET = "机密-h2"  # every name in hall h2 contains it: it must never reach h1's manager


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[TestClient]:
    """A client of a fresh SQLite app, not logged in, with an admin `root`."""
    url = f"sqlite:///{tmp_path / 'wr.db'}"
    with TestClient(create_app(ServerSettings(database_url=url))) as c:
        make_user(c, "root", "admin")
        yield c


def _audit(c: TestClient) -> list[tuple[str | None, str, str]]:
    """Return the audit log as (actor, action, target) rows."""
    with c.app.state.db.session() as session:  # type: ignore[attr-defined]
        rows = session.scalars(select(AuditLog).order_by(AuditLog.id)).all()
        return [(r.actor, r.action, r.target) for r in rows]


# --- create-admin ---------------------------------------------------------------------------


@pytest.fixture
def cli_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The database URL the CLI will use (through WR_SERVER_DATABASE_URL)."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("WR_SERVER_DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def _users(url: str) -> list[User]:
    """Return the users of the database at `url`."""
    from server.db.engine import Database

    db = Database(url)
    try:
        with db.session() as session:
            return list(session.scalars(select(User)).unique())
    finally:
        db.close()


def test_create_admin_from_env(cli_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The env password makes an argon2-hashed admin; nothing secret is printed; no duplicate."""
    secret = "a long enough secret"
    monkeypatch.setenv("WR_ADMIN_PASSWORD", secret)
    res = CliRunner().invoke(main, ["server", "create-admin", "--username", "boss"])
    assert res.exit_code == 0, res.output
    assert secret not in res.output
    [user] = _users(cli_db)
    assert (user.username, user.role, user.active) == ("boss", "admin", True)
    assert user.password_hash.startswith("$argon2id$")
    assert secret not in user.password_hash
    assert verify_password(user.password_hash, secret)
    again = CliRunner().invoke(main, ["server", "create-admin", "--username", "boss"])
    assert again.exit_code != 0
    assert "exists" in again.output


def test_create_admin_refuses_short_and_prompts(
    cli_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password under 12 characters is refused; without the variable it is asked twice."""
    monkeypatch.setenv("WR_ADMIN_PASSWORD", "short")
    res = CliRunner().invoke(main, ["server", "create-admin", "--username", "boss"])
    assert res.exit_code != 0
    assert "12" in res.output
    monkeypatch.delenv("WR_ADMIN_PASSWORD")
    typed = "typed twice, not echoed"
    res = CliRunner().invoke(
        main, ["server", "create-admin", "--username", "boss"], input=f"{typed}\n{typed}\n"
    )
    assert res.exit_code == 0, res.output
    assert typed not in res.output
    assert [u.username for u in _users(cli_db)] == ["boss"]


# --- login, logout, me, CSRF, rate limit ------------------------------------------------------


def test_login_me_logout(app_client: TestClient) -> None:
    """A login sets a HttpOnly session cookie and a readable CSRF cookie; logout ends it."""
    c = app_client
    assert c.get("/api/auth/me").status_code == 401
    resp = c.post("/api/auth/login", json={"username": "root", "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    cookies = resp.headers.get_list("set-cookie")
    session_cookie = next(h for h in cookies if h.startswith("wr_session="))
    csrf_cookie = next(h for h in cookies if h.startswith("wr_csrf="))
    assert "HttpOnly" in session_cookie
    assert "samesite=strict" in session_cookie.lower()
    assert "HttpOnly" not in csrf_cookie
    assert "samesite=strict" in csrf_cookie.lower()
    assert "Secure" not in session_cookie  # cookie_secure defaults to off (plain HTTP tests)
    me = c.get("/api/auth/me").json()
    assert (me["username"], me["role"], me["hall"]) == ("root", "admin", None)
    assert me["csrf_token"] == c.cookies["wr_csrf"]
    assert c.post("/api/auth/logout").status_code == 403  # no CSRF header
    resp = c.post("/api/auth/logout", headers={"X-CSRF-Token": me["csrf_token"]})
    assert resp.status_code == 204
    c.cookies.clear()
    assert c.get("/api/auth/me").status_code == 401
    actions = [a for _who, a, _t in _audit(c)]
    assert actions == ["auth.login", "auth.logout"]


def test_secure_cookie_setting(tmp_path: Path) -> None:
    """With cookie_secure both cookies are sent only over HTTPS."""
    settings = ServerSettings(database_url=f"sqlite:///{tmp_path / 's.db'}", cookie_secure=True)
    with TestClient(create_app(settings), base_url="https://testserver") as c:
        make_user(c, "root", "admin")
        resp = c.post("/api/auth/login", json={"username": "root", "password": PASSWORD})
        assert resp.status_code == 200
        assert all("Secure" in h for h in resp.headers.get_list("set-cookie"))


def test_wrong_password_and_unknown_user(app_client: TestClient) -> None:
    """Both answer the same 401 and are audited; no session is made."""
    c = app_client
    bad = c.post("/api/auth/login", json={"username": "root", "password": "wrong password!"})
    unknown = c.post("/api/auth/login", json={"username": "nobody", "password": PASSWORD})
    assert bad.status_code == unknown.status_code == 401
    assert bad.json() == unknown.json()
    assert "wr_session" not in c.cookies
    assert _audit(c) == [
        (None, "auth.login_failed", "root"),
        (None, "auth.login_failed", "nobody"),
    ]


def test_inactive_user_cannot_log_in(app_client: TestClient) -> None:
    """A deactivated user is refused even with the right password."""
    c = app_client
    make_user(c, "gone", "viewer")
    with c.app.state.db.session() as session:  # type: ignore[attr-defined]
        session.execute(text("UPDATE users SET active = false WHERE username = 'gone'"))
        session.commit()
    resp = c.post("/api/auth/login", json={"username": "gone", "password": PASSWORD})
    assert resp.status_code == 401


def test_rate_limit_per_username(app_client: TestClient) -> None:
    """After 5 failures the 6th try, even with the right password, gets 429 and Retry-After."""
    c = app_client
    for _ in range(5):
        resp = c.post("/api/auth/login", json={"username": "root", "password": "x" * 12})
        assert resp.status_code == 401
    resp = c.post("/api/auth/login", json={"username": "root", "password": PASSWORD})
    assert resp.status_code == 429
    assert 0 < int(resp.headers["Retry-After"]) <= 15 * 60
    assert "wr_session" not in c.cookies
    assert _audit(c)[-1] == (None, "auth.login_limited", "root")


def test_rate_limit_per_address(app_client: TestClient) -> None:
    """Failures for different usernames from one address add up too."""
    c = app_client
    make_user(c, "other", "viewer")
    for i in range(5):
        resp = c.post("/api/auth/login", json={"username": f"guess{i}", "password": "x" * 12})
        assert resp.status_code == 401
    resp = c.post("/api/auth/login", json={"username": "other", "password": PASSWORD})
    assert resp.status_code == 429
    assert "Retry-After" in resp.headers


def test_csrf_required_on_writes(app_client: TestClient) -> None:
    """POST, PATCH and DELETE without (or with a wrong) X-CSRF-Token get 403 and change nothing."""
    c = app_client
    login(c, "root")
    token = c.headers.pop("X-CSRF-Token")
    hall = {"code": "h1", "name": "一厅"}
    attempts = [
        ("POST", "/api/registry/halls", {"json": hall}, {}),
        ("POST", "/api/registry/halls/import?dry_run=false",
         {"content": b"code,name\nh9,x\n"}, CSV),
    ]  # fmt: skip
    for method, url, kw, headers in attempts:
        assert c.request(method, url, **kw, headers=headers).status_code == 403
        forged = {**headers, "X-CSRF-Token": "forged"}
        assert c.request(method, url, **kw, headers=forged).status_code == 403
    c.headers["X-CSRF-Token"] = token
    assert c.post("/api/registry/halls", json=hall).status_code == 201
    del c.headers["X-CSRF-Token"]
    assert c.patch("/api/registry/halls/h1", json={"name": "改"}).status_code == 403
    assert c.delete("/api/registry/halls/h1").status_code == 403
    assert c.get("/api/registry/halls/h1").json()["name"] == "一厅"
    # The header must match the session's own token, not just any cookie value.
    c.cookies.set("wr_csrf", "forged")
    resp = c.delete("/api/registry/halls/h1", headers={"X-CSRF-Token": "forged"})
    assert resp.status_code == 403
    halls = c.get("/api/registry/halls").json()
    assert halls == [{"code": "h1", "name": "一厅", "area_code": None}]


def test_registry_needs_login(app_client: TestClient) -> None:
    """Without a session every registry route answers 401."""
    c = app_client
    assert c.get("/api/registry/halls").status_code == 401
    assert c.get("/api/registry/items/x").status_code == 401
    assert c.post("/api/registry/halls", json={"code": "h", "name": "n"}).status_code == 401


# --- every registry endpoint as a hall manager of another hall and as a viewer ----------------


def _seed(c: TestClient) -> None:
    """Halls h1 and h2, each with a unit, a window, a device and a clerk; one item."""
    for hall, tag in (("h1", "h1"), ("h2", SECRET)):
        for path, body in (
            ("halls", {"code": hall, "name": f"厅 {tag}"}),
            ("units", {"hall": hall, "code": "u", "name": f"部门 {tag}"}),
            ("windows", {"hall": hall, "code": "w", "name": f"窗口 {tag}", "unit": "u"}),
            ("devices", {"code": f"k-{hall}", "hall": hall, "window": "w"}),
            ("staff", {"hall": hall, "number": "007", "name": f"职员 {tag}", "unit": "u"}),
        ):
            resp = c.post(f"/api/registry/{path}", json=body)
            assert resp.status_code == 201, resp.text
    resp = c.post("/api/registry/items", json={"code": "i1", "name": "事项"})
    assert resp.status_code == 201


REGISTRY_TABLES = ("halls", "units", "windows", "devices", "staff", "service_items", "users")


def _snapshot(c: TestClient) -> dict[str, list[Any]]:
    """Return every registry row (and the users), for comparing before and after."""
    out: dict[str, list[Any]] = {}
    with c.app.state.db.engine.connect() as conn:  # type: ignore[attr-defined]
        for table in REGISTRY_TABLES:
            rows = conn.execute(text(f"SELECT * FROM {table} ORDER BY id")).all()
            out[table] = [tuple(str(v) for v in row) for row in rows]
    return out


# Path of an h2 record per entity, a create body in h2, a patch and a CSV row in h2.
TARGETS: dict[str, dict[str, Any]] = {
    "halls": {"key": "h2", "create": {"code": "h3", "name": "n"}, "csv": "code,name\nh3,n\n"},
    "units": {
        "key": "h2/u", "create": {"hall": "h2", "code": "u2", "name": "n"},
        "csv": "hall,code,name\nh2,u2,n\n",
    },
    "windows": {
        "key": "h2/w", "create": {"hall": "h2", "code": "w2", "name": "n"},
        "csv": "hall,code,name\nh2,w2,n\n",
    },
    "devices": {
        "key": "k-h2", "create": {"code": "k-new", "hall": "h2"}, "csv": "hall,code\nh2,k-new\n",
    },
    "staff": {
        "key": "h2/007", "create": {"hall": "h2", "number": "008", "name": "n"},
        "csv": "hall,number,name\nh2,008,n\n",
    },
    "items": {"key": "i1", "create": {"code": "i2", "name": "n"}, "csv": "code,name\ni2,n\n"},
}  # fmt: skip
HALL_MANAGED = {"units", "windows", "devices", "staff"}


def _cases() -> list[tuple[str, str, str, dict[str, Any], str]]:
    """Return (entity, method, route template, request kwargs, operation) for every route."""
    cases = []
    for ent, t in TARGETS.items():
        item = (
            f"/api/registry/{ent}/{{hall}}/{{code}}"
            if "/" in t["key"]
            else (f"/api/registry/{ent}/{{code}}")
        )
        url = f"/api/registry/{ent}/{t['key']}"
        patch = {"test_device": True} if ent == "devices" else {"name": "pwned"}
        cases += [
            (ent, "GET", f"/api/registry/{ent}", {"url": f"/api/registry/{ent}"}, "list"),
            (ent, "GET", f"/api/registry/{ent}",
             {"url": f"/api/registry/{ent}", "params": {"hall": "h2"}}, "list_h2"),
            (ent, "GET", item, {"url": url}, "get"),
            (ent, "POST", f"/api/registry/{ent}",
             {"url": f"/api/registry/{ent}", "json": t["create"]}, "create"),
            (ent, "PATCH", item, {"url": url, "json": patch}, "patch"),
            (ent, "DELETE", item, {"url": url}, "delete"),
            (ent, "POST", f"/api/registry/{ent}/import",
             {"url": f"/api/registry/{ent}/import", "params": {"dry_run": "false"},
              "content": t["csv"].encode(), "headers": CSV}, "import"),
            (ent, "POST", f"/api/registry/{ent}/import",
             {"url": f"/api/registry/{ent}/import", "content": t["csv"].encode(),
              "headers": CSV}, "import_dry"),
        ]  # fmt: skip
    # A hall manager moving their own device into the other hall.
    cases.append(
        ("devices", "PATCH", "/api/registry/devices/{code}",
         {"url": "/api/registry/devices/k-h1", "json": {"hall": "h2"}}, "move_own")
    )  # fmt: skip
    return cases


def _expected(role: str, ent: str, op: str) -> int:
    """Return the status the role must get."""
    if role == "viewer":
        return 200 if op in {"list", "list_h2", "get"} else 403
    if op in {"list", "list_h2"}:
        return 200
    if op == "get":
        return 200 if ent == "items" else 404
    if ent not in HALL_MANAGED:
        return 403
    # A dry run answers 200 with the refused rows (ok false), as for any invalid file.
    return {"create": 403, "patch": 404, "delete": 404, "move_own": 403, "import_dry": 200}.get(
        op, 422
    )


@pytest.mark.parametrize("role", ["hall_manager", "viewer"])
def test_every_registry_endpoint_respects_the_role(db_url: str, role: str) -> None:
    """A manager of h1 learns nothing of h2 and changes nothing; a viewer only reads."""
    with TestClient(create_app(ServerSettings(database_url=db_url))) as c:
        make_user(c, "root", "admin")
        login(c, "root")
        _seed(c)
        make_user(c, "who", role, "h1" if role == "hall_manager" else None)
        c.cookies.clear()
        c.headers.pop("X-CSRF-Token")
        login(c, "who")
        before = _snapshot(c)
        cases = _cases()
        routes = {
            (m, r.path)
            for r in c.app.routes  # type: ignore[attr-defined]
            if isinstance(r, APIRoute) and r.path.startswith("/api/registry")
            for m in r.methods
        }
        assert routes <= {(m, p) for _e, m, p, _k, _o in cases}, "a registry route is untested"
        for ent, method, _path, kw, op in cases:
            kw = dict(kw)
            resp = c.request(method, kw.pop("url"), **kw)
            want = _expected(role, ent, op)
            assert resp.status_code == want, (role, ent, op, resp.status_code, resp.text)
            if op.startswith("import") and want in {200, 422}:
                assert resp.json()["ok"] is False
                assert resp.json()["written"] == 0
            if role == "hall_manager":
                assert SECRET not in resp.text, (ent, op, resp.text)
                if want == 404:  # the same answer as for a record that does not exist
                    key = TARGETS[ent]["key"]
                    title = {"items": "service item", "staff": "staff member"}.get(ent, ent[:-1])
                    assert resp.json() == {
                        "error": "not_found", "detail": f"no {title} {key!r}", "errors": []
                    }  # fmt: skip
                if op in {"list", "list_h2"} and ent != "items":
                    body = resp.json()
                    halls = {r.get("hall", r.get("code")) for r in body}
                    assert halls <= {"h1"}, (ent, op, body)
                    assert (len(body) == 1) == (op == "list"), (ent, op, body)
            elif op in {"list", "list_h2"} and ent != "items":
                assert len(resp.json()) == (2 if op == "list" else 1), (ent, op)
        assert _snapshot(c) == before
        changes = [a for a in _audit(c) if a[1].startswith("registry.") and a[0] == "who"]
        assert changes == []


def test_hall_manager_writes_own_hall_and_is_audited(app_client: TestClient) -> None:
    """A manager changes their own hall's records; office and viewer may not; all audited."""
    c = app_client
    login(c, "root")
    _seed(c)
    make_user(c, "m1", "hall_manager", "h1")
    make_user(c, "office", "office")
    c.cookies.clear()
    login(c, "m1")
    unit = {"hall": "h1", "code": "u9", "name": "新部门"}
    assert c.post("/api/registry/units", json=unit).status_code == 201
    resp = c.patch("/api/registry/windows/h1/w", json={"name": "改名"})
    assert resp.status_code == 200
    assert c.delete("/api/registry/units/h1/u9").status_code == 204
    resp = c.post(
        "/api/registry/staff/import",
        params={"dry_run": "false"},
        content="hall,number,name\nh1,100,李四\n".encode(),
        headers=CSV,
    )
    assert resp.status_code == 200, resp.text
    assert c.post("/api/registry/halls", json={"code": "h9", "name": "x"}).status_code == 403
    assert [(r["hall"], r["code"]) for r in c.get("/api/registry/devices").json()] == [
        ("h1", "k-h1")
    ]
    c.cookies.clear()
    login(c, "office")
    assert len(c.get("/api/registry/units").json()) == 2
    assert c.patch("/api/registry/units/h1/u", json={"name": "x"}).status_code == 403
    mine = [(a, t) for who, a, t in _audit(c) if who == "m1"]
    assert mine == [
        ("auth.login", "m1"),
        ("registry.create", "units:h1/u9"),
        ("registry.update", "windows:h1/w"),
        ("registry.delete", "units:h1/u9"),
        ("registry.import", "staff"),
    ]
    with c.app.state.db.session() as session:  # type: ignore[attr-defined]
        row = session.scalars(select(AuditLog).where(AuditLog.action == "registry.update")).one()
        assert json.loads(row.detail) == {"name": "改名"}
        assert row.at is not None
