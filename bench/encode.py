"""Encoding speed and size for every output format, on one synthetic 64-frame 512x512 animation.

A benchmark, not a test: it prints a table and checks nothing. The content is a moving colour
gradient with a little fixed-seed grain, close to what a diffusion model produces (smooth areas
with fine texture); pure noise would mostly measure lossless WebP's worst case.
Run: .venv/bin/python bench/encode.py
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from animdiff.output import OutputOptions, encode, encode_frames_png

FRAMES = 64
SIZE = 512
GRAIN = 6  # peak-to-peak amplitude of the grain, in 8-bit levels
INFOTEXT = "a benchmark animation\nSteps: 20, Sampler: Euler, CFG scale: 7.5, Seed: 1, Size: 512x512"


def make_frames() -> list[Image.Image]:
    rng = np.random.default_rng(1234)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    frames = []
    for index in range(FRAMES):
        phase = 2 * np.pi * index / FRAMES
        rgb = np.stack(
            [
                0.5 + 0.5 * np.sin(2 * np.pi * x + phase),
                0.5 + 0.5 * np.sin(2 * np.pi * y - phase),
                0.5 + 0.5 * np.sin(2 * np.pi * (x + y) / 2 + 2 * phase),
            ],
            axis=-1,
        )
        grain = rng.integers(-GRAIN // 2, GRAIN // 2 + 1, size=rgb.shape)
        frames.append(Image.fromarray(np.clip(rgb * 255 + grain, 0, 255).astype(np.uint8), "RGB"))
    return frames


def timed(job: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    size = job()
    return time.perf_counter() - start, size


def main() -> None:
    frames = make_frames()
    cases: list[tuple[str, Callable[[], int]]] = [
        ("gif", lambda: len(encode(frames, "gif", INFOTEXT, OutputOptions()))),
        ("gif palette", lambda: len(encode(frames, "gif", INFOTEXT, OutputOptions(gif_palette=True)))),
        ("webp q80", lambda: len(encode(frames, "webp", INFOTEXT, OutputOptions()))),
        ("webp lossless", lambda: len(encode(frames, "webp", INFOTEXT, OutputOptions(webp_lossless=True)))),
        ("mp4 crf23", lambda: len(encode(frames, "mp4", INFOTEXT, OutputOptions()))),
        ("webm vp9", lambda: len(encode(frames, "webm", INFOTEXT, OutputOptions()))),
        ("png frames", lambda: sum(map(len, encode_frames_png(frames, INFOTEXT)))),
    ]
    print(f"{FRAMES} frames, {SIZE}x{SIZE}, gradient with grain")
    print(f"{'format':<15}{'seconds':>9}{'bytes':>13}")
    sizes = {}
    for name, job in cases:
        seconds, size = timed(job)
        sizes[name] = size
        print(f"{name:<15}{seconds:>9.2f}{size:>13,}")
    print(f"GIF size, palette / no palette: {sizes['gif palette'] / sizes['gif']:.2f}")


if __name__ == "__main__":
    main()
