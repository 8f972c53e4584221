"""The web UI: a page of our own (static HTML, JS and CSS in `static/`) over the native API.

The page builds its form from `GET /api/v1/ui/schema`, which is the settings model's own JSON
schema (defaults, ranges, choices, descriptions as tooltips) joined with `LAYOUT`: the group and
the reference's label of every field. A field of `Params` missing from `LAYOUT` still gets a
plain control (in "Other"), and the UI tests fail until it is placed. Everything the page does
goes through the native API (`/api/v1/jobs` ...); the few helpers only a browser needs are here:
the 75-token counter, a preprocessor's hint preview, and reading the infotext of a pasted text or
a dropped file.
"""

from __future__ import annotations

import html
import io
import re
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import BaseModel, Field

from animdiff.control_units import DEFAULT_PROCESSOR_RES
from animdiff.errors import AnimdiffError
from animdiff.server.context import ServerContext, get_context

router = APIRouter(tags=["web UI"])
Ctx = Annotated[ServerContext, Depends(get_context)]
STATIC = Path(__file__).parent / "static"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}
MAX_PREVIEW_IMAGE = 20 * 1024 * 1024
MAX_TOKEN_TEXT = 100_000

# (group, field, label, widget). Labels of the AnimateDiff group are the reference extension's,
# the others A1111's (txt2img and Settings/AnimateDiff). Widgets the page knows: text, textarea,
# number, slider, select, checkbox, formats, model, upload, motion_loras, controlnet_units.
LAYOUT: tuple[tuple[str, str, str, str], ...] = (
    ("Stable Diffusion", "checkpoint", "Stable Diffusion checkpoint", "model"),
    ("Prompt", "prompt", "Prompt", "textarea"),
    ("Prompt", "negative_prompt", "Negative prompt", "textarea"),
    ("Generation", "sampler", "Sampling method", "select"),
    ("Generation", "steps", "Sampling steps", "slider"),
    ("Generation", "width", "Width", "slider"),
    ("Generation", "height", "Height", "slider"),
    ("Generation", "cfg_scale", "CFG Scale", "slider"),
    ("Generation", "seed", "Seed", "number"),
    ("Generation", "clip_skip", "Clip skip", "slider"),
    ("AnimateDiff", "motion_module", "Motion module", "model"),
    ("AnimateDiff", "formats", "Save format", "formats"),
    ("AnimateDiff", "frames", "Number of frames", "number"),
    ("AnimateDiff", "fps", "FPS", "number"),
    ("AnimateDiff", "loop_number", "Display loop number", "number"),
    ("AnimateDiff", "context", "Context batch size", "slider"),
    ("AnimateDiff", "stride", "Stride", "number"),
    ("AnimateDiff", "overlap", "Overlap", "number"),
    ("AnimateDiff", "closed_loop", "Closed loop", "select"),
    ("AnimateDiff", "interp", "Frame Interpolation", "select"),
    ("AnimateDiff", "interp_x", "Interp X", "number"),
    ("AnimateDiff", "video_source", "Video source", "upload"),
    ("AnimateDiff", "video_path", "Video path", "text"),
    ("AnimateDiff", "video_dedupe", "Drop near-duplicate frames", "checkbox"),
    ("AnimateDiff", "motion_loras", "Motion LoRA", "motion_loras"),
    ("AnimateDiff", "prompt_interpolation", "Prompt travel interpolation", "select"),
    ("AnimateDiff", "fuse", "Context window fusion", "select"),
    ("AnimateDiff", "groupnorm", "GroupNorm statistics", "select"),
    ("AnimateDiff", "request_id", "Request id", "text"),
    ("FreeInit", "freeinit_enable", "Enable FreeInit", "checkbox"),
    ("FreeInit", "freeinit_filter", "Filter Type", "select"),
    ("FreeInit", "freeinit_ds", "d_s", "slider"),
    ("FreeInit", "freeinit_dt", "d_t", "slider"),
    ("FreeInit", "freeinit_iters", "Iterations", "slider"),
    ("ControlNet", "controlnet_units", "ControlNet units", "controlnet_units"),
    ("img2img", "init_image", "Init image", "upload"),
    ("img2img", "last_frame", "Optional last frame", "upload"),
    ("img2img", "denoising_strength", "Denoising strength", "number"),
    ("img2img", "latent_power", "Latent power", "number"),
    ("img2img", "latent_scale", "Latent scale", "number"),
    ("img2img", "latent_power_last", "Optional latent power for last frame", "number"),
    ("img2img", "latent_scale_last", "Optional latent scale for last frame", "number"),
    ("img2img", "mask_path", "Inpaint batch mask directory", "text"),
    ("Output settings", "gif_palette", "Calculate the optimal GIF palette", "checkbox"),
    ("Output settings", "gif_gifsicle", "Optimize GIFs with gifsicle", "checkbox"),
    ("Output settings", "mp4_crf", "MP4 Quality (CRF)", "slider"),
    ("Output settings", "mp4_preset", "MP4 Preset", "select"),
    ("Output settings", "mp4_tune", "MP4 Tune", "select"),
    ("Output settings", "webp_quality", "WebP Quality", "slider"),
    ("Output settings", "webp_lossless", "Save WebP in lossless format", "checkbox"),
)

# Which model kinds (animdiff.models.detect.Kind values) a model picker offers.
MODEL_KINDS = {
    "checkpoint": ("checkpoint", "diffusers folder"),
    "motion_module": ("motion module",),
    "motion_lora": ("motion LoRA",),
    "lora": ("LoRA (",),
    "controlnet": ("ControlNet (",),
}

UNIT_LABELS = {
    "model": "Model",
    "module": "Preprocessor",
    "weight": "Control Weight",
    "guidance_start": "Starting Control Step",
    "guidance_end": "Ending Control Step",
    "control_mode": "Control Mode",
    "resize_mode": "Resize Mode",
    "processor_res": "Preprocessor Resolution",
    "threshold_a": "Threshold A",
    "threshold_b": "Threshold B",
    "pixel_perfect": "Pixel Perfect",
    "image": "Image",
    "batch_images": "Batch images (folder or video)",
    "enabled": "Enable",
}


def _flatten(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One JSON-schema property as the page reads it: type, nullable, minimum, maximum, choices."""
    out: dict[str, Any] = {"description": prop.get("description", ""), "default": prop.get("default")}
    variants = prop.get("anyOf", [prop])
    real = [v for v in variants if v.get("type") != "null"]
    out["nullable"] = len(real) < len(variants)
    first = real[0] if real else {}
    out["type"] = first.get("type", "string")
    for key in ("minimum", "maximum", "maxLength"):
        if key in first:
            out[key] = first[key]
    if "enum" in first:
        out["choices"] = list(first["enum"])
    if out["type"] == "array" and "$ref" in first.get("items", {}):
        name = first["items"]["$ref"].rsplit("/", 1)[-1]
        out["item_fields"] = {
            key: _flatten(value, defs) for key, value in defs.get(name, {}).get("properties", {}).items()
        }
    return out


def ui_schema(ctx: ServerContext | None = None) -> dict[str, Any]:
    """The form, from the settings model at runtime: one source for defaults, ranges and tooltips."""
    from animdiff.choices import OTHER_FORMATS, VIDEO_FORMATS
    from animdiff.control import PREPROCESSORS, PROCESSOR_RES_SLIDER
    from animdiff.params import DEFAULT_FPS, Params
    from animdiff.sampling.samplers import SAMPLER_NAMES

    schema = Params.model_json_schema()
    props, defs = schema["properties"], schema.get("$defs", {})
    placed = {field for _, field, _, _ in LAYOUT}
    layout = list(LAYOUT) + [
        ("Other", name, name.replace("_", " ").capitalize(), "text")
        for name in Params.model_fields
        if name not in placed
    ]
    fields: list[dict[str, Any]] = []
    for group, name, label, widget in layout:
        if name not in props:
            continue
        entry = {
            "name": name,
            "group": group,
            "label": label,
            "widget": widget,
            **_flatten(props[name], defs),
        }
        # Lists default through a factory, which the JSON schema leaves out.
        entry["default"] = jsonable_encoder(Params.model_fields[name].get_default(call_default_factory=True))
        fields.append(entry)
    extra = {
        "sampler": {"choices": list(SAMPLER_NAMES)},
        # "frame" only makes sense in an API answer (frames as PNG bytes); "txt" is a side file.
        "formats": {"choices": [*VIDEO_FORMATS, *(f for f in OTHER_FORMATS if f != "frame")]},
        "fps": {"placeholder": f"source video's, else {DEFAULT_FPS}"},
        "checkpoint": {"kinds": MODEL_KINDS["checkpoint"], "placeholder": "the first one found"},
        "motion_module": {"kinds": MODEL_KINDS["motion_module"], "placeholder": "the first one found"},
        "motion_loras": {"kinds": MODEL_KINDS["motion_lora"]},
        "controlnet_units": {"kinds": MODEL_KINDS["controlnet"], "labels": UNIT_LABELS},
        "video_source": {"accept": "video/*,image/gif,image/webp"},
        # The reference's slider steps.
        "freeinit_ds": {"step": 0.125},
        "freeinit_dt": {"step": 0.125},
    }
    for entry in fields:
        entry.update(extra.get(entry["name"], {}))
    from animdiff.control import annotator_folder, annotator_problem

    # Model-based preprocessors run where the annotators extra and their files are installed.
    annotators = annotator_folder(ctx.models.root) if ctx is not None else None
    preprocessors = [
        {
            "name": p.name,
            "description": p.description,
            "available": p.available or annotator_problem(p, annotators) is None,
            "uses_resolution": p.uses_resolution,
            "threshold_a": _slider(p.threshold_a),
            "threshold_b": _slider(p.threshold_b),
        }
        for p in PREPROCESSORS.values()
    ]
    limits = {}
    if ctx is not None:
        s = ctx.settings
        limits = {"max_frames": s.max_frames, "max_size": s.max_size, "max_steps": s.max_steps}
    return {
        "fields": fields,
        "groups": list(dict.fromkeys(entry["group"] for entry in fields)),
        "preprocessors": preprocessors,
        "processor_res": _slider(PROCESSOR_RES_SLIDER),
        "model_kinds": {key: list(value) for key, value in MODEL_KINDS.items()},
        "limits": limits,
        "previews": bool(ctx and ctx.previews is not None),
    }


def _slider(slider: Any) -> dict[str, Any] | None:
    if slider is None:
        return None
    return {
        "label": slider.label,
        "default": slider.default,
        "minimum": slider.minimum,
        "maximum": slider.maximum,
        "step": slider.step,
    }


# --- the page and its files --------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index(request: Request) -> HTMLResponse:
    """The page. Opened as `/?api_key=KEY` on a server with API keys, its own files carry the key
    too (the script sends it as X-API-Key; HTTP basic auth needs nothing, the browser sends it)."""
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    key = request.query_params.get("api_key")
    if key:
        suffix = html.escape("?api_key=" + quote(key, safe=""))
        page = re.sub(r'((?:src|href)="/ui/static/[^"?]+)"', lambda m: f'{m.group(1)}{suffix}"', page)
    return HTMLResponse(page, headers={"Cache-Control": "no-cache", "Referrer-Policy": "no-referrer"})


@router.get("/ui/static/{name}", include_in_schema=False)
def static_file(name: str) -> FileResponse:
    """The page's own files (a flat folder; no other path is served)."""
    known = {p.name: p for p in STATIC.iterdir() if p.is_file()}
    if name not in known:
        raise HTTPException(404, f"no UI file {name!r}")
    path = known[name]
    media = STATIC_TYPES.get(path.suffix, "application/octet-stream")
    return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})


@router.get("/api/v1/ui/schema")
def schema(ctx: Ctx) -> dict[str, Any]:
    """Every setting with its group, label, widget, default, range, choices and description."""
    return ui_schema(ctx)


# --- helpers only a browser needs --------------------------------------------------------------------


class TokenRequest(BaseModel):
    text: str = Field("", max_length=MAX_TOKEN_TEXT)


class TokenPart(BaseModel):
    frame: int | None = Field(None, description="the keyframe, for a prompt travel; None otherwise")
    count: int = Field(description="the web UI's counter: 75 per full chunk plus the last chunk's tokens")
    chunks: list[int] = Field(description="tokens in each 75-token chunk")
    limit: int = Field(description="75 times the number of chunks")


class TokenCount(BaseModel):
    parts: list[TokenPart]
    count: int = Field(description="the largest count of the parts")
    limit: int
    travel: bool
    loras: list[str] = Field(default_factory=list, description="<lora:...> tags found (not counted)")
    error: str | None = None


@router.post("/api/v1/ui/tokens", response_model=TokenCount)
def count_tokens(body: TokenRequest) -> TokenCount:
    """A1111's token counter, per 75-token chunk, with the project's tokenizer and chunker; a travel
    prompt is counted per keyframe (the text each keyframe encodes)."""
    from animdiff.prompts.syntax import extract_extra_networks
    from animdiff.prompts.travel import parse_travel

    error = None
    travel = None
    try:
        travel = parse_travel(body.text)
    except AnimdiffError as exc:
        error = str(exc)
    texts = list(travel.keyframe_prompts().items()) if travel else [(None, body.text)]
    parts: list[TokenPart] = []
    loras: list[str] = []
    for frame, text in texts:
        clean, networks = extract_extra_networks(text)
        loras += [n.name for n in networks if n.name not in loras]
        parts.append(_count(frame, clean))
    count = max(p.count for p in parts)
    limit = max(p.limit for p in parts)
    return TokenCount(
        parts=parts, count=count, limit=limit, travel=travel is not None, loras=loras, error=error
    )


def _count(frame: int | None, text: str) -> TokenPart:
    from animdiff.prompts.chunks import CHUNK_LENGTH, build_chunks, token_count
    from animdiff.prompts.syntax import parse_attention

    tokenizer = _tokenizer()
    parsed = parse_attention(text)
    chunks = build_chunks(
        parsed,
        tokenizer,
        comma_id=tokenizer.comma_id,
        bos_id=tokenizer.bos_id,
        eos_id=tokenizer.eos_id,
        pad_id=tokenizer.pad_id,
    )
    # Each chunk is [start, tokens..., end-padding..., end]: its tokens end at the first end token.
    sizes = [chunk.tokens.index(tokenizer.eos_id, 1) - 1 for chunk in chunks]
    count = token_count(parsed, tokenizer, comma_id=tokenizer.comma_id)
    return TokenPart(frame=frame, count=count, chunks=sizes, limit=CHUNK_LENGTH * max(len(chunks), 1))


@lru_cache(maxsize=1)
def _tokenizer() -> Any:
    """SD1.5's CLIP tokenizer, built once (about a second) on the first count."""
    from animdiff.models.tokenizer import PromptTokenizer

    return PromptTokenizer()


@router.post("/api/v1/ui/preprocess", response_class=Response)
def preprocess_preview(
    ctx: Ctx,
    image: Annotated[UploadFile, File(description="an image to run the preprocessor on")],
    module: Annotated[str, Form()] = "none",
    processor_res: Annotated[int, Form()] = DEFAULT_PROCESSOR_RES,
    threshold_a: Annotated[float | None, Form()] = None,
    threshold_b: Annotated[float | None, Form()] = None,
) -> Response:
    """The hint a ControlNet unit's preprocessor makes from an image (PNG), as ControlNet's preview."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from animdiff.control import annotator_folder, run_preprocessor

    data = image.file.read(MAX_PREVIEW_IMAGE + 1)
    if len(data) > MAX_PREVIEW_IMAGE:
        raise HTTPException(413, f"image: above {MAX_PREVIEW_IMAGE // (1024 * 1024)} MB")
    try:
        with Image.open(io.BytesIO(data)) as opened:
            frame = np.asarray(opened.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError):
        raise HTTPException(422, "image: not an image this server can read") from None
    try:
        hint = run_preprocessor(
            module,
            frame,
            processor_res=processor_res,
            threshold_a=threshold_a,
            threshold_b=threshold_b,
            annotators=annotator_folder(ctx.models.root),
        )
    except AnimdiffError as exc:
        raise HTTPException(422, f"module {module!r}: {exc}") from None
    out = io.BytesIO()
    Image.fromarray(hint).save(out, format="PNG")
    return Response(out.getvalue(), media_type="image/png")


class InfotextRequest(BaseModel):
    text: str = Field(max_length=MAX_TOKEN_TEXT)


class InfotextAnswer(BaseModel):
    infotext: str
    params: dict[str, Any] = Field(description="settings read from it, by the settings model's names")


@router.post("/api/v1/ui/infotext", response_model=InfotextAnswer)
def read_infotext(body: InfotextRequest) -> InfotextAnswer:
    """Settings from a pasted infotext (A1111's "PNG Info -> send to txt2img")."""
    return _answer(body.text)


@router.post("/api/v1/ui/infotext/file", response_model=InfotextAnswer)
def read_infotext_file(
    ctx: Ctx, file: Annotated[UploadFile, File(description="a PNG, GIF, WEBP, MP4, WEBM or TXT result")]
) -> InfotextAnswer:
    """Settings from a dropped result file that animdiff or A1111 wrote."""
    from animdiff.output.read_back import READABLE, infotext_from_file

    suffix = Path(file.filename or "").suffix.lower()
    if suffix not in READABLE:
        raise HTTPException(415, f"file {file.filename!r}: give one of {', '.join(READABLE)}")
    limit = ctx.settings.max_upload_bytes
    with tempfile.TemporaryDirectory(prefix="animdiff-ui-") as folder:
        path = Path(folder) / f"dropped{suffix}"
        size = 0
        with path.open("wb") as out:
            while chunk := file.file.read(1024 * 1024):
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, f"file: above this server's limit of {limit} bytes")
                out.write(chunk)
        try:
            text = infotext_from_file(path)
        except AnimdiffError as exc:
            message = str(exc).replace(str(path), file.filename or "file")
            raise HTTPException(422, message) from None
    return _answer(text)


def _answer(text: str) -> InfotextAnswer:
    from animdiff.output.infotext import params_from_infotext

    try:
        params = params_from_infotext(text)
    except AnimdiffError as exc:
        raise HTTPException(422, f"infotext: {exc}") from None
    except (KeyError, ValueError) as exc:
        raise HTTPException(422, f"infotext: not A1111 parameters ({exc})") from None
    return InfotextAnswer(infotext=text, params=params)
