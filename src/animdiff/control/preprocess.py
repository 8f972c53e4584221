"""ControlNet preprocessors ("annotators") that need no weights, and the table every front end reads.

A ControlNet does not see the source frame itself but a *hint* made from it: edges, a scribble,
a colour grid. `PREPROCESSORS` lists each preprocessor once, with the names and ranges of its two
threshold sliders and whether it uses the processor resolution, so the CLI, the web UI and the API
validate and label the same way. Model-based annotators (depth, pose, soft edge, line art, normal,
straight lines) are listed too, with the weight files they need; they run through the optional
`animdiff[annotators]` extra (`annotators.py`), reading those files from
`<models-dir>/ControlNetAnnotators/`, and asking for one without them says what to install.

How a hint is made, as the ControlNet extension makes it:

1. The frame is scaled so its short side is the processor resolution (cubic when enlarging,
   area when shrinking), and padded at the bottom/right to multiples of 64 by repeating its edge.
2. The preprocessor runs on that image; the padding is cut off again.
3. The hint is scaled back to the frame's size. Binary hints (edges, scribbles) keep every edge
   pixel when shrunk (area, then any coverage counts as an edge) and stay sharp when enlarged
   (nearest); palette hints (the colour grid) use nearest; other hints area/cubic. (The extension
   thins one-pixel edges after enlarging instead; with pixel-perfect resolution, our usual case,
   there is nothing to scale.)

Frames reach here already resized to the generation size (the reader resizes as it reads), so
"pixel perfect" — the extension's rule that picks the resolution from the source and target size
— gives the short side of the generation size; `pixel_perfect_resolution` implements the general
rule for callers with a source of another size.

All hints are HxWx3 uint8 RGB, the frame's size. OpenCV (`opencv-python-headless`) is imported
only when a preprocessor that needs it runs.

Model-based rows have `run=None` here (the table stays free of heavy imports and of the
environment); `annotators.annotator_hint_fn` gives their hint function, and
`annotators.check_annotator` says, before any work, what is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from animdiff.control.resize import ResizeMode
from animdiff.errors import AnimdiffError, ParamsError

if TYPE_CHECKING:
    from pathlib import Path
    from types import ModuleType

HintKind = Literal["image", "binary", "palette"]
HintFn = Callable[[np.ndarray, float, float], np.ndarray]

DEFAULT_PROCESSOR_RES = 512
#: Largest resolution accepted (pixel perfect may go past the slider's maximum for big outputs).
MAX_PROCESSOR_RES = 8192
#: Where annotator weight files are looked for, relative to the models folder.
ANNOTATOR_DIR = "ControlNetAnnotators"
ANNOTATOR_EXTRA = "annotators"


class PreprocessorError(AnimdiffError):
    """A preprocessor cannot run: OpenCV is missing, or the frame is not an RGB image."""


@dataclass(frozen=True)
class Slider:
    """One threshold control: what the UI shows and what the API accepts."""

    label: str
    default: float
    minimum: float
    maximum: float
    step: float = 1.0


@dataclass(frozen=True)
class AnnotatorWeights:
    """What a model-based preprocessor needs: `pip install animdiff[<extra>]` and these files.

    `files` are names inside `models/ControlNetAnnotators/` (the file names of the public
    lllyasviel/Annotators repository, so a copy of it can be used as is).
    """

    files: tuple[str, ...]
    extra: str = ANNOTATOR_EXTRA

    def install_hint(self) -> str:
        names = ", ".join(f"models/{ANNOTATOR_DIR}/{name}" for name in self.files)
        return f"pip install 'animdiff[{self.extra}]' and the weight file(s) {names}"


@dataclass(frozen=True)
class Preprocessor:
    """One row of the table."""

    name: str
    description: str
    run: HintFn | None
    threshold_a: Slider | None = None
    threshold_b: Slider | None = None
    uses_resolution: bool = True
    hint_kind: HintKind = "image"
    weights: AnnotatorWeights | None = None
    aliases: tuple[str, ...] = ()

    @property
    def available(self) -> bool:
        """Whether it runs without a model (no extra packages, no weight files).

        Model-based rows may run too, where the extra and their files are installed:
        `annotators.annotator_problem` tells, given the models folder.
        """
        return self.run is not None


#: The processor resolution control, shared by every preprocessor with `uses_resolution`.
PROCESSOR_RES_SLIDER = Slider("Preprocessor Resolution", DEFAULT_PROCESSOR_RES, 64, 2048, 8)


def _cv2() -> ModuleType:
    try:
        import cv2
    except ImportError as exc:
        raise PreprocessorError(
            "ControlNet preprocessors need OpenCV: pip install opencv-python-headless"
        ) from exc
    return cv2


# --- the preprocessors: each takes an HxWx3 uint8 RGB image and its two threshold values ----------


def _none(image: np.ndarray, a: float, b: float) -> np.ndarray:
    """The frame is the hint, the same array (for ControlNets fed ready-made maps, e.g. a depth video)."""
    return image


def _invert(image: np.ndarray, a: float, b: float) -> np.ndarray:
    """Black lines on white (a drawing) become white lines on black, what line-art models expect."""
    return 255 - image


def _canny(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Canny edges; OpenCV takes the strongest gradient over the three channels."""
    return _cv2().Canny(image, int(low), int(high))


def _binary(image: np.ndarray, threshold: float, b: float) -> np.ndarray:
    """Dark strokes become white on black; 0 (or 255, which would leave nothing) picks Otsu's threshold."""
    cv2 = _cv2()
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if int(threshold) in (0, 255):
        _, out = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    else:
        _, out = cv2.threshold(gray, int(threshold), 255, cv2.THRESH_BINARY_INV)
    return out


def _color(image: np.ndarray, a: float, b: float) -> np.ndarray:
    """The T2I-Adapter colour grid: one colour per 64x64 cell (the image is padded to 64s)."""
    cv2 = _cv2()
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, w // 64), max(1, h // 64)), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def _scribble_xdog(image: np.ndarray, threshold: float, b: float) -> np.ndarray:
    """Difference of Gaussians (sigma 0.5 and 5) thresholded into a scribble: white strokes on black."""
    cv2 = _cv2()
    x = image.astype(np.float32)
    fine = cv2.GaussianBlur(x, (0, 0), 0.5)
    coarse = cv2.GaussianBlur(x, (0, 0), 5.0)
    dog = (255.0 - np.min(coarse - fine, axis=2)).clip(0, 255)
    out = np.zeros(image.shape[:2], dtype=np.uint8)
    out[2.0 * (255.0 - dog) > threshold] = 255
    return out


def _lineart_standard(image: np.ndarray, a: float, b: float) -> np.ndarray:
    """Dark lines on a light background as white lines, strength normalised by the median line."""
    cv2 = _cv2()
    x = image.astype(np.float32)
    blurred = cv2.GaussianBlur(x, (0, 0), 6.0)
    intensity = np.min(blurred - x, axis=2).clip(0, 255)
    lines = intensity[intensity > 8]
    scale = max(16.0, float(np.median(lines))) if lines.size else 16.0
    return (intensity / scale * 127.0).clip(0, 255).astype(np.uint8)


def _tile_resample(image: np.ndarray, rate: float, b: float) -> np.ndarray:
    """The tile model's input: the frame with detail removed by down-sampling by `rate`."""
    if rate <= 1.0:
        return image
    cv2 = _cv2()
    h, w = image.shape[:2]
    small = cv2.resize(
        image, (max(1, round(w / rate)), max(1, round(h / rate))), interpolation=cv2.INTER_AREA
    )
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _model(
    name: str,
    description: str,
    files: tuple[str, ...],
    *aliases: str,
    hint_kind: HintKind = "image",
    **sliders: Slider,
) -> Preprocessor:
    return Preprocessor(
        name=name,
        description=description,
        run=None,
        weights=AnnotatorWeights(files),
        aliases=aliases,
        hint_kind=hint_kind,
        **sliders,
    )


_ENTRIES: tuple[Preprocessor, ...] = (
    Preprocessor("none", "the frame itself is the hint", _none, uses_resolution=False),
    Preprocessor(
        "invert",
        "black lines on white to white lines on black",
        _invert,
        uses_resolution=False,
        aliases=("invert (from white bg & black line)",),
    ),
    Preprocessor(
        "canny",
        "Canny edges",
        _canny,
        threshold_a=Slider("Canny Low Threshold", 100, 1, 255),
        threshold_b=Slider("Canny High Threshold", 200, 1, 255),
        hint_kind="binary",
    ),
    Preprocessor(
        "binary",
        "black and white by a threshold (0 = Otsu)",
        _binary,
        threshold_a=Slider("Binary threshold", 0, 0, 255),
        hint_kind="binary",
    ),
    Preprocessor(
        "color",
        "colour grid: one colour per 64x64 cell",
        _color,
        hint_kind="palette",
        aliases=("t2ia_color_grid",),
    ),
    Preprocessor(
        "scribble_xdog",
        "scribble from a difference of Gaussians",
        _scribble_xdog,
        threshold_a=Slider("XDoG threshold", 32, 1, 64),
        hint_kind="binary",
    ),
    Preprocessor(
        "lineart_standard",
        "line art from dark lines on a light background",
        _lineart_standard,
        aliases=("lineart_standard (from white bg & black line)",),
    ),
    Preprocessor(
        "tile_resample",
        "the frame, blurred by down-sampling (tile model)",
        _tile_resample,
        threshold_a=Slider("Down Sampling Rate", 1.0, 1.0, 8.0, 0.01),
        uses_resolution=False,
    ),
    _model("depth_midas", "depth (MiDaS)", ("dpt_hybrid-midas-501f0c75.pt",), "depth"),
    _model("openpose", "body pose (OpenPose)", ("body_pose_model.pth",)),
    _model(
        "openpose_full",
        "body, hand and face pose (OpenPose)",
        ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"),
    ),
    _model("softedge_hed", "soft edges (HED)", ("ControlNetHED.pth",), "hed"),
    _model("softedge_hedsafe", "soft edges (HED), quantised to fewer levels", ("ControlNetHED.pth",)),
    _model("softedge_pidinet", "soft edges (PiDiNet)", ("table5_pidinet.pth",), "pidinet"),
    _model("softedge_pidisafe", "soft edges (PiDiNet), quantised to fewer levels", ("table5_pidinet.pth",)),
    _model("lineart_realistic", "line art (realistic)", ("sk_model.pth",), "lineart"),
    _model("lineart_coarse", "line art (coarse)", ("sk_model2.pth",)),
    _model("lineart_anime", "line art (anime)", ("netG.pth",)),
    _model("normal_bae", "surface normals (BAE)", ("scannet.pt",)),
    _model(
        "mlsd",
        "straight lines (M-LSD)",
        ("mlsd_large_512_fp32.pth",),
        threshold_a=Slider("MLSD Value Threshold", 0.1, 0.01, 2.0, 0.01),
        threshold_b=Slider("MLSD Distance Threshold", 0.1, 0.01, 20.0, 0.01),
        hint_kind="binary",
    ),
)

#: name -> preprocessor; the one table the UI, CLI and API read (in display order).
PREPROCESSORS: dict[str, Preprocessor] = {entry.name: entry for entry in _ENTRIES}
_BY_ALIAS: dict[str, Preprocessor] = {
    key.lower(): entry for entry in _ENTRIES for key in (entry.name, *entry.aliases)
}


def find_preprocessor(name: str) -> Preprocessor:
    """Look a preprocessor up by name or alias (case-insensitive); unknown names list the choices."""
    entry = _BY_ALIAS.get(name.strip().lower())
    if entry is None:
        raise ParamsError(f"unknown preprocessor {name!r}; choose one of: {', '.join(PREPROCESSORS)}")
    return entry


def pixel_perfect_resolution(
    source_size: tuple[int, int], target_size: tuple[int, int], resize_mode: ResizeMode | int | str
) -> int:
    """The processor resolution at which the hint needs no rescaling once fitted to the target.

    The extension's rule: scale the source's short side by the factor the resize mode will apply
    (the larger of the two axis factors when covering or stretching, the smaller when fitting).
    Sizes are (width, height).
    """
    sw, sh = source_size
    tw, th = target_size
    if min(sw, sh, tw, th) < 1:
        raise ParamsError(f"sizes must be positive, got source {sw}x{sh} and target {tw}x{th}")
    factors = (th / sh, tw / sw)
    fit = ResizeMode.parse(resize_mode) is ResizeMode.RESIZE_AND_FILL
    factor = min(factors) if fit else max(factors)
    return round(factor * min(sw, sh))


def resolve_thresholds(
    entry: Preprocessor, threshold_a: float | None = None, threshold_b: float | None = None
) -> tuple[float, float]:
    """Fill in defaults and check ranges; values for a slider the preprocessor lacks are ignored."""
    values = []
    for slider, value, which in (
        (entry.threshold_a, threshold_a, "a"),
        (entry.threshold_b, threshold_b, "b"),
    ):
        if slider is None:
            values.append(0.0)
            continue
        chosen = slider.default if value is None else float(value)
        if not slider.minimum <= chosen <= slider.maximum:
            raise ParamsError(
                f"{entry.name} threshold_{which} ({slider.label}) {chosen:g} must be between "
                f"{slider.minimum:g} and {slider.maximum:g}"
            )
        values.append(chosen)
    return values[0], values[1]


def run_preprocessor(
    name: str,
    frame: np.ndarray,
    *,
    processor_res: int = DEFAULT_PROCESSOR_RES,
    threshold_a: float | None = None,
    threshold_b: float | None = None,
    annotators: Path | None = None,
) -> np.ndarray:
    """Make the hint for one HxWx3 uint8 RGB frame; the hint is HxWx3 uint8 RGB of the same size.

    `annotators`: the folder model-based preprocessors read their weights from
    (`annotators.annotator_folder(models_dir)`); unused by the others.
    """
    entry = find_preprocessor(name)
    a, b = resolve_thresholds(entry, threshold_a, threshold_b)
    _check_resolution(processor_res)
    run = _hint_fn(entry, annotators)
    return _apply(entry, run, _check_frame(frame), processor_res, a, b)


def preprocess_frames(
    name: str,
    frames: Iterable[np.ndarray],
    *,
    processor_res: int = DEFAULT_PROCESSOR_RES,
    threshold_a: float | None = None,
    threshold_b: float | None = None,
    annotators: Path | None = None,
) -> Iterator[np.ndarray]:
    """Hints for a stream of frames, lazily; settings are checked (and a model-based
    preprocessor's models loaded, once) before the first frame is read."""
    entry = find_preprocessor(name)
    a, b = resolve_thresholds(entry, threshold_a, threshold_b)
    _check_resolution(processor_res)
    run = _hint_fn(entry, annotators)
    return (_apply(entry, run, _check_frame(frame), processor_res, a, b) for frame in frames)


def _hint_fn(entry: Preprocessor, annotators: Path | None) -> HintFn:
    if entry.run is not None:
        return entry.run
    from animdiff.control.annotators import annotator_hint_fn

    return annotator_hint_fn(entry, annotators)


def _apply(
    entry: Preprocessor, run: HintFn, frame: np.ndarray, resolution: int, a: float, b: float
) -> np.ndarray:
    if not entry.uses_resolution:
        return _as_rgb(run(frame, a, b))
    height, width = frame.shape[:2]
    work, crop = _to_resolution(frame, resolution)
    hint = _as_rgb(run(work, a, b))[: crop[1], : crop[0]]
    return _back_to_size(hint, (width, height), entry.hint_kind)


def _to_resolution(frame: np.ndarray, resolution: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Scale the short side to `resolution`, pad bottom/right to multiples of 64 by edge repetition."""
    cv2 = _cv2()
    height, width = frame.shape[:2]
    k = resolution / min(height, width)
    new_w, new_h = max(1, round(width * k)), max(1, round(height * k))
    if (new_w, new_h) != (width, height):
        interpolation = cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA
        frame = cv2.resize(frame, (new_w, new_h), interpolation=interpolation)
    pad_h, pad_w = -new_h % 64, -new_w % 64
    if pad_h or pad_w:
        frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frame, (new_w, new_h)


def _back_to_size(hint: np.ndarray, size: tuple[int, int], kind: HintKind) -> np.ndarray:
    width, height = size
    if (hint.shape[1], hint.shape[0]) == size:
        return np.ascontiguousarray(hint)
    cv2 = _cv2()
    shrinking = width * height < hint.shape[0] * hint.shape[1]
    if kind == "palette":
        return cv2.resize(hint, size, interpolation=cv2.INTER_NEAREST)
    if kind == "binary":
        if not shrinking:
            return cv2.resize(hint, size, interpolation=cv2.INTER_NEAREST)
        covered = cv2.resize(hint, size, interpolation=cv2.INTER_AREA)
        return np.where(covered > 0, 255, 0).astype(np.uint8)
    return cv2.resize(hint, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def _as_rgb(hint: np.ndarray) -> np.ndarray:
    if hint.ndim == 2:
        return np.repeat(hint[:, :, None], 3, axis=2)
    if hint.shape[2] == 1:
        return np.repeat(hint, 3, axis=2)
    return hint


def _check_frame(frame: np.ndarray) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", None)
        dtype = getattr(frame, "dtype", type(frame).__name__)
        raise PreprocessorError(f"a preprocessor needs an HxWx3 uint8 RGB frame, got {dtype} {shape}")
    return frame


def _check_resolution(resolution: int) -> None:
    if not 1 <= int(resolution) <= MAX_PROCESSOR_RES:
        raise ParamsError(f"processor resolution {resolution} must be between 1 and {MAX_PROCESSOR_RES}")
