"""In-memory encoding for the HTTP API, through the same writers as the files on disk."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from animdiff.errors import AnimdiffError, OutputError, ParamsError
from animdiff.output.frames import check_frames
from animdiff.output.options import OutputOptions
from animdiff.output.writers import WRITERS

ENCODABLE = ("gif", "mp4", "webm", "webp")


def encode(
    frames: Sequence[Image.Image],
    fmt: str,
    infotext: str,
    options: OutputOptions,
    *,
    warnings: list[str] | None = None,
) -> bytes:
    """The bytes of one animation file; warnings (e.g. gifsicle missing) go into `warnings`.

    The encoders work on files (gifsicle and MP4's faststart pass need a seekable, named file),
    so this writes into a private temporary folder and reads the result back.
    """
    name = fmt.strip().lower()
    if name not in ENCODABLE:
        raise ParamsError(f"cannot encode format {fmt!r} as one file; choose from {', '.join(ENCODABLE)}")
    images = check_frames(frames)
    writer = WRITERS[name]
    with tempfile.TemporaryDirectory(prefix="animdiff-encode-") as tmp:
        path = Path(tmp) / f"animation{writer.suffix}"
        try:
            notes = writer.write(images, path, infotext, options)
            data = path.read_bytes()
        except AnimdiffError:
            raise
        except Exception as exc:
            raise OutputError(f"could not encode the {name} animation: {exc}") from exc
    if warnings is not None:
        warnings.extend(notes)
    return data
