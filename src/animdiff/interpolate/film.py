"""FILM frame interpolation with Deforum's TorchScript model, without Deforum.

The reference hands the frames to Deforum, which runs Google's FILM network (the TorchScript
export `film_net_fp16.pt`) on each pair of neighbouring frames. We load the same file and call it
with the same interface -- `forward(x0, x1, batch_dt)` on RGB in [0, 1], sizes padded to
multiples of 64 -- so results match what users of the extension get, but we run the pairs in
batches instead of one at a time, and we can also fill the seam of a closed loop.

The model is only trained for the midpoint of a pair, so more than one in-between is made by
recursion: each new frame is computed from the two nearest frames already known, always picking
the one closest to the middle of its gap first (see `film_schedule`).
"""

from __future__ import annotations

import bisect
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from animdiff.errors import InterpolationError
from animdiff.interpolate.counts import inbetweens_per_pair

FILM_MODEL_FILENAME = "film_net_fp16.pt"

# Where the file is looked for, relative to the models folder. Deforum's own location (inside
# A1111's models folder) comes first so that an existing A1111 install just works.
FILM_MODEL_SUBDIRS: tuple[Path, ...] = (
    Path("Deforum") / "film_interpolation",
    Path("film_interpolation"),
    Path("FILM"),
    Path("Deforum"),
)

# FILM's encoder halves the image several times; sizes must divide evenly.
PAD_ALIGN = 64

ProgressCallback = Callable[[int, int], None]


# --------------------------------------------------------------------------- finding the model


def film_model_candidates(models_dir: Path) -> list[Path]:
    """Every path `find_film_model` tries under `models_dir`, in order (also used in messages)."""
    return [models_dir / sub / FILM_MODEL_FILENAME for sub in FILM_MODEL_SUBDIRS]


def find_film_model(models_dir: Path | None, explicit: Path | None = None) -> Path:
    """Locate `film_net_fp16.pt`, or explain exactly where it should go.

    An explicit path (a file, or a folder holding the file) wins and is never silently replaced
    by a search result: if the user named a file, a typo should be reported, not papered over.
    Nothing is downloaded -- animdiff runs offline -- so the error has to tell the user where to
    put the file themselves.
    """
    if explicit is not None:
        return _check_explicit(Path(explicit))
    tried: list[Path] = []
    if models_dir is not None:
        tried = film_model_candidates(Path(models_dir))
        for candidate in tried:
            if candidate.is_file():
                return candidate
    raise InterpolationError(_missing_message(models_dir, tried))


def _check_explicit(explicit: Path) -> Path:
    if explicit.is_file():
        return explicit
    inside = explicit / FILM_MODEL_FILENAME
    if explicit.is_dir() and inside.is_file():
        return inside
    raise InterpolationError(
        f"FILM model not found at {explicit} (the path given for the FILM model); "
        f"give the path of Deforum's {FILM_MODEL_FILENAME} or of the folder that holds it."
    )


def _missing_message(models_dir: Path | None, tried: Sequence[Path]) -> str:
    if models_dir is None:
        where = "no models folder was given, so nowhere was searched"
        target = f"<models folder>/Deforum/film_interpolation/{FILM_MODEL_FILENAME}"
    else:
        where = "looked in: " + ", ".join(str(p) for p in tried)
        target = str(film_model_candidates(Path(models_dir))[0])
    return (
        f"FILM frame interpolation needs Deforum's {FILM_MODEL_FILENAME}, which was not found "
        f"({where}). Put the file at {target} -- it is the file the Deforum extension downloads "
        f"into models/Deforum/film_interpolation/, so an A1111 install with Deforum already has "
        f"it. animdiff never downloads it; or set Frame Interpolation to Off."
    )


# --------------------------------------------------------------------------- recursion schedule


@dataclass(frozen=True)
class FilmStep:
    """One model call of the recursion, in positions 0..k+1 of a pair (0 and k+1 are the originals).

    `dt` is the time of `index` relative to its two neighbours, the value FILM receives.
    """

    index: int
    left: int
    right: int
    dt: float


def film_schedule(k: int) -> list[FilmStep]:
    """Order in which the k in-betweens of a pair are made, middle-first.

    The in-betweens sit at times i / (k + 1). We keep the sorted positions already known (at
    first just the two originals) and, each round, take the missing position that sits most
    centrally between its two nearest known neighbours -- FILM is most accurate near the middle
    of a gap -- ties going to the earliest. It is computed from those neighbours and becomes
    known itself. Exact fractions keep the tie-breaking independent of float rounding.
    """
    known = [0, k + 1]
    missing = list(range(1, k + 1))
    steps: list[FilmStep] = []
    while missing:
        best: tuple[Fraction, int, int, int] | None = None
        for index in missing:
            pos = bisect.bisect_left(known, index)
            left, right = known[pos - 1], known[pos]
            off_centre = abs(Fraction(index - left, right - left) - Fraction(1, 2))
            if best is None or off_centre < best[0]:
                best = (off_centre, index, left, right)
        assert best is not None
        _, index, left, right = best
        steps.append(FilmStep(index, left, right, (index - left) / (right - left)))
        bisect.insort(known, index)
        missing.remove(index)
    return steps


def _last_uses(steps: Sequence[FilmStep], k: int) -> dict[int, int]:
    """Step number after which each position is no longer needed as a neighbour."""
    last = {0: -1, k + 1: -1}
    for number, step in enumerate(steps):
        last.setdefault(step.index, number)
        last[step.left] = number
        last[step.right] = number
    return last


# --------------------------------------------------------------------------- image conversion


@dataclass(frozen=True)
class _Padding:
    """Centre zero-padding to a multiple of PAD_ALIGN, and the crop that undoes it."""

    height: int
    width: int
    top: int
    bottom: int
    left: int
    right: int

    @classmethod
    def for_size(cls, height: int, width: int) -> _Padding:
        pad_h = -height % PAD_ALIGN
        pad_w = -width % PAD_ALIGN
        return cls(height, width, pad_h // 2, pad_h - pad_h // 2, pad_w // 2, pad_w - pad_w // 2)


def _check_frames(frames: Sequence[np.ndarray]) -> tuple[int, int]:
    """Frames come from our own pipeline, so a mismatch is a bug (ValueError), not user input."""
    for number, frame in enumerate(frames):
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.shape[2:] != (3,):
            raise ValueError(f"frame {number} is not an HxWx3 uint8 RGB array")
        if frame.shape != frames[0].shape:
            raise ValueError(f"frame {number} has shape {frame.shape}, frame 0 has {frames[0].shape}")
    return frames[0].shape[0], frames[0].shape[1]


def _to_model_input(
    frames: Sequence[np.ndarray], padding: _Padding, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    batch = torch.from_numpy(np.stack(frames)).to(device)
    batch = batch.permute(0, 3, 1, 2).to(torch.float32).div_(255.0).to(dtype)
    return F.pad(batch, (padding.left, padding.right, padding.top, padding.bottom))


def _to_frames(output: torch.Tensor, padding: _Padding) -> list[np.ndarray]:
    cropped = output[
        :, :, padding.top : padding.top + padding.height, padding.left : padding.left + padding.width
    ]
    pixels = cropped.float().mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    array = pixels.permute(0, 2, 3, 1).cpu().numpy()
    return [np.ascontiguousarray(frame) for frame in array]


@contextmanager
def _quiet_jit() -> Iterator[None]:
    """torch warns that TorchScript is deprecated; the FILM file only exists in that format."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*jit.*deprecated", category=FutureWarning)
        yield


# --------------------------------------------------------------------------- the interpolator


class FilmInterpolator:
    """Runs Deforum's FILM TorchScript model over a list of frames.

    The file is loaded on first use, so building one is free and an animation that needs no
    in-betweens (X = 1, or one frame) never touches the file. On CUDA the model runs in fp16 as
    in the reference; on CPU in fp32, because fp16 convolutions there are slow or missing.
    """

    def __init__(self, model_path: Path, device: str | torch.device | None = None) -> None:
        self.model_path = Path(model_path)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self._model: torch.jit.ScriptModule | None = None

    # -- loading

    def load(self) -> torch.jit.ScriptModule:
        """Load (once) and return the model; a damaged or wrong file is a user-facing error."""
        if self._model is None:
            self._model = self._load()
        return self._model

    def _load(self) -> torch.jit.ScriptModule:
        if not self.model_path.is_file():
            raise InterpolationError(f"FILM model file {self.model_path} does not exist")
        try:
            with _quiet_jit():
                model = torch.jit.load(str(self.model_path), map_location="cpu")
        except Exception as exc:
            raise InterpolationError(
                f"FILM model file {self.model_path} cannot be read ({_first_line(exc)}); it is "
                f"damaged or not a TorchScript file. Replace it with Deforum's {FILM_MODEL_FILENAME}."
            ) from exc
        self._check_signature(model)
        model.eval()
        model = model.to(self.device)
        return model.half() if self.dtype == torch.float16 else model.float()

    def _check_signature(self, model: torch.jit.ScriptModule) -> None:
        forward = getattr(model, "forward", None)
        schema = getattr(forward, "schema", None)
        arguments = getattr(schema, "arguments", None)
        if arguments is not None and len(arguments) != 4:  # self, x0, x1, batch_dt
            raise InterpolationError(
                f"FILM model file {self.model_path} is a TorchScript file but not a FILM model: its "
                f"forward is `{schema}`, expected forward(x0, x1, batch_dt)."
            )

    # -- interpolation

    def interpolate(
        self,
        frames: list[np.ndarray],
        x: int,
        closed: bool = False,
        batch_size: int = 8,
        progress: ProgressCallback | None = None,
    ) -> list[np.ndarray]:
        """Return the frames with FILM in-betweens, `interpolated_count(len(frames), x, closed)` long.

        Frames are HxWx3 uint8 RGB, all the same size. Each pair (and, when `closed`, the seam
        from the last frame back to the first) contributes its first frame unchanged followed by
        its in-betweens; an open animation ends with its last frame. `batch_size` is how many
        pairs go through the model at once (memory grows with it and with the number of
        in-betweens). `progress(done, total)` counts in-between frames.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not frames:
            return []
        k = inbetweens_per_pair(len(frames), x)
        if k == 0:
            return list(frames)
        height, width = _check_frames(frames)
        padding = _Padding.for_size(height, width)
        pairs = _pairs(len(frames), closed)
        steps = film_schedule(k)
        model = self.load()
        total = len(pairs) * k
        done = 0
        result: list[np.ndarray] = []
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            inbetweens = self._run_chunk(model, frames, chunk, steps, k, padding)
            for b, (left, _) in enumerate(chunk):
                result.append(frames[left])
                result.extend(inbetweens[position][b] for position in range(k))
            done += len(chunk) * k
            if progress is not None:
                progress(done, total)
        if not closed:
            result.append(frames[-1])
        return result

    def _run_chunk(
        self,
        model: torch.jit.ScriptModule,
        frames: Sequence[np.ndarray],
        chunk: Sequence[tuple[int, int]],
        steps: Sequence[FilmStep],
        k: int,
        padding: _Padding,
    ) -> list[list[np.ndarray]]:
        """Run every step of the schedule for a batch of pairs; returns [position][pair] frames.

        All pairs share the schedule, so each step is one model call over the whole batch. A
        computed frame is kept in float (as FILM's own inference does) only while a later step
        still needs it as a neighbour.
        """
        known = {
            0: _to_model_input([frames[a] for a, _ in chunk], padding, self.device, self.dtype),
            k + 1: _to_model_input([frames[b] for _, b in chunk], padding, self.device, self.dtype),
        }
        last_use = _last_uses(steps, k)
        made: list[list[np.ndarray]] = [[] for _ in range(k)]
        for number, step in enumerate(steps):
            output = self._call(model, known[step.left], known[step.right], step.dt)
            made[step.index - 1] = _to_frames(output, padding)
            known[step.index] = output
            for position in {step.left, step.right, step.index}:
                if last_use[position] <= number:
                    known.pop(position, None)
        return made

    def _call(
        self, model: torch.jit.ScriptModule, x0: torch.Tensor, x1: torch.Tensor, dt: float
    ) -> torch.Tensor:
        # One dt per batch row. FILM scales (B, 2, H, W) flow fields by batch_dt through
        # broadcasting, so it must be (B, 1, 1, 1); a (B, 1) tensor only works for B = 1.
        batch_dt = torch.full((x0.shape[0], 1, 1, 1), dt, dtype=x0.dtype, device=x0.device)
        with torch.no_grad():
            return model(x0, x1, batch_dt).clamp(0, 1)


def _pairs(n: int, closed: bool) -> list[tuple[int, int]]:
    pairs = [(i, i + 1) for i in range(n - 1)]
    if closed:
        pairs.append((n - 1, 0))
    return pairs


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
