"""What a video source is, before any frame is decoded: its error type and its probe result.

A video-to-video job reads its source twice: once in `prepare` (probe: how many frames, what
rate, what size, so a bad file fails before any compute) and once in `run` (the frames). Both the
video-file reader and the frame-folder reader return the same `VideoInfo`, so the caller never
needs to know which kind of source the user gave.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

from animdiff.errors import AnimdiffError

SourceKind = Literal["video", "animation", "folder", "image"]


class VideoInputError(AnimdiffError):
    """A video file or frame folder cannot be used as a source; the message names the file or folder."""

    http_status = 422


@dataclass(frozen=True)
class VideoInfo:
    """A probed source.

    `frame_count` is exact (counted, not estimated from the duration), so that "0 frames = the
    video's frame count" gives the number of frames the reader will actually yield. `width` and
    `height` are the displayed size: rotation metadata, non-square pixels and EXIF orientation are
    already applied. `fps` is the source's own rate as an exact fraction (30000/1001 stays exact);
    it is None for frame folders and still images, which carry no timing.
    """

    path: Path
    kind: SourceKind
    frame_count: int
    fps: Fraction | None
    width: int
    height: int

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), the order every size in animdiff uses."""
        return (self.width, self.height)

    @property
    def duration(self) -> float | None:
        """Seconds of source material, when the source has a rate."""
        if self.fps is None or self.fps <= 0:
            return None
        return float(self.frame_count / self.fps)
