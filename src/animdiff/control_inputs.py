"""ControlNet units from settings to hints: resolved and probed before sampling, read once per job.

`prepare_units` (called by `prepare`) resolves each enabled unit's ControlNet file through the
models folder, checks what the file is (an SDXL ControlNet with an SD1.5 checkpoint, or the
reverse, is refused, naming both files), picks the unit's input by the A1111 extension's
precedence (the unit's own `image` / `batch_images` > `video_path` > `video_source`) and probes
it (frame count, rate, size) without decoding it. `unit_hints` (called by the run) reads the
frames the job needs, resized to the generation size while they are read, and runs the
preprocessor on them.

The frame-count rules that follow from the inputs are in `prepare.FrameCounts`; this module only
reports how many frames each input has (`PreparedUnit.frames`, None for a single image, which is
used for every frame).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from animdiff.control_units import ControlNetUnit
from animdiff.errors import ModelTypeError
from animdiff.models.detect import Kind, detect_file
from animdiff.models.store import ModelStore
from animdiff.params import Params

if TYPE_CHECKING:
    from animdiff.control.decimate import Decimate


@dataclass(frozen=True)
class PreparedUnit:
    """An enabled unit with its ControlNet file and its probed input."""

    index: int  # position in `Params.controlnet_units` (the infotext's "ControlNet N")
    unit: ControlNetUnit
    model: Path
    source: Path  # an image file, a frame folder or a video file
    source_kind: str  # "image", "folder", "video" or "animation"
    frames: int | None  # frames the input has; None for one image used for every frame
    size: tuple[int, int]  # (width, height) of the input as displayed
    fps: Fraction | None  # the input's own rate (video files only)
    dedupe: bool = False  # near-duplicate frames dropped while reading (the shared input only)
    annotators: Path | None = None  # where a model-based preprocessor reads its weights

    def describe(self) -> str:
        count = "1 image for every frame" if self.frames is None else f"{self.frames} frames"
        return (
            f"ControlNet {self.index}: {self.model.name}, {self.unit.module}, weight {self.unit.weight:g}, "
            f"input {self.source} ({count}, {self.size[0]}x{self.size[1]})"
        )


def prepare_units(
    params: Params, store: ModelStore, checkpoint: Path | str, *, sdxl: bool = False
) -> tuple[PreparedUnit, ...]:
    """Every enabled unit resolved and probed; raises an `AnimdiffError` naming the file at fault.

    `sdxl`: the checkpoint is an SDXL one; each ControlNet must be of the checkpoint's family.
    """
    from animdiff.models.controlnet import require_controlnet

    prepared = []
    for index, unit in enumerate(params.controlnet_units):
        if not unit.enabled:
            continue
        path = store.resolve(unit.model, "controlnet")
        found = detect_file(path)
        if found.kind is Kind.CONTROLNET_SDXL and not sdxl:
            raise ModelTypeError(
                f"ControlNet unit {index}: {path} is an SDXL ControlNet; it does not fit the SD1.5 "
                f"checkpoint {checkpoint}"
            )
        if found.kind is Kind.CONTROLNET_SD15 and sdxl:
            raise ModelTypeError(
                f"ControlNet unit {index}: {path} is an SD1.5 ControlNet; it does not fit the SDXL "
                f"checkpoint {checkpoint}"
            )
        require_controlnet(path, found)
        annotators = _require_runnable_preprocessor(index, unit, store)
        prepared.append(replace(_probe_input(index, unit, path, params), annotators=annotators))
    return tuple(prepared)


def _require_runnable_preprocessor(index: int, unit: ControlNetUnit, store: ModelStore) -> Path | None:
    """A model-based preprocessor needs the annotators extra and its weight files: both are checked
    here, before any model is loaded, and the error names what to install or which file goes
    where. Returns the annotators folder the unit's preprocessor reads (None when it needs none)."""
    from animdiff.control import find_preprocessor
    from animdiff.control.annotators import annotator_folder, check_annotator, is_model_based
    from animdiff.control.preprocess import PreprocessorError
    from animdiff.control_units import is_inpaint_module

    if is_inpaint_module(unit.module):
        return None  # its hint is built from the job's masks (pipeline.Animator.control_layer)
    entry = find_preprocessor(unit.module)
    if not is_model_based(entry):
        return None
    folder = annotator_folder(store.root)
    try:
        check_annotator(entry, folder)
    except PreprocessorError as exc:
        raise type(exc)(f"ControlNet unit {index}: {exc}") from exc
    return folder


def _probe_input(index: int, unit: ControlNetUnit, model: Path, params: Params) -> PreparedUnit:
    from animdiff.control import VideoInputError, probe_video

    if unit.image:
        source = Path(unit.image).expanduser()
        width, height = _image_size(source, index)
        return PreparedUnit(index, unit, model, source, "image", None, (width, height), None)
    given = unit.batch_images or params.video_path or params.video_source
    assert given is not None  # Params refuses a unit without any input
    dedupe = params.video_dedupe and not unit.batch_images
    try:
        info = probe_video(given)
        frames = kept_frame_count(info.path) if dedupe else info.frame_count
    except VideoInputError as exc:
        raise VideoInputError(f"ControlNet unit {index}: {exc}") from exc
    return PreparedUnit(index, unit, model, info.path, info.kind, frames, info.size, info.fps, dedupe)


def kept_frame_count(path: Path) -> int:
    """Frames left after near-duplicate dropping: known only by reading them all, one at a time
    at the source size (memory: two frames), so a deduplicated source costs one extra decode."""
    from contextlib import closing

    from animdiff.control import REFERENCE_DECIMATE, iter_video_frames

    with closing(iter_video_frames(path, decimate=REFERENCE_DECIMATE)) as frames:
        return sum(1 for _ in frames)


def _image_size(path: Path, index: int) -> tuple[int, int]:
    from PIL import Image, ImageOps, UnidentifiedImageError

    from animdiff.control import VideoInputError

    if not path.is_file():
        what = "is a folder (use batch_images= for frame folders)" if path.is_dir() else "does not exist"
        raise VideoInputError(f"ControlNet unit {index}: image {path} {what}")
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            return ImageOps.exif_transpose(image).size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise VideoInputError(f"ControlNet unit {index}: image {path} cannot be read ({exc})") from exc


def _decimate(dedupe: bool) -> Decimate | None:
    from animdiff.control import REFERENCE_DECIMATE

    return REFERENCE_DECIMATE if dedupe else None


def fewest_frames(units: tuple[PreparedUnit, ...]) -> int | None:
    """The fewest frames among the units' multi-frame inputs (the reference's `min_cn`)."""
    counts = [unit.frames for unit in units if unit.frames is not None]
    return min(counts) if counts else None


def source_fps(units: tuple[PreparedUnit, ...]) -> int | None:
    """The rate of the first unit input that has one (a video file), rounded to whole frames/s."""
    for unit in units:
        if unit.fps is not None and unit.fps > 0:
            return max(1, min(240, round(unit.fps)))
    return None


def unit_hints(prepared: PreparedUnit, count: int, width: int, height: int) -> np.ndarray:
    """(count, height, width, 3) uint8 hints: the input's first `count` frames (a single image is
    repeated without copies), fitted with the unit's resize mode, through its preprocessor."""
    from animdiff.control import preprocess_frames, read_video_frames, resize_frame
    from animdiff.control.folder import load_image

    unit = prepared.unit
    size = (width, height)
    if prepared.frames is None:
        frames = [resize_frame(load_image(prepared.source), size, unit.resize_mode, fill="median")]
    else:
        frames = read_video_frames(
            prepared.source, count, size, unit.resize_mode, fill="median", decimate=_decimate(prepared.dedupe)
        )
    resolution = min(width, height) if unit.pixel_perfect else unit.processor_res
    hints = np.stack(
        list(
            preprocess_frames(
                unit.module,
                frames,
                processor_res=resolution,
                threshold_a=unit.threshold_a,
                threshold_b=unit.threshold_b,
                annotators=prepared.annotators,
            )
        )
    )
    if prepared.frames is None:
        return np.broadcast_to(hints, (count, *hints.shape[1:]))
    if len(hints) < count:
        raise ValueError(f"{prepared.source} gave {len(hints)} frames, {count} were needed")
    return hints
