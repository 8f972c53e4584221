"""Ours against diffusers' AnimateDiffSDXLPipeline at the real SDXL base + AnimateDiff-XL sizes.

Random weights at real size (`python -m animdiff.testing --real-size DIR --sdxl`: an SGM single-file
SDXL checkpoint of 6.9 GB in float16 and a 0.95 GB AnimateDiff-XL module), written once into the
cache folder and reused: `--cache DIR`, else $ANIMDIFF_REALSIZE_DIR, else bench/.realsize. Then the
same comparison as bench/sdxl_vs_diffusers.py: same device, dtype and threads on both sides, ours
loaded in fresh processes, each GroupNorm mode of ours run turn about with diffusers' pipeline over
the same loaded tensors, warm-up excluded, all frames decoded in one VAE call on both sides (the
peer has no chunking). Defaults: 128x128 pixels (16x16 latents, the smallest size whose three
levels stay even), 8 frames, 2 steps, CFG 7.5. Not part of `make test` nor of `make bench`.

Memory: on a CPU everything is float32, and the loaded models alone take about 15 GB (UNet 10.3 GB,
text encoders 3.3 GB, motion module 0.95 GB, VAE 0.3 GB); writing the files peaks near 5.5 GB.
Count on 20 GB of free memory. On CUDA (float16, VAE float32) the models take about 7.7 GB.

    .venv/bin/python bench/realsize_sdxl_vs_diffusers.py [--cache DIR] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys

import _harness as harness


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    harness.add_compare_arguments(parser, frames=8, size=128, steps=2, repeat=2, rounds=1)
    parser.set_defaults(vae_chunk=None)
    parser.add_argument("--cache", help="folder for the real-size models (default: see above)")
    args = parser.parse_args()
    args.vae_chunk = args.vae_chunk or args.frames
    if args.worker:
        harness.print_json(harness.compare_worker(args))
        return
    from animdiff.testing.real_size import REAL_SDXL_FILES, write_real_size_dir

    root = harness.realsize_dir(args.cache)
    write_real_size_dir(root, log=lambda message: print(message, file=sys.stderr), sdxl=True)
    harness.compare(
        __file__,
        args,
        root,
        REAL_SDXL_FILES["sdxl"],
        REAL_SDXL_FILES["mm-sdxl"],
        "real-size SDXL base + AnimateDiff-XL",
        peer_loads=False,
    )


if __name__ == "__main__":
    main()
