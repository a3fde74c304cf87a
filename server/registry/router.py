"""Registry API under `/api/registry`: list, get, create, patch, delete and CSV import.

Routes per entity (`halls`, `units`, `windows`, `devices`, `staff`, `items`):
`GET /{entity}` (`?hall=` filters), `POST /{entity}`, `GET|PATCH|DELETE /{entity}/{code}`
(`/{entity}/{hall}/{code}` for units, windows and staff, whose codes are unique per hall),
and `POST /{entity}/import?dry_run=true|false` with a CSV or XLSX body (XLSX when the
Content-Type says so or the body is a zip; the first sheet is read).

Every route needs a login (401 without). Reading is open to every role; writing to
an admin, and to a hall manager for the units, windows, devices and staff of their
own hall (403 otherwise). A hall manager, and a viewer with a hall, see only that hall:
other halls' records are left out of lists and answer 404. Every change is written to the audit log.
"""

import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.auth.deps import Principal, SessionDep, UserDep
from server.auth.service import audit
from server.registry import schemas as s
from server.registry.csvimport import MAX_BYTES, TooLarge, import_csv
from server.registry.service import (
    ENTITIES,
    Entity,
    Key,
    NotFound,
    RegistryError,
    create_record,
    delete_record,
    get_record,
    key_of,
    list_records,
    update_record,
)
from server.registry.xlsximport import XLSX_TYPE, import_xlsx, is_xlsx

log = logging.getLogger(__name__)

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": s.ErrorBody, "description": "No such record"},
    409: {"model": s.ErrorBody, "description": "Duplicate key, or still in use"},
    422: {"model": s.ErrorBody, "description": "Invalid value or reference"},
}
CSV_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {"schema": {"type": "string", "format": "binary"}},
            XLSX_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
        "description": "UTF-8 CSV (BOM allowed) or XLSX (first sheet), at most 5 MB, "
        "with a header row in English or Chinese",
    }
}


# What a hall manager may change, in their own hall only.
HALL_MANAGED = frozenset({"units", "windows", "devices", "staff"})
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Not logged in"},
    403: {"description": "Not allowed for this role, or no X-CSRF-Token header"},
}
RESPONSES: dict[int | str, dict[str, Any]] = {**AUTH_ERRORS, **ERRORS}


def _may_write(who: Principal, ent: Entity) -> None:
    """Raise 403 unless `who` may change records of `ent` at all."""
    if who.is_admin or (who.role == "hall_manager" and ent.name in HALL_MANAGED):
        return
    raise HTTPException(status_code=403, detail=f"role {who.role} may not change {ent.name}")


def _own_hall_only(who: Principal, hall: Any) -> None:
    """Raise 403 if a hall manager would write into another hall than their own."""
    if who.role == "hall_manager" and hall != who.hall:
        raise HTTPException(status_code=403, detail="hall managers write only in their own hall")


def _read_scope(who: Principal) -> str | None:
    """Return the only hall `who` may read: a hall manager's, or a viewer's own (None: all)."""
    return who.hall if who.role in ("hall_manager", "viewer") else None


def _visible(who: Principal, ent: Entity, out: Any, key: Key) -> None:
    """Raise NotFound (as if missing) when a reader bound to a hall addresses another hall's."""
    scope = _read_scope(who)
    if scope is None or ent.name == "items":
        return
    hall = out.code if ent.name == "halls" else out.hall
    if hall != scope:
        raise NotFound(f"no {ent.title} {str(key)!r}")


def _error(exc: RegistryError) -> JSONResponse:
    """Return the response of a refused request."""
    return JSONResponse(status_code=exc.status, content=exc.body().model_dump())


def _run(session: Session, action: Callable[[], Any], status: int = 200) -> Any:
    """Run `action`, commit, and turn registry and integrity errors into 4xx responses."""
    try:
        result = action()
        session.commit()
    except RegistryError as exc:
        session.rollback()
        return _error(exc)
    except IntegrityError as exc:
        session.rollback()
        log.warning("registry write refused by the database: %s", exc.orig)
        body = s.ErrorBody(error="conflict", detail="conflicts with data written meanwhile")
        return JSONResponse(status_code=409, content=body.model_dump())
    if status == 204:
        return Response(status_code=204)
    if status != 200:
        return JSONResponse(status_code=status, content=result.model_dump(mode="json"))
    return result


def _scoped_key(hall: str, code: str) -> Key:
    """Return the key of a hall-scoped record from the path."""
    return Key(code, hall)


def _global_key(code: str) -> Key:
    """Return the key of a globally unique record from the path."""
    return Key(code)


def _hall_filter(
    hall: Annotated[str | None, Query(description="Only this hall's records")] = None,
) -> str | None:
    """Return the optional hall filter of a list."""
    return hall


def _no_filter() -> None:
    """Return no filter (for service items, which belong to no hall)."""
    return None


def _add_entity(router: APIRouter, ent: Entity) -> None:
    """Add the routes of `ent` to `router`."""
    tag = f"registry: {ent.name}"
    item_path = f"/{ent.name}/{{hall}}/{{code}}" if ent.hall_scoped else f"/{ent.name}/{{code}}"
    key_dep = _scoped_key if ent.hall_scoped else _global_key
    filter_dep = _no_filter if ent.name == "items" else _hall_filter
    KeyDep = Annotated[Key, Depends(key_dep)]  # noqa: N806

    def list_(
        session: SessionDep, who: UserDep, hall: Annotated[str | None, Depends(filter_dep)]
    ) -> Any:
        """List the records, ordered by hall and code (a hall-bound reader's own hall only)."""
        scope = _read_scope(who)
        if scope is not None and ent.name != "items":
            if hall is not None and hall != scope:
                return []
            hall = scope
        return list_records(session, ent, hall)

    def _read(session: Session, who: Principal, key: Key) -> Any:
        """Return the record at `key` if `who` may see it, else raise NotFound."""
        out = get_record(session, ent, key)
        _visible(who, ent, out, key)
        return out

    def get(session: SessionDep, who: UserDep, key: KeyDep) -> Any:
        """Return one record."""
        return _run(session, lambda: _read(session, who, key))

    def create(session: SessionDep, who: UserDep, body: Any) -> Any:
        """Create a record; 409 if its code exists, 422 if a reference is unknown."""
        _may_write(who, ent)
        if ent.hall_scoped or ent.name == "devices":
            _own_hall_only(who, body.hall)

        def act() -> Any:
            out = create_record(session, ent, body)
            audit(
                session,
                who.username,
                "registry.create",
                f"{ent.name}:{key_of(ent, body)}",
                body.model_dump(mode="json"),
            )
            return out

        return _run(session, act, status=201)

    def update(session: SessionDep, who: UserDep, key: KeyDep, body: Any) -> Any:
        """Change the fields given (codes cannot change: delete and create instead)."""
        _may_write(who, ent)

        def act() -> Any:
            _read(session, who, key)
            if "hall" in body.model_fields_set:
                _own_hall_only(who, body.hall)
            out = update_record(session, ent, key, body)
            changes = body.model_dump(mode="json", include=body.model_fields_set)
            audit(session, who.username, "registry.update", f"{ent.name}:{key}", changes)
            return out

        return _run(session, act)

    def delete(session: SessionDep, who: UserDep, key: KeyDep) -> Any:
        """Delete a record; 409 while other records refer to it."""
        _may_write(who, ent)

        def act() -> None:
            _read(session, who, key)
            delete_record(session, ent, key)
            audit(session, who.username, "registry.delete", f"{ent.name}:{key}")

        return _run(session, act, status=204)

    async def import_(
        request: Request,
        session: SessionDep,
        who: UserDep,
        dry_run: Annotated[
            bool, Query(description="Only check the rows (default); false writes them")
        ] = True,
    ) -> Any:
        """Check a CSV or XLSX file row by row; with dry_run=false write all rows or none."""
        _may_write(who, ent)
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BYTES:
            return _error(TooLarge(f"file larger than {MAX_BYTES} bytes"))
        data = await request.body()
        xlsx = is_xlsx(request.headers.get("content-type"), data)
        return await run_in_threadpool(_import, session, who, ent, data, dry_run, xlsx)

    # The request bodies' models differ per entity: FastAPI reads them from the annotations.
    create.__annotations__["body"] = ent.create
    update.__annotations__["body"] = ent.patch
    out = ent.out
    router.add_api_route(
        f"/{ent.name}", list_, methods=["GET"], response_model=list[out],  # type: ignore[valid-type]
        responses=AUTH_ERRORS, tags=[tag], summary=f"List {ent.name}",
    )  # fmt: skip
    router.add_api_route(
        f"/{ent.name}", create, methods=["POST"], response_model=out, status_code=201,
        responses=RESPONSES, tags=[tag], summary=f"Create a {ent.title}",
    )  # fmt: skip
    router.add_api_route(
        f"/{ent.name}/import", import_, methods=["POST"], response_model=s.ImportResult,
        responses={
            **AUTH_ERRORS,
            413: {"model": s.ErrorBody, "description": "File larger than 5 MB"},
            422: {"model": s.ImportResult, "description": "A row or the file is invalid"},
        },
        openapi_extra=CSV_BODY, tags=[tag], summary=f"Import {ent.name} from CSV or XLSX",
    )  # fmt: skip
    router.add_api_route(
        item_path, get, methods=["GET"], response_model=out, responses=RESPONSES, tags=[tag],
        summary=f"Get a {ent.title}",
    )  # fmt: skip
    router.add_api_route(
        item_path, update, methods=["PATCH"], response_model=out, responses=RESPONSES, tags=[tag],
        summary=f"Change a {ent.title}",
    )  # fmt: skip
    router.add_api_route(
        item_path, delete, methods=["DELETE"], status_code=204, response_model=None,
        responses=RESPONSES, tags=[tag],
        summary=f"Delete a {ent.title}", response_class=Response,
    )  # fmt: skip


def _foreign_rows(who: Principal, ent: Entity, result: s.ImportResult) -> s.ImportResult:
    """Fail every row of a hall manager's import that is not in their own hall.

    Such a row's other errors are dropped, so that they tell nothing about the other hall.
    """
    if who.role != "hall_manager":
        return result
    rows = []
    for row in result.rows:
        if row.values.get("hall") != who.hall:
            msg = f"hall managers import only into their own hall {who.hall!r}"
            row = row.model_copy(
                update={"ok": False, "errors": [s.FieldError(field="hall", message=msg)]}
            )
        rows.append(row)
    ok = result.ok and all(r.ok for r in rows)
    written = result.written if ok else 0
    return result.model_copy(update={"rows": rows, "ok": ok, "written": written})


def _import(
    session: Session, who: Principal, ent: Entity, data: bytes, dry_run: bool, xlsx: bool = False
) -> Any:
    """Run a CSV or XLSX import; commit only a valid, non-dry run; 422 with the rows otherwise."""
    reader = import_xlsx if xlsx else import_csv
    try:
        result = _foreign_rows(who, ent, reader(session, ent, data, dry_run=dry_run))
    except RegistryError as exc:
        session.rollback()
        return _error(exc)
    if dry_run or not result.ok:
        session.rollback()
        if not result.ok and not dry_run:
            return JSONResponse(status_code=422, content=result.model_dump(mode="json"))
        return result
    try:
        audit(session, who.username, "registry.import", ent.name, {"written": result.written})
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        log.warning("import refused by the database: %s", exc.orig)
        body = s.ErrorBody(error="conflict", detail="conflicts with data written meanwhile")
        return JSONResponse(status_code=409, content=body.model_dump())
    return result


def make_router() -> APIRouter:
    """Return the registry router (mount it with `app.include_router`)."""
    router = APIRouter(prefix="/api/registry")
    for ent in ENTITIES.values():
        _add_entity(router, ent)
    return router
