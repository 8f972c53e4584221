"""Frame folders (`--video-path DIR`): one image file per frame, in natural order.

The reference hands such a folder to ControlNet, which lists it with A1111's `listfiles`:
non-hidden files, sorted naturally, so "2.png" comes before "10.png" and unpadded names from
FFmpeg or OpenCV extraction keep their order. The folder is not searched recursively. Files whose
extension is not an image's are skipped (a stray "notes.txt" is not a frame); an image that
cannot be read is an error, because silently skipping it would shift every later frame.

EXIF orientation is applied (phone photos), and transparent pixels are composited over white as
ControlNet does. All frames must have one size after orientation: frames of different sizes
would be resized differently and jitter, so the folder is refused and two offenders are named.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from animdiff.control.animation import over_white
from animdiff.control.source import VideoInfo, VideoInputError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})

_DIGITS = re.compile(r"(\d+)")
# EXIF orientations that swap width and height (transpose, rotate 90/270, transverse).
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})


def natural_sort_key(name: str) -> tuple[tuple[tuple[int, int | str], ...], str]:
    """Sort key: digit runs compare as numbers, text case-insensitively; the raw name breaks ties.

    Each part is tagged (0 = number, 1 = text) so a number never meets a string in a comparison.
    """
    parts = tuple(
        (0, int(part)) if part.isdecimal() else (1, part.lower()) for part in _DIGITS.split(name) if part
    )
    return parts, name


def list_frame_files(folder: Path) -> list[Path]:
    """The folder's frame images in natural order; errors when there is no usable folder or image."""
    if not folder.exists():
        raise VideoInputError(f"frame folder {folder} does not exist")
    if not folder.is_dir():
        raise VideoInputError(f"frame folder {folder} is not a folder")
    files = [
        entry
        for entry in folder.iterdir()
        if not entry.name.startswith(".") and entry.suffix.lower() in IMAGE_EXTENSIONS and entry.is_file()
    ]
    if not files:
        kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise VideoInputError(f"frame folder {folder} contains no images ({kinds})")
    return sorted(files, key=lambda entry: natural_sort_key(entry.name))


def probe_folder(folder: Path) -> VideoInfo:
    """Count the frames and check every image's header: readable, and all of one size.

    Only headers are read (no pixel decoding), so a folder of thousands of frames probes quickly.
    """
    files = list_frame_files(folder)
    first_size = _header_size(files[0], folder)
    for path in files[1:]:
        size = _header_size(path, folder)
        if size != first_size:
            raise _mixed_sizes(folder, files[0], first_size, path, size)
    width, height = first_size
    return VideoInfo(path=folder, kind="folder", frame_count=len(files), fps=None, width=width, height=height)


def iter_folder_frames(folder: Path) -> Generator[np.ndarray, None, None]:
    """Decode the frames one at a time, as HxWx3 uint8 RGB, checking each has the first's size."""
    files = list_frame_files(folder)
    first: tuple[Path, tuple[int, int]] | None = None
    for path in files:
        frame = load_image(path, folder)
        size = (frame.shape[1], frame.shape[0])
        if first is None:
            first = (path, size)
        elif size != first[1]:
            raise _mixed_sizes(folder, first[0], first[1], path, size)
        yield frame


def is_still_image(path: Path) -> bool:
    """Whether the file starts like a PNG, JPEG, BMP or TIFF (read as one frame, EXIF applied)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    return head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*"))


def probe_image_file(path: Path) -> VideoInfo:
    """A single image given as the video source: a one-frame source without a rate."""
    width, height = _header_size(path, None)
    return VideoInfo(path=path, kind="image", frame_count=1, fps=None, width=width, height=height)


def load_image(path: Path, folder: Path | None = None) -> np.ndarray:
    """One image as displayed: EXIF orientation applied, alpha over white, HxWx3 uint8 RGB."""
    try:
        with Image.open(path) as image:
            image.load()
            oriented = ImageOps.exif_transpose(image)
            rgba = np.asarray(_eight_bit(oriented).convert("RGBA"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise _unreadable(path, folder, exc) from exc
    return over_white(rgba)


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit and float greyscale (depth maps, scans) scaled to 8 bits; Pillow's own conversion clips."""
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image).astype(np.float64)
        if values.max(initial=0) > 255:
            values = values / 257.0
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    if image.mode == "F":
        return Image.fromarray(np.clip(np.rint(np.asarray(image)), 0, 255).astype(np.uint8))
    return image


def _header_size(path: Path, folder: Path | None) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            width, height = image.size
            if _orientation(image) in _SWAPPING_ORIENTATIONS:
                width, height = height, width
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise _unreadable(path, folder, exc) from exc
    return width, height


def _orientation(image: Image.Image) -> int:
    # PNG keeps EXIF in a chunk that may follow the pixels; asking for it would decode the image,
    # so only what the header already holds is used for PNG.
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except (ValueError, TypeError, OSError):
        return 1


def _unreadable(path: Path, folder: Path | None, exc: BaseException) -> VideoInputError:
    where = f" in frame folder {folder}" if folder is not None else ""
    return VideoInputError(f"cannot read image {path.name}{where}: {exc}")


def _mixed_sizes(
    folder: Path, first: Path, first_size: tuple[int, int], other: Path, other_size: tuple[int, int]
) -> VideoInputError:
    return VideoInputError(
        f"frame folder {folder} has images of different sizes: {first.name} is "
        f"{first_size[0]}x{first_size[1]} but {other.name} is {other_size[0]}x{other_size[1]}; "
        "all frames must have one size"
    )
