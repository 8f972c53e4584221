"""One entry point for video sources: a video file, an animated GIF/WebP, or a frame folder.

`probe_video` is what `prepare` calls (exact frame count, rate, size; fails early on bad input);
`read_video_frames` is what `run` calls. Reading is lazy from end to end: each source frame is
decoded, optionally tested for being a near-duplicate, resized to the generation size and only
then kept, and decoding stops as soon as `count` frames are kept. Memory therefore follows the
number of frames asked for, at the generation size, not the length or resolution of the source.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Generator
from contextlib import closing
from pathlib import Path

import numpy as np

from animdiff.control.decimate import Decimate, drop_near_duplicates
from animdiff.control.folder import iter_folder_frames, probe_folder
from animdiff.control.resize import FillRule, ResizeMode, Size, resize_frame
from animdiff.control.source import VideoInfo, VideoInputError
from animdiff.control.videofile import iter_file_frames, probe_file
from animdiff.errors import ParamsError

PathLike = str | os.PathLike[str]


def probe_video(path: PathLike) -> VideoInfo:
    """Describe a video file or frame folder without reading it all (see `VideoInfo`)."""
    source = _as_path(path)
    return probe_folder(source) if source.is_dir() else probe_file(source)


def iter_video_frames(
    path: PathLike,
    size: Size | None = None,
    resize_mode: ResizeMode | int | str = ResizeMode.JUST_RESIZE,
    *,
    decimate: Decimate | None = None,
    fill: FillRule = "edge",
) -> Generator[np.ndarray, None, None]:
    """Yield the source's frames one by one as HxWx3 uint8 RGB, resized to `size` (width, height).

    `size=None` keeps the source size. `decimate` drops near-duplicate frames first, at the
    source resolution, as the reference's FFmpeg extraction does. Close the iterator (or exhaust
    it) to release the file; `read_video_frames` does this for you.
    """
    source = _as_path(path)  # checked now, not at the first frame
    mode = ResizeMode.parse(resize_mode)
    if size is not None and (int(size[0]) < 1 or int(size[1]) < 1):
        raise ParamsError(f"frame size {size[0]}x{size[1]} must be at least 1x1")
    decoded = iter_folder_frames(source) if source.is_dir() else iter_file_frames(source)
    return _fitted(decoded, size, mode, decimate, fill)


def _fitted(
    decoded: Generator[np.ndarray, None, None],
    size: Size | None,
    mode: ResizeMode,
    decimate: Decimate | None,
    fill: FillRule,
) -> Generator[np.ndarray, None, None]:
    try:
        kept = decoded if decimate is None else drop_near_duplicates(decoded, decimate)
        for frame in kept:
            yield frame if size is None else resize_frame(frame, size, mode, fill=fill)
    finally:
        decoded.close()  # releases the file even when the caller stops early


def read_video_frames(
    path: PathLike,
    count: int | None = None,
    size: Size | None = None,
    resize_mode: ResizeMode | int | str = ResizeMode.JUST_RESIZE,
    *,
    decimate: Decimate | None = None,
    fill: FillRule = "edge",
) -> list[np.ndarray]:
    """The first `count` frames (all when None), resized as they are read; fewer if the source is shorter.

    Returning fewer frames rather than failing mirrors the reference, which caps the video length
    at the number of control frames; the caller decides whether that is acceptable.
    """
    if count is not None and count < 0:
        raise ValueError(f"count must be 0 or more, got {count}")
    if count == 0:
        return []
    with closing(iter_video_frames(path, size, resize_mode, decimate=decimate, fill=fill)) as frames:
        return list(itertools.islice(frames, count))


def _as_path(path: PathLike) -> Path:
    if isinstance(path, str) and not path.strip():
        raise VideoInputError("the video source path is empty")
    source = Path(path).expanduser()
    if not source.exists():
        raise VideoInputError(f"video source {source} does not exist (no such file or folder)")
    return source
