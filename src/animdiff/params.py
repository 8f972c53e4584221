"""The one settings model every entry point builds.

The CLI, the HTTP API (native and the A1111 `alwayson_scripts` shape) and the web UI all turn
their input into `Params`, so defaults and ranges live here and only here. Field names follow the
CLI flags (`--loop-number` is `loop_number`); the seed extension's names (`video_length`,
`batch_size`, `format`, ...) are accepted as aliases so an A1111 AnimateDiff payload validates as
it is. Validation raises `ParamsError` with a message that names the setting.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from animdiff.choices import (
    ALL_FORMATS,
    CLOSED_LOOP_MODES,
    FREEINIT_FILTERS,
    FUSE_METHODS,
    GROUPNORM_MODES,
    INTERP_MODES,
    PROMPT_INTERPOLATIONS,
    VIDEO_FORMATS,
    X264_PRESETS,
    X264_TUNES,
    resolve_overlap,
)
from animdiff.control_units import ControlNetUnit, parse_unit_text
from animdiff.errors import NotSupportedYetError, ParamsError

# Subscripting Literal with a tuple spreads it: the allowed values come from animdiff.choices.
ClosedLoop = Literal[CLOSED_LOOP_MODES]  # type: ignore[valid-type]
Fuse = Literal[FUSE_METHODS]  # type: ignore[valid-type]
GroupNormMode = Literal[GROUPNORM_MODES]  # type: ignore[valid-type]
Interp = Literal[INTERP_MODES]  # type: ignore[valid-type]
PromptInterpolation = Literal[PROMPT_INTERPOLATIONS]  # type: ignore[valid-type]
X264Preset = Literal[("", *X264_PRESETS)]  # type: ignore[valid-type]
X264Tune = Literal[("", *X264_TUNES)]  # type: ignore[valid-type]
FreeInitFilter = Literal[FREEINIT_FILTERS]  # type: ignore[valid-type]

MAX_SEED = 2**32 - 1
DEFAULT_FPS = 8  # the written animation's rate when neither the user nor a source video gives one
DEFAULT_INIT_IMAGE_STRENGTH = 0.75  # A1111's img2img default, for an init image without a strength
DEFAULT_CONTEXT = 16  # SD1.5 modules' trained length: the context when neither user nor module says


class MotionLora(BaseModel):
    """A motion LoRA (original `v2_lora_*.ckpt` layout) applied to the motion module."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="file name or path of the motion LoRA")
    strength: float = Field(1.0, ge=-10.0, le=10.0)


class Params(BaseModel):
    """Every setting of one animation job (the seed system's fields plus the usual txt2img ones)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    # --- what to draw -------------------------------------------------------------------------
    prompt: str = Field("", description="prompt; A1111 syntax and prompt travel lines")
    negative_prompt: str = Field("", description="negative prompt (not travelled)")
    width: int = Field(512, ge=64, le=2048, description="width in pixels, a multiple of 8")
    height: int = Field(512, ge=64, le=2048, description="height in pixels, a multiple of 8")
    steps: int = Field(20, ge=1, le=150, description="sampling steps")
    cfg_scale: float = Field(7.5, ge=1.0, le=30.0, description="classifier-free guidance scale")
    sampler: str = Field("DPM++ 2M Karras", description="sampler, as A1111 names it")
    seed: int = Field(-1, ge=-1, le=MAX_SEED, description="seed of the first frame; -1 picks one")
    clip_skip: int = Field(1, ge=1, le=12, description="stop the text encoder this many layers early")

    # --- models -------------------------------------------------------------------------------
    checkpoint: str | None = Field(None, description="SD1.5 or SDXL checkpoint: file name, path or folder")
    motion_module: str | None = Field(
        None,
        validation_alias=AliasChoices("motion_module", "model"),
        description="motion module file name or path (default: the first one found)",
    )
    motion_loras: list[MotionLora] = Field(default_factory=list, description="motion LoRAs with strengths")
    groupnorm: GroupNormMode = Field(
        "reference",
        description="GroupNorm statistics: 'reference' as the A1111 extension and the original "
        "AnimateDiff compute them, 'diffusers' as diffusers' UNetMotionModel does",
    )

    # --- AnimateDiff (the seed extension's fields) ---------------------------------------------
    frames: int = Field(
        0,
        ge=0,
        le=10_000,
        validation_alias=AliasChoices("frames", "video_length"),
        description="number of frames; 0 = the video's frame count, else the context batch size",
    )
    fps: int | None = Field(
        None,
        ge=1,
        le=240,
        description="frames per second of the written animation "
        f"(default: the source video's, else {DEFAULT_FPS})",
    )
    loop_number: int = Field(0, ge=0, le=65_535, description="display loop count; 0 loops forever")
    context: int | None = Field(
        None,
        ge=1,
        le=64,
        validation_alias=AliasChoices("context", "batch_size"),
        description="context batch size: frames the motion module sees at once (default: the module's "
        "trained length, 16; 8 for HotShot-XL)",
    )
    stride: int = Field(1, ge=1, le=16, description="context stride levels (1 = adjacent frames only)")
    overlap: int = Field(-1, ge=-1, description="frames shared by neighbouring windows; -1 = context // 4")
    closed_loop: ClosedLoop = Field("R-P", description="closed loop mode N, R-P, R+P or A")
    fuse: Fuse = Field(
        "overwrite",
        description="how window outputs combine: overwrite (the reference), flat or pyramid averaging",
    )
    prompt_interpolation: PromptInterpolation = Field(
        "slerp", description="prompt travel interpolation between keyframes"
    )
    formats: list[str] = Field(
        default_factory=lambda: ["gif", "png"],
        validation_alias=AliasChoices("formats", "format"),
        description="outputs: gif, mp4, webm, webp, png, txt (and frame for the API)",
    )
    interp: Interp = Field("Off", description="frame interpolation: Off or FILM")
    interp_x: int = Field(10, ge=1, le=100, description="FILM: frame-count multiplier (Interp X)")
    video_source: str | None = Field(
        None,
        description="source video (MP4, WEBM, MOV, MKV, GIF, WEBP) for the ControlNet units without input",
    )
    video_path: str | None = Field(
        None, description="folder of source frames for the ControlNet units without input"
    )
    video_dedupe: bool = Field(
        False,
        description="drop near-duplicate frames of the video source / video path as the reference's "
        "extraction does (FFmpeg mpdecimate); the source is read once more before sampling to count them",
    )
    controlnet_units: list[ControlNetUnit] = Field(
        default_factory=list,
        validation_alias=AliasChoices("controlnet_units", "controlnet"),
        description="ControlNet units, each as KEY=VALUE,KEY=VALUE (model, module, weight, guidance_start, "
        "guidance_end, control_mode, resize_mode, processor_res, threshold_a, threshold_b, pixel_perfect, "
        "image, batch_images); repeat the flag for several units",
    )
    request_id: str = Field("", max_length=64, description="appended to output file names")
    # --- img2img / video to video / inpainting (the reference's img2img fields) -------------------
    init_image: str | None = Field(
        None, description="init image: every frame starts from it, blended with noise (latent power/scale)"
    )
    last_frame: str | None = Field(None, description="last frame image: the animation ends on it")
    denoising_strength: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="img2img denoising strength (0 keeps the input, 1 = text to video); with a video source "
        "or path and no init image, video to video from its frames",
    )
    latent_power: float = Field(1.0, ge=0.1, le=10.0, description="init image: latent power of the blend")
    latent_scale: float = Field(32.0, ge=1.0, le=128.0, description="init image: latent scale of the blend")
    latent_power_last: float = Field(1.0, ge=0.1, le=10.0, description="last frame: latent power")
    latent_scale_last: float = Field(
        32.0, ge=1.0, le=128.0, description="last frame: latent scale of the blend"
    )
    mask_path: str | None = Field(
        None, description="inpaint mask folder: one mask for every frame or one per image (white repaints)"
    )

    # --- FreeInit (the reference's names) --------------------------------------------------------
    freeinit_enable: bool = Field(
        False, description="FreeInit: sample again from the result's low frequencies (iterations x the time)"
    )
    freeinit_filter: FreeInitFilter = Field("butterworth", description="FreeInit low-pass filter")
    freeinit_ds: float = Field(0.25, ge=0.0, le=1.0, description="FreeInit spatial stop frequency d_s")
    freeinit_dt: float = Field(0.25, ge=0.0, le=1.0, description="FreeInit temporal stop frequency d_t")
    freeinit_iters: int = Field(3, ge=1, le=10, description="FreeInit sampling runs (the first one included)")

    # --- output options (the reference's settings page) -----------------------------------------
    gif_palette: bool = Field(False, description="GIF: optimise the palette over all frames")
    gif_gifsicle: bool = Field(False, description="GIF: run gifsicle -O3 when it is installed")
    mp4_crf: int = Field(23, ge=0, le=51, description="MP4: constant rate factor")
    mp4_preset: X264Preset = Field("", description="MP4: x264 preset (empty = encoder default)")
    mp4_tune: X264Tune = Field("", description="MP4: x264 tune (empty = none)")
    webp_quality: int = Field(80, ge=0, le=100, description="WEBP: quality")
    webp_lossless: bool = Field(False, description="WEBP: lossless")

    # --- normalisers ------------------------------------------------------------------------------
    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, value: int, info: Any) -> int:
        if value % 8:
            raise ValueError("must be a multiple of 8")
        return value

    @field_validator("formats", mode="before")
    @classmethod
    def _normalise_formats(cls, value: Any) -> list[str]:
        if not isinstance(value, str | list | tuple):
            raise ValueError("must be a comma-separated string or a list of format names")
        items = value.split(",") if isinstance(value, str) else list(value)
        out: list[str] = []
        for item in items:
            name = str(item).strip().lower()
            if not name:
                continue
            if name not in ALL_FORMATS:
                raise ValueError(f"unknown format {item!r}; choose from {', '.join(ALL_FORMATS)}")
            if name not in out:
                out.append(name)
        if not any(f in VIDEO_FORMATS for f in out):
            raise ValueError("choose at least one of gif, mp4, webm, webp, png")
        return out

    @field_validator("interp", mode="before")
    @classmethod
    def _normalise_interp(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"off": "Off", "film": "FILM", "none": "Off"}.get(value.strip().lower(), value)
        if value is False or value is None:
            return "Off"
        return value

    @field_validator("closed_loop", mode="before")
    @classmethod
    def _normalise_closed_loop(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator(
        "mp4_preset",
        "mp4_tune",
        "fuse",
        "groupnorm",
        "prompt_interpolation",
        "freeinit_filter",
        mode="before",
    )
    @classmethod
    def _normalise_lowercase_choice(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, value: str) -> str:
        from animdiff.sampling.samplers import canonical_sampler_name

        return canonical_sampler_name(value)

    @field_validator("motion_loras", mode="before")
    @classmethod
    def _motion_lora_shorthand(cls, value: Any) -> Any:
        """Accept `name:strength` strings (the CLI's form) beside full objects.

        The text after the last colon is a strength unless it is part of a path (`C:\\x.ckpt`);
        a strength that is not a number is an error, not part of the name.
        """
        if isinstance(value, str | dict):
            value = [value]
        if value is not None and not isinstance(value, list | tuple):
            raise ValueError("must be a list of motion LoRAs (names, name:strength, or objects)")
        out = []
        for item in value or []:
            if not isinstance(item, str):
                out.append(item)
                continue
            name, sep, strength = item.rpartition(":")
            if not sep or "/" in strength or "\\" in strength:
                out.append({"name": item})
            elif _is_number(strength):
                out.append({"name": name, "strength": float(strength)})
            else:
                raise ValueError(f"motion LoRA {item!r}: strength {strength!r} is not a number")
        return out

    @field_validator("controlnet_units", mode="before")
    @classmethod
    def _controlnet_shorthand(cls, value: Any) -> Any:
        """Accept the CLI's `key=value,key=value` strings beside objects, and one unit alone."""
        if value is None:
            return []
        if isinstance(value, str | dict | ControlNetUnit):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ValueError("must be a list of ControlNet units")
        return [parse_unit_text(item) if isinstance(item, str) else item for item in value]

    @model_validator(mode="after")
    def _cross_field(self) -> Params:
        if self.context is not None and self.overlap >= self.context:
            raise ValueError(f"overlap {self.overlap} must be smaller than context batch size {self.context}")
        if self.video_source and self.video_path:
            raise ValueError("give either video_source or video_path, not both")
        if self.last_frame and not self.init_image:
            raise ValueError("last_frame needs init_image")
        if self.video_dedupe and not (self.video_source or self.video_path):
            raise ValueError("video_dedupe needs a video_source or video_path")
        if self.video_dedupe and self.mask_path:
            raise ValueError("video_dedupe with mask_path: masks are matched to frames by position")
        if self.mask_path and not (self.init_image or self.video_source or self.video_path):
            raise ValueError("mask_path needs an init_image, video_source or video_path to inpaint")
        shared = self.video_path or self.video_source
        for index, unit in enumerate(self.controlnet_units):
            if unit.enabled and not unit.has_input and not shared:
                raise ValueError(
                    f"ControlNet unit {index} ({unit.model}) has no input: give it image= or batch_images=, "
                    "or give --video-source or --video-path"
                )
        return self

    @property
    def active_controlnet_units(self) -> list[ControlNetUnit]:
        """The enabled units, in order."""
        return [unit for unit in self.controlnet_units if unit.enabled]

    # --- derived values -----------------------------------------------------------------------------
    @property
    def is_img2img(self) -> bool:
        """Sampling starts from init latents: an init image, or a source video with a strength."""
        return bool(self.init_image) or (
            self.denoising_strength is not None and bool(self.video_source or self.video_path)
        )

    @property
    def strength(self) -> float:
        """The denoising strength in use: the setting; with an init image and none, A1111's img2img
        default 0.75; else 1 (the whole schedule, text to video)."""
        if self.denoising_strength is not None:
            return self.denoising_strength
        return DEFAULT_INIT_IMAGE_STRENGTH if self.init_image else 1.0

    @property
    def resolved_overlap(self) -> int:
        """Overlap -1 means a quarter of the context batch size (from the size before any capping).

        With the context unset this is for SD1.5's trained length; a job resolves it from the motion
        module's (prepare.FrameCounts)."""
        return resolve_overlap(self.context or DEFAULT_CONTEXT, self.overlap)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def make_params(data: dict[str, Any] | None = None, **kwargs: Any) -> Params:
    """Build `Params`, turning pydantic's report into one `ParamsError` a user can read."""
    return validate_params({**(data or {}), **kwargs})


def validate_params(values: dict[str, Any], label: Callable[[str], str] = str) -> Params:
    """`make_params` for callers that name settings their own way (`label("cfg_scale")` is the
    CLI's `--cfg`, the API's field name), so a message names what the user typed."""
    try:
        return Params.model_validate(values)
    except ValidationError as exc:
        raise ParamsError(describe_validation_error(exc, label)) from None


# pydantic's error types -> our wording (the limit comes from the error's context)
_MESSAGES = {
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be greater than {gt}",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "bool_parsing": "must be true or false",
    "string_too_long": "is too long (at most {max_length} characters)",
    "string_too_short": "must not be empty",
    "extra_forbidden": "unknown setting",
}


def describe_validation_error(exc: ValidationError, label: Callable[[str], str] = str) -> str:
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        where = ".".join([label(loc[0]), *loc[1:]]) if loc else ""
        template = _MESSAGES.get(err["type"])
        if template is not None:
            message = template.format(**err.get("ctx", {}))
        elif err["type"] == "literal_error":
            message = "choose from " + err.get("ctx", {}).get("expected", "").replace("'", "")
        else:
            message = err["msg"].removeprefix("Value error, ")
        shown = err.get("input")
        if loc and err["type"] != "extra_forbidden" and isinstance(shown, int | float | str):
            where = f"{where} {shown!r}" if isinstance(shown, str) else f"{where} {shown}"
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)


def resolve_seed(seed: int) -> int:
    """-1 means a fresh random seed; the resolved seed is what files and infotext record."""
    return random.randint(0, MAX_SEED) if seed == -1 else seed


# Settings the model accepts (so payloads written for the reference validate) whose behaviour is
# not built yet: refused by `check_supported`, hidden from the CLI's --help.
NOT_BUILT_FIELDS: tuple[str, ...] = ()


def check_supported(params: Params) -> None:
    """Refuse settings whose behaviour is not built yet, rather than ignore them.

    A video source or frame folder feeds ControlNet units, or with a denoising strength the init
    latents of video to video; with neither it would do nothing, so it is refused.
    """
    if (
        (params.video_source or params.video_path)
        and not params.active_controlnet_units
        and params.denoising_strength is None
        and not params.init_image
    ):
        given = "video_source" if params.video_source else "video_path"
        raise NotSupportedYetError(
            f"{given} without a ControlNet unit or a denoising strength: give --denoising-strength "
            "(0..1) for video to video from the frames themselves, or add a ControlNet unit "
            "(--controlnet model=NAME,module=canny) to follow the video"
        )
    if params.freeinit_enable and params.is_img2img:
        raise NotSupportedYetError("FreeInit with img2img / video to video is not supported yet")
