"""Registry operations on a session: list, get, create, update, delete (the caller commits)."""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from server.db.models import Base, Device, Hall, ServiceItem, Staff, Unit, Window
from server.registry import schemas as s

log = logging.getLogger(__name__)


class RegistryError(Exception):
    """A request the registry refuses, with the HTTP status that says why."""

    status = 400
    error = "bad_request"

    def __init__(self, detail: str, errors: Sequence[s.FieldError] = ()) -> None:
        """Keep the message and the field errors."""
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors)

    def body(self) -> s.ErrorBody:
        """Return the JSON body of the error."""
        return s.ErrorBody(error=self.error, detail=self.detail, errors=self.errors)


class NotFound(RegistryError):
    """The addressed record does not exist."""

    status = 404
    error = "not_found"


class Conflict(RegistryError):
    """A record with the same key exists already."""

    status = 409
    error = "conflict"


class InUse(RegistryError):
    """The record is still referenced and cannot be deleted."""

    status = 409
    error = "in_use"


class Invalid(RegistryError):
    """A value refers to something that does not exist or does not fit."""

    status = 422
    error = "invalid"


def invalid(field: str, message: str) -> Invalid:
    """Return an Invalid error about one field."""
    return Invalid(f"{field}: {message}", [s.FieldError(field=field, message=message)])


@dataclass(frozen=True)
class Key:
    """The address of a record: its code (or staff number), within a hall for hall-scoped ones."""

    code: str
    hall: str | None = None

    def __str__(self) -> str:
        """Return `hall/code` or `code`."""
        return self.code if self.hall is None else f"{self.hall}/{self.code}"


@dataclass(frozen=True)
class Entity:
    """One kind of registry record and how the API and CSV import handle it."""

    name: str
    title: str
    model: type[Base]
    create: type[BaseModel]
    patch: type[BaseModel]
    out: type[BaseModel]
    key_field: str
    hall_scoped: bool
    to_out: Callable[[Any], BaseModel]


# The platform codes of halls, units and items: optional, null in a patch removes them.
OPTIONAL_CODES = ("uscc", "area_code", "catalog_code")


def _code(obj: Any) -> str | None:
    """Return the code of an optional related record."""
    return None if obj is None else str(obj.code)


ENTITIES: dict[str, Entity] = {
    e.name: e
    for e in (
        Entity(
            "halls", "hall", Hall, s.HallIn, s.HallPatch, s.HallOut, "code", False,
            lambda o: s.HallOut(code=o.code, name=o.name, area_code=o.area_code),
        ),
        Entity(
            "units", "unit", Unit, s.UnitIn, s.UnitPatch, s.UnitOut, "code", True,
            lambda o: s.UnitOut(
                hall=o.hall.code, code=o.code, name=o.name, uscc=o.uscc, area_code=o.area_code
            ),
        ),
        Entity(
            "windows", "window", Window, s.WindowIn, s.WindowPatch, s.WindowOut, "code", True,
            lambda o: s.WindowOut(hall=o.hall.code, code=o.code, name=o.name, unit=_code(o.unit)),
        ),
        Entity(
            "devices", "device", Device, s.DeviceIn, s.DevicePatch, s.DeviceOut, "code", False,
            lambda o: s.DeviceOut(
                code=o.code,
                hall=o.hall.code,
                window=_code(o.window),
                test_device=o.test_device,
                created=o.created,
            ),
        ),
        Entity(
            "staff", "staff member", Staff, s.StaffIn, s.StaffPatch, s.StaffOut, "number", True,
            lambda o: s.StaffOut(
                hall=o.hall.code, number=o.number, name=o.name, unit=_code(o.unit)
            ),
        ),
        Entity(
            "items", "service item", ServiceItem, s.ItemIn, s.ItemPatch, s.ItemOut, "code", False,
            lambda o: s.ItemOut(code=o.code, name=o.name, catalog_code=o.catalog_code),
        ),
    )
}  # fmt: skip


def entity(name: str) -> Entity:
    """Return the entity called `name` (as in the URL) or raise NotFound."""
    try:
        return ENTITIES[name]
    except KeyError:
        raise NotFound(f"no registry entity {name!r}; one of {', '.join(ENTITIES)}") from None


def _hall(session: Session, code: str, field: str = "hall") -> Hall:
    """Return the hall `code` or raise Invalid about `field`."""
    hall = session.scalars(select(Hall).where(Hall.code == code)).one_or_none()
    if hall is None:
        raise invalid(field, f"no hall {code!r}")
    return hall


def _unit(session: Session, hall: Hall, code: str | None) -> Unit | None:
    """Return the unit `code` of `hall` (None for None) or raise Invalid."""
    if code is None:
        return None
    unit = session.scalars(
        select(Unit).where(Unit.hall_id == hall.id, Unit.code == code)
    ).one_or_none()
    if unit is None:
        raise invalid("unit", f"no unit {code!r} in hall {hall.code!r}")
    return unit


def _window(session: Session, hall: Hall, code: str | None) -> Window | None:
    """Return the window `code` of `hall` (None for None) or raise Invalid."""
    if code is None:
        return None
    window = session.scalars(
        select(Window).where(Window.hall_id == hall.id, Window.code == code)
    ).one_or_none()
    if window is None:
        raise invalid("window", f"no window {code!r} in hall {hall.code!r}")
    return window


def _find(session: Session, ent: Entity, key: Key) -> Any:
    """Return the record at `key` or None."""
    model: Any = ent.model
    stmt = select(model).where(getattr(model, ent.key_field) == key.code)
    if ent.hall_scoped:
        stmt = stmt.join(Hall, model.hall_id == Hall.id).where(Hall.code == key.hall)
    return session.scalars(stmt).unique().one_or_none()


def _get(session: Session, ent: Entity, key: Key) -> Any:
    """Return the record at `key` or raise NotFound."""
    obj = _find(session, ent, key)
    if obj is None:
        raise NotFound(f"no {ent.title} {str(key)!r}")
    return obj


def key_of(ent: Entity, data: BaseModel) -> Key:
    """Return the key of a record to create."""
    values = data.model_dump()
    return Key(values[ent.key_field], values["hall"] if ent.hall_scoped else None)


def list_records(session: Session, ent: Entity, hall: str | None = None) -> list[BaseModel]:
    """Return the records of `ent`, of hall `hall` only when given, ordered by hall and code."""
    model: Any = ent.model
    stmt = select(model)
    if ent.name == "halls":
        stmt = stmt.where(Hall.code == hall) if hall is not None else stmt
    elif ent.name != "items":
        stmt = stmt.join(Hall, model.hall_id == Hall.id).order_by(Hall.code)
        if hall is not None:
            stmt = stmt.where(Hall.code == hall)
    stmt = stmt.order_by(getattr(model, ent.key_field))
    return [ent.to_out(o) for o in session.scalars(stmt).unique()]


def get_record(session: Session, ent: Entity, key: Key) -> BaseModel:
    """Return the record at `key`."""
    return ent.to_out(_get(session, ent, key))


def create_record(session: Session, ent: Entity, data: BaseModel) -> BaseModel:
    """Add a record (flushed, not committed); Conflict if its key exists, Invalid on bad refs."""
    key = key_of(ent, data)
    if _find(session, ent, key) is not None:
        raise Conflict(
            f"{ent.title} {str(key)!r} exists already",
            [s.FieldError(field=ent.key_field, message=f"{str(key)!r} exists already")],
        )
    values = data.model_dump()
    obj: Any
    if ent.model is Hall:
        obj = Hall(code=values["code"], name=values["name"], area_code=values["area_code"])
    elif ent.model is ServiceItem:
        obj = ServiceItem(
            code=values["code"], name=values["name"], catalog_code=values["catalog_code"]
        )
    else:
        hall = _hall(session, values["hall"])
        if ent.model is Unit:
            obj = Unit(
                hall=hall,
                code=values["code"],
                name=values["name"],
                uscc=values["uscc"],
                area_code=values["area_code"],
            )
        elif ent.model is Window:
            unit = _unit(session, hall, values["unit"])
            obj = Window(hall=hall, unit=unit, code=values["code"], name=values["name"])
        elif ent.model is Staff:
            unit = _unit(session, hall, values["unit"])
            obj = Staff(hall=hall, unit=unit, number=values["number"], name=values["name"])
        else:
            window = _window(session, hall, values["window"])
            obj = Device(
                code=values["code"], hall=hall, window=window, test_device=values["test_device"]
            )
    session.add(obj)
    session.flush()
    _mark_changed(session)
    return ent.to_out(obj)


def update_record(session: Session, ent: Entity, key: Key, patch: BaseModel) -> BaseModel:
    """Apply the fields set in `patch` to the record at `key` (flushed, not committed)."""
    obj = _get(session, ent, key)
    changes = patch.model_dump(include=patch.model_fields_set)
    for field in ("name", "test_device"):
        if field in changes:
            if changes[field] is None:
                raise invalid(field, "may not be null")
            setattr(obj, field, changes[field])
    for field in OPTIONAL_CODES:
        if field in changes:  # null removes the code
            setattr(obj, field, changes[field])
    if ent.model is Device:
        hall = obj.hall
        if "hall" in changes:
            if changes["hall"] is None:
                raise invalid("hall", "may not be null")
            hall = _hall(session, changes["hall"])
        if "window" in changes:
            obj.window = _window(session, hall, changes["window"])
        elif obj.window is not None and obj.window.hall_id != hall.id:
            raise invalid("window", f"window {obj.window.code!r} is not in hall {hall.code!r}")
        obj.hall = hall
    elif "unit" in changes:
        obj.unit = _unit(session, obj.hall, changes["unit"])
    session.flush()
    _mark_changed(session)
    return ent.to_out(obj)


def _count(session: Session, model: Any, column: Any, value: int) -> int:
    """Return how many rows of `model` have `column` == `value`."""
    return int(session.scalar(select(func.count()).select_from(model).where(column == value)) or 0)


def delete_record(session: Session, ent: Entity, key: Key) -> None:
    """Delete the record at `key`; InUse while other records refer to it."""
    obj = _get(session, ent, key)
    users: list[tuple[str, int]] = []
    if ent.model is Hall:
        users = [
            ("units", _count(session, Unit, Unit.hall_id, obj.id)),
            ("windows", _count(session, Window, Window.hall_id, obj.id)),
            ("devices", _count(session, Device, Device.hall_id, obj.id)),
            ("staff", _count(session, Staff, Staff.hall_id, obj.id)),
        ]
    elif ent.model is Unit:
        users = [
            ("windows", _count(session, Window, Window.unit_id, obj.id)),
            ("staff", _count(session, Staff, Staff.unit_id, obj.id)),
        ]
    elif ent.model is Window:
        users = [("devices", _count(session, Device, Device.window_id, obj.id))]
    used = [f"{n} {what}" for what, n in users if n]
    if used:
        raise InUse(f"{ent.title} {str(key)!r} is still used by {', '.join(used)}")
    session.delete(obj)
    session.flush()
    _mark_changed(session)


# --- change hooks: run after a commit that created, changed or deleted registry records ---

ChangeHook = Callable[[], None]
_HOOKS: list[ChangeHook] = []
_CHANGED = "registry_changed"


def on_change(hook: ChangeHook) -> Callable[[], None]:
    """Call `hook()` after every commit that changed the registry; return its remover."""
    _HOOKS.append(hook)

    def remove() -> None:
        if hook in _HOOKS:
            _HOOKS.remove(hook)

    return remove


def _mark_changed(session: Session) -> None:
    """Note that this session's transaction changes the registry."""
    session.info[_CHANGED] = True


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    """Run the change hooks once the change is committed."""
    if not session.info.pop(_CHANGED, False):
        return
    for hook in list(_HOOKS):
        try:
            hook()
        except Exception:
            log.exception("registry change hook %r failed", hook)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    """Forget a change that was rolled back."""
    session.info.pop(_CHANGED, None)
