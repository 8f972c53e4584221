"""`write_animation`: every requested output of one result, named and placed atomically."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from PIL import Image

from animdiff.errors import AnimdiffError, OutputError, ParamsError
from animdiff.output.atomic import Staging
from animdiff.output.frames import check_frames
from animdiff.output.naming import date_folder, reserve, sanitize_request_id
from animdiff.output.options import OutputOptions
from animdiff.output.writers import FORMAT_ORDER, WRITERS

# Formats that are not files on disk: "frame" asks the API to return the frames.
API_ONLY_FORMATS = ("frame",)


@dataclass
class WriteResult:
    """Where one result went: `files` maps format to path ("png" to the frames' folder)."""

    files: dict[str, Path]
    warnings: list[str] = field(default_factory=list)
    base: Path = Path()


def select_formats(formats: Sequence[str]) -> list[str]:
    """Normalise the requested formats into writer order, dropping the API-only ones."""
    wanted = set()
    for fmt in formats:
        name = fmt.strip().lower()
        if name in API_ONLY_FORMATS or not name:
            continue
        if name not in WRITERS:
            raise ParamsError(f"unknown output format {fmt!r}; choose from {', '.join(FORMAT_ORDER)}")
        wanted.add(name)
    return [fmt for fmt in FORMAT_ORDER if fmt in wanted]


def write_animation(
    frames: list[Image.Image],
    formats: list[str],
    out_root: Path,
    seed: int,
    infotext: str,
    options: OutputOptions,
    request_id: str = "",
    now: datetime | None = None,
) -> WriteResult:
    """Write the result into `<out_root>/AnimateDiff/<date>/` under a newly reserved name.

    Either every requested output appears under its final name or none does: the files are
    staged under temporary names and renamed into place only after the last writer succeeded.
    """
    selected = select_formats(formats)
    if not selected:
        raise ParamsError("no output format to write; choose from " + ", ".join(FORMAT_ORDER))
    if seed < 0:
        raise ParamsError(f"seed {seed} must be resolved (>= 0) before the files are named")
    request_id = sanitize_request_id(request_id)
    images = check_frames(frames)

    folder = date_folder(out_root, now)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {folder}: {exc}") from exc

    reservation = reserve(folder, seed, request_id)
    staging = Staging(folder)
    result = WriteResult(files={}, base=folder / reservation.base)
    step = "write the outputs"
    try:
        for fmt in selected:
            step = f"write the {fmt} output"
            writer = WRITERS[fmt]
            final = folder / f"{reservation.base}{writer.suffix}"
            result.warnings.extend(writer.write(images, staging.temp_for(final), infotext, options))
            result.files[fmt] = final
        step = "move the outputs into place"
        staging.commit()
    except BaseException as exc:
        staging.discard()
        if isinstance(exc, AnimdiffError) or not isinstance(exc, Exception):
            raise
        raise OutputError(f"could not {step} for {result.base}: {exc}") from exc
    finally:
        reservation.release()
    return result
