"""Static files without the npm tree, and the one browser library the pages load."""

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

STATIC = Path(__file__).resolve().parent.parent / "static"
ECHARTS = STATIC / "node_modules" / "echarts" / "dist" / "echarts.min.js"
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

    return router
