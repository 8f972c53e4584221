"""A1111's "parameters" text: written into every output, read back to restore the settings.

The layout is A1111's so its PNG Info tab and "send to txt2img" understand our files: the
prompt (any number of lines), an optional "Negative prompt: " line, and one line of
"Key: value" pairs where any value that could be mistaken for structure is JSON-quoted. The
AnimateDiff value is the reference's "k: v" list; animdiff's own settings are appended only when
they differ from their defaults, so texts of ordinary jobs look exactly like the reference's.

Unlike A1111 the text is not stripped, so a prompt with leading or trailing blank lines comes
back unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import animdiff
from animdiff.control_units import ControlNetUnit
from animdiff.errors import ParamsError
from animdiff.params import DEFAULT_CONTEXT, DEFAULT_FPS, MotionLora, Params

NEGATIVE = "Negative prompt: "
ANIMATEDIFF = "AnimateDiff"
CONTROLNET = "ControlNet"

# Settings animdiff has and the reference has not; written only when not at these values.
OWN_DEFAULTS = {"fuse": "overwrite", "prompt_interpolation": "slerp", "groupnorm": "reference"}
LATENT_KEYS = ("latent_power", "latent_scale", "latent_power_last", "latent_scale_last")
FREEINIT_KEYS = ("freeinit_filter", "freeinit_ds", "freeinit_dt", "freeinit_iters")

_DECODER = json.JSONDecoder()
_KEY = re.compile(r"\s*([^:,]+?)\s*(:\s*|,|$)")
# An AnimateDiff item: a plain word, then ": ". Pieces of a value that was split on ", " do not
# look like this and are glued back (a motion module named "a, b.ckpt" survives).
_ITEM = re.compile(r"(\w+): (.*)", re.DOTALL)
_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_MOTION_LORA = re.compile(rf"(.+?)@({_FLOAT})(?:\+|$)", re.DOTALL)
_MIN_PARAMS_KEYS = 3  # A1111's test for "the last line is the parameters line"


def quote(value: str) -> str:
    """A1111's rule, plus quotes and outer spaces, which its reader would otherwise eat."""
    if value == value.strip() and not any(ch in value for ch in ',:"\n\r'):
        return value
    return json.dumps(value, ensure_ascii=False)


def format_motion_loras(loras: list[MotionLora]) -> str:
    """`name@strength+name@strength`: free of ", " and ": ", which would break A1111's split."""
    return "+".join(f"{lora.name}@{lora.strength!r}" for lora in loras)


def parse_motion_loras(text: str) -> list[dict[str, Any]]:
    out = []
    pos = 0
    while pos < len(text):
        match = _MOTION_LORA.match(text, pos)
        if match is None:
            raise ParamsError(f"infotext: cannot read motion_lora {text!r} (expected name@strength+...)")
        out.append({"name": match.group(1), "strength": float(match.group(2))})
        pos = match.end()
    return out


# The ControlNet extension's infotext keys -> unit fields, in the order it writes them.
_CONTROLNET_KEYS = (
    ("Module", "module"),
    ("Model", "model"),
    ("Weight", "weight"),
    ("Resize Mode", "resize_mode"),
    ("Processor Res", "processor_res"),
    ("Threshold A", "threshold_a"),
    ("Threshold B", "threshold_b"),
    ("Guidance Start", "guidance_start"),
    ("Guidance End", "guidance_end"),
    ("Pixel Perfect", "pixel_perfect"),
    ("Control Mode", "control_mode"),
)
_CONTROLNET_ITEM = re.compile(r"([A-Z][A-Za-z ]*): (.*)", re.DOTALL)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and not isinstance(value, float) else repr(value)


def format_controlnet(unit: ControlNetUnit, model_name: str, short_hash: str | None = None) -> str:
    """One unit as the ControlNet extension records it (thresholds a preprocessor lacks are -1)."""
    from animdiff.control.preprocess import find_preprocessor
    from animdiff.control_units import is_inpaint_module

    entry = None if is_inpaint_module(unit.module) else find_preprocessor(unit.module)
    a, b = unit.thresholds
    values = {
        "module": unit.module,
        "model": f"{model_name} [{short_hash}]" if short_hash else model_name,
        "weight": repr(float(unit.weight)),
        "resize_mode": unit.resize_mode,
        "processor_res": unit.processor_res,
        "threshold_a": _number(a) if entry is not None and entry.threshold_a is not None else -1,
        "threshold_b": _number(b) if entry is not None and entry.threshold_b is not None else -1,
        "guidance_start": repr(float(unit.guidance_start)),
        "guidance_end": repr(float(unit.guidance_end)),
        "pixel_perfect": unit.pixel_perfect,
        "control_mode": unit.control_mode,
    }
    return ", ".join(f"{key}: {values[name]}" for key, name in _CONTROLNET_KEYS)


def parse_controlnet(text: str) -> dict[str, Any]:
    """A `ControlNet N` value back into unit settings (the model without its hash)."""
    items: list[list[str]] = []
    for piece in text.split(", "):
        match = _CONTROLNET_ITEM.fullmatch(piece)
        if match is None and items:
            items[-1][1] += ", " + piece  # a value that held ", " (a model name)
        elif match is not None:
            items.append([match.group(1), match.group(2)])
    names = dict(_CONTROLNET_KEYS)
    unit: dict[str, Any] = {}
    for key, value in items:
        if key in names:
            unit[names[key]] = value
    if "model" not in unit:
        raise ParamsError(f"infotext: cannot read ControlNet unit {text!r} (no Model)")
    if "pixel_perfect" in unit:
        unit["pixel_perfect"] = unit["pixel_perfect"].strip().lower() == "true"
    return unit


def build_infotext(
    params: Params,
    *,
    seed: int,
    frames: int,
    overlap: int,
    generated: int | None = None,
    model_name: str | None = None,
    model_hash: str | None = None,
    motion_module: str | None = None,
    mm_hash: str | None = None,
    version: str | None = None,
    fps: int | None = None,
    context: int | None = None,
    controlnets: Sequence[tuple[int, ControlNetUnit, str, str | None]] = (),
) -> str:
    """The text for one result; `seed`, `frames` and `overlap` are the resolved values, and
    `generated` the frames sampled when more than `frames` (recorded so the text says so).
    `fps` and `context` are the resolved rate and context batch size (default: the settings').
    `controlnets` are (index, unit, model name, short hash) of the units used, written as the
    ControlNet extension writes them (`ControlNet 0: "Module: canny, Model: name [hash], ..."`).

    `model_name` and `motion_module` default to the names in `params`; pass the resolved names
    (checkpoint name without extension, module file name) when they are known.
    """
    model = model_name if model_name is not None else params.checkpoint
    module = motion_module if motion_module is not None else params.motion_module
    fields: list[tuple[str, object]] = [
        ("Steps", params.steps),
        ("Sampler", params.sampler),
        ("CFG scale", params.cfg_scale),
        ("Seed", seed),
        ("Size", f"{params.width}x{params.height}"),
        ("Model hash", model_hash or None),
        ("Model", model or None),
        ("Clip skip", params.clip_skip if params.clip_skip > 1 else None),
        ("Denoising strength", params.strength if params.is_img2img else None),
        (
            ANIMATEDIFF,
            _animatediff_value(params, module, frames, overlap, mm_hash, generated, fps, context),
        ),
        *(
            (f"{CONTROLNET} {index}", format_controlnet(unit, name, short_hash))
            for index, unit, name, short_hash in controlnets
        ),
        ("Version", version if version is not None else f"animdiff {animdiff.__version__}"),
    ]
    line = ", ".join(f"{key}: {quote(str(value))}" for key, value in fields if value is not None)

    text = params.prompt
    if params.negative_prompt:
        negative = NEGATIVE + params.negative_prompt
        text = f"{text}\n{negative}" if text else negative
    return f"{text}\n{line}" if text else line


def _animatediff_value(
    params: Params,
    module: str | None,
    frames: int,
    overlap: int,
    mm_hash: str | None,
    generated: int | None = None,
    fps: int | None = None,
    context: int | None = None,
) -> str:
    items: list[tuple[str, object]] = [
        ("model", module or None),
        ("video_length", frames),
        ("fps", fps or params.fps or DEFAULT_FPS),
        ("loop_number", params.loop_number),
        ("closed_loop", params.closed_loop),
        ("batch_size", context or params.context or DEFAULT_CONTEXT),
        ("stride", params.stride),
        ("overlap", overlap),
        ("interp", params.interp),
        ("interp_x", params.interp_x),
        ("freeinit_enable", params.freeinit_enable),
        ("request_id", params.request_id or None),
        ("mm_hash", mm_hash or None),
    ]
    for key, default in OWN_DEFAULTS.items():
        if getattr(params, key) != default:
            items.append((key, getattr(params, key)))
    if params.freeinit_enable:  # ours: the reference records only freeinit_enable
        items += [(key, getattr(params, key)) for key in FREEINIT_KEYS]
    if params.init_image:  # the reference's img2img latent blend settings (9.4)
        keys = LATENT_KEYS if params.last_frame else LATENT_KEYS[:2]
        items += [(key, getattr(params, key)) for key in keys]
    if params.motion_loras:
        items.append(("motion_lora", format_motion_loras(params.motion_loras)))
    if generated is not None and generated > frames:
        # Fewer frames than the context: the extra ones were generated and dropped.
        items.append(("generated_frames", generated))
    return ", ".join(f"{key}: {value}" for key, value in items if value is not None)


def parse_infotext(text: str) -> dict[str, str]:
    """A1111-style fields: "Prompt", "Negative prompt", then every key of the parameters line.

    The AnimateDiff value is replaced by one "AnimateDiff <key>" entry per item, as the
    reference's paste-back does.
    """
    head, _, last = text.rpartition("\n")
    fields = _parse_params_line(last)
    if fields is None:
        head, fields = text, {}
    if head.startswith(NEGATIVE):
        prompt, negative = "", head[len(NEGATIVE) :]
    else:
        cut = head.find("\n" + NEGATIVE)
        prompt, negative = (head, "") if cut < 0 else (head[:cut], head[cut + 1 + len(NEGATIVE) :])

    out = {"Prompt": prompt, "Negative prompt": negative}
    for key, value in fields.items():
        if key == ANIMATEDIFF:
            out.update({f"{ANIMATEDIFF} {k}": v for k, v in _split_animatediff(value).items()})
        else:
            out[key] = value
    return out


def _parse_params_line(line: str) -> dict[str, str] | None:
    """Key/value pairs of a parameters line, or None when the line is not one (part of a prompt)."""
    out: dict[str, str] = {}
    keyed = 0
    pos = 0
    while pos < len(line):
        match = _KEY.match(line, pos)
        if match is None:
            return None
        key, sep = match.group(1), match.group(2)
        pos = match.end()
        if not sep.startswith(":"):
            out[key] = key  # A1111 writes a flag whose value equals its key as the bare key
            continue
        keyed += 1
        value = None
        if line.startswith('"', pos):
            try:
                value, pos = _DECODER.raw_decode(line, pos)
            except json.JSONDecodeError:
                value = None  # like A1111: a value that only looks quoted is taken as written
        if not isinstance(value, str):
            end = line.find(",", pos)
            end = len(line) if end < 0 else end
            value = line[pos:end]
            pos = end
        out[key] = value
        if pos < len(line):
            if line[pos] != ",":
                return None
            pos += 1
    return out if keyed >= _MIN_PARAMS_KEYS else None


def _split_animatediff(value: str) -> dict[str, str]:
    items: list[list[str]] = []
    for piece in value.split(", "):
        match = _ITEM.fullmatch(piece)
        if match is None and items:
            items[-1][1] += ", " + piece
        elif match is not None:
            items.append([match.group(1), match.group(2)])
    return {key: item for key, item in items}


def _flag(value: str) -> bool:
    """Python's str() of a bool, as the reference writes it."""
    if value.strip() not in ("True", "False"):
        raise ValueError(value)
    return value.strip() == "True"


# (infotext key, Params field, conversion)
_CONVERSIONS: tuple[tuple[str, str, Any], ...] = (
    ("Steps", "steps", int),
    ("Sampler", "sampler", str),
    ("CFG scale", "cfg_scale", float),
    ("Seed", "seed", int),
    ("Clip skip", "clip_skip", int),
    ("Model", "checkpoint", str),
    ("AnimateDiff model", "motion_module", str),
    ("AnimateDiff video_length", "frames", int),
    ("AnimateDiff fps", "fps", int),
    ("AnimateDiff loop_number", "loop_number", int),
    ("AnimateDiff closed_loop", "closed_loop", str),
    ("AnimateDiff batch_size", "context", int),
    ("AnimateDiff stride", "stride", int),
    ("AnimateDiff overlap", "overlap", int),
    ("AnimateDiff interp", "interp", str),
    ("AnimateDiff interp_x", "interp_x", int),
    ("AnimateDiff request_id", "request_id", str),
    ("AnimateDiff fuse", "fuse", str),
    ("AnimateDiff prompt_interpolation", "prompt_interpolation", str),
    ("AnimateDiff groupnorm", "groupnorm", str),
    ("AnimateDiff freeinit_enable", "freeinit_enable", _flag),
    ("AnimateDiff freeinit_filter", "freeinit_filter", str),
    ("AnimateDiff freeinit_ds", "freeinit_ds", float),
    ("AnimateDiff freeinit_dt", "freeinit_dt", float),
    ("AnimateDiff freeinit_iters", "freeinit_iters", int),
    ("Denoising strength", "denoising_strength", float),
    ("AnimateDiff latent_power", "latent_power", float),
    ("AnimateDiff latent_scale", "latent_scale", float),
    ("AnimateDiff latent_power_last", "latent_power_last", float),
    ("AnimateDiff latent_scale_last", "latent_scale_last", float),
)


def params_from_infotext(text: str) -> dict[str, Any]:
    """Settings for `make_params` from an infotext; keys the text lacks are left out.

    Output formats and encoder settings are not in the text (as in the reference), so they keep
    whatever the caller merges in.
    """
    # A TXT file ends with a newline after the parameters line; it belongs to the file, not the text.
    fields = parse_infotext(text.rstrip("\r\n"))
    out: dict[str, Any] = {"prompt": fields["Prompt"], "negative_prompt": fields["Negative prompt"]}
    for key, name, convert in _CONVERSIONS:
        if key in fields:
            out[name] = _convert(key, fields[key], convert)
    schedule = fields.get("Schedule type")
    if "sampler" in out and schedule and schedule != "Automatic":
        # Newer A1111 writes "Sampler: DPM++ 2M, Schedule type: Karras"; our names join them.
        out["sampler"] = f"{out['sampler']} {schedule}"
    if "Size" in fields:
        width, sep, height = fields["Size"].partition("x")
        if not sep:
            raise ParamsError(f"infotext: Size {fields['Size']!r} is not WIDTHxHEIGHT")
        out["width"] = _convert("Size", width, int)
        out["height"] = _convert("Size", height, int)
    if f"{ANIMATEDIFF} motion_lora" in fields:
        out["motion_loras"] = parse_motion_loras(fields[f"{ANIMATEDIFF} motion_lora"])
    units = sorted(
        (int(key.split()[1]), value)
        for key, value in fields.items()
        if re.fullmatch(rf"{CONTROLNET} \d+", key)
    )
    if units:
        out["controlnet_units"] = [parse_controlnet(value) for _, value in units]
    return out


def _convert(key: str, value: str, convert: Any) -> Any:
    try:
        return convert(value.strip()) if convert is not str else value
    except ValueError:
        what = "True or False" if convert is _flag else f"a {convert.__name__}"
        raise ParamsError(f"infotext: {key} {value!r} is not {what}") from None
