"""Registry tests: migrations, CRUD and CSV import on SQLite and on a real PostgreSQL cluster.

The clients log in as an administrator made through the service layer.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text

from devstack.postgres import PgCluster
from server.app import create_app
from server.auth.service import create_user
from server.db.engine import Database, upgrade
from server.db.models import Base
from server.settings import ServerSettings

TABLES = {
    "halls", "units", "windows", "devices", "staff", "service_items", "alembic_version",
    "users", "auth_sessions", "audit_log",
}  # fmt: skip
PASSWORD = "correct horse battery"
CSV = {"content-type": "text/csv"}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'var' / 'registry.db'}"
    cluster: PgCluster = request.getfixturevalue("pg")
    return cluster.new_database()


def make_user(c: TestClient, username: str, role: str, hall: str | None = None) -> None:
    """Create a user with PASSWORD in the database of the client's app."""
    with c.app.state.db.session() as session:  # type: ignore[attr-defined]
        create_user(session, username, PASSWORD, role, hall)
        session.commit()


def login(c: TestClient, username: str, password: str = PASSWORD) -> Any:
    """Log in; the client keeps the cookies and sends the CSRF header from then on."""
    resp = c.post("/api/auth/login", json={"username": username, "password": password})
    assert resp.status_code == 200, resp.text
    c.headers["X-CSRF-Token"] = c.cookies["wr_csrf"]
    return resp.json()


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    """A client of the server app on that database (migrated at start), logged in as admin."""
    with TestClient(create_app(ServerSettings(database_url=db_url))) as c:
        make_user(c, "root", "admin")
        login(c, "root")
        yield c


def _ok(resp: Any, status: int = 200) -> Any:
    """Assert the status and return the JSON body."""
    assert resp.status_code == status, resp.text
    return resp.json() if resp.content else None


def _seed(c: TestClient) -> None:
    """Create a hall with a unit, a window, a device, a clerk and an item."""
    _ok(c.post("/api/registry/halls", json={"code": "hz-civic", "name": "市民中心"}), 201)
    _ok(
        c.post("/api/registry/units", json={"hall": "hz-civic", "code": "gaj", "name": "公安局"}),
        201,
    )
    win = {"hall": "hz-civic", "code": "a12", "name": "12号窗口", "unit": "gaj"}
    _ok(c.post("/api/registry/windows", json=win), 201)
    dev = {"code": "k-0001", "hall": "hz-civic", "window": "a12"}
    _ok(c.post("/api/registry/devices", json=dev), 201)
    staff = {"hall": "hz-civic", "number": "0457", "name": "张三", "unit": "gaj"}
    _ok(c.post("/api/registry/staff", json=staff), 201)
    _ok(c.post("/api/registry/items", json={"code": "330100-001", "name": "身份证办理"}), 201)


def test_migrations_create_the_schema_matching_the_models(db_url: str) -> None:
    """`upgrade head` creates every table, twice is harmless, and the models agree with it."""
    db = Database(db_url)
    try:
        db.upgrade()
        db.upgrade()
        assert set(inspect(db.engine).get_table_names()) >= TABLES
        with db.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            assert conn.scalar(text("SELECT version_num FROM alembic_version")) == "0008"
    finally:
        db.close()


def test_migration_0006_renames_the_bridge_role_to_uplink(db_url: str) -> None:
    """A hall's link account stored as role `bridge` (0005) is role `uplink` after 0006."""
    db = Database(db_url)
    try:
        upgrade(db.engine, "0005")
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO broker_accounts (username, role, hall, password_hash, revoked,"
                    " created, updated) VALUES ('link-h', 'bridge', 'h', '$7$x', false,"
                    " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
        db.upgrade()
        with db.engine.connect() as conn:
            role = conn.scalar(text("SELECT role FROM broker_accounts WHERE username = 'link-h'"))
        assert role == "uplink"
    finally:
        db.close()


def test_default_sqlite_file_is_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default URL makes `var/server/windowrate.db` under the working directory."""
    monkeypatch.chdir(tmp_path)
    settings = ServerSettings()
    assert settings.database_url == "sqlite:///var/server/windowrate.db"
    with TestClient(create_app(settings)) as c:
        assert c.get("/api/registry/halls").status_code == 401
    assert (tmp_path / "var" / "server" / "windowrate.db").is_file()


def test_crud(client: TestClient) -> None:
    """Every entity can be created, listed, read, changed and deleted."""
    c = client
    _seed(c)
    halls = _ok(c.get("/api/registry/halls"))
    assert halls == [{"code": "hz-civic", "name": "市民中心", "area_code": None}]
    assert _ok(c.get("/api/registry/windows/hz-civic/a12"))["unit"] == "gaj"
    dev = _ok(c.get("/api/registry/devices/k-0001"))
    assert dev["window"] == "a12" and dev["test_device"] is False
    assert dev["created"].endswith("Z") or dev["created"].endswith("+00:00")
    assert _ok(c.get("/api/registry/staff", params={"hall": "hz-civic"}))[0]["name"] == "张三"
    assert _ok(c.get("/api/registry/staff", params={"hall": "other"})) == []
    assert _ok(c.get("/api/registry/items"))[0]["code"] == "330100-001"

    patched = _ok(c.patch("/api/registry/windows/hz-civic/a12", json={"name": "综合窗口"}))
    assert patched == {"hall": "hz-civic", "code": "a12", "name": "综合窗口", "unit": "gaj"}
    assert _ok(c.patch("/api/registry/windows/hz-civic/a12", json={"unit": None}))["unit"] is None
    assert _ok(c.patch("/api/registry/devices/k-0001", json={"test_device": True}))["test_device"]
    assert _ok(c.patch("/api/registry/halls/hz-civic", json={"name": "新中心"}))["name"] == "新中心"

    # Still referenced: 409, nothing deleted.
    body = _ok(c.delete("/api/registry/halls/hz-civic"), 409)
    assert body["error"] == "in_use" and "windows" in body["detail"]
    _ok(c.delete("/api/registry/windows/hz-civic/a12"), 409)
    for path in (
        "devices/k-0001", "windows/hz-civic/a12", "staff/hz-civic/0457", "units/hz-civic/gaj",
        "items/330100-001", "halls/hz-civic",
    ):  # fmt: skip
        _ok(c.delete(f"/api/registry/{path}"), 204)
        _ok(c.get(f"/api/registry/{path}"), 404)
    assert _ok(c.get("/api/registry/halls")) == []


def test_errors_are_4xx(client: TestClient) -> None:
    """Duplicates are 409, unknown records 404, bad values and references 422, never 500."""
    c = client
    _seed(c)
    dup = _ok(c.post("/api/registry/halls", json={"code": "hz-civic", "name": "x"}), 409)
    assert dup["error"] == "conflict" and dup["errors"][0]["field"] == "code"
    _ok(c.post("/api/registry/windows", json={"hall": "hz-civic", "code": "a12", "name": "x"}), 409)
    _ok(c.post("/api/registry/devices", json={"code": "k-0001", "hall": "hz-civic"}), 409)
    # The same window code in another hall is fine.
    _ok(c.post("/api/registry/halls", json={"code": "xh", "name": "西湖"}), 201)
    _ok(c.post("/api/registry/windows", json={"hall": "xh", "code": "a12", "name": "x"}), 201)

    _ok(c.get("/api/registry/halls/nope"), 404)
    _ok(c.patch("/api/registry/units/xh/gaj", json={"name": "x"}), 404)
    _ok(c.delete("/api/registry/devices/nope"), 404)

    fk = _ok(c.post("/api/registry/windows", json={"hall": "nope", "code": "b1", "name": "x"}), 422)
    assert fk["errors"] == [{"field": "hall", "message": "no hall 'nope'"}]
    unit = {"hall": "xh", "code": "b1", "name": "x", "unit": "gaj"}  # gaj is in the other hall
    assert _ok(c.post("/api/registry/windows", json=unit), 422)["errors"][0]["field"] == "unit"
    dev = {"code": "k-2", "hall": "xh", "window": "zz"}
    assert _ok(c.post("/api/registry/devices", json=dev), 422)["errors"][0]["field"] == "window"
    # Moving a device to a hall its window is not in.
    moved = _ok(c.patch("/api/registry/devices/k-0001", json={"hall": "xh"}), 422)
    assert moved["errors"][0]["field"] == "window"
    _ok(c.patch("/api/registry/devices/k-0001", json={"hall": "xh", "window": "a12"}))
    # Schema errors: bad id grammar, unknown keys, null names.
    _ok(c.post("/api/registry/halls", json={"code": "Bad Hall", "name": "x"}), 422)
    _ok(c.post("/api/registry/halls", json={"code": "ok", "name": "x", "extra": 1}), 422)
    _ok(c.patch("/api/registry/halls/xh", json={"name": None}), 422)
    _ok(c.get("/api/registry/nope"), 404)


def _import(c: TestClient, entity: str, csv_text: str, dry_run: bool, bom: bool = False) -> Any:
    """POST a CSV file to the import endpoint and return the response."""
    data = ("\ufeff" if bom else "") + csv_text
    return c.post(
        f"/api/registry/{entity}/import",
        params={"dry_run": str(dry_run).lower()},
        content=data.encode("utf-8"),
        headers=CSV,
    )


def test_csv_preview_and_commit(client: TestClient) -> None:
    """A preview reports every row and writes nothing; a commit writes all rows or none."""
    c = client
    _seed(c)
    windows = (
        "大厅,窗口编码,名称,部门\r\n"
        "hz-civic,a13,13号窗口,gaj\r\n"
        "nohall,a14,14号窗口,\r\n"
        "hz-civic,a13,重复,\r\n"
        "hz-civic,a12,已存在,\r\n"
        "hz-civic,a15,,gaj\r\n"
        "hz-civic,a16,16号窗口,nounit\r\n"
    )
    preview = _ok(_import(c, "windows", windows, dry_run=True, bom=True))
    assert preview["ok"] is False and preview["written"] == 0 and preview["errors"] == []
    rows = {r["row"]: r for r in preview["rows"]}
    assert rows[2]["ok"] and rows[2]["values"]["name"] == "13号窗口"
    assert rows[3]["errors"] == [{"field": "hall", "message": "no hall 'nohall'"}]
    assert "duplicate of row 2" in rows[4]["errors"][0]["message"]
    assert rows[5]["errors"][0]["field"] == "code" and "exists" in rows[5]["errors"][0]["message"]
    assert rows[6]["errors"][0]["field"] == "name"
    assert rows[7]["errors"][0]["field"] == "unit"
    assert [w["code"] for w in _ok(c.get("/api/registry/windows"))] == ["a12"]

    failed = _ok(_import(c, "windows", windows, dry_run=False), 422)
    assert failed["ok"] is False and failed["written"] == 0 and len(failed["rows"]) == 6
    assert [w["code"] for w in _ok(c.get("/api/registry/windows"))] == ["a12"]

    good = "hall,code,name,unit\nhz-civic,a13,13号窗口,gaj\nhz-civic,a14,14号窗口,\n"
    dry = _ok(_import(c, "windows", good, dry_run=True))
    assert dry["ok"] is True and dry["written"] == 0
    assert [w["code"] for w in _ok(c.get("/api/registry/windows"))] == ["a12"]
    done = _ok(_import(c, "windows", good, dry_run=False))
    assert done["ok"] is True and done["written"] == 2
    listed = _ok(c.get("/api/registry/windows"))
    assert [(w["code"], w["unit"]) for w in listed] == [
        ("a12", "gaj"),
        ("a13", "gaj"),
        ("a14", None),
    ]


def test_csv_headers_and_file_errors(client: TestClient) -> None:
    """Chinese and English headers, a BOM, Chinese booleans; missing and unknown columns fail."""
    c = client
    halls = "编码,名称\nh1,一号大厅\nh2,二号大厅\n"
    assert _ok(_import(c, "halls", halls, dry_run=False, bom=True))["written"] == 2
    devices = "设备编号,大厅,窗口,测试设备\nk-1,h1,,是\nk-2,h2,,否\nK-3,h1,,\n"
    preview = _ok(_import(c, "devices", devices, dry_run=True, bom=True))
    assert [r["ok"] for r in preview["rows"]] == [True, True, False]
    assert preview["rows"][2]["errors"][0]["field"] == "code"  # upper case breaks the id grammar
    ok_devices = "Device,Hall,Test Device\nk-1,h1,是\nk-2,h2,false\n"
    assert _ok(_import(c, "devices", ok_devices, dry_run=False))["written"] == 2
    devs = {d["code"]: d["test_device"] for d in _ok(c.get("/api/registry/devices"))}
    assert devs == {"k-1": True, "k-2": False}
    staff = "大厅,工号,姓名\nh1,0457,张三\n"
    assert _ok(_import(c, "staff", staff, dry_run=False))["written"] == 1

    missing = _ok(_import(c, "units", "大厅,编码\nh1,gaj\n", dry_run=True))
    assert missing["ok"] is False
    assert missing["errors"] == [{"field": "name", "message": "missing column 'name' (名称)"}]
    assert missing["rows"][0]["errors"][0]["field"] == "name"
    unknown = _ok(_import(c, "items", "code,name,备注\nx1,事项,说明\n", dry_run=True))
    assert unknown["errors"] == [{"field": None, "message": "unknown column '备注'"}]
    failed = _ok(_import(c, "items", "code,name,备注\nx1,事项,说明\n", dry_run=False), 422)
    assert failed["written"] == 0 and _ok(c.get("/api/registry/items")) == []

    gbk = c.post(
        "/api/registry/halls/import", content="编码,名称\nh3,三号\n".encode("gbk"), headers=CSV
    )
    assert _ok(gbk, 422)["error"] == "invalid_file"
    _ok(c.post("/api/registry/halls/import", content=b"", headers=CSV), 422)
    _ok(c.post("/api/registry/nope/import", content=b"code\n", headers=CSV), 404)


def test_openapi_documents_typed_bodies(client: TestClient) -> None:
    """Each entity's create and patch bodies and the CSV import are in the OpenAPI spec."""
    spec = _ok(client.get("/openapi.json"))
    paths = spec["paths"]
    body = paths["/api/registry/windows"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"].endswith("/WindowIn")
    patch = paths["/api/registry/staff/{hall}/{code}"]["patch"]["requestBody"]["content"]
    assert patch["application/json"]["schema"]["$ref"].endswith("/StaffPatch")
    assert "text/csv" in paths["/api/registry/devices/import"]["post"]["requestBody"]["content"]
