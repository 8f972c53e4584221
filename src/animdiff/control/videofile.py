"""Video files (MP4, WEBM, MOV, MKV, ...) read with PyAV, one frame at a time.

Decoding is lazy: frames come out of a generator as the caller asks for them, so taking 32 frames
from a ten-minute 1080p video decodes about 32 frames and never holds more than one source frame
(plus what FFmpeg buffers internally). The frame count is exact: the container's own count where
it keeps one (MP4, MOV), otherwise the video packets are counted, which reads the file but
decodes nothing. The frames come out as the player would show them: rotation metadata (phone
videos) and non-square pixels are applied.

GIF and WebP files are passed to `animation`, whatever their extension, and a still image (PNG,
JPEG, BMP, TIFF) is read as one frame with Pillow, so its EXIF orientation is applied and it gets
no made-up rate (FFmpeg would call it 25 fps).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np

from animdiff.control.animation import iter_animation_frames, probe_animation, sniff_animation
from animdiff.control.folder import is_still_image, load_image, probe_image_file
from animdiff.control.source import VideoInfo, VideoInputError


def probe_file(path: Path) -> VideoInfo:
    """Exact frame count, rate and displayed size of a video file; decodes its first frame only.

    Decoding one frame proves the file is usable (a codec FFmpeg lacks, or a file cut before its
    first frame, fails here rather than in the middle of a job).
    """
    _check_file(path)
    kind = sniff_animation(path)
    if kind is not None:
        return probe_animation(path, kind)
    if is_still_image(path):
        return probe_image_file(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        count = stream.frames if stream.frames > 0 else _count_packets(container, stream)
        if count == 0:
            raise VideoInputError(f"video file {path} contains no video frames")
        fps = _rate(stream, count)
    with _open(path) as container:
        stream = _video_stream(container, path)
        first = None
        try:
            for frame in _decoded_frames(container, stream):
                first = frame
                break
        except av.error.FFmpegError as exc:
            raise VideoInputError(f"cannot decode the first frame of {path}: {_reason(exc)}") from exc
        if first is None:
            raise VideoInputError(f"video file {path} contains no decodable video frames")
        width, height = _display_size(first, stream)
    return VideoInfo(path=path, kind="video", frame_count=count, fps=fps, width=width, height=height)


def iter_file_frames(path: Path) -> Generator[np.ndarray, None, None]:
    """Yield every frame of a video (or GIF/WebP) file as HxWx3 uint8 RGB at its displayed size."""
    _check_file(path)
    kind = sniff_animation(path)
    if kind is not None:
        yield from iter_animation_frames(path, kind)
        return
    if is_still_image(path):
        yield load_image(path)
        return
    with _open(path) as container:
        stream = _video_stream(container, path)
        index = 0
        try:
            for frame in _decoded_frames(container, stream):
                yield to_rgb(frame, stream)
                index += 1
        except av.error.FFmpegError as exc:
            raise VideoInputError(f"cannot decode frame {index} of {path}: {_reason(exc)}") from exc


def _decoded_frames(
    container: av.container.InputContainer, stream: av.VideoStream
) -> Iterator[av.VideoFrame]:
    """The one place frames leave the decoder (tests wrap it to count decoded frames)."""
    yield from container.decode(stream)


def to_rgb(frame: av.VideoFrame, stream: av.VideoStream) -> np.ndarray:
    """Convert a decoded frame to displayed RGB: colour matrix and range as tagged, pixel aspect, rotation."""
    width, height = _stored_display_size(frame, stream)
    options: dict[str, object] = {}
    if frame.color_range:  # tagged full or limited range; untagged lets swscale follow the pixel format
        options["src_color_range"] = frame.color_range
    rgb = frame.reformat(width=width, height=height, format="rgb24", **options).to_ndarray()
    turns = _quarter_turns(frame)
    if turns:
        rgb = np.ascontiguousarray(np.rot90(rgb, turns))
    return rgb


def _stored_display_size(frame: av.VideoFrame, stream: av.VideoStream) -> tuple[int, int]:
    """The frame's size with non-square pixels made square (width scaled), before rotation."""
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    width, height = frame.width, frame.height
    if sar and sar > 0 and sar != 1:
        width = max(1, round(width * sar))
    return width, height


def _display_size(frame: av.VideoFrame, stream: av.VideoStream) -> tuple[int, int]:
    width, height = _stored_display_size(frame, stream)
    return (height, width) if _quarter_turns(frame) % 2 else (width, height)


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns the display matrix asks for (other angles are ignored)."""
    try:
        angle = frame.rotation
    except (AttributeError, ValueError):
        return 0
    if not angle or angle % 90:
        return 0
    return (angle // 90) % 4


def _rate(stream: av.VideoStream, count: int) -> Fraction | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    if stream.duration and stream.time_base:
        seconds = stream.duration * stream.time_base
        if seconds > 0:
            return Fraction(count) / Fraction(seconds)
    return None


def _count_packets(container: av.container.InputContainer, stream: av.VideoStream) -> int:
    """Count the video stream's packets (one per frame); reads the file, decodes nothing."""
    try:
        return sum(1 for packet in container.demux(stream) if packet.size)
    except av.error.FFmpegError as exc:
        raise VideoInputError(f"cannot read the frames of {container.name}: {_reason(exc)}") from exc


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoInputError(f"video file {path} does not exist")
    if not path.is_file():
        raise VideoInputError(f"video source {path} is not a file")
    if path.stat().st_size == 0:
        raise VideoInputError(f"video file {path} is empty (0 bytes)")


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except av.error.EOFError as exc:
        raise VideoInputError(f"video file {path} ends before its first frame (empty or cut short)") from exc
    except av.error.FFmpegError as exc:
        raise VideoInputError(f"cannot read video file {path}: {_reason(exc)}") from exc


def _video_stream(container: av.container.InputContainer, path: Path) -> av.VideoStream:
    if not container.streams.video:
        others = sorted({s.type for s in container.streams})
        holds = f"it holds: {', '.join(others)}" if others else "it holds no streams at all"
        raise VideoInputError(f"{path} has no video stream ({holds})")
    return container.streams.video[0]


def _reason(exc: av.error.FFmpegError) -> str:
    return exc.strerror or str(exc)
