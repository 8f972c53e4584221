"""ControlNet units: the settings of one ControlNet, with the ControlNet extension's API names.

A unit names a ControlNet file (`model`, in the models folder's `ControlNet/` or a path), the
preprocessor that turns source frames into hints (`module`), how strongly and over which part of
the sampling it acts (`weight`, `guidance_start`, `guidance_end`, `control_mode`), how source
frames are fitted to the generation size (`resize_mode`), the preprocessor's resolution and
thresholds, and its own input: one `image` for every frame, or `batch_images`, a frame folder (or
video file) with one frame per output frame. A unit without its own input takes the job's
`video_path`, else its `video_source` (the A1111 extension's precedence).

Everything is checked when the settings are built: unknown preprocessors, thresholds outside
the preprocessor's sliders, a guidance range that ends before it starts. The command line gives
a unit as `key=value,key=value` (`parse_unit_text`); a value holding a comma is quoted.
"""

from __future__ import annotations

import re
import shlex
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from animdiff.errors import AnimdiffError

CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
RESIZE_MODE_LABELS = ("Just Resize", "Crop and Resize", "Resize and Fill")
DEFAULT_PROCESSOR_RES = 512

ControlMode = Literal[CONTROL_MODES]  # type: ignore[valid-type]
ResizeModeLabel = Literal[RESIZE_MODE_LABELS]  # type: ignore[valid-type]

# "control_v11p_sd15_canny [d14c016b]": the extension's model names carry a short hash.
# The inpaint ControlNet's preprocessors: the hint is the frame with its masked pixels at -1
# (control/masks.py `inpaint_hints`), built by the run from the job's masks, not by an image filter.
INPAINT_MODULES = ("inpaint", "inpaint_only")


def is_inpaint_module(name: str) -> bool:
    return name.strip().lower() in INPAINT_MODULES


_HASH_SUFFIX = re.compile(r"\s*\[[0-9a-fA-F]{6,}\]\s*$")


class ControlNetUnit(BaseModel):
    """One ControlNet ("Multi-ControlNet" is a list of these)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())

    model: str = Field(min_length=1, description="ControlNet file name in ControlNet/ or a path")
    module: str = Field("none", description="preprocessor (none, canny, invert, binary, ...)")
    weight: float = Field(1.0, ge=0.0, le=2.0, description="multiplier of the ControlNet's residuals")
    guidance_start: float = Field(0.0, ge=0.0, le=1.0, description="fraction of the steps where it starts")
    guidance_end: float = Field(1.0, ge=0.0, le=1.0, description="fraction of the steps where it ends")
    control_mode: ControlMode = Field("Balanced", description="Balanced, My prompt is more important, ...")
    resize_mode: ResizeModeLabel = Field("Crop and Resize", description="how source frames fit the size")
    processor_res: int = Field(DEFAULT_PROCESSOR_RES, ge=64, le=2048, description="preprocessor resolution")
    threshold_a: float | None = Field(None, description="first preprocessor threshold (default: its own)")
    threshold_b: float | None = Field(None, description="second preprocessor threshold (default: its own)")
    pixel_perfect: bool = Field(False, description="preprocessor resolution from the generation size")
    image: str | None = Field(None, description="one image used for every frame")
    batch_images: str | None = Field(None, description="frame folder (or video): one frame per frame")
    enabled: bool = Field(True, description="a disabled unit is kept but not used")

    @field_validator("model", mode="before")
    @classmethod
    def _strip_hash(cls, value: Any) -> Any:
        return _HASH_SUFFIX.sub("", value).strip() if isinstance(value, str) else value

    @field_validator("module", mode="before")
    @classmethod
    def _known_preprocessor(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        from animdiff.control.preprocess import find_preprocessor

        if not value.strip():
            return "none"
        if is_inpaint_module(value):
            return value.strip().lower()
        try:
            return find_preprocessor(value).name
        except AnimdiffError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("control_mode", mode="before")
    @classmethod
    def _control_mode(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
            index = int(value)
            return CONTROL_MODES[index] if 0 <= index < len(CONTROL_MODES) else value
        if isinstance(value, str):
            folded = _fold(value)
            for mode in CONTROL_MODES:
                if _fold(mode) == folded:
                    return mode
        return value

    @field_validator("resize_mode", mode="before")
    @classmethod
    def _resize_mode(cls, value: Any) -> Any:
        from animdiff.control.resize import ResizeMode

        if isinstance(value, bool):
            return value
        try:
            return ResizeMode.parse(value.strip() if isinstance(value, str) else value).label
        except AnimdiffError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("processor_res", mode="before")
    @classmethod
    def _default_resolution(cls, value: Any) -> Any:
        """The extension's API sends -1 for "the default"."""
        return DEFAULT_PROCESSOR_RES if value in (-1, "-1") else value

    @field_validator("threshold_a", "threshold_b", mode="before")
    @classmethod
    def _default_threshold(cls, value: Any) -> Any:
        return None if value in (-1, "-1", "", None) else value

    @field_validator("image", "batch_images", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _cross_field(self) -> ControlNetUnit:
        from animdiff.control.preprocess import find_preprocessor, resolve_thresholds

        if self.guidance_start > self.guidance_end:
            raise ValueError(
                f"guidance_start {self.guidance_start:g} must not be after guidance_end {self.guidance_end:g}"
            )
        if self.image and self.batch_images:
            raise ValueError("give either image or batch_images, not both")
        try:
            if not is_inpaint_module(self.module):
                resolve_thresholds(find_preprocessor(self.module), self.threshold_a, self.threshold_b)
        except AnimdiffError as exc:
            raise ValueError(str(exc)) from None
        return self

    # --- derived values ------------------------------------------------------------------------------
    @property
    def has_input(self) -> bool:
        return bool(self.image or self.batch_images)

    @property
    def thresholds(self) -> tuple[float, float]:
        """The two threshold values in effect (the preprocessor's defaults filled in; 0 for none)."""
        from animdiff.control.preprocess import find_preprocessor, resolve_thresholds

        if is_inpaint_module(self.module):
            return 0.0, 0.0
        return resolve_thresholds(find_preprocessor(self.module), self.threshold_a, self.threshold_b)

    def applies_at(self, step: int, total: int) -> bool:
        """Whether the unit acts at model evaluation `step` of `total` (counted from 0).

        The rule diffusers' ControlNet pipelines use: the whole step, from `step/total` to
        `(step+1)/total`, must lie inside [guidance_start, guidance_end]. So `guidance_end=0.5`
        over 20 steps acts in steps 0-9 and leaves steps 10-19 untouched. (The ControlNet
        extension tests only the step's start, `step/total <= guidance_end`, and so also acts in
        step 10; the two agree everywhere but on that boundary step.)
        """
        total = max(total, 1)
        return not (step / total < self.guidance_start or (step + 1) / total > self.guidance_end)


def _fold(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def parse_unit_text(text: str) -> dict[str, str]:
    """`model=x,module=canny,image="a,b.png"` -> {"model": "x", "module": "canny", "image": "a,b.png"}.

    Pairs are separated by commas; a value holding a comma is quoted with double or single
    quotes (a value holding one kind of quote is quoted with the other). Backslashes are kept
    as they are (Windows paths). Keys are the unit's field names (dashes are read as underscores).
    """
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace = ","
    lexer.whitespace_split = True
    lexer.commenters = ""
    lexer.escape = ""  # backslashes are path separators here, not escapes
    try:
        pairs = [item for item in lexer if item.strip()]
    except ValueError as exc:
        raise ValueError(f"ControlNet unit {text!r}: {exc}") from None
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"ControlNet unit {text!r}: {pair!r} is not key=value")
        if key in out:
            raise ValueError(f"ControlNet unit {text!r}: {key} is given twice")
        out[key] = value.strip()
    return out
