"""XLSX import of the registry: Chinese headers, cell types, row errors, dry runs and bad files."""

import datetime as dt
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openpyxl import Workbook

from server.app import create_app
from server.registry.xlsximport import XLSX_TYPE
from server.settings import ServerSettings
from tests.test_registry import _ok, login, make_user

XLSX = {"Content-Type": XLSX_TYPE}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    """A client of the server app on an empty SQLite registry, logged in as admin."""
    url = f"sqlite:///{tmp_path / 'var' / 'registry.db'}"
    with TestClient(create_app(ServerSettings(database_url=url))) as c:
        make_user(c, "root", "admin")
        login(c, "root")
        yield c


def xlsx(rows: list[list[Any]], *, text_cells: bool = False) -> bytes:
    """Return an XLSX workbook whose first sheet holds `rows` (a second sheet is ignored)."""
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    if text_cells:
        for line in sheet.iter_rows():
            for cell in line:
                cell.number_format = "@"
    book.create_sheet("其他").append(["编码", "名称"])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _import(
    c: TestClient, entity: str, data: bytes, dry_run: bool, headers: dict[str, str] | None = None
) -> Any:
    """POST a file to the import endpoint and return the response."""
    return c.post(
        f"/api/registry/{entity}/import",
        params={"dry_run": str(dry_run).lower()},
        content=data,
        headers=XLSX if headers is None else headers,
    )


def _codes(c: TestClient, entity: str) -> list[str]:
    """Return the codes of the listed records."""
    return [r["code"] for r in _ok(c.get(f"/api/registry/{entity}"))]


def test_xlsx_chinese_headers_preview_and_commit(client: TestClient) -> None:
    """A Chinese-header sheet previews row errors, writes nothing on dry run, then all rows."""
    c = client
    halls = xlsx([["编码", "名称"], ["h1", "一号大厅"], [None, None], ["h2", "二号大厅"]])
    preview = _ok(_import(c, "halls", halls, dry_run=True))
    assert (
        preview["ok"]
        and preview["written"] == 0
        and [r["row"] for r in preview["rows"]]
        == [
            2,
            4,
        ]
    )
    assert _codes(c, "halls") == []
    assert _ok(_import(c, "halls", halls, dry_run=False))["written"] == 2
    assert _codes(c, "halls") == ["h1", "h2"]

    # Numbers typed into cells: 12.0 becomes "12"; no Content-Type needed, the zip magic tells.
    windows = xlsx(
        [
            ["大厅", "窗口编码", "名称", "部门"],
            ["h1", 12.0, "12号窗口", None],
            ["nohall", "a14", "14号窗口", None],
            ["h1", 12, "重复", None],
        ]
    )
    bad = _ok(_import(c, "windows", windows, dry_run=True, headers={}))
    assert bad["ok"] is False and bad["written"] == 0
    rows = {r["row"]: r for r in bad["rows"]}
    assert rows[2]["ok"] and rows[2]["values"] == {"hall": "h1", "code": "12", "name": "12号窗口"}
    assert rows[3]["errors"] == [{"field": "hall", "message": "no hall 'nohall'"}]
    assert "duplicate of row 2" in rows[4]["errors"][0]["message"]
    failed = _ok(_import(c, "windows", windows, dry_run=False), 422)
    assert failed["written"] == 0 and _codes(c, "windows") == []

    fixed = xlsx([["hall", "code", "name"], ["h1", 12, "12号窗口"], ["h1", "a14", "14号窗口"]])
    assert _ok(_import(c, "windows", fixed, dry_run=False))["written"] == 2
    assert _codes(c, "windows") == ["12", "a14"]


def test_xlsx_cell_types(client: TestClient) -> None:
    """Text cells keep leading zeros, booleans and Chinese booleans work, dates become ISO."""
    c = client
    _ok(_import(c, "halls", xlsx([["code", "name"], ["h1", "一号"]]), dry_run=False))
    staff = xlsx([["大厅", "工号", "姓名"], ["h1", "0457", "张三"]], text_cells=True)
    assert _ok(_import(c, "staff", staff, dry_run=False))["written"] == 1
    assert [r["number"] for r in _ok(c.get("/api/registry/staff"))] == ["0457"]
    devices = xlsx([["设备编号", "大厅", "测试设备"], ["k-1", "h1", True], ["k-2", "h1", "否"]])
    assert _ok(_import(c, "devices", devices, dry_run=False))["written"] == 2
    devs = {d["code"]: d["test_device"] for d in _ok(c.get("/api/registry/devices"))}
    assert devs == {"k-1": True, "k-2": False}
    items = xlsx([["事项编码", "事项名称"], ["x-1", dt.datetime(2026, 3, 1)], ["x-2", 1.5]])
    done = _ok(_import(c, "items", items, dry_run=True))
    assert [r["values"]["name"] for r in done["rows"]] == ["2026-03-01", "1.5"]


def _zip(members: dict[str, bytes]) -> bytes:
    """Return a deflated zip archive of `members`."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
    + b"".join(
        f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'.encode() for i in range(8)
    )
    + b']><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
    b'<sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>&i;</t></is></c></row>'
    b"</sheetData></worksheet>"
)


def _members(data: bytes) -> dict[str, bytes]:
    """Return the members of a zip archive by name."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_bad_files_are_refused(client: TestClient) -> None:
    """Too large, zip and XML bombs, other zips and garbage labelled XLSX get a clear 4xx."""
    c = client
    big = _import(c, "halls", b"PK\x03\x04" + b"\0" * (5 * 1024 * 1024), dry_run=True)
    assert _ok(big, 413)["error"] == "file_too_large"
    bomb = _zip({"[Content_Types].xml": b"", "xl/workbook.xml": b"\0" * (60 * 1024 * 1024)})
    assert len(bomb) < 200_000
    refused = _ok(_import(c, "halls", bomb, dry_run=True), 422)
    assert refused["error"] == "invalid_file" and "unpacks to more than" in refused["detail"]
    docx = _zip({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w/>"})
    assert "not an XLSX file" in _ok(_import(c, "halls", docx, dry_run=True), 422)["detail"]
    broken = _zip({"[Content_Types].xml": b"<x", "xl/workbook.xml": b"<x"})
    assert "not an XLSX file" in _ok(_import(c, "halls", broken, dry_run=True), 422)["detail"]
    garbage = _ok(_import(c, "halls", "编码,名称\nh1,一号\n".encode(), dry_run=True), 422)
    assert "not an XLSX file" in garbage["detail"]
    laughs = _zip(
        {
            name: _LAUGHS if name == "xl/worksheets/sheet1.xml" else data
            for name, data in _members(xlsx([["code", "name"]])).items()
        }
    )
    assert "not an XLSX file" in _ok(_import(c, "halls", laughs, dry_run=True), 422)["detail"]
    empty = _ok(_import(c, "halls", xlsx([]), dry_run=True), 422)
    assert empty["detail"] == "no header row"
    assert _codes(c, "halls") == []
