"""PNG frames, each carrying the infotext in the `parameters` chunk A1111's PNG Info reads."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from animdiff.output.frames import check_frames
from animdiff.output.options import OutputOptions


def png_info(infotext: str) -> PngInfo:
    info = PngInfo()
    # Pillow writes tEXt when the text is Latin-1 and switches to UTF-8 iTXt otherwise.
    info.add_text("parameters", infotext)
    return info


def frame_name(index: int) -> str:
    return f"{index:05}.png"


def write_png_frames(
    frames: list[Image.Image], folder: Path, infotext: str, options: OutputOptions
) -> list[str]:
    """Write the frames into a new folder (the staged stand-in for `<base>/`)."""
    folder.mkdir()
    info = png_info(infotext)
    for index, frame in enumerate(frames):
        frame.save(folder / frame_name(index), format="PNG", pnginfo=info)
    return []


def encode_frames_png(frames: Sequence[Image.Image], infotext: str) -> list[bytes]:
    """Every frame as PNG bytes, for the API's `frame` format."""
    info = png_info(infotext)
    out = []
    for frame in check_frames(frames):
        buffer = io.BytesIO()
        frame.save(buffer, format="PNG", pnginfo=info)
        out.append(buffer.getvalue())
    return out
