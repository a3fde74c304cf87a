"""CSV import of registry records; its row check is shared with the XLSX import.

The file is UTF-8 (a BOM is allowed, as Excel writes it); the header row names the
columns in English or Chinese (编码/code, 名称/name, 大厅/hall, …). Rows are numbered
as in a spreadsheet: the header is row 1, the first record row 2.
"""

import csv
import io
import logging

from pydantic import ValidationError
from sqlalchemy.orm import Session

from server.registry import schemas as s
from server.registry.service import Entity, RegistryError, create_record, key_of

log = logging.getLogger(__name__)

MAX_BYTES = 5 * 1024 * 1024

_HALL = {"hall": "hall", "大厅": "hall", "大厅编码": "hall", "大厅代码": "hall"}
_UNIT = {"unit": "unit", "部门": "unit", "部门编码": "unit", "部门代码": "unit", "单位": "unit"}
_CODE = {"code": "code", "编码": "code", "代码": "code"}
_NAME = {"name": "name", "名称": "name"}
_AREA = {
    "area_code": "area_code",
    "行政区划": "area_code",
    "行政区划代码": "area_code",
    "区划代码": "area_code",
}
_USCC = {"uscc": "uscc", "统一社会信用代码": "uscc", "社会信用代码": "uscc", "信用代码": "uscc"}
# 事项编码 already names the item's own code (`code`), so the catalogue's has other names.
_CATALOG = {
    "catalog_code": "catalog_code",
    "目录编码": "catalog_code",
    "基本编码": "catalog_code",
    "实施编码": "catalog_code",
    "目录事项编码": "catalog_code",
}

# Accepted header (case-insensitive, spaces as `_`) → field, per entity.
HEADERS: dict[str, dict[str, str]] = {
    "halls": {**_CODE, **_NAME, **_AREA, "大厅编码": "code", "大厅名称": "name"},
    "units": {**_HALL, **_CODE, **_NAME, **_USCC, **_AREA, "部门编码": "code", "部门名称": "name"},
    "windows": {
        **_HALL,
        **_CODE,
        **_NAME,
        **_UNIT,
        "window": "code",
        "窗口": "code",
        "窗口编码": "code",
        "窗口号": "code",
        "窗口名称": "name",
    },
    "devices": {
        **_HALL,
        "code": "code",
        "device": "code",
        "id": "code",
        "编码": "code",
        "设备": "code",
        "设备编号": "code",
        "设备编码": "code",
        "window": "window",
        "窗口": "window",
        "窗口编码": "window",
        "test_device": "test_device",
        "test": "test_device",
        "测试设备": "test_device",
        "测试": "test_device",
    },
    "staff": {
        **_HALL,
        **_UNIT,
        "number": "number",
        "工号": "number",
        "编号": "number",
        "name": "name",
        "姓名": "name",
        "名称": "name",
    },
    "items": {**_CODE, **_NAME, **_CATALOG, "事项编码": "code", "事项名称": "name"},
}

_BOOL = {"是": "true", "否": "false", "真": "true", "假": "false"}


class FileError(RegistryError):
    """The file cannot be read as CSV (or XLSX) at all."""

    status = 422
    error = "invalid_file"


class TooLarge(FileError):
    """The file is larger than MAX_BYTES."""

    status = 413
    error = "file_too_large"


def _norm(header: str) -> str:
    """Return a header cell in the form HEADERS uses."""
    return "_".join(header.strip().casefold().split())


def _columns(ent: Entity, header: list[str]) -> tuple[list[str | None], list[s.FieldError]]:
    """Map each header cell to a field (None if unknown) and list the header's problems."""
    aliases = HEADERS[ent.name]
    fields: list[str | None] = []
    errors: list[s.FieldError] = []
    for cell in header:
        field = aliases.get(_norm(cell))
        if field is None:
            errors.append(s.FieldError(field=None, message=f"unknown column {cell.strip()!r}"))
        elif field in fields:
            errors.append(s.FieldError(field=field, message=f"column {field!r} appears twice"))
        fields.append(field)
    for name, info in ent.create.model_fields.items():
        if info.is_required() and name not in fields:
            zh = [alias for alias, f in aliases.items() if f == name and not alias.isascii()]
            also = f" ({zh[0]})" if zh else ""
            errors.append(s.FieldError(field=name, message=f"missing column {name!r}{also}"))
    return fields, errors


def _row_values(fields: list[str | None], cells: list[str]) -> dict[str, str | None]:
    """Return a row's non-empty cells by field, booleans in Chinese made English."""
    values: dict[str, str | None] = {}
    for field, cell in zip(fields, cells, strict=False):
        text = cell.strip()
        if field is None or not text:
            continue
        values[field] = _BOOL.get(text, text) if field == "test_device" else text
    return values


def read_csv(data: bytes) -> list[list[str]]:
    """Return the rows of a UTF-8 CSV file (BOM allowed); FileError if it is not one."""
    if len(data) > MAX_BYTES:
        raise TooLarge(f"file larger than {MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileError(f"not UTF-8 (byte {exc.start}); save the file as CSV UTF-8") from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise FileError(f"not a CSV file: {exc}") from None
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise FileError("no header row")
    return rows


def import_rows(
    session: Session, ent: Entity, rows: list[list[str]], *, dry_run: bool, kind: str = "CSV"
) -> s.ImportResult:
    """Check every row (header first) and, unless `dry_run` or a row fails, create all in `session`.

    The caller commits when the result is ok and not a dry run, and rolls back otherwise.
    """
    fields, file_errors = _columns(ent, rows[0])
    results: list[s.RowResult] = []
    seen: dict[tuple[str | None, str], int] = {}
    for number, cells in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in cells):
            continue
        values = _row_values(fields, cells)
        errors: list[s.FieldError] = []
        if len(cells) > len(fields):
            errors.append(s.FieldError(field=None, message="more cells than header columns"))
        try:
            record = ent.create.model_validate(values)
        except ValidationError as exc:
            for err in exc.errors():
                loc = str(err["loc"][0]) if err["loc"] else None
                errors.append(s.FieldError(field=loc, message=err["msg"]))
        else:
            key = key_of(ent, record)
            first = seen.setdefault((key.hall, key.code), number)
            if first != number:
                errors.append(
                    s.FieldError(
                        field=ent.key_field, message=f"duplicate of row {first} ({str(key)!r})"
                    )
                )
            elif not errors and not file_errors:
                try:
                    create_record(session, ent, record)
                except RegistryError as exc:
                    errors.extend(exc.errors or [s.FieldError(field=None, message=exc.detail)])
        results.append(s.RowResult(row=number, ok=not errors, errors=errors, values=values))
    ok = not file_errors and all(r.ok for r in results)
    written = len(results) if ok and not dry_run else 0
    log.info(
        "%s import of %s: %d rows, ok=%s, dry_run=%s", kind, ent.name, len(results), ok, dry_run
    )
    return s.ImportResult(
        entity=ent.name, dry_run=dry_run, ok=ok, written=written, errors=file_errors, rows=results
    )


def import_csv(session: Session, ent: Entity, data: bytes, *, dry_run: bool) -> s.ImportResult:
    """Check every row of CSV `data` and, unless `dry_run` or a row fails, create all."""
    return import_rows(session, ent, read_csv(data), dry_run=dry_run)
