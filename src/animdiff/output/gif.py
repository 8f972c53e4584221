"""GIF writer: Pillow, optionally with one palette for the whole animation and gifsicle.

Pillow's plain path gives every frame its own adaptive palette, which is why colours can shift
from frame to frame. The palette option computes one palette from all frames and dithers each
frame onto it; it keeps the loop number, which the reference's palette path drops.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

from animdiff.output.options import OutputOptions

GIFSICLE_MISSING = "gifsicle is not installed; GIF written without it"

# The palette is computed from a strip of all frames shrunk to about this many pixels: enough to
# see every frame's colours, small enough that median cut stays a fraction of a second.
PALETTE_SAMPLE_PIXELS = 1 << 20
GIFSICLE_TIMEOUT_S = 600


def write_gif(frames: list[Image.Image], path: Path, infotext: str, options: OutputOptions) -> list[str]:
    extra: dict[str, object] = {}
    if options.gif_palette:
        palette = global_palette(frames)
        images = [frame.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG) for frame in frames]
        # Passing the palette makes Pillow write it once as the global colour table instead of
        # a local table per frame.
        extra["palette"] = bytes(palette.getpalette() or [])
    else:
        images = frames
    if infotext:
        extra["comment"] = infotext
    # Pillow stores delays in 10 ms units, truncating (125 ms at 8 fps becomes 120 ms), as the
    # reference does.
    images[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=1000 / options.fps,
        loop=options.loop_number,
        **extra,
    )
    return run_gifsicle(path) if options.gif_gifsicle else []


def global_palette(frames: list[Image.Image]) -> Image.Image:
    """A 256-colour palette image for all frames together.

    Nearest-neighbour shrinking keeps real pixel colours (no blends that appear in no frame),
    and stacking the frames in one column leaves no empty cells to bias the palette.
    """
    width, height = frames[0].size
    scale = min(1.0, math.sqrt(PALETTE_SAMPLE_PIXELS / (len(frames) * width * height)))
    cell_w, cell_h = max(1, round(width * scale)), max(1, round(height * scale))
    strip = Image.new("RGB", (cell_w, cell_h * len(frames)))
    for index, frame in enumerate(frames):
        cell = frame if scale == 1.0 else frame.resize((cell_w, cell_h), Image.Resampling.NEAREST)
        strip.paste(cell, (0, index * cell_h))
    return strip.quantize(colors=256, method=Image.Quantize.MEDIANCUT)


def find_gifsicle() -> str | None:
    """gifsicle on PATH, or in the environment animdiff runs from (`make` unpacks it into the
    venv's bin/, which is not on PATH unless the venv is activated)."""
    found = shutil.which("gifsicle")
    if found is not None:
        return found
    for folder in (Path(sys.executable).parent, Path(sys.prefix) / "bin"):
        found = shutil.which("gifsicle", path=str(folder))
        if found is not None:
            return found
    return None


def run_gifsicle(path: Path) -> list[str]:
    """Optimise in place when gifsicle exists; a missing or failing optimiser only warns.

    The unoptimised GIF is a complete result, so losing the user's animation over an optional
    size saving would be the worse outcome.
    """
    exe = find_gifsicle()
    if exe is None:
        return [GIFSICLE_MISSING]
    optimised = path.with_name(path.name + ".gifsicle")
    try:
        subprocess.run(
            [exe, "-O3", str(path), "-o", str(optimised)],
            check=True,
            capture_output=True,
            timeout=GIFSICLE_TIMEOUT_S,
        )
        os.replace(optimised, path)
    except subprocess.CalledProcessError as exc:
        detail = exc.stderr.decode(errors="replace").strip() or f"exit status {exc.returncode}"
        return [f"gifsicle failed ({detail}); GIF written without it"]
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"gifsicle failed ({exc}); GIF written without it"]
    finally:
        optimised.unlink(missing_ok=True)
    return []
