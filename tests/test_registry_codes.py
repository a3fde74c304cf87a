"""Registry codes for the provincial platforms: USCC, 行政区划 and 事项编码.

The validators on real and broken codes (hypothesis for the USCC check character), the API
and the CSV/XLSX import on SQLite and a real PostgreSQL, the admin page's form (HTML, and in
headless Chromium on the real server), and the migration of a 0007 database with data in it.
"""

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from playwright.sync_api import expect, sync_playwright
from sqlalchemy import select, text

from server.db.engine import Database, alembic_config, upgrade
from server.db.models import Base, Unit
from server.registry.codes import (
    USCC_CHARS,
    CodeError,
    check_area_code,
    check_item_code,
    check_uscc,
    uscc_check_char,
)
from tests.test_browser import CHROMIUM_ARGS, PASSWORD
from tests.test_devices import HALL, server
from tests.test_live import ServerThread
from tests.test_registry import CSV, _ok, client, db_url
from tests.test_registry_import import xlsx

__all__ = ["client", "db_url", "server"]  # fixtures from tests.test_registry, test_devices

USCC = "91350100M000100Y43"  # GB 32100-2015's own example
REAL_USCC = ("91110000802100433B", "11100000000013127D", "12100000400000624D")


@pytest.mark.parametrize("code", (USCC, *REAL_USCC))
def test_real_usccs_are_valid(code: str) -> None:
    """Published codes pass, and their check character is the one computed."""
    assert check_uscc(code) == code
    assert uscc_check_char(code[:17]) == code[17]


@pytest.mark.parametrize(
    ("code", "says"),
    [
        ("91350100M000100Y44", "校验位应为 '3'"),
        ("91350100M000100Y4", "应为 18 位"),
        ("91350100m000100Y43", "小写字母 'm'"),
        ("91350100M000100O43", "不用 I、O、Z、S、V"),
        ("9135010OM000100Y43", "'O'"),
        ("91350100M000100Y4-", "非法字符 '-'"),
        ("91350100M000100Ｙ43", "非法字符"),
    ],
)
def test_bad_usccs_are_refused(code: str, says: str) -> None:
    """Each broken code is refused with the value and the reason, in Chinese then English."""
    with pytest.raises(CodeError) as err:
        check_uscc(code)
    message = str(err.value)
    assert says in message and repr(code) in message and " / USCC " in message


@given(st.text(alphabet=USCC_CHARS, min_size=17, max_size=17), st.sampled_from(USCC_CHARS))
def test_one_wrong_check_character_is_always_caught(first17: str, other: str) -> None:
    """The computed check character makes a valid code; any other last character fails."""
    good = first17 + uscc_check_char(first17)
    assert check_uscc(good) == good
    if other != good[17]:
        with pytest.raises(CodeError, match="校验位"):
            check_uscc(first17 + other)


@given(st.text(alphabet=USCC_CHARS, min_size=18, max_size=18), st.integers(0, 16))
def test_one_changed_character_is_always_caught(code: str, where: int) -> None:
    """Changing one of the first 17 characters of a valid code breaks its check character."""
    good = code[:17] + uscc_check_char(code[:17])
    for new in USCC_CHARS:
        if new != good[where]:
            changed = good[:where] + new + good[where + 1 :]
            with pytest.raises(CodeError):
                check_uscc(changed)


@pytest.mark.parametrize(
    "code",
    ["330106", "110000", "330100", "469001", "330106001", "330106001001", "441900003", "820000"],
)
def test_area_codes_valid(code: str) -> None:
    """Province, city, county, township and village codes; 东莞's towns; 澳门."""
    assert check_area_code(code) == code


@pytest.mark.parametrize(
    ("code", "says"),
    [
        ("33010", "6、9 或 12 位"),
        ("3301060010", "6、9 或 12 位"),
        ("33O106", "只能是数字"),
        ("３３０１０６", "只能是数字"),
        ("990106", "省级代码 99"),
        ("000000", "省级代码 00"),
        ("330006", "地市级为 00"),
        ("330000001", "地市级为 00"),
        ("330106000001", "乡镇级为 000"),
    ],
)
def test_area_codes_refused(code: str, says: str) -> None:
    """Letters, wrong lengths, unknown provinces, levels under an all-zero level."""
    with pytest.raises(CodeError, match=says) as err:
        check_area_code(code)
    assert repr(code) in str(err.value) and " / area code " in str(err.value)


@pytest.mark.parametrize(
    "code", ["000105001000", "11330100002482040X4000117008000", "XK0010100Y", "3301-ABC-01"]
)
def test_item_codes_valid(code: str) -> None:
    """A 基本编码, a 实施编码 (USCC + 基本编码), a province's lettered code, hyphens."""
    assert check_item_code(code) == code


@pytest.mark.parametrize(
    ("code", "says"),
    [
        ("X1", "4–64"),
        ("a" * 65, "4–64"),
        ("xk001", "小写"),
        ("XK--01", "连字符"),
        ("XK 01", "连字符"),
    ],
)
def test_item_codes_refused(code: str, says: str) -> None:
    """Too short or long, lower case, double hyphens, spaces."""
    with pytest.raises(CodeError, match=says):
        check_item_code(code)


def test_api_accepts_shows_changes_and_refuses_codes(client: TestClient) -> None:
    """Codes are optional, stored, shown, changed and removed; a bad one is a 422 naming it."""
    c = client
    hall = {"code": "fz", "name": "福州市民服务中心", "area_code": "350100"}
    assert _ok(c.post("/api/registry/halls", json=hall), 201) == hall
    unit = {"hall": "fz", "code": "scj", "name": "市场监管局", "uscc": USCC}
    assert _ok(c.post("/api/registry/units", json=unit), 201)["area_code"] is None
    _ok(c.post("/api/registry/units", json={"hall": "fz", "code": "gaj", "name": "公安局"}), 201)
    item = {"code": "fz-001", "name": "营业执照", "catalog_code": "000105001000"}
    _ok(c.post("/api/registry/items", json=item), 201)

    assert _ok(c.get("/api/registry/units/fz/scj")) == {**unit, "area_code": None}
    patched = _ok(c.patch("/api/registry/units/fz/scj", json={"area_code": "350102"}))
    assert (patched["uscc"], patched["area_code"]) == (USCC, "350102")
    assert _ok(c.patch("/api/registry/units/fz/scj", json={"uscc": None}))["uscc"] is None
    assert _ok(c.get("/api/registry/items/fz-001"))["catalog_code"] == "000105001000"
    with c.app.state.db.session() as session:  # type: ignore[attr-defined]
        units = {u.code: u for u in session.scalars(select(Unit))}
        assert units["scj"].effective_area_code == "350102"  # its own
        assert units["gaj"].effective_area_code == "350100"  # the hall's

    bad = dict(unit, code="x", uscc="91350100M000100Y44")
    err = _ok(c.post("/api/registry/units", json=bad), 422)["detail"][0]
    assert err["loc"] == ["body", "uscc"] and err["input"] == "91350100M000100Y44"
    assert err["msg"].startswith("统一社会信用代码 '91350100M000100Y44' 校验位应为 '3'")
    err = _ok(c.patch("/api/registry/halls/fz", json={"area_code": "35010"}), 422)["detail"][0]
    assert err["loc"] == ["body", "area_code"] and "6、9 或 12 位" in err["msg"]
    err = _ok(c.patch("/api/registry/items/fz-001", json={"catalog_code": "x y"}), 422)
    assert err["detail"][0]["loc"] == ["body", "catalog_code"]
    assert _ok(c.get("/api/registry/halls/fz"))["area_code"] == "350100"
    codes = {u["code"]: u["uscc"] for u in _ok(c.get("/api/registry/units"))}
    assert codes == {"gaj": None, "scj": None}


def test_import_with_a_bad_code_is_refused_whole(client: TestClient) -> None:
    """A bad code fails its row, by number; nothing is written; the fixed file is written."""
    c = client
    _ok(c.post("/api/registry/halls", json={"code": "fz", "name": "福州"}), 201)
    units = (
        "大厅,部门编码,部门名称,统一社会信用代码,行政区划代码\r\n"
        f"fz,scj,市场监管局,{USCC},350102\r\n"
        "fz,gaj,公安局,91350100M000100Y44,350102\r\n"
        "fz,mzj,民政局,,990102\r\n"
        "fz,sbj,社保局,,\r\n"
    )
    resp = c.post("/api/registry/units/import?dry_run=false", content=units.encode(), headers=CSV)
    result = _ok(resp, 422)
    assert result["written"] == 0 and not result["ok"]
    errors = {r["row"]: r["errors"] for r in result["rows"] if not r["ok"]}
    assert set(errors) == {3, 4}
    assert errors[3][0]["field"] == "uscc" and "校验位应为 '3'" in errors[3][0]["message"]
    assert errors[4][0]["field"] == "area_code" and "省级代码 99" in errors[4][0]["message"]
    assert _ok(c.get("/api/registry/units")) == []

    fixed = units.replace("Y44", "Y43").replace("990102", "350103")
    resp = c.post("/api/registry/units/import?dry_run=false", content=fixed.encode(), headers=CSV)
    assert _ok(resp)["written"] == 4
    listed = {u["code"]: (u["uscc"], u["area_code"]) for u in _ok(c.get("/api/registry/units"))}
    assert listed["gaj"] == (USCC, "350102") and listed["sbj"] == (None, None)

    items = xlsx(
        [["事项编码", "事项名称", "实施编码"], ["i-1", "一", "000105001000"], ["i-2", "二", "ab"]]
    )
    resp = c.post("/api/registry/items/import?dry_run=false", content=items)
    bad = _ok(resp, 422)
    assert [(r["row"], r["ok"]) for r in bad["rows"]] == [(2, True), (3, False)]
    assert bad["rows"][1]["errors"][0]["field"] == "catalog_code"
    assert _ok(c.get("/api/registry/items")) == []


def test_admin_page_has_the_code_fields(client: TestClient) -> None:
    """The units tab's table and form have the USCC and area code; the items tab its code."""
    page = client.get("/admin/registry", params={"entity": "units"}).text
    for text_ in ('<input name="uscc">', '<input name="area_code">', "<th>统一社会信用代码</th>"):
        assert text_ in page
    page = client.get("/admin/registry", params={"entity": "items", "lang": "en"}).text
    assert '<input name="catalog_code">' in page and "<th>Catalogue item code</th>" in page


def test_admin_page_edits_a_units_codes_in_chromium(server: ServerThread) -> None:
    """An admin's bad USCC gets the API's message on the page; the good one shows in the table."""
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_context().new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{server.url}/admin/registry?entity=units")
        page.fill("input[name=username]", "root")
        page.fill("input[name=password]", PASSWORD)
        page.click("form#login button[type=submit]")
        row = page.locator(f'#records tr[data-key="{HALL}/gaj"]')
        row.locator("button.edit").click()
        form = page.locator("#record-form")
        form.locator("input[name=uscc]").fill("91350100M000100Y44")
        form.locator("input[name=area_code]").fill("330106")
        page.click("#save")
        expect(page.locator("#msg.error")).to_contain_text("uscc: 统一社会信用代码")
        expect(page.locator("#msg.error")).to_contain_text("校验位应为 '3'")
        form.locator("input[name=uscc]").fill(USCC)
        page.click("#save")
        expect(row.locator("td.col-uscc")).to_have_text(USCC)
        expect(row.locator("td.col-area_code")).to_have_text("330106")
        row.locator("button.edit").click()
        expect(form.locator("input[name=uscc]")).to_have_value(USCC)
        form.locator("input[name=area_code]").fill("")
        page.click("#save")
        expect(row.locator("td.col-area_code")).to_have_text("")
        expect(row.locator("td.col-uscc")).to_have_text(USCC)
        browser.close()
    assert errors == []


def test_migration_0008_keeps_0007_data(db_url: str) -> None:
    """A 0007 database with a hall, a unit and an item keeps them; codes start empty."""
    db = Database(db_url)
    try:
        upgrade(db.engine, "0007")
        with db.engine.begin() as conn:
            conn.execute(text("INSERT INTO halls (code, name) VALUES ('h1', '一厅')"))
            conn.execute(
                text(
                    "INSERT INTO units (hall_id, code, name)"
                    " SELECT id, 'gaj', '公安局' FROM halls WHERE code = 'h1'"
                )
            )
            conn.execute(text("INSERT INTO service_items (code, name) VALUES ('i1', '身份证')"))
        db.upgrade()
        with db.engine.begin() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            assert conn.scalar(text("SELECT version_num FROM alembic_version")) == "0008"
            row = conn.execute(text("SELECT code, name, uscc, area_code FROM units")).one()
            assert tuple(row) == ("gaj", "公安局", None, None)
            assert conn.scalar(text("SELECT area_code FROM halls WHERE code = 'h1'")) is None
            conn.execute(text(f"UPDATE units SET uscc = '{USCC}', area_code = '350102'"))
            conn.execute(text("UPDATE service_items SET catalog_code = '000105001000'"))
        cfg = alembic_config()
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0007")
        with db.engine.connect() as conn:
            assert tuple(conn.execute(text("SELECT code, name FROM units")).one()) == (
                "gaj",
                "公安局",
            )
            assert conn.scalar(text("SELECT name FROM service_items")) == "身份证"
    finally:
        db.close()
