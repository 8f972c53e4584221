"""Synthetic sources for the video-input tests: a white square moving right on black."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

WIDTH, HEIGHT = 96, 64
FRAMES = 10
FPS = 12
SQUARE = 16
TOP = 24
STEP = 6


def square_left(index: int) -> int:
    """Left edge of the square in frame `index`."""
    return 8 + STEP * index


def square_frame(index: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    left = square_left(index)
    frame[TOP : TOP + SQUARE, left : left + SQUARE] = 255
    return frame


def square_frames(count: int = FRAMES) -> list[np.ndarray]:
    return [square_frame(i) for i in range(count)]


# name -> (container format, codec, pixel format, encoder options)
FORMATS: dict[str, tuple[str, str, str, dict[str, str]]] = {
    "mp4": ("mp4", "libx264", "yuv420p", {"preset": "ultrafast", "crf": "10"}),
    "webm": ("webm", "libvpx-vp9", "yuv420p", {"deadline": "realtime", "cpu-used": "8", "crf": "10"}),
    "mov": ("mov", "mpeg4", "yuv420p", {"qscale": "2"}),
    "mkv": ("matroska", "ffv1", "yuv420p", {}),
    "gif": ("gif", "gif", "rgb8", {}),
    "webp": ("webp", "libwebp_anim", "yuv420p", {"lossless": "1"}),
}


def write_video(
    path: Path,
    frames: list[np.ndarray],
    kind: str,
    fps: int | Fraction = FPS,
    *,
    rotation: int | None = None,
) -> Path:
    """Encode RGB frames with PyAV in one of FORMATS."""
    container_format, codec, pix_fmt, options = FORMATS[kind]
    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if options:
            stream.options = dict(options)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def bright_box(frame: np.ndarray, level: int = 128) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) inclusive of the pixels brighter than `level`, or None."""
    mask = frame.max(axis=2) > level if frame.ndim == 3 else frame > level
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def centre_x(frame: np.ndarray) -> float:
    """Column centroid of the bright pixels."""
    mask = frame.max(axis=2) > 128
    return float(np.nonzero(mask)[1].mean())
