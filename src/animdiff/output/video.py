"""MP4 (H.264) and WEBM (VP9) writers through PyAV's bundled FFmpeg (no ffmpeg binary needed)."""

from __future__ import annotations

from pathlib import Path

import av
from PIL import Image

from animdiff.errors import OutputError
from animdiff.output.options import OutputOptions

# VP9 in constant-quality mode with a realtime-ish speed: the reference leaves the encoder at
# its defaults (a low fixed bitrate), which smears detailed animations; CRF 32 keeps quality
# steady at any size and cpu-used 4 with row threading keeps it about as fast as x264.
VP9_OPTIONS = {"crf": "32", "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}


def write_mp4(frames: list[Image.Image], path: Path, infotext: str, options: OutputOptions) -> list[str]:
    width, height = frames[0].size
    if width % 2 or height % 2:
        # yuv420p halves the chroma planes, and libx264 refuses odd sizes outright.
        raise OutputError(f"MP4 (H.264, yuv420p) needs an even width and height, got {width}x{height}")
    codec_options = {"crf": str(options.mp4_crf)}
    if options.mp4_preset:
        codec_options["preset"] = options.mp4_preset
    if options.mp4_tune:
        codec_options["tune"] = options.mp4_tune
    _encode(
        frames,
        path,
        container_format="mp4",
        codec="libx264",
        fps=options.fps,
        codec_options=codec_options,
        metadata={"comment": infotext},
        # The index goes first so browsers can start playing an API response before it is all in.
        container_options={"movflags": "+faststart"},
    )
    return []


def write_webm(frames: list[Image.Image], path: Path, infotext: str, options: OutputOptions) -> list[str]:
    _encode(
        frames,
        path,
        container_format="webm",
        codec="libvpx-vp9",
        fps=options.fps,
        codec_options=dict(VP9_OPTIONS),
        metadata={"title": infotext, "comment": infotext},
    )
    return []


def _encode(
    frames: list[Image.Image],
    path: Path,
    *,
    container_format: str,
    codec: str,
    fps: int,
    codec_options: dict[str, str],
    metadata: dict[str, str],
    container_options: dict[str, str] | None = None,
) -> None:
    width, height = frames[0].size
    with av.open(str(path), "w", format=container_format, options=container_options or {}) as container:
        for key, value in metadata.items():
            if value:
                container.metadata[key] = value
        stream = container.add_stream(codec, rate=fps, options=codec_options)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_image(image)
            frame.pts = index  # in the stream's 1/fps time base: one tick per frame
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
