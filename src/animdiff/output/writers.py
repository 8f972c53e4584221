"""The table of formats: file suffix and writer, in the order the reference writes them.

Both `write_animation` and `encode` go through this table, so a format behaves the same on disk
and over the API; tests replace an entry to inject failures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from animdiff.output.gif import write_gif
from animdiff.output.options import OutputOptions
from animdiff.output.png import write_png_frames
from animdiff.output.video import write_mp4, write_webm
from animdiff.output.webp import write_webp

WriteFn = Callable[[list[Image.Image], Path, str, OutputOptions], list[str]]


@dataclass(frozen=True)
class Writer:
    """`write(frames, path, infotext, options)` creates `path` and returns warnings."""

    suffix: str  # "" means the output is a folder named like the base
    write: WriteFn


def write_txt(frames: list[Image.Image], path: Path, infotext: str, options: OutputOptions) -> list[str]:
    path.write_bytes((infotext + "\n").encode("utf-8"))
    return []


WRITERS: dict[str, Writer] = {
    "png": Writer("", write_png_frames),
    "gif": Writer(".gif", write_gif),
    "mp4": Writer(".mp4", write_mp4),
    "txt": Writer(".txt", write_txt),
    "webp": Writer(".webp", write_webp),
    "webm": Writer(".webm", write_webm),
}
FORMAT_ORDER: tuple[str, ...] = tuple(WRITERS)
