"""Admin pages `/admin/registry`, `/admin/devices` and `/admin/users` (zh default, ?lang=en).

The pages are Jinja2 templates with static JS that calls the existing APIs (registry,
devices, provisioning, users) with the session cookie and the X-CSRF-Token header; nothing
is written by these routes. Without a login they show a login form (401); the users page
is for admins only (403 otherwise). Each page gets its strings and settings in a JSON data
block, so no inline script runs (see server/security_headers.py).
"""

import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel
from sqlalchemy.orm import Session

from server.auth.deps import Principal, SessionDep, current_user
from server.i18n import STRINGS, Lang, normalize_lang, t
from server.registry.service import ENTITIES, Entity

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
ROLES = ("admin", "office", "hall_manager", "viewer")
LangQuery = Annotated[str | None, Query(description="zh (default) or en")]
EntityQuery = Annotated[str | None, Query(max_length=16, description="Registry tab")]


def _js_strings(lang: Lang) -> dict[str, str]:
    """Return the strings the admin scripts show (keys starting with `adm_`)."""
    return {key: text[lang] for key, text in STRINGS.items() if key.startswith("adm_")}


def _fields(model: type[BaseModel]) -> list[dict[str, Any]]:
    """Return the form fields of a request model: name, required, and bool or text."""
    out = []
    for name, info in model.model_fields.items():
        kind = "bool" if info.annotation in (bool, bool | None) else "text"
        out.append({"name": name, "required": info.is_required(), "kind": kind})
    return out


def _entity_spec(ent: Entity) -> dict[str, Any]:
    """Return what the registry page needs to list, create, edit and delete `ent` records."""
    key = ["hall", ent.key_field] if ent.hall_scoped else [ent.key_field]
    return {
        "name": ent.name,
        "key": key,
        "columns": list(ent.out.model_fields),
        "fields": _fields(ent.create),
        "patch": list(ent.patch.model_fields),
    }


def make_router() -> APIRouter:
    """Return the router of the admin pages."""
    router = APIRouter(tags=["pages"])
    templates = Jinja2Templates(directory=TEMPLATES)

    def page_user(request: Request, session: Session) -> Principal | None:
        """Return the logged-in user of a page request, None when not logged in."""
        try:
            return current_user(request, session)
        except HTTPException:
            return None

    def render(
        request: Request, name: str, lg: Lang, who: Principal | None, page: str, **ctx: Any
    ) -> Any:
        """Render an admin template (the login form without a user) with its JSON config."""
        status = 200
        if who is None:
            name, status = "admin_login.html", 401
        elif page == "users" and not who.is_admin:
            name, status = "admin_forbidden.html", 403
        config = {
            "lang": lg,
            "page": page,
            "t": _js_strings(lg),
            "user": None if who is None else {"role": who.role, "hall": who.hall},
            **ctx,
        }
        context = {
            "lang": lg,
            "t": lambda key, **fmt: t(key, lg, **fmt),
            "who": who,
            "page": page,
            "config": config,
            **ctx,
        }
        resp = templates.TemplateResponse(request, name, context, status_code=status)
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @router.get("/admin/registry", response_class=HTMLResponse)
    def registry_page(
        request: Request, session: SessionDep, lang: LangQuery = None, entity: EntityQuery = None
    ) -> Any:
        """Render the registry page: a tab per entity, its records, a form and an import box."""
        lg = normalize_lang(lang)
        ent = ENTITIES.get(entity or "", ENTITIES["halls"])
        return render(
            request, "admin_registry.html", lg, page_user(request, session), "registry",
            entity=ent.name, entities=list(ENTITIES), spec=_entity_spec(ent),
        )  # fmt: skip

    @router.get("/admin/devices", response_class=HTMLResponse)
    def devices_page(request: Request, session: SessionDep, lang: LangQuery = None) -> Any:
        """Render the device page: live device list with commands, and provisioning."""
        lg = normalize_lang(lang)
        return render(request, "admin_devices.html", lg, page_user(request, session), "devices")

    @router.get("/admin/users", response_class=HTMLResponse)
    def users_page(request: Request, session: SessionDep, lang: LangQuery = None) -> Any:
        """Render the user page (admins only): list, create, (de)activate, reset password."""
        lg = normalize_lang(lang)
        who = page_user(request, session)
        return render(request, "admin_users.html", lg, who, "users", roles=list(ROLES))

    return router
