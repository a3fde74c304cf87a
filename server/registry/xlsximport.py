"""XLSX import of registry records: the first sheet read as the CSV import reads its rows.

The header row names the columns as in a CSV file (English or Chinese); cells that
Excel stores as numbers, booleans or dates become text (1.0 -> "1"), text cells stay
as typed (a staff number "0457" keeps its zero). The file is checked before openpyxl
opens it: at most MAX_BYTES, a zip whose listed uncompressed size stays under
MAX_UNPACKED (a zip bomb is refused) and which holds a workbook.
"""

import datetime as dt
import io
import logging
import zipfile
from typing import Any

from openpyxl import load_workbook
from sqlalchemy.orm import Session

from server.registry import schemas as s
from server.registry.csvimport import MAX_BYTES, FileError, TooLarge, import_rows
from server.registry.service import Entity

log = logging.getLogger(__name__)

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
ZIP_MAGIC = b"PK\x03\x04"
MAX_UNPACKED = 50 * 1024 * 1024
MAX_MEMBERS = 1000
MAX_ROWS = 100_000
_NOT_XLSX = "not an XLSX file; save the sheet as Excel workbook (.xlsx) or CSV UTF-8"


def is_xlsx(content_type: str | None, data: bytes) -> bool:
    """Return whether a request body is meant as XLSX: by its Content-Type or its zip magic."""
    media = (content_type or "").split(";")[0].strip().lower()
    return media == XLSX_TYPE or data.startswith(ZIP_MAGIC)


def _check_zip(data: bytes) -> None:
    """Raise FileError unless `data` is a small enough zip that holds a workbook."""
    if len(data) > MAX_BYTES:
        raise TooLarge(f"file larger than {MAX_BYTES} bytes")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except Exception:  # BadZipFile, and more on a crafted directory (struct, overflow, …)
        raise FileError(_NOT_XLSX) from None
    if len(members) > MAX_MEMBERS:
        raise FileError(f"XLSX file with more than {MAX_MEMBERS} parts")
    unpacked = sum(m.file_size for m in members)
    if unpacked > MAX_UNPACKED:
        raise FileError(f"XLSX file unpacks to more than {MAX_UNPACKED} bytes")
    names = {m.filename for m in members}
    if "xl/workbook.xml" not in names or "[Content_Types].xml" not in names:
        raise FileError(_NOT_XLSX)


def cell_text(value: Any) -> str:
    """Return a cell's value as the text a CSV file would hold."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, dt.datetime):
        if value.time() == dt.time():
            return value.date().isoformat()
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


def _trimmed(cells: list[str]) -> list[str]:
    """Return the cells without the empty ones at the end (a sheet pads rows to its width)."""
    end = len(cells)
    while end and not cells[end - 1].strip():
        end -= 1
    return cells[:end]


def read_xlsx(data: bytes) -> list[list[str]]:
    """Return the rows of the first sheet of an XLSX file as text; FileError if it is not one."""
    _check_zip(data)
    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds on a broken workbook
        log.info("XLSX file refused: %s", exc)
        raise FileError(_NOT_XLSX) from None
    try:
        if not book.worksheets:
            raise FileError("XLSX file without a sheet")
        rows: list[list[str]] = []
        for values in book.worksheets[0].iter_rows(values_only=True):
            if len(rows) >= MAX_ROWS:
                raise FileError(f"more than {MAX_ROWS} rows")
            rows.append(_trimmed([cell_text(v) for v in values]))
    except FileError:
        raise
    except Exception as exc:
        log.info("XLSX sheet unreadable: %s", exc)
        raise FileError(_NOT_XLSX) from None
    finally:
        book.close()
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise FileError("no header row")
    return rows


def import_xlsx(session: Session, ent: Entity, data: bytes, *, dry_run: bool) -> s.ImportResult:
    """Check every row of XLSX `data` and, unless `dry_run` or a row fails, create all."""
    return import_rows(session, ent, read_xlsx(data), dry_run=dry_run, kind="XLSX")
