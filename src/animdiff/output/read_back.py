"""The infotext inside a file animdiff or A1111 wrote, wherever that format keeps it.

A1111 users restore settings by dropping a result onto "PNG Info" and sending it to txt2img;
`animdiff generate --from-infotext FILE` is that habit. Each format keeps the text where our
writers (and A1111, for PNG and WebP) put it: the PNG `parameters` chunk, the GIF comment, the
WebP EXIF UserComment, the MP4/WEBM container's `comment` tag, or the whole of a TXT file.
"""

from __future__ import annotations

from pathlib import Path

from animdiff.errors import ParamsError
from animdiff.output.webp import read_user_comment

READABLE = (".txt", ".png", ".gif", ".webp", ".mp4", ".webm")


def infotext_from_file(path: Path) -> str:
    """The infotext a result file carries; ParamsError naming the file when it has none."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in READABLE:
        raise ParamsError(
            f"{path}: cannot read settings from a {suffix or 'extensionless'} file; "
            f"give one of {', '.join(READABLE)}"
        )
    if path.is_dir():
        raise ParamsError(f"{path} is a folder; give one file (a PNG frame, the GIF, the TXT, ...)")
    try:
        text = _read(path, suffix)
    except OSError as exc:
        raise ParamsError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except Exception as exc:  # Pillow and PyAV raise their own types for damaged files
        raise ParamsError(f"{path}: cannot be read as {suffix[1:].upper()} ({exc})") from exc
    if not text or not text.strip():
        raise ParamsError(f"{path}: holds no generation settings (no infotext found)")
    return text


def _read(path: Path, suffix: str) -> str | None:
    if suffix == ".txt":
        return path.read_text(encoding="utf-8")
    if suffix in (".mp4", ".webm"):
        import av

        with av.open(str(path)) as container:
            return container.metadata.get("comment") or container.metadata.get("title")
    from PIL import Image

    with Image.open(path) as image:
        if suffix == ".png":
            return image.info.get("parameters")
        if suffix == ".gif":
            comment = image.info.get("comment")
            return comment.decode("utf-8") if isinstance(comment, bytes) else comment
        return read_user_comment(image)
