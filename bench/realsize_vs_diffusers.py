"""Ours against diffusers' AnimateDiffPipeline at the real SD1.5 + motion module v2 sizes.

Random weights at real size (`python -m animdiff.testing --real-size`), written once into a cache
folder and reused: `--cache DIR`, else $ANIMDIFF_REALSIZE_DIR, else bench/.realsize (about 4 GB).
Then the same comparison as bench/generate_vs_diffusers.py (same device, dtype and threads on
both sides; loading timed in fresh processes of its own; ours with groupnorm=reference, the
default, and groupnorm=diffusers, each run turn about with diffusers' pipeline over the same
loaded weights; warm-up excluded), at 64x64 pixels, 8 frames, 2 steps, CFG 7.5. Not part of
`make test` (nor meant for `make bench`: it is slow and big).

On a shared two-core CPU with `--threads 1` (steadier there than 2): writing the models about
30 s once; ours' load 7-11 s, peak 7 GB; each sampling process about 2 minutes; diffusers' own
single-file load about 50 s with a 13.3 GB peak (it holds the UNet twice while it builds the
motion UNet), so `--no-peer-load` skips it where memory is short. On CUDA everything runs in
float16 (VAE float32) and takes seconds.

    .venv/bin/python bench/realsize_vs_diffusers.py [--cache DIR] [--threads 1] [--no-peer-load]
"""

from __future__ import annotations

import argparse
import sys

import _harness as harness


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    harness.add_compare_arguments(parser, frames=8, size=64, steps=2, repeat=3, rounds=1)
    parser.add_argument("--cache", help="folder for the real-size models (default: see above)")
    args = parser.parse_args()
    if args.worker:
        harness.print_json(harness.compare_worker(args))
        return
    from animdiff.testing.real_size import REAL_FILES, write_real_size_dir

    root = harness.realsize_dir(args.cache)
    write_real_size_dir(root, log=lambda message: print(message, file=sys.stderr))
    harness.compare(
        __file__, args, root, REAL_FILES["sd15"], REAL_FILES["mm-v2"], "real-size SD1.5 + motion module v2"
    )


if __name__ == "__main__":
    main()
