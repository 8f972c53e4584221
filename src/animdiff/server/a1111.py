"""The A1111-compatible API under /sdapi/v1, for scripts written for the AnimateDiff extension.

txt2img goes through the same queue as native jobs and waits for its job (on the event loop,
holding no thread); the answer has A1111's shape: `images` (base64 of each video file in the
reference's order GIF, MP4, WEBP, WEBM, then the frames when `Frame` was asked; all frames when
no video format was), `parameters` (the request echoed) and `info` (a JSON document in a string).
`progress`, `interrupt` and `skip` act on the running job; `options` keeps the few keys scripts
set (the checkpoint) in the job store.
"""

from __future__ import annotations

import base64
import io
import json
import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from animdiff import __version__
from animdiff.models.detect import CHECKPOINT_KINDS
from animdiff.output.infotext import parse_infotext
from animdiff.sampling.samplers import SAMPLER_NAMES
from animdiff.server.a1111_payload import (
    A1111_LABELS,
    A1111Request,
    decode_base64,
    translate,
)
from animdiff.server.context import ServerContext, get_context
from animdiff.server.paths import check_relative_name
from animdiff.server.store import QUEUED, RUNNING, SUCCEEDED, JobRecord
from animdiff.server.submit import params_from, validate_job_id

router = APIRouter(prefix="/sdapi/v1", tags=["a1111"])
Ctx = Annotated[ServerContext, Depends(get_context)]
VIDEO_ORDER = ("gif", "mp4", "webp", "webm")
OPTION_KEYS = ("sd_model_checkpoint", "CLIP_stop_at_last_layers", "animatediff_default_save_formats")
INPUTS_FOLDER = "a1111"  # under the uploads: images sent as base64 inside requests


class A1111Answer(BaseModel):
    images: list[str]
    parameters: dict[str, Any]
    info: str


def _label(name: str) -> str:
    return A1111_LABELS.get(name, name)


def _submit(ctx: ServerContext, request: A1111Request, img2img: bool) -> tuple[str, list[str]]:
    options = ctx.store.options()
    values, ignored = translate(request, options, ctx.settings.uploads_dir / INPUTS_FOLDER, img2img)
    params = params_from(values, label=_label)
    job_id = validate_job_id(request.force_task_id) if request.force_task_id else None
    job_id, _position, _job = ctx.service.submit(
        params, kind="a1111", request=request.model_dump(exclude_unset=True), job_id=job_id
    )
    return job_id, ignored


async def _wait(ctx: ServerContext, job_id: str) -> JobRecord:
    deadline = None if ctx.settings.sync_timeout_s is None else time.monotonic() + ctx.settings.sync_timeout_s
    while True:
        token = ctx.bus.token()
        record = ctx.store.get(job_id)
        if record is not None and record.terminal:
            return record
        if deadline is not None and time.monotonic() > deadline:
            raise HTTPException(
                504,
                f"job {job_id} is still {record.status if record else 'unknown'}; poll /api/v1/jobs/{job_id}",
            )
        await ctx.bus.wait(token, 1.0)


def _read_b64(ctx: ServerContext, job_id: str, names: list[str]) -> list[str]:
    folder = ctx.results.folder(job_id)
    return [base64.b64encode((folder / name).read_bytes()).decode("ascii") for name in names]


def answer_images(files: list[dict[str, Any]]) -> list[str]:
    """The reference's order: videos GIF, MP4, WEBP, WEBM, then `Frame` frames; with no video
    format, every frame (as A1111 returns its images when the extension writes no video)."""
    videos = [f["name"] for fmt in VIDEO_ORDER for f in files if f["format"] == fmt]
    frames = [f["name"] for f in files if f["format"] == "frame"]
    if videos:
        return videos + frames
    return frames or [f["name"] for f in files if f["format"] == "png"]


def _info(record: JobRecord, ignored: list[str]) -> str:
    params = record.params
    result = record.result or {}
    infotext = result.get("infotext", "")
    fields = parse_infotext(infotext) if infotext else {}
    info = {
        "prompt": params.get("prompt", ""),
        "all_prompts": [params.get("prompt", "")],
        "negative_prompt": params.get("negative_prompt", ""),
        "all_negative_prompts": [params.get("negative_prompt", "")],
        "seed": result.get("seed", params.get("seed")),
        "all_seeds": [result.get("seed", params.get("seed"))],
        "subseed": -1,
        "all_subseeds": [-1],
        "subseed_strength": 0,
        "width": params.get("width"),
        "height": params.get("height"),
        "sampler_name": params.get("sampler"),
        "cfg_scale": params.get("cfg_scale"),
        "steps": params.get("steps"),
        "batch_size": result.get("frames"),
        "restore_faces": False,
        "sd_model_name": fields.get("Model"),
        "sd_model_hash": fields.get("Model hash"),
        "clip_skip": params.get("clip_skip"),
        "extra_generation_params": {
            "AnimateDiff": infotext.rpartition("AnimateDiff: ")[2] if infotext else ""
        },
        "index_of_first_image": 0,
        "infotexts": [infotext] if infotext else [],
        "styles": [],
        "job_timestamp": _timestamp(record.started_at),
        "version": f"animdiff {__version__}",
        "animdiff": {
            "job_id": record.id,
            "status": record.status,
            "warnings": record.warnings,
            "ignored": ignored,
            "error": record.error,
        },
    }
    return json.dumps(info)


def _timestamp(when: float | None) -> str:
    return datetime.fromtimestamp(when or time.time()).strftime("%Y%m%d%H%M%S")


async def _generate(ctx: ServerContext, request: A1111Request, img2img: bool) -> Any:
    job_id, ignored = await run_in_threadpool(_submit, ctx, request, img2img)
    record = await _wait(ctx, job_id)
    if record.status not in (SUCCEEDED, "canceled", "interrupted"):
        return JSONResponse(
            {"error": record.error_type, "detail": record.error, "job_id": job_id, "errors": record.error},
            status_code=500,
        )
    names = answer_images((record.result or {}).get("files", [])) if request.send_images else []
    images = await run_in_threadpool(_read_b64, ctx, job_id, names) if record.status == SUCCEEDED else []
    return A1111Answer(
        images=images, parameters=request.model_dump(exclude_unset=True), info=_info(record, ignored)
    )


@router.post("/txt2img", response_model=A1111Answer)
async def txt2img(request: A1111Request, ctx: Ctx) -> Any:
    """A1111's txt2img with `alwayson_scripts.AnimateDiff.args: [{...}]`; waits for the job."""
    return await _generate(ctx, request, img2img=False)


@router.post("/img2img", response_model=A1111Answer)
async def img2img(request: A1111Request, ctx: Ctx) -> Any:
    """A1111's img2img with AnimateDiff: `init_images[0]` is the init image (the reference's latent
    blend over the frames), `mask` inpaints, `denoising_strength` as A1111 (0.75 when absent)."""
    return await _generate(ctx, request, img2img=True)


@router.get("/progress")
def progress(ctx: Ctx, skip_current_image: bool = False) -> dict[str, Any]:
    """The oldest running job's progress in A1111's shape (zeros when nothing runs)."""
    running, _ = ctx.store.list(RUNNING, limit=1)
    queued = ctx.store.count(QUEUED)
    state: dict[str, Any] = {
        "skipped": False,
        "interrupted": False,
        "stopping_generation": False,
        "job": "",
        "job_count": queued,
        "job_timestamp": "0",
        "job_no": 0,
        "sampling_step": 0,
        "sampling_steps": 0,
    }
    if not running:
        return {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None, "textinfo": None}
    record = running[0]
    info = record.progress or {}
    denoising = info.get("phase") == "denoise"
    state.update(
        interrupted=record.cancel_requested,
        job=f"task({record.id})",
        job_count=queued + 1,
        job_timestamp=_timestamp(record.started_at),
        sampling_step=info.get("step", 0) if denoising else 0,
        sampling_steps=info.get("total", 0) if denoising else 0,
    )
    latest = ctx.previews.get(record.id) if ctx.previews is not None and not skip_current_image else None
    return {
        "progress": info.get("fraction", 0.0),
        "eta_relative": info.get("eta_s") or 0.0,
        "state": state,
        "current_image": None if latest is None else base64.b64encode(latest[1]).decode("ascii"),
        "textinfo": f"{info.get('phase', 'starting')} {info.get('step', 0)}/{info.get('total', 0)}",
        "current_task": f"task({record.id})",
    }


def _stop_running(ctx: ServerContext) -> None:
    running, _ = ctx.store.list(RUNNING, limit=100)
    for record in running:
        if ctx.store.request_cancel(record.id):
            ctx.pool.cancel(record.id)


@router.post("/interrupt")
def interrupt(ctx: Ctx) -> None:
    """Stop the running job at its next model call (queued jobs stay queued, as in A1111)."""
    _stop_running(ctx)


@router.post("/skip")
def skip(ctx: Ctx) -> None:
    """One job is one video, so skipping the current image stops the running job, as interrupt does."""
    _stop_running(ctx)


@router.get("/sd-models")
def sd_models(ctx: Ctx) -> list[dict[str, Any]]:
    out = []
    for entry in ctx.models.inventory():
        if entry.detected is None or entry.detected.kind not in CHECKPOINT_KINDS:
            continue
        name = entry.relative.split("/", 1)[1] if "/" in entry.relative else entry.relative
        out.append(
            {
                "title": name,
                "model_name": name.rsplit(".", 1)[0] if "." in name else name,
                "hash": None,
                "sha256": None,
                "filename": entry.relative,  # relative: the server's paths stay private
                "config": None,
            }
        )
    return out


@router.get("/samplers")
def samplers() -> list[dict[str, Any]]:
    return [{"name": name, "aliases": [], "options": {}} for name in SAMPLER_NAMES]


@router.get("/schedulers")
def schedulers() -> list[dict[str, Any]]:
    return [
        {
            "name": "automatic",
            "label": "Automatic",
            "aliases": None,
            "default_rho": -1,
            "need_inner_model": False,
        },
        {"name": "karras", "label": "Karras", "aliases": None, "default_rho": 7.0, "need_inner_model": False},
    ]


def _default_checkpoint(ctx: ServerContext) -> str | None:
    from animdiff.errors import AnimdiffError

    try:
        path = ctx.models.default("checkpoint", CHECKPOINT_KINDS)
    except AnimdiffError:
        return None
    return path.name


@router.get("/options")
def get_options(ctx: Ctx) -> dict[str, Any]:
    """The keys scripts read; what POST /options stored wins over the defaults."""
    stored = ctx.store.options()
    return {
        "sd_model_checkpoint": stored.get("sd_model_checkpoint") or _default_checkpoint(ctx),
        "CLIP_stop_at_last_layers": stored.get("CLIP_stop_at_last_layers", 1),
        "samples_format": "png",
        "animatediff_default_save_formats": stored.get("animatediff_default_save_formats", ["GIF", "PNG"]),
        "animatediff_save_to_custom": True,
    }


@router.post("/options")
def set_options(ctx: Ctx, values: Annotated[dict[str, Any], Body()]) -> None:
    """Stores `sd_model_checkpoint` (checked now), `CLIP_stop_at_last_layers` and
    `animatediff_default_save_formats` as defaults of later A1111 requests; other keys are ignored."""
    kept = {k: v for k, v in values.items() if k in OPTION_KEYS}
    checkpoint = kept.get("sd_model_checkpoint")
    if checkpoint is not None:
        if not isinstance(checkpoint, str):
            raise HTTPException(422, "sd_model_checkpoint must be a string")
        check_relative_name(checkpoint, "sd_model_checkpoint")
        if ctx.models.find(checkpoint, "checkpoint") is None:
            raise ctx.models.not_found(checkpoint, "checkpoint")
    if "CLIP_stop_at_last_layers" in kept:
        params_from({"clip_skip": kept["CLIP_stop_at_last_layers"]}, label=_label)
    if "animatediff_default_save_formats" in kept:
        params_from({"formats": kept["animatediff_default_save_formats"]}, label=_label)
    ctx.store.set_options(kept)


class PngInfoRequest(BaseModel):
    image: str


@router.post("/png-info")
def png_info(body: PngInfoRequest, ctx: Ctx) -> dict[str, Any]:
    """The infotext inside a PNG (or GIF, WebP) result, parsed as A1111's PNG Info does."""
    raw = decode_base64(body.image, "image")
    from PIL import Image, UnidentifiedImageError

    from animdiff.output.webp import read_user_comment

    try:
        with Image.open(io.BytesIO(raw)) as image:
            fmt = image.format
            info = dict(image.info)
            text = info.pop("parameters", None)
            if fmt == "GIF":
                comment = info.pop("comment", None)
                text = comment.decode("utf-8", "replace") if isinstance(comment, bytes) else comment
            elif fmt == "WEBP" and text is None:
                text = read_user_comment(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise HTTPException(422, "image: the base64 data is not an image") from None
    items = {k: v for k, v in info.items() if isinstance(v, str | int | float)}
    if not text:
        return {"info": "", "items": items, "parameters": {}}
    return {"info": text, "items": items, "parameters": parse_infotext(text)}
