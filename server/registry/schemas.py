"""Pydantic schemas of the registry API: what is created, patched and returned."""

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError

from protocol.messages import IdStr, TextStr, WindowStr
from server.registry import codes

# A department's code: letters, digits, `_ . -`.
UnitCode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
# A hall's, unit's or service item's name (shown on boards, not sent to devices).
LongName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$"
    ),
]


def _checked(kind: str, check: Callable[[str], str]) -> AfterValidator:
    """Return a validator running `check`, its message given as is (no "Value error," prefix)."""

    def run(value: str) -> str:
        try:
            return check(value)
        except codes.CodeError as exc:
            raise PydanticCustomError(kind, str(exc)) from None

    return AfterValidator(run)


# 统一社会信用代码 (GB 32100-2015), 行政区划代码 (GB/T 2260) and 事项编码: see codes.py.
Uscc = Annotated[str, _checked("uscc", codes.check_uscc)]
AreaCode = Annotated[str, _checked("area_code", codes.check_area_code)]
CatalogCode = Annotated[str, _checked("catalog_code", codes.check_item_code)]
_USCC = "统一社会信用代码 (USCC, GB 32100-2015, 18 characters)"
_AREA = "行政区划代码 (GB/T 2260: 6 digits; 9 or 12 with township and village)"
_CATALOG = "事项编码 of the national catalogue or the province's 实施清单"


class _In(BaseModel):
    """Base of request bodies: unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Out(BaseModel):
    """Base of responses."""

    model_config = ConfigDict(extra="forbid")


class HallIn(_In):
    """A hall to create."""

    code: IdStr = Field(title="Hall id (the topic's {hall})")
    name: LongName = Field(title="Name")
    area_code: AreaCode | None = Field(default=None, title=_AREA)


class HallPatch(_In):
    """Changes to a hall; `area_code: null` removes it."""

    name: LongName | None = Field(default=None, title="Name")
    area_code: AreaCode | None = Field(default=None, title=_AREA)


class HallOut(_Out):
    """A hall."""

    code: str
    name: str
    area_code: str | None


class UnitIn(_In):
    """A unit (部门) to create in a hall."""

    hall: IdStr = Field(title="Hall id")
    code: UnitCode = Field(title="Unit code, unique in the hall")
    name: LongName = Field(title="Name")
    uscc: Uscc | None = Field(default=None, title=_USCC)
    area_code: AreaCode | None = Field(default=None, title=_AREA)


class UnitPatch(_In):
    """Changes to a unit; `uscc: null` or `area_code: null` removes that code."""

    name: LongName | None = Field(default=None, title="Name")
    uscc: Uscc | None = Field(default=None, title=_USCC)
    area_code: AreaCode | None = Field(default=None, title=_AREA)


class UnitOut(_Out):
    """A unit (部门); without its own `area_code` the hall's applies."""

    hall: str
    code: str
    name: str
    uscc: str | None
    area_code: str | None


class WindowIn(_In):
    """A window to create in a hall."""

    hall: IdStr = Field(title="Hall id")
    code: WindowStr = Field(title="Window id (RatingEvent.window), unique in the hall")
    name: TextStr = Field(title="Name shown on the device and boards")
    unit: UnitCode | None = Field(default=None, title="Unit running the window (same hall)")


class WindowPatch(_In):
    """Changes to a window; `unit: null` detaches it from its unit."""

    name: TextStr | None = Field(default=None, title="Name")
    unit: UnitCode | None = Field(default=None, title="Unit (same hall)")


class WindowOut(_Out):
    """A window."""

    hall: str
    code: str
    name: str
    unit: str | None


class DeviceIn(_In):
    """An evaluator to register."""

    code: IdStr = Field(title="Device id (the topic's {device}), unique everywhere")
    hall: IdStr = Field(title="Hall id")
    window: WindowStr | None = Field(default=None, title="Window it serves (same hall)")
    test_device: bool = Field(default=False, title="Test device: its ratings never count")


class DevicePatch(_In):
    """Changes to a device; `window: null` unassigns it."""

    hall: IdStr | None = Field(default=None, title="Hall id")
    window: WindowStr | None = Field(default=None, title="Window (same hall)")
    test_device: bool | None = Field(default=None, title="Test device")


class DeviceOut(_Out):
    """A device."""

    code: str
    hall: str
    window: str | None
    test_device: bool
    created: datetime


class StaffIn(_In):
    """A clerk to register in a hall."""

    hall: IdStr = Field(title="Hall id")
    number: TextStr = Field(title="Staff number (工号), unique in the hall")
    name: TextStr = Field(title="Name")
    unit: UnitCode | None = Field(default=None, title="Unit (same hall)")


class StaffPatch(_In):
    """Changes to a clerk; `unit: null` detaches them from their unit."""

    name: TextStr | None = Field(default=None, title="Name")
    unit: UnitCode | None = Field(default=None, title="Unit (same hall)")


class StaffOut(_Out):
    """A clerk."""

    hall: str
    number: str
    name: str
    unit: str | None


class ItemIn(_In):
    """A service item (事项) to create."""

    code: TextStr = Field(title="Item code (RatingEvent.item), unique everywhere")
    name: LongName = Field(title="Name")
    catalog_code: CatalogCode | None = Field(default=None, title=_CATALOG)


class ItemPatch(_In):
    """Changes to a service item; `catalog_code: null` removes it."""

    name: LongName | None = Field(default=None, title="Name")
    catalog_code: CatalogCode | None = Field(default=None, title=_CATALOG)


class ItemOut(_Out):
    """A service item (事项)."""

    code: str
    name: str
    catalog_code: str | None


class FieldError(_Out):
    """One problem with one field (or with the whole row when `field` is null)."""

    field: str | None
    message: str


class ErrorBody(_Out):
    """An error the client can act on."""

    error: str = Field(title="not_found, conflict, invalid, in_use, …")
    detail: str
    errors: list[FieldError] = Field(default_factory=list)


class RowResult(_Out):
    """The outcome of one CSV row; `row` is the spreadsheet row (the header is row 1)."""

    row: int
    ok: bool
    errors: list[FieldError]
    values: dict[str, str | None] = Field(title="The row's cells by field name")


class ImportResult(_Out):
    """The outcome of a CSV import or its preview."""

    entity: str
    dry_run: bool
    ok: bool = Field(title="Every row is valid (and, unless dry_run, written)")
    written: int = Field(title="Rows written (0 on a preview or a failure)")
    errors: list[FieldError] = Field(title="Problems with the file as a whole (header, encoding)")
    rows: list[RowResult]
