"""Fit a source frame to the generation size: the three resize modes of A1111 and ControlNet.

A source video rarely has the generation's size or aspect ratio. The three modes say what to do
about the aspect ratio:

- **Just Resize** (0): stretch to the target size; the aspect ratio is lost, nothing is lost.
- **Crop and Resize** (1): scale so the source *covers* the target, then cut the overflow evenly
  from both sides; nothing is distorted, the edges are lost.
- **Resize and Fill** (2): scale so the source *fits inside* the target, centre it, and fill the
  two empty bands; nothing is distorted or lost, the bands are invented.

Sizes are computed exactly as A1111's `resize_image` does (integer floor of the scaled side,
centred by halving both sizes), so a frame lands on the same pixels here as in the web UI.

Filling the bands: A1111 (img2img) stretches the outermost row or column of the picture across
each band, which is the same as repeating it: `fill="edge"` (the default). The ControlNet extension
fills the bands of a control map with one colour, the median of the map's border pixels:
`fill="median"`, for hints.

Resampling is Lanczos, as A1111 uses when no upscaler is chosen. The functions are pure: arrays
in, new arrays out, so they are tested on their own and reused for frames, masks and hints.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from animdiff.errors import ParamsError

Size = tuple[int, int]
FillRule = Literal["edge", "median"]


class ResizeMode(enum.IntEnum):
    """The resize modes, numbered as A1111's img2img and the ControlNet API number them."""

    JUST_RESIZE = 0
    CROP_AND_RESIZE = 1
    RESIZE_AND_FILL = 2

    @property
    def label(self) -> str:
        """The name the web UIs show ("Crop and Resize")."""
        return _LABELS[self]

    @classmethod
    def parse(cls, value: ResizeMode | int | str) -> ResizeMode:
        """Accept the UI names, the integer forms (also as strings) and ControlNet's legacy names.

        Matching ignores case, spaces, hyphens and underscores, so "crop_and_resize",
        "Crop and Resize" and "1" are the same mode.
        """
        if isinstance(value, ResizeMode):
            return value
        if isinstance(value, bool):  # bool is an int; True is not a resize mode
            raise _bad_mode(value)
        if isinstance(value, int):
            try:
                return cls(value)
            except ValueError:
                raise _bad_mode(value) from None
        if isinstance(value, str):
            key = _normalise(value)
            if key in _ALIASES:
                return _ALIASES[key]
        raise _bad_mode(value)


_LABELS = {
    ResizeMode.JUST_RESIZE: "Just Resize",
    ResizeMode.CROP_AND_RESIZE: "Crop and Resize",
    ResizeMode.RESIZE_AND_FILL: "Resize and Fill",
}


def _normalise(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


_ALIASES: dict[str, ResizeMode] = {
    **{_normalise(label): mode for mode, label in _LABELS.items()},
    **{str(int(mode)): mode for mode in ResizeMode},
    **{_normalise(mode.name): mode for mode in ResizeMode},
    # ControlNet's internal and legacy names.
    "resize": ResizeMode.JUST_RESIZE,
    "innerfit": ResizeMode.CROP_AND_RESIZE,
    "outerfit": ResizeMode.RESIZE_AND_FILL,
    _normalise("Scale to Fit (Inner Fit)"): ResizeMode.CROP_AND_RESIZE,
    _normalise("Envelope (Outer Fit)"): ResizeMode.RESIZE_AND_FILL,
}


def _bad_mode(value: object) -> ParamsError:
    choices = ", ".join(f"{mode.label} ({int(mode)})" for mode in ResizeMode)
    return ParamsError(f"resize mode {value!r} is not one of: {choices}")


@dataclass(frozen=True)
class Placement:
    """Where a resized source lands in the target.

    The source is resized to `scaled` (width, height); its top-left corner goes to `offset`
    (x, y) in the target. A negative offset means that part is cropped away (Crop and Resize); a
    positive one leaves a band to fill (Resize and Fill).
    """

    scaled: Size
    offset: tuple[int, int]


def placement(source: Size, target: Size, mode: ResizeMode | int | str) -> Placement:
    """The geometry of a resize, with A1111's integer rounding, without touching any pixel."""
    mode = ResizeMode.parse(mode)
    sw, sh = _check_size(source, "source")
    tw, th = _check_size(target, "target")
    if mode is ResizeMode.JUST_RESIZE:
        return Placement((tw, th), (0, 0))
    # Compare the aspect ratios exactly (tw/th against sw/sh) by cross-multiplying.
    target_is_wider = tw * sh > sw * th
    if mode is ResizeMode.CROP_AND_RESIZE:
        # Cover: the side that is relatively shorter in the source matches the target.
        scaled = (tw, sh * tw // sw) if target_is_wider else (sw * th // sh, th)
    else:
        # Fit: the side that is relatively longer in the source matches the target.
        target_is_narrower = tw * sh < sw * th
        scaled = (tw, sh * tw // sw) if target_is_narrower else (sw * th // sh, th)
    scaled = (max(1, scaled[0]), max(1, scaled[1]))
    offset = (tw // 2 - scaled[0] // 2, th // 2 - scaled[1] // 2)
    return Placement(scaled, offset)


def resize_frame(
    frame: np.ndarray | Image.Image,
    size: Size,
    mode: ResizeMode | int | str = ResizeMode.JUST_RESIZE,
    *,
    fill: FillRule = "edge",
) -> np.ndarray:
    """Return `frame` fitted to `size` (width, height) with the given resize mode.

    `frame` is an HxW or HxWxC uint8 array (or a PIL image); the result has the same number of
    channels. A frame that already has the target size is returned unchanged (same object), so
    reading frames at their own size costs nothing.
    """
    array = np.asarray(frame) if isinstance(frame, Image.Image) else frame
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"expected an HxW or HxWxC uint8 frame, got {array.dtype} {array.shape}")
    tw, th = _check_size(size, "target")
    sh, sw = array.shape[:2]
    if (sw, sh) == (tw, th):
        return array
    place = placement((sw, sh), (tw, th), mode)
    scaled = _resample(array, place.scaled)
    x, y = place.offset
    if x <= 0 and y <= 0:  # Just Resize, or a crop (a fit onto an equal aspect also lands here)
        return np.ascontiguousarray(scaled[-y : -y + th, -x : -x + tw])
    return _fill(scaled, (tw, th), (x, y), fill)


def _resample(array: np.ndarray, size: Size) -> np.ndarray:
    if (array.shape[1], array.shape[0]) == size:
        return array
    squeeze = array.ndim == 3 and array.shape[2] == 1
    image = Image.fromarray(array[:, :, 0] if squeeze else array)
    out = np.asarray(image.resize(size, Image.Resampling.LANCZOS))
    return out[:, :, None] if squeeze else out


def _fill(scaled: np.ndarray, target: Size, offset: tuple[int, int], rule: FillRule) -> np.ndarray:
    tw, th = target
    x, y = max(0, offset[0]), max(0, offset[1])
    sh, sw = scaled.shape[:2]
    pad = [(y, th - y - sh), (x, tw - x - sw)] + [(0, 0)] * (scaled.ndim - 2)
    if rule == "edge":
        return np.pad(scaled, pad, mode="edge")
    if rule == "median":
        border = np.concatenate(
            [scaled[0], scaled[-1], scaled[:, 0], scaled[:, -1]], axis=0
        )  # (n, C) or (n,)
        colour = np.median(border, axis=0).astype(np.uint8)
        out = np.empty((th, tw, *scaled.shape[2:]), dtype=np.uint8)
        out[...] = colour
        out[y : y + sh, x : x + sw] = scaled
        return out
    raise ValueError(f"unknown fill rule {rule!r}; use 'edge' or 'median'")


def _check_size(size: Size, what: str) -> Size:
    width, height = int(size[0]), int(size[1])
    if width < 1 or height < 1:
        raise ParamsError(f"{what} size {width}x{height} must be at least 1x1")
    return width, height
