"""The native API under /api/v1: jobs, their events and files, uploads, models.

Submitting answers 202 at once with the job's id and queue position; the job runs on a worker.
The body is the settings model itself (its field names, and the A1111 names it accepts as
aliases), so this API, the CLI and the web UI share one set of defaults and checks.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    Body,
    Depends,
    File,
    Header,
    HTTPException,
    Query,
    Request,
    Response,
    UploadFile,
    WebSocket,
)
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.websockets import WebSocketDisconnect

from animdiff.server.context import ServerContext, context_of, get_context
from animdiff.server.events import KEEPALIVE_S, JobEvent, job_events, parse_since, sse_message
from animdiff.server.paths import resolve_child, safe_file_name
from animdiff.server.store import QUEUED, RUNNING, STATUSES, JobRecord
from animdiff.server.submit import params_from

router = APIRouter(prefix="/api/v1", tags=["native"])
Ctx = Annotated[ServerContext, Depends(get_context)]
UPLOAD_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".mp4", ".mov", ".webm", ".mkv", ".avi")
MEDIA_TYPES = {
    ".gif": "image/gif",
    ".png": "image/png",
    ".webp": "image/webp",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".txt": "text/plain; charset=utf-8",
}
CHUNK = 1024 * 1024


class JobProgress(BaseModel):
    phase: str | None = None
    step: int = 0
    total: int = 0
    window: int = 0
    windows: int = 0
    fraction: float = 0.0
    eta_s: float | None = None
    elapsed_s: float | None = None


class JobFile(BaseModel):
    name: str
    format: str
    size: int
    url: str


class JobView(BaseModel):
    id: str
    kind: str
    status: str = Field(description=" | ".join(STATUSES))
    position: int | None = Field(None, description="queued jobs ahead of this one (0: next)")
    progress: JobProgress
    error: str | None = None
    error_type: str | None = None
    files: list[JobFile] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    worker: str | None = None
    seed: int | None = None
    infotext: str | None = None
    cancel_requested: bool = False
    expired: bool = Field(False, description="the result files were removed by the retention setting")
    attempt: int = 0
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    params: dict[str, Any]


class Submitted(BaseModel):
    id: str
    position: int
    status: str = QUEUED
    seed: int
    warnings: list[str] = Field(default_factory=list)


class JobList(BaseModel):
    jobs: list[JobView]
    total: int
    limit: int
    offset: int


class CancelAnswer(BaseModel):
    id: str
    status: str
    cancel_requested: bool


class ModelInfo(BaseModel):
    name: str = Field(description="path relative to the models folder: what a request may name")
    kind: str | None
    problem: str | None = None
    size: int | None = None


class Uploaded(BaseModel):
    name: str = Field(description="give this as video_source, video_path, image or batch_images")
    files: list[str]
    size: int


def job_view(ctx: ServerContext, record: JobRecord) -> JobView:
    result = record.result or {}
    files = [] if record.expired else result.get("files", [])
    progress = dict(record.progress or {})
    if record.status == "succeeded":
        progress.update(fraction=1.0, eta_s=0.0)
    return JobView(
        id=record.id,
        kind=record.kind,
        status=record.status,
        position=ctx.store.position(record.id) if record.status == QUEUED else None,
        progress=JobProgress(**progress),
        error=record.error,
        error_type=record.error_type,
        files=[JobFile(**f, url=f"/api/v1/jobs/{record.id}/files/{f['name']}") for f in files],
        warnings=record.warnings,
        worker=record.worker,
        seed=record.params.get("seed"),
        infotext=result.get("infotext"),
        cancel_requested=record.cancel_requested,
        expired=record.expired,
        attempt=record.attempt,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        params=record.params,
    )


def _record(ctx: ServerContext, job_id: str) -> JobRecord:
    record = ctx.store.get(job_id)
    if record is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return record


@router.get("/health", tags=["server"])
def health(ctx: Ctx) -> dict[str, Any]:
    """Liveness and queue size; open even when credentials are required."""
    return {"ok": True, "queued": ctx.store.count(QUEUED), "running": ctx.store.count(RUNNING)}


PARAMS_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Params"}}},
    }
}


@router.post("/jobs", status_code=202, response_model=Submitted, openapi_extra=PARAMS_BODY)
def submit_job(body: Annotated[Any, Body()], ctx: Ctx, response: Response) -> Submitted:
    """Queue a job; the body is the settings model (`Params`). Everything is checked now, so a bad
    job is a 4xx here, not a failed job later."""
    job_id, position, job = ctx.service.submit(params_from(body))
    response.headers["Location"] = f"/api/v1/jobs/{job_id}"
    return Submitted(id=job_id, position=position, seed=job.seed, warnings=list(job.warnings))


@router.get("/jobs", response_model=JobList)
def list_jobs(
    ctx: Ctx,
    status: Annotated[str | None, Query(description=" | ".join(STATUSES))] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    newest_first: bool = False,
) -> JobList:
    if status is not None and status not in STATUSES:
        raise HTTPException(422, f"status {status!r}: choose from {', '.join(STATUSES)}")
    records, total = ctx.store.list(status, limit, offset, newest_first)
    return JobList(jobs=[job_view(ctx, r) for r in records], total=total, limit=limit, offset=offset)


@router.get("/jobs/{job_id}", response_model=JobView)
def get_job(job_id: str, ctx: Ctx) -> JobView:
    return job_view(ctx, _record(ctx, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=CancelAnswer)
def cancel_job(job_id: str, ctx: Ctx) -> CancelAnswer:
    """A queued job is canceled at once; a running one stops at its next model call and keeps no files."""
    record = _record(ctx, job_id)
    if record.status == QUEUED and ctx.store.cancel_queued(job_id):
        ctx.publish()
        return CancelAnswer(id=job_id, status="canceled", cancel_requested=True)
    if ctx.store.request_cancel(job_id):
        ctx.pool.cancel(job_id)
        return CancelAnswer(id=job_id, status=RUNNING, cancel_requested=True)
    record = _record(ctx, job_id)
    raise HTTPException(409, f"job {job_id} is already {record.status}; nothing to cancel")


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse)
async def job_event_stream(
    job_id: str,
    request: Request,
    since: int | None = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-sent events (`event:` the type, `id:` the per-job sequence number); reconnecting with
    `Last-Event-ID` (or `?since=N`) resumes after that event. The stream ends after the last event."""
    ctx = context_of(request)
    _record(ctx, job_id)
    start = parse_since(last_event_id, since)

    async def stream() -> Any:
        async for event in job_events(ctx.store, ctx.bus, job_id, start):
            yield sse_message(event)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


@router.websocket("/jobs/{job_id}/ws")
async def job_event_socket(websocket: WebSocket, job_id: str, since: int = 0) -> None:
    """The same events as JSON messages; closes (1000) after the job's last event."""
    ctx = context_of(websocket)
    await websocket.accept()
    if ctx.store.get(job_id) is None:
        await websocket.send_json({"detail": f"no job {job_id!r}"})
        await websocket.close(code=4404)
        return
    try:
        async for event in job_events(ctx.store, ctx.bus, job_id, max(since, 0)):
            if event is not None:
                await websocket.send_json(event.payload())
        await websocket.close(code=1000)
    except WebSocketDisconnect:
        return


@router.websocket("/events/ws")
async def all_event_socket(websocket: WebSocket, since: int | None = None) -> None:
    """Every job's events as they happen (for dashboards): each message carries `id`, the global
    event number; reconnect with `?since=<id>` to resume. Without `since`, only new events."""
    ctx = context_of(websocket)
    await websocket.accept()
    last = ctx.store.last_event_id() if since is None else max(since, 0)
    try:
        while True:
            token = ctx.bus.token()
            events = ctx.store.all_events_after(last)
            for stored in events:
                await websocket.send_json({"id": stored.id, **JobEvent.from_stored(stored).payload()})
                last = stored.id
            if not events and not await ctx.bus.wait(token, KEEPALIVE_S):
                await websocket.send_json({"type": "keepalive"})
    except WebSocketDisconnect:
        return


@router.get("/jobs/{job_id}/files/{name:path}", response_class=FileResponse)
def job_file(job_id: str, name: str, ctx: Ctx) -> FileResponse:
    """A result file, as an attachment (never rendered by the browser as a page)."""
    record = _record(ctx, job_id)
    if record.expired:
        raise HTTPException(410, f"job {job_id}: its files were removed by the retention setting")
    if record.status != "succeeded":
        raise HTTPException(404, f"job {job_id} is {record.status}; it has no files")
    path = resolve_child(ctx.results.folder(job_id), name, "file")
    media = MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
    headers = {"X-Content-Type-Options": "nosniff"}
    return FileResponse(
        path, media_type=media, filename=path.name, headers=headers, content_disposition_type="attachment"
    )


@router.get("/jobs/{job_id}/preview", response_class=Response)
def job_preview(job_id: str, ctx: Ctx) -> Response:
    """The latest live preview of a running job (JPEG; needs `--previews`)."""
    _record(ctx, job_id)
    latest = ctx.previews.get(job_id) if ctx.previews is not None else None
    if latest is None:
        detail = "previews are off (--previews)" if ctx.previews is None else "no preview yet"
        raise HTTPException(404, f"job {job_id}: {detail}")
    number, data = latest
    return Response(data, media_type="image/jpeg", headers={"X-Preview-Number": str(number)})


@router.get("/jobs/{job_id}/infotext", response_class=PlainTextResponse)
def job_infotext(job_id: str, ctx: Ctx) -> PlainTextResponse:
    """The A1111 "parameters" text of a finished job (what PNG Info shows)."""
    record = _record(ctx, job_id)
    text = (record.result or {}).get("infotext")
    if text is None:
        raise HTTPException(404, f"job {job_id} is {record.status}; it has no infotext")
    return PlainTextResponse(text)


@router.get("/jobs/{job_id}/events/list", response_model=list[JobEvent])
def job_event_list(job_id: str, ctx: Ctx, since: int = 0) -> list[JobEvent]:
    """The stored events at once (for clients that poll instead of streaming)."""
    _record(ctx, job_id)
    return [JobEvent.from_stored(e) for e in ctx.store.events_after(job_id, max(since, 0))]


@router.get("/models", response_model=list[ModelInfo])
def list_models(ctx: Ctx) -> list[ModelInfo]:
    """Every model file in the models folder with its detected kind."""
    out = []
    for entry in ctx.models.inventory():
        size = entry.path.stat().st_size if entry.path.is_file() else None
        kind = str(entry.detected.kind) if entry.detected is not None else None
        out.append(ModelInfo(name=entry.relative, kind=kind, problem=entry.problem, size=size))
    return out


@router.post("/uploads", status_code=201, response_model=Uploaded)
def upload(
    ctx: Ctx, files: Annotated[list[UploadFile], File(description="one video or image, or frames")]
) -> Uploaded:
    """Store input files. One file: its name is a file; several: a folder (for video_path, batch_images)."""
    if not files:
        raise HTTPException(422, "no files in the upload")
    folder = ctx.settings.uploads_dir / uuid.uuid4().hex
    folder.mkdir(parents=True)
    names: list[str] = []
    total = 0
    try:
        for index, item in enumerate(files):
            name = safe_file_name(item.filename, default=f"file{index:05}")
            if not name.lower().endswith(UPLOAD_SUFFIXES):
                raise HTTPException(415, f"{item.filename!r}: accepted are {', '.join(UPLOAD_SUFFIXES)}")
            if name in names:
                raise HTTPException(422, f"{item.filename!r}: two files with the same name")
            with (folder / name).open("wb") as out:
                while chunk := item.file.read(CHUNK):
                    total += len(chunk)
                    if total > ctx.settings.max_upload_bytes:
                        raise HTTPException(
                            413, f"upload above this server's limit of {ctx.settings.max_upload_bytes} bytes"
                        )
                    out.write(chunk)
            names.append(name)
    except BaseException:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        raise
    relative = folder.name if len(names) > 1 else f"{folder.name}/{names[0]}"
    return Uploaded(name=relative, files=names, size=total)
