"""Static files without the npm tree, the browser libraries the pages load, and `/docs`."""

from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

STATIC = Path(__file__).resolve().parent.parent / "static"
ECHARTS = STATIC / "node_modules" / "echarts" / "dist" / "echarts.min.js"
SWAGGER = STATIC / "node_modules" / "swagger-ui-dist"
SWAGGER_FILES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}
HIDDEN = ("node_modules", "package.json", "package-lock.json", ".npm-stamp")


class PublicStatic(StaticFiles):
    """StaticFiles that never serves the npm tree or its manifests."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        """Answer 404 for the hidden paths, else serve the file."""
        first = Path(path).parts[0] if Path(path).parts else ""
        if first in HIDDEN:
            raise HTTPException(status_code=404)
        return await super().get_response(path, scope)


def make_router() -> APIRouter:
    """Return the route of the charting library (installed by `./wr` with npm ci)."""
    router = APIRouter()

    @router.get("/vendor/echarts.min.js", include_in_schema=False)
    def echarts() -> FileResponse:
        """Serve ECharts' minified build from node_modules."""
        if not ECHARTS.is_file():
            raise HTTPException(
                status_code=404,
                detail="echarts missing: run `./wr setup` (npm ci in server/static)",
            )
        return FileResponse(
            ECHARTS, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"}
        )

    @router.get("/vendor/swagger-ui/{name}", include_in_schema=False)
    def swagger_asset(name: str) -> FileResponse:
        """Serve Swagger UI's bundle and stylesheet from node_modules (no CDN)."""
        path = SWAGGER / name
        if name not in SWAGGER_FILES or not path.is_file():
            raise HTTPException(status_code=404, detail=f"no {name!r}: run `./wr setup`")
        return FileResponse(
            path, media_type=SWAGGER_FILES[name], headers={"Cache-Control": "max-age=86400"}
        )

    @router.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        """The OpenAPI documentation (Swagger UI served from this server)."""
        return get_swagger_ui_html(
            openapi_url=request.app.openapi_url or "/openapi.json",
            title=f"{request.app.title} · API",
            swagger_js_url="/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="data:,",
        )

    return router
