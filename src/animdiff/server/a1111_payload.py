"""A1111's txt2img/img2img JSON (with the AnimateDiff and ControlNet `alwayson_scripts`) read into
the settings model's values, so scripts written for the extension run unchanged.

What the reference accepts is mapped; what it accepts but animdiff does not do is refused with a
message when it would change the result (hires fix, face restoration, FreeInit...) and reported as
ignored when it would not (UI-only or default values); a key the reference does not know is an
error, as an unknown AnimateDiff key is a TypeError in the extension.
"""

from __future__ import annotations

import base64
import binascii
import io
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from animdiff.errors import AnimdiffError, ParamsError
from animdiff.params import Params

# The A1111 extension's `AnimateDiffProcess` fields -> settings fields.
ANIMATEDIFF_FIELDS = {
    "model": "motion_module",
    "video_length": "frames",
    "fps": "fps",
    "loop_number": "loop_number",
    "closed_loop": "closed_loop",
    "batch_size": "context",
    "stride": "stride",
    "overlap": "overlap",
    "format": "formats",
    "interp": "interp",
    "interp_x": "interp_x",
    "video_source": "video_source",
    "video_path": "video_path",
    "request_id": "request_id",
    "freeinit_enable": "freeinit_enable",
    "freeinit_filter": "freeinit_filter",
    "freeinit_ds": "freeinit_ds",
    "freeinit_dt": "freeinit_dt",
    "freeinit_iters": "freeinit_iters",
    "mask_path": "mask_path",
    "latent_power": "latent_power",
    "latent_scale": "latent_scale",
    "latent_power_last": "latent_power_last",
    "latent_scale_last": "latent_scale_last",
}
# Accepted and without effect at these values; any other value is refused as not supported.
ANIMATEDIFF_INERT = {
    "enable": True,
}
# Only meaningful with a feature above (img2img latents) or internal to the extension.
ANIMATEDIFF_IGNORED = (
    "is_i2i_batch",
    "video_default",
    "prompt_scheduler",
)
# The UI's component order, for clients that still send a positional list.
ANIMATEDIFF_POSITIONAL = (
    "model",
    "enable",
    "video_length",
    "fps",
    "loop_number",
    "closed_loop",
    "batch_size",
    "stride",
    "overlap",
    "format",
    "interp",
    "interp_x",
    "video_source",
    "video_path",
    "mask_path",
    "freeinit_enable",
    "freeinit_filter",
    "freeinit_ds",
    "freeinit_dt",
    "freeinit_iters",
    "latent_power",
    "latent_scale",
    "last_frame",
    "latent_power_last",
    "latent_scale_last",
)
# sd-webui-controlnet unit keys that only steer its UI or features animdiff does not have.
CONTROLNET_IGNORED = frozenset(
    {
        "low_vram",
        "lowvram",
        "guess_mode",
        "input_mode",
        "batch_input_gallery",
        "batch_mask_gallery",
        "batch_mask_dir",
        "batch_modifiers",
        "batch_image_files",
        "batch_keyframe_idx",
        "save_detected_map",
        "hr_option",
        "is_ui",
        "loopback",
        "use_preview_as_input",
        "generated_image",
        "mask",
        "mask_image",
        "inpaint_crop_input_image",
        "union_control_type",
        "pulid_mode",
        "ipadapter_input",
        "effective_region_mask",
        "effective_region_mask_weight",
        "advanced_weighting",
        "animatediff_batch",
        "output_dir",
        "control_type",
    }
)
# A1111 request fields animdiff does not use: the value at which they change nothing.
A1111_INERT: dict[str, Any] = {
    "enable_hr": False,
    "n_iter": 1,
    "restore_faces": False,
    "tiling": False,
    "script_name": None,
    "subseed_strength": 0,
    "init_images": None,
    "mask": None,
    "refiner_checkpoint": None,
}
SCHEDULERS = {"automatic": "", "karras": " Karras"}
# A1111's API defaults where they differ from animdiff's own (steps 50, CFG 7, sampler Euler).
A1111_DEFAULTS = {"steps": 50, "cfg_scale": 7.0, "width": 512, "height": 512, "sampler_name": "Euler"}
# Settings field -> the name an A1111 client used, for error messages.
A1111_LABELS = {
    "frames": "video_length",
    "context": "batch_size",
    "formats": "format",
    "motion_module": "model",
    "sampler": "sampler_name",
    "checkpoint": "sd_model_checkpoint",
    "clip_skip": "CLIP_stop_at_last_layers",
}


class A1111Unsupported(AnimdiffError):
    """A request the reference would run but that animdiff cannot (yet)."""

    http_status = 422


class A1111Request(BaseModel):
    """A1111's txt2img request (img2img adds `init_images` and its mask fields). Unknown keys are
    refused, so a misspelled key is reported instead of silently doing nothing."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool | None = None
    alwayson_scripts: dict[str, Any] | None = None
    force_task_id: str | None = None
    send_images: bool = True
    save_images: bool | None = None
    # accepted, used only at their inert values (see A1111_INERT) or without effect
    batch_size: int | None = None
    n_iter: int | None = None
    styles: list[str] | None = None
    subseed: int | None = None
    subseed_strength: float | None = None
    seed_resize_from_h: int | None = None
    seed_resize_from_w: int | None = None
    seed_enable_extras: bool | None = None
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool | None = None
    do_not_save_grid: bool | None = None
    eta: float | None = None
    denoising_strength: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool | None = None
    comments: dict[str, Any] | None = None
    enable_hr: bool | None = None
    firstphase_width: int | None = None
    firstphase_height: int | None = None
    hr_scale: float | None = None
    hr_upscaler: str | None = None
    hr_second_pass_steps: int | None = None
    hr_resize_x: int | None = None
    hr_resize_y: int | None = None
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str | None = None
    hr_negative_prompt: str | None = None
    hr_cfg: float | None = None
    script_name: str | None = None
    script_args: list[Any] | None = None
    infotext: str | None = None
    firstpass_image: str | None = None
    # img2img
    init_images: list[Any] | None = None
    resize_mode: int | None = None
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur: int | None = None
    mask_blur_x: int | None = None
    mask_blur_y: int | None = None
    mask_round: bool | None = None
    inpainting_fill: int | None = None
    inpaint_full_res: bool | None = None
    inpaint_full_res_padding: int | None = None
    inpainting_mask_invert: int | None = None
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool | None = None


def decode_base64(data: str, what: str) -> bytes:
    """Base64 (optionally a data: URI) to bytes; malformed input is a 422 naming the field."""
    if not isinstance(data, str) or not data.strip():
        raise ParamsError(f"{what}: empty image")
    text = data.strip()
    if text.startswith("data:"):
        _, sep, text = text.partition(",")
        if not sep:
            raise ParamsError(f"{what}: a data: URI without ',' before its data")
    text = "".join(text.split())
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ParamsError(f"{what}: not valid base64") from None


def looks_like_base64_image(value: str) -> bool:
    """A data: URI or text without a '.' (base64 has none; a file name has its extension)."""
    return value.startswith("data:") or "." not in value


def save_base64_image(data: str, folder: Path, what: str) -> str:
    """Decode, check it is an image, store it in `folder`; returns its name relative to the uploads."""
    raw = decode_base64(data, what)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as image:
            image.verify()
            fmt = (image.format or "png").lower()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ParamsError(f"{what}: the base64 data is not an image") from None
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{uuid.uuid4().hex}.{'jpg' if fmt == 'jpeg' else fmt}"
    (folder / name).write_bytes(raw)
    return f"{folder.name}/{name}"


def animatediff_args(scripts: dict[str, Any]) -> dict[str, Any] | None:
    """The AnimateDiff dict from `alwayson_scripts` (title case-insensitive, as A1111 matches)."""
    entry = next((v for k, v in scripts.items() if k.lower() == "animatediff"), None)
    if entry is None:
        return None
    args = entry.get("args") if isinstance(entry, dict) else None
    if not isinstance(args, list) or not args:
        raise ParamsError("alwayson_scripts.AnimateDiff.args must be a list holding one dict")
    first = args[0]
    if isinstance(first, dict):
        return first
    if len(args) > len(ANIMATEDIFF_POSITIONAL):
        raise ParamsError(
            f"alwayson_scripts.AnimateDiff.args: {len(args)} positional values; at most "
            f"{len(ANIMATEDIFF_POSITIONAL)} ({', '.join(ANIMATEDIFF_POSITIONAL)}); send a dict instead"
        )
    return dict(zip(ANIMATEDIFF_POSITIONAL, args, strict=False))


def translate(
    request: A1111Request, options: dict[str, Any], inputs_folder: Path, img2img: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """(settings values, ignored keys) of an A1111 request."""
    ignored: list[str] = []
    given = request.model_dump(exclude_unset=True)
    if img2img and not request.init_images:
        raise ParamsError("img2img needs init_images (base64 images; the first is the init image)")
    for key, inert in A1111_INERT.items():
        if img2img and key in IMG2IMG_KEYS:
            continue
        value = given.get(key)
        if value is not None and value != inert and value != [] and value != "":
            raise A1111Unsupported(f"{key}={value!r} is not supported by animdiff")
    scripts = dict(request.alwayson_scripts or {})
    ad = animatediff_args(scripts)
    if ad is None or not ad.get("enable", False):
        raise A1111Unsupported(
            "AnimateDiff is not enabled: this server renders animations only; send "
            'alwayson_scripts: {"AnimateDiff": {"args": [{"enable": true, ...}]}}'
        )
    values: dict[str, Any] = {"prompt": request.prompt, "negative_prompt": request.negative_prompt}
    values["seed"] = request.seed
    for key in ("steps", "cfg_scale", "width", "height"):
        value = getattr(request, key)
        values[key] = A1111_DEFAULTS[key] if value is None else value
    values["sampler"] = sampler_name(
        request.sampler_name or request.sampler_index or A1111_DEFAULTS["sampler_name"], request.scheduler
    )
    values.update(_override_settings({**options, **(request.override_settings or {})}, ignored))
    values.update(_animatediff_values(ad, ignored))
    if img2img:
        values.update(_img2img_values(request, inputs_folder, ignored))
        if ad.get("last_frame"):
            values["last_frame"] = _unit_image(ad["last_frame"], inputs_folder, "AnimateDiff last_frame")
    else:  # the latent blend is img2img's (reference 9.4): without an init image these do nothing
        for key in (*LATENT_KEYS, "last_frame"):
            if ad.get(key) is not None:
                values.pop(key, None)
                ignored.append(f"AnimateDiff.{key}")
    for title, entry in scripts.items():
        if title.lower() == "animatediff":
            continue
        if title.lower() == "controlnet":
            values["controlnet_units"] = controlnet_units(entry, inputs_folder, ignored)
            continue
        raise A1111Unsupported(
            f"alwayson_scripts: {title!r} is not available here (AnimateDiff, ControlNet are)"
        )
    used = _USED | IMG2IMG_KEYS if img2img else _USED
    if img2img and request.mask:
        used = used | {"inpainting_mask_invert"}
        used = used | {key for key, value in MASK_DEFAULTS.items() if given.get(key) == value}
    for key in given:
        if key not in A1111_INERT and key not in used and given[key] is not None:
            ignored.append(key)
    return values, ignored


LATENT_KEYS = ("latent_power", "latent_scale", "latent_power_last", "latent_scale_last")
IMG2IMG_KEYS = frozenset({"init_images", "mask", "denoising_strength"})
# A1111's img2img mask fields at the values animdiff's mask reading always applies (control.masks:
# binarised at 128, blurred 4 pixels each way) and masked content "original" (1): given so, they
# are honoured; `inpainting_mask_invert` is applied here (`_invert_mask_file`). Other values of
# these fields are listed as ignored.
MASK_DEFAULTS: dict[str, Any] = {
    "mask_blur": 4,
    "mask_blur_x": 4,
    "mask_blur_y": 4,
    "mask_round": True,
    "inpainting_fill": 1,
}


def _img2img_values(request: A1111Request, inputs_folder: Path, ignored: list[str]) -> dict[str, Any]:
    """init_images[0] as the init image (stored in the uploads), `mask` as a one-mask folder,
    `denoising_strength` as it is (A1111's 0.75 when absent, the settings' init-image default)."""
    images = request.init_images or []
    out: dict[str, Any] = {"init_image": _unit_image(images[0], inputs_folder, "init_images[0]")}
    if len(images) > 1:
        ignored.append(f"init_images[1:] ({len(images) - 1} more; the first is the init image)")
    if request.denoising_strength is not None:
        out["denoising_strength"] = request.denoising_strength
    if request.mask:
        folder = inputs_folder / f"mask-{uuid.uuid4().hex}"
        save_base64_image(request.mask, folder, "mask")
        _invert_mask_file(folder, request)
        out["mask_path"] = f"{inputs_folder.name}/{folder.name}"
    return out


def _invert_mask_file(folder: Path, request: A1111Request) -> None:
    """`inpainting_mask_invert` 1 ("Inpaint not masked"): the stored mask is binarised as A1111
    does and inverted (A1111's order; the later reading binarises again, which keeps 0/255, and
    blurs). 0 or absent leaves it as sent."""
    if request.inpainting_mask_invert in (None, 0):
        return
    if request.inpainting_mask_invert != 1:
        raise ParamsError(f"inpainting_mask_invert must be 0 or 1, got {request.inpainting_mask_invert}")
    from PIL import Image

    from animdiff.control.masks import binarize_mask, load_mask

    (path,) = folder.iterdir()
    inverted = 255 - binarize_mask(load_mask(path, folder))
    path.unlink()
    Image.fromarray(inverted).save(path.with_suffix(".png"))


_USED = frozenset(
    {
        "prompt",
        "negative_prompt",
        "seed",
        "sampler_name",
        "sampler_index",
        "scheduler",
        "steps",
        "cfg_scale",
        "width",
        "height",
        "override_settings",
        "alwayson_scripts",
        "force_task_id",
        "send_images",
    }
)


def sampler_name(name: str, scheduler: str | None) -> str:
    """A1111 names the noise schedule separately since 1.9 ("DPM++ 2M" + "Karras"); animdiff's
    sampler names carry it ("DPM++ 2M Karras")."""
    if not scheduler or scheduler.strip().lower() == "automatic":
        return name
    suffix = SCHEDULERS.get(scheduler.strip().lower())
    if suffix is None:
        raise ParamsError(f"scheduler {scheduler!r}: choose from Automatic, Karras")
    return name if name.lower().endswith(suffix.lower()) else name + suffix


def _override_settings(overrides: dict[str, Any], ignored: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if key == "sd_model_checkpoint" and value:
            out["checkpoint"] = value
        elif key == "CLIP_stop_at_last_layers" and value is not None:
            out["clip_skip"] = value
        elif key == "animatediff_default_save_formats" and value:
            out["formats"] = value
        else:
            ignored.append(f"override_settings.{key}")
    return out


def _animatediff_values(ad: dict[str, Any], ignored: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in ad.items():
        if key == "last_frame":  # an image: stored by `translate`
            continue
        if key in ANIMATEDIFF_FIELDS:
            if value is None or (key in ("video_source", "video_path", "model", "mask_path") and value == ""):
                continue
            out[ANIMATEDIFF_FIELDS[key]] = value
        elif key in ANIMATEDIFF_INERT:
            inert = ANIMATEDIFF_INERT[key]
            if key != "enable" and value not in (inert, None, ""):
                raise A1111Unsupported(f"AnimateDiff {key}={value!r} is not supported by animdiff yet")
        elif key in ANIMATEDIFF_IGNORED:
            ignored.append(f"AnimateDiff.{key}")
        else:
            known = ", ".join((*ANIMATEDIFF_FIELDS, *ANIMATEDIFF_INERT, *ANIMATEDIFF_IGNORED))
            raise ParamsError(f"AnimateDiff: unknown key {key!r}; the extension's keys are {known}")
    return out


def controlnet_units(entry: Any, inputs_folder: Path, ignored: list[str]) -> list[dict[str, Any]]:
    """sd-webui-controlnet's unit dicts as settings values (images given as base64 are stored)."""
    if "controlnet_units" not in Params.model_fields:
        raise A1111Unsupported("ControlNet is not supported yet")
    from animdiff.control_units import ControlNetUnit

    args = entry.get("args") if isinstance(entry, dict) else None
    if not isinstance(args, list):
        raise ParamsError("alwayson_scripts.ControlNet.args must be a list of unit dicts")
    fields = set(ControlNetUnit.model_fields)
    units = []
    for index, unit in enumerate(args):
        if not isinstance(unit, dict):
            raise ParamsError(f"ControlNet unit {index}: expected a dict, got {type(unit).__name__}")
        if not unit.get("enabled", True):
            continue
        out: dict[str, Any] = {}
        for key, value in unit.items():
            if key in ("image", "input_image"):
                if isinstance(value, dict):
                    value = value.get("image")
                if value:
                    out["image"] = _unit_image(value, inputs_folder, f"ControlNet unit {index} {key}")
            elif key == "batch_images" and isinstance(value, str) and "\n" in value.strip():
                raise A1111Unsupported(
                    f"ControlNet unit {index} batch_images: mask: and keyframe: lines are not supported yet"
                )
            elif key in fields:
                out[key] = value
            elif key in CONTROLNET_IGNORED:
                ignored.append(f"ControlNet.{index}.{key}")
            else:
                raise ParamsError(f"ControlNet unit {index}: unknown key {key!r}")
        units.append(out)
    return units


def _unit_image(value: Any, inputs_folder: Path, what: str) -> str:
    if not isinstance(value, str):
        raise ParamsError(f"{what}: expected a base64 image or a file name")
    if looks_like_base64_image(value):
        return save_base64_image(value, inputs_folder, what)
    return value  # a name in the input folders, checked at submit
