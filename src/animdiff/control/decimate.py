"""Drop near-duplicate frames, with the thresholds of FFmpeg's `mpdecimate` filter.

The reference extension extracts video frames with FFmpeg and the filter
`mpdecimate=hi=64*200:lo=64*50:frac=0.33`, so a clip with held or repeated frames (screen
recordings, anime on twos, 24 fps content padded to 30) yields fewer frames than the container
holds. animdiff reads frames itself, so it reproduces that test here, off by default: it changes
the frame count, which surprises anyone who asked for "the first 32 frames".

The test, as the filter runs it (not as its manual summarises it):

- A frame is compared with the last frame that was **kept** (not with the previous frame), so a
  slow drift is kept once it adds up. The first frame is always kept.
- Each plane (luma, and the two chroma planes at half resolution as in 4:2:0 video) is scanned
  with 8x8 blocks placed every 4 pixels in both directions (the blocks overlap). The scan starts
  at column 8, as FFmpeg's loop does. A block's difference is its sum of absolute differences.
- A plane differs if one block differs by more than `hi`, or if more than
  `t = int((w // 16) * (h // 16) * frac)` blocks differ by more than `lo` (w, h: the plane's size).
  `t` counts against a grid of 16x16 cells while the blocks are 4 pixels apart, so `frac` is not
  the fraction of blocks its name suggests: with the reference's 0.33, about 2% of the blocks
  may change by more than `lo` before the frame counts as new.
- A frame is dropped when no plane differs.

`hi=64*200` means a block must change by 200 levels per pixel on average to count as new on its
own, so the reference setting drops everything except real motion or cuts.

Frames are RGB; the planes are derived with the BT.601 limited-range matrix that FFmpeg's
default conversion uses, so decoded YUV and our RGB round trip give the same verdicts up to
rounding.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

Planes = tuple[np.ndarray, ...]


@dataclass(frozen=True)
class Decimate:
    """mpdecimate's thresholds; the defaults are the reference extension's, not FFmpeg's."""

    hi: int = 64 * 200
    lo: int = 64 * 50
    frac: float = 0.33

    def __post_init__(self) -> None:
        if not 0.0 <= self.frac <= 1.0:
            raise ValueError(f"frac {self.frac} must be between 0 and 1")


#: The setting the reference extension extracts frames with.
REFERENCE_DECIMATE = Decimate()


def planes(frame: np.ndarray) -> Planes:
    """Y, Cb, Cr planes of an HxWx3 uint8 RGB frame as int32 (chroma at half size, rounded up)."""
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB frame, got shape {frame.shape}")
    rgb = frame.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16.0 + 0.256788 * r + 0.504129 * g + 0.097906 * b
    cb = 128.0 - 0.148223 * r - 0.290993 * g + 0.439216 * b
    cr = 128.0 + 0.439216 * r - 0.367788 * g - 0.071427 * b
    return (_round(y), _round(_half(cb)), _round(_half(cr)))


def _half(plane: np.ndarray) -> np.ndarray:
    """2x2 average, with an odd last row/column repeated (4:2:0 subsampling)."""
    h, w = plane.shape
    if h % 2 or w % 2:
        plane = np.pad(plane, ((0, h % 2), (0, w % 2)), mode="edge")
    return plane.reshape(plane.shape[0] // 2, 2, plane.shape[1] // 2, 2).mean(axis=(1, 3))


def _round(plane: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(plane), 0, 255).astype(np.int32)


def plane_differs(reference: np.ndarray, current: np.ndarray, settings: Decimate) -> bool:
    """mpdecimate's verdict for one plane: does `current` differ enough from `reference`?"""
    if reference.shape != current.shape:
        return True
    h, w = current.shape
    if h < 8 or w < 16:  # no block fits (columns start at 8)
        return False
    diff = np.abs(current.astype(np.int32) - reference.astype(np.int32))
    # Sums over 4x4 cells; an 8x8 block at a multiple of 4 is the sum of 2x2 cells.
    rows, cols = (h - 8) // 4 + 2, (w - 8) // 4 + 2
    cells = diff[: rows * 4, : cols * 4].reshape(rows, 4, cols, 4).sum(axis=(1, 3))
    blocks = cells[:-1, :-1] + cells[1:, :-1] + cells[:-1, 1:] + cells[1:, 1:]
    blocks = blocks[:, 2:]  # the scan starts at x = 8, i.e. the third cell column
    if np.any(blocks > settings.hi):
        return True
    limit = int((w // 16) * (h // 16) * settings.frac)
    return int(np.count_nonzero(blocks > settings.lo)) > limit


def is_near_duplicate(reference: Planes, current: Planes, settings: Decimate = REFERENCE_DECIMATE) -> bool:
    """True when `current` would be dropped after `reference` (both from `planes`)."""
    return not any(plane_differs(r, c, settings) for r, c in zip(reference, current, strict=True))


def drop_near_duplicates(
    frames: Iterable[np.ndarray], settings: Decimate = REFERENCE_DECIMATE
) -> Iterator[np.ndarray]:
    """Yield the frames mpdecimate would keep, lazily: one frame of state, whatever the length."""
    kept: Planes | None = None
    for frame in frames:
        current = planes(frame)
        if kept is not None and is_near_duplicate(kept, current, settings):
            continue
        kept = current
        yield frame
