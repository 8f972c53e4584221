"""Animated WebP writer (Pillow) with the infotext where A1111 looks for it: EXIF UserComment."""

from __future__ import annotations

from pathlib import Path

from PIL import ExifTags, Image, features

from animdiff.errors import OutputError
from animdiff.output.options import OutputOptions

# EXIF's UserComment starts with an 8-byte charset marker. A1111 writes (and reads back) the
# "UNICODE" marker followed by UTF-16 big-endian text, so pasting our files into it works.
_UNICODE = b"UNICODE\x00"
_ASCII = b"ASCII\x00\x00\x00"


def write_webp(frames: list[Image.Image], path: Path, infotext: str, options: OutputOptions) -> list[str]:
    if not features.check("webp"):
        raise OutputError("this Pillow build cannot write WebP; install a Pillow wheel with WebP support")
    extra: dict[str, object] = {}
    if infotext:
        extra["exif"] = exif_with_comment(infotext)
    frames[0].save(
        path,
        format="WEBP",
        save_all=True,
        append_images=frames[1:],
        duration=int(1000 / options.fps),
        loop=options.loop_number,
        quality=options.webp_quality,
        lossless=options.webp_lossless,
        **extra,
    )
    return []


def exif_with_comment(text: str) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.IFD.Exif] = {ExifTags.Base.UserComment: _UNICODE + text.encode("utf-16-be")}
    return exif.tobytes()


def read_user_comment(image: Image.Image) -> str | None:
    """The UserComment text of an opened image, or None; the inverse of `exif_with_comment`."""
    raw = image.getexif().get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.UserComment)
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw
    if raw.startswith(_UNICODE):
        return raw[len(_UNICODE) :].decode("utf-16-be", errors="replace")
    if raw.startswith(_ASCII):
        raw = raw[len(_ASCII) :]
    return raw.decode("utf-8", errors="replace").rstrip("\x00")
