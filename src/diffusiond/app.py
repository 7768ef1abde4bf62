"""create_app(settings): builds Services once, mounts the dialects, runs the lifespan."""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI, Query, Response
from fastapi.responses import FileResponse

from diffusiond import __version__
from diffusiond.api import edge, openapi
from diffusiond.api.a1111.routes import EDGE as A1111
from diffusiond.api.a1111.routes import router as a1111_router
from diffusiond.api.admin.routes import DIALECT as ADMIN
from diffusiond.api.admin.routes import router as admin_router
from diffusiond.api.custom.routes import DIALECT as CUSTOM
from diffusiond.api.custom.routes import router as custom_router
from diffusiond.api.deps import ServicesDep, authenticate
from diffusiond.api.eks.routes import EDGE as EKS
from diffusiond.api.eks.routes import router as eks_router
from diffusiond.api.esd.render import dialect as esd_dialect
from diffusiond.api.esd.routes import esd_router
from diffusiond.api.jobs.routes import DIALECT as JOBS
from diffusiond.api.jobs.routes import router as jobs_router
from diffusiond.api.paths import SlashTolerance
from diffusiond.api.stability.routes import DIALECT as STABILITY
from diffusiond.api.stability.routes import router as stability_router
from diffusiond.api.uploads import dialect as uploads_dialect
from diffusiond.api.uploads import router as uploads_router
from diffusiond.config import Settings
from diffusiond.domain.errors import DomainError, NotFound
from diffusiond.services import Services, build_services

WEB_DIR = Path(__file__).parent / "web" / "static"
# Which error shape each path prefix answers in, and which of its routes take uploads (api/edge.py).
# A dialect joins with one line here.
DIALECTS = (STABILITY, JOBS, ADMIN, CUSTOM, A1111, EKS)


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    settings = settings or Settings()
    services = services or build_services(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limit_request_threads(settings.resolved_api_threads)
        services.start()
        try:
            yield
        finally:
            services.stop()

    app = FastAPI(title="diffusiond", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Self-hosted Stable Diffusion: Stability v1, /v1/jobs and more.")
    mount_docs(app)
    dialects = (*DIALECTS, esd_dialect(settings), uploads_dialect(settings))  # these two take settings
    edge.install(app, dialects=dialects, limits=edge.EdgeLimits.from_settings(settings), authenticate=authenticate)
    # Outside the edge: it sees (and routes) the tidied path
    app.add_middleware(SlashTolerance, prefixes=(settings.esd_prefix,))
    app.state.services = services
    app.include_router(stability_router)
    app.include_router(jobs_router)
    app.include_router(admin_router)
    app.include_router(custom_router)
    app.include_router(a1111_router)
    app.include_router(eks_router)
    app.include_router(uploads_router)
    app.include_router(esd_router(), prefix=settings.esd_prefix)
    openapi.install(app)

    @app.get("/healthz", tags=["meta"], responses=openapi.error_responses(edge.GenericError, 500))
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/v1/blobs/{key:path}", tags=["meta"], include_in_schema=False)
    def blob(key: str, services: ServicesDep, t: str = Query(), e: int = Query(), s: str = Query()) -> Response:
        """Serve a blob through a signed, expiring, tenant-bound URL.

        Another tenant's blob, a bad or expired signature and a missing blob are one answer: 404 in the
        `/v1/jobs` error shape, so a URL's answer says nothing about what exists.
        """
        owned = key.startswith((f"outputs/{t}/", f"inputs/{t}/"))
        if not owned or not services.signer.verify(key, t, e, s):
            raise NotFound("not found, or the link is invalid or expired")
        try:
            data = services.blobs.get(key)
        except DomainError:
            raise NotFound("not found, or the link is invalid or expired") from None
        return Response(data, media_type=mimetypes.guess_type(key)[0] or "application/octet-stream")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html")

    return app


def limit_request_threads(threads: int) -> None:
    """Bound the threads that run requests' blocking work, for the running event loop.

    FastAPI runs plain `def` endpoints on anyio's default thread limiter, and every `await
    run_in_threadpool(...)` in the dialects uses the same one, so this is the one bound on them all.
    """
    anyio.to_thread.current_default_thread_limiter().total_tokens = threads


def mount_docs(app: FastAPI) -> None:
    """The OpenAPI UI from assets shipped in a wheel (Swagger UI 5): nothing is fetched from a CDN."""
    import fastapi_offline
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount("/static/swagger", StaticFiles(directory=assets), name="swagger")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="diffusiond API",
                                   swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger/swagger-ui.css",
                                   swagger_favicon_url="/favicon.ico")
