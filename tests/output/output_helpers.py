"""Helpers for the output tests: tiny deterministic frames and readers for every format."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

INFOTEXT = (
    "0: a corgi, running\n8: a corgi: jumping\n"
    "Negative prompt: blurry, lowres\n"
    'Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 42, Size: 64x64, AnimateDiff: "model: '
    'mm_sd_v15_v2.ckpt, video_length: 8, fps: 8", Version: animdiff 0.1.0, Note: "héllo ✓"'
)


def gradient_frames(count: int = 8, width: int = 64, height: int = 64) -> list[Image.Image]:
    """A gradient sliding sideways: every frame differs, so no encoder merges frames."""
    y, x = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(count):
        rgb = np.stack([(x * 4 + i * 16) % 256, (y * 4) % 256, ((x + y) * 2 + i * 8) % 256], axis=-1).astype(
            np.uint8
        )
        frames.append(Image.fromarray(rgb, "RGB"))
    return frames


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(np.int16)


@dataclass
class VideoInfo:
    codec: str
    frames: int
    rate: Fraction
    duration_s: float
    size: tuple[int, int]
    pix_fmt: str
    metadata: dict[str, str]


def read_video(path: Path) -> VideoInfo:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = sum(1 for _ in container.decode(stream))
        # Matroska upper-cases tag names; compare them case-insensitively.
        metadata = {key.lower(): value for key, value in container.metadata.items()}
        return VideoInfo(
            codec=stream.codec_context.name,
            frames=decoded,
            rate=stream.average_rate,
            duration_s=container.duration / av.time_base,
            size=(stream.width, stream.height),
            pix_fmt=stream.codec_context.pix_fmt,
            metadata=metadata,
        )


def gif_blocks(data: bytes) -> list[tuple[str, bool]]:
    """The GIF's layout: ("global", has table) then ("image", has local table) per frame."""
    assert data[:6] in (b"GIF87a", b"GIF89a")
    flags = data[10]
    pos = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    blocks = [("global", bool(flags & 0x80))]

    def skip_sub_blocks(p: int) -> int:
        while data[p]:
            p += data[p] + 1
        return p + 1

    while data[pos] != 0x3B:
        if data[pos] == 0x21:  # extension
            pos = skip_sub_blocks(pos + 2)
        elif data[pos] == 0x2C:  # image descriptor
            local = data[pos + 9]
            blocks.append(("image", bool(local & 0x80)))
            pos += 10 + (3 * 2 ** ((local & 7) + 1) if local & 0x80 else 0)
            pos = skip_sub_blocks(pos + 1)
        else:
            raise AssertionError(f"unexpected GIF block {data[pos]:#x} at {pos}")
    return blocks


def listing(folder: Path) -> dict[str, bytes | list[str]]:
    """Everything in a folder (one level of sub-folders) with contents, to compare before/after."""
    out: dict[str, bytes | list[str]] = {}
    for entry in sorted(folder.iterdir()):
        out[entry.name] = sorted(p.name for p in entry.iterdir()) if entry.is_dir() else entry.read_bytes()
    return out
