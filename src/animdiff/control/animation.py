"""Animated GIF and WebP sources, read with Pillow.

FFmpeg (and so PyAV) here cannot decode animated WebP at all, and decodes GIF but reports its
rate from the first delays only. Both formats are small and keep a delay per frame, so they are
read with Pillow instead, and probed by walking the file's own blocks: GIF image descriptors and
graphic-control delays, WebP `ANMF` chunks. The walk touches no pixel data, so probing is exact
and cheap.

Timing: a delay of 10 ms or less (GIF: 0 or 1 hundredth) is shown as 100 ms by browsers, and so
it counts here. The rate is `frames / total delay`, exact as a fraction; GIF delays are whole
hundredths, so a GIF written at 12 fps (delays 8, 9, 8, ... cs) reads as 1000/83 = 12.05 fps,
and one written with 8 cs delays as 12.5 fps. Transparent pixels are composited over white, as
ControlNet does with the images it is given.
"""

from __future__ import annotations

import struct
from collections.abc import Generator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
from PIL import Image

from animdiff.control.source import VideoInfo, VideoInputError

AnimationFormat = Literal["gif", "webp"]

#: Browsers show a delay of 10 ms or less as this.
SHORT_DELAY_MS = 100


def sniff_animation(path: Path) -> AnimationFormat | None:
    """'gif' or 'webp' when the file's signature says so (the extension is not trusted)."""
    with open(path, "rb") as fh:
        head = fh.read(12)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


@dataclass(frozen=True)
class _Timing:
    delays_ms: list[int]  # one per frame; empty for a still WebP


def probe_animation(path: Path, kind: AnimationFormat) -> VideoInfo:
    """Frame count, rate and size of a GIF or WebP without decoding a frame."""
    try:
        with open(path, "rb") as fh:
            timing = _gif_timing(fh) if kind == "gif" else _webp_timing(fh)
        frames = len(timing.delays_ms) if timing.delays_ms else (1 if kind == "webp" else 0)
        if frames == 0:
            raise VideoInputError(f"{kind.upper()} file {path} contains no frames")
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError, struct.error, EOFError) as exc:
        raise VideoInputError(f"cannot read {kind.upper()} file {path}: {exc}") from exc
    fps = None
    if timing.delays_ms:
        total = sum(_shown_delay(d) for d in timing.delays_ms)
        fps = Fraction(frames * 1000, total)
    return VideoInfo(path=path, kind="animation", frame_count=frames, fps=fps, width=width, height=height)


def _shown_delay(delay_ms: int) -> int:
    return SHORT_DELAY_MS if delay_ms <= 10 else delay_ms


def _gif_timing(fh: BinaryIO) -> _Timing:
    """Walk the GIF blocks: one delay (ms) per image descriptor."""
    header = fh.read(13)
    if len(header) < 13:
        raise ValueError("truncated header")
    packed = header[10]
    if packed & 0x80:
        fh.seek(3 * (2 ** ((packed & 7) + 1)), 1)
    delays: list[int] = []
    pending_delay = 0
    while True:
        introducer = fh.read(1)
        if not introducer or introducer == b"\x3b":  # end of data or trailer
            break
        if introducer == b"\x21":  # extension
            label = fh.read(1)
            if label == b"\xf9":
                block = _read_sub_blocks(fh)
                if len(block) >= 3:
                    pending_delay = struct.unpack("<H", block[1:3])[0] * 10
            else:
                _read_sub_blocks(fh, keep=False)
        elif introducer == b"\x2c":  # image descriptor
            descriptor = fh.read(9)
            if len(descriptor) < 9:
                break
            if descriptor[8] & 0x80:
                fh.seek(3 * (2 ** ((descriptor[8] & 7) + 1)), 1)
            if not fh.read(1):  # LZW minimum code size
                break
            _read_sub_blocks(fh, keep=False)
            delays.append(pending_delay)
            pending_delay = 0
        else:  # garbage after the last frame: decoders stop here too
            break
    return _Timing(delays)


def _read_sub_blocks(fh: BinaryIO, keep: bool = True) -> bytes:
    data = bytearray()
    while True:
        size = fh.read(1)
        if not size or size[0] == 0:
            return bytes(data)
        if keep:
            data += fh.read(size[0])
        else:
            fh.seek(size[0], 1)


def _webp_timing(fh: BinaryIO) -> _Timing:
    """Walk the RIFF chunks: one duration (ms) per ANMF chunk; none for a still image."""
    header = fh.read(12)
    riff_end = 8 + struct.unpack("<I", header[4:8])[0]
    delays: list[int] = []
    position = 12
    while position + 8 <= riff_end:
        fh.seek(position)
        chunk = fh.read(8)
        if len(chunk) < 8:
            break
        fourcc, size = chunk[:4], struct.unpack("<I", chunk[4:8])[0]
        if fourcc == b"ANMF":
            payload = fh.read(16)
            if len(payload) < 16:
                break
            delays.append(int.from_bytes(payload[12:15], "little"))
        position += 8 + size + (size & 1)
    return _Timing(delays)


def iter_animation_frames(path: Path, kind: AnimationFormat) -> Generator[np.ndarray, None, None]:
    """Decode one frame at a time (Pillow decodes sequentially), as HxWx3 uint8 RGB."""
    try:
        image = Image.open(path)
    except OSError as exc:
        raise VideoInputError(f"cannot read {kind.upper()} file {path}: {exc}") from exc
    with image:
        index = 0
        while True:
            try:
                image.seek(index)
            except EOFError:
                return
            except OSError as exc:
                raise VideoInputError(f"cannot decode frame {index} of {path}: {exc}") from exc
            try:
                rgba = np.asarray(image.convert("RGBA"))
            except OSError as exc:
                raise VideoInputError(f"cannot decode frame {index} of {path}: {exc}") from exc
            yield over_white(rgba)
            index += 1


def over_white(rgba: np.ndarray) -> np.ndarray:
    """Composite an HxWx4 uint8 image over white (opaque images come back unchanged in value)."""
    alpha = rgba[..., 3:4].astype(np.uint16)
    if np.all(alpha == 255):
        return np.ascontiguousarray(rgba[..., :3])
    rgb = rgba[..., :3].astype(np.uint16)
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)
