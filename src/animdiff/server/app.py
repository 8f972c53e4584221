"""`create_app(settings)`: the FastAPI application with its store, workers and routers.

The lifespan opens the job store, turns jobs a crash left running into `interrupted`, removes
partial result folders, starts one worker per device and binds the event bus to the loop; on
shutdown it stops the workers (a running job is cancelled and keeps nothing). Errors: every
`AnimdiffError` becomes its `http_status` with the message a user can act on; request validation
errors are one readable line plus pydantic's list; anything else is a 500 that names the type
(the traceback goes to the log, not the client).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from animdiff import __version__
from animdiff.errors import AnimdiffError, NotSupportedYetError
from animdiff.pipeline import Animator
from animdiff.server import a1111, native, ui
from animdiff.server.context import ServerContext
from animdiff.server.events import EventBus
from animdiff.server.previews import Previews
from animdiff.server.results import Results
from animdiff.server.security import AuthMiddleware, BodyLimitMiddleware, Credentials
from animdiff.server.settings import ServerSettings
from animdiff.server.store import open_store
from animdiff.server.submit import JobService
from animdiff.server.worker import Heartbeat, Worker, WorkerPool, remove_partials

log = logging.getLogger("animdiff.server")


def build_context(settings: ServerSettings, animators: Sequence[Animator] | None = None) -> ServerContext:
    """The store, results, workers and job service of a server (not started)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.store_target)
    results = Results(settings.results_dir)
    bus = EventBus()
    if animators is None:
        animators = [
            Animator(settings.models_dir, None, settings.run_options(device)) for device in settings.devices
        ]
    previews = Previews(settings.preview_interval_s) if settings.previews else None
    if settings.workers:  # Ray workers (scale-out), fed from the same queue
        from animdiff.server.ray_pool import RayPool

        pool = RayPool(store, results, settings, bus.publish)
    else:
        workers = [
            Worker(f"worker-{i} ({a.device})", a, store, results, settings, bus.publish, previews)
            for i, a in enumerate(animators)
        ]
        pool = WorkerPool(workers)
    pool.heartbeat = Heartbeat(store, settings, pool.running, bus.publish)

    def on_submit() -> None:
        pool.wake()
        bus.publish()

    service = JobService(settings, store, animators[0], on_submit)
    return ServerContext(settings, store, results, service, pool, bus, previews)


def create_app(
    settings: ServerSettings, animators: Sequence[Animator] | None = None, start_workers: bool = True
) -> FastAPI:
    """The application; `animators` lets tests share loaded models, `start_workers=False` lets
    them fill the queue before anything runs."""
    ctx = build_context(settings, animators)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.bus.bind(asyncio.get_running_loop())
        interrupted = ctx.store.recover(
            settings.requeue_interrupted,
            stale_after_s=settings.stale_after_s if ctx.store.shared else None,
        )
        if interrupted:
            action = "requeued" if settings.requeue_interrupted else "marked interrupted"
            log.warning("%d job(s) were running when the server stopped: %s", len(interrupted), action)
        remove_partials(ctx.store, ctx.results)
        if start_workers:
            ctx.pool.start()
        try:
            yield
        finally:
            await asyncio.to_thread(ctx.pool.stop, 30.0)
            ctx.store.close()

    app = FastAPI(
        title="animdiff",
        version=__version__,
        description="Animations with Stable Diffusion and AnimateDiff: a native job API (/api/v1) and an "
        "A1111-compatible one (/sdapi/v1).",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.include_router(native.router)
    app.include_router(a1111.router)
    app.include_router(ui.router)
    _add_error_handlers(app)
    _document_params(app)
    # Order: the last added runs first. Auth before anything reads the body, then the size limit.
    app.add_middleware(
        BodyLimitMiddleware,  # type: ignore[arg-type]
        limit=settings.max_request_bytes,
        upload_limit=settings.max_upload_bytes,
        upload_prefix="/api/v1/uploads",
    )
    app.add_middleware(AuthMiddleware, credentials=Credentials(settings.api_keys, settings.api_auth))  # type: ignore[arg-type]
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,  # type: ignore[arg-type]
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Last-Event-ID"],
        )
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AnimdiffError)
    async def animdiff_error(request: Request, exc: AnimdiffError) -> JSONResponse:
        # A setting that is valid but not built yet is still a request this server cannot take: 4xx.
        status = 422 if isinstance(exc, NotSupportedYetError) else exc.http_status
        return JSONResponse({"detail": str(exc), "error": type(exc).__name__}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: err.get(k) for k in ("type", "loc", "msg")} for err in exc.errors()]
        lines = []
        for err in errors:
            loc = [str(p) for p in err.get("loc", ()) if p != "body"]
            lines.append(f"{'.'.join(loc)}: {err.get('msg', '')}" if loc else str(err.get("msg", "")))
        return JSONResponse(
            {"detail": "; ".join(lines), "error": "ValidationError", "errors": jsonable_encoder(errors)},
            status_code=422,
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": f"internal error: {type(exc).__name__}", "error": "internal"}, status_code=500
        )


def _document_params(app: FastAPI) -> None:
    """The job body is validated by hand (so every malformed body is a readable 422); the docs
    still show the settings model as its schema."""
    from fastapi.openapi.utils import get_openapi

    from animdiff.params import Params

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            params = Params.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(params.pop("$defs", {}))
            components["Params"] = params
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
