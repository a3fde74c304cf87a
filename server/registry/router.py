"""Registry API under `/api/registry`: list, get, create, patch, delete and CSV import.

Routes per entity (`halls`, `units`, `windows`, `devices`, `staff`, `items`):
`GET /{entity}` (`?hall=` filters), `POST /{entity}`, `GET|PATCH|DELETE /{entity}/{code}`
(`/{entity}/{hall}/{code}` for units, windows and staff, whose codes are unique per hall),
and `POST /{entity}/import?dry_run=true|false` with a CSV body.
No authentication yet: roles come in the next slice.
"""

import logging
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.db.engine import Database
from server.registry import schemas as s
from server.registry.csvimport import import_csv
from server.registry.service import (
    ENTITIES,
    Entity,
    Key,
    RegistryError,
    create_record,
    delete_record,
    get_record,
    list_records,
    update_record,
)

log = logging.getLogger(__name__)

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": s.ErrorBody, "description": "No such record"},
    409: {"model": s.ErrorBody, "description": "Duplicate key, or still in use"},
    422: {"model": s.ErrorBody, "description": "Invalid value or reference"},
}
CSV_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"text/csv": {"schema": {"type": "string", "format": "binary"}}},
        "description": "UTF-8 CSV (BOM allowed) with a header row in English or Chinese",
    }
}


def get_session(request: Request) -> Iterator[Session]:
    """Yield a session of the app's registry database, rolled back if left uncommitted."""
    db: Database = request.app.state.db
    with db.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


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

    def list_(session: SessionDep, hall: Annotated[str | None, Depends(filter_dep)]) -> Any:
        """List the records, ordered by hall and code."""
        return list_records(session, ent, hall)

    def get(session: SessionDep, key: KeyDep) -> Any:
        """Return one record."""
        return _run(session, lambda: get_record(session, ent, key))

    def create(session: SessionDep, body: Any) -> Any:
        """Create a record; 409 if its code exists, 422 if a reference is unknown."""
        return _run(session, lambda: create_record(session, ent, body), status=201)

    def update(session: SessionDep, key: KeyDep, body: Any) -> Any:
        """Change the fields given (codes cannot change: delete and create instead)."""
        return _run(session, lambda: update_record(session, ent, key, body))

    def delete(session: SessionDep, key: KeyDep) -> Any:
        """Delete a record; 409 while other records refer to it."""
        return _run(session, lambda: delete_record(session, ent, key), status=204)

    async def import_(
        request: Request,
        session: SessionDep,
        dry_run: Annotated[
            bool, Query(description="Only check the rows (default); false writes them")
        ] = True,
    ) -> Any:
        """Check a CSV file row by row; with dry_run=false write all rows or none."""
        data = await request.body()
        return await run_in_threadpool(_import, session, ent, data, dry_run)

    # The request bodies' models differ per entity: FastAPI reads them from the annotations.
    create.__annotations__["body"] = ent.create
    update.__annotations__["body"] = ent.patch
    out = ent.out
    router.add_api_route(
        f"/{ent.name}", list_, methods=["GET"], response_model=list[out],  # type: ignore[valid-type]
        tags=[tag], summary=f"List {ent.name}",
    )  # fmt: skip
    router.add_api_route(
        f"/{ent.name}", create, methods=["POST"], response_model=out, status_code=201,
        responses=ERRORS, tags=[tag], summary=f"Create a {ent.title}",
    )  # fmt: skip
    router.add_api_route(
        f"/{ent.name}/import", import_, methods=["POST"], response_model=s.ImportResult,
        responses={422: {"model": s.ImportResult, "description": "A row or the file is invalid"}},
        openapi_extra=CSV_BODY, tags=[tag], summary=f"Import {ent.name} from CSV",
    )  # fmt: skip
    router.add_api_route(
        item_path, get, methods=["GET"], response_model=out, responses=ERRORS, tags=[tag],
        summary=f"Get a {ent.title}",
    )  # fmt: skip
    router.add_api_route(
        item_path, update, methods=["PATCH"], response_model=out, responses=ERRORS, tags=[tag],
        summary=f"Change a {ent.title}",
    )  # fmt: skip
    router.add_api_route(
        item_path, delete, methods=["DELETE"], status_code=204, response_model=None,
        responses=ERRORS, tags=[tag],
        summary=f"Delete a {ent.title}", response_class=Response,
    )  # fmt: skip


def _import(session: Session, ent: Entity, data: bytes, dry_run: bool) -> Any:
    """Run a CSV import; commit only a valid, non-dry run; 422 with the rows otherwise."""
    try:
        result = import_csv(session, ent, data, dry_run=dry_run)
    except RegistryError as exc:
        session.rollback()
        return _error(exc)
    if dry_run or not result.ok:
        session.rollback()
        if not result.ok and not dry_run:
            return JSONResponse(status_code=422, content=result.model_dump(mode="json"))
        return result
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        log.warning("CSV import refused by the database: %s", exc.orig)
        body = s.ErrorBody(error="conflict", detail="conflicts with data written meanwhile")
        return JSONResponse(status_code=409, content=body.model_dump())
    return result


def make_router() -> APIRouter:
    """Return the registry router (mount it with `app.include_router`)."""
    router = APIRouter(prefix="/api/registry")
    for ent in ENTITIES.values():
        _add_entity(router, ent)
    return router
