"""Our SDXL text-to-animation path against diffusers' AnimateDiffSDXLPipeline, tiny models, same run.

The tiny SDXL checkpoint (SGM single-file layout) and AnimateDiff-XL module that
`python -m animdiff.testing` writes, on the same device, dtype and thread count on both sides (see
bench/_harness.py). Sampling: one process per GroupNorm mode of ours loads ours once, puts
diffusers' AnimateDiffSDXLPipeline over the same loaded tensors (with AnimateDiff-XL's betas), warms
both up, then runs them turn about: `Animator.run(params, write=False)` against `pipe(...)`, prompt
to PIL frames, CFG 7.5, with the memory each run adds. The peer decodes all frames in one VAE call,
so ours does too (`--vae-chunk` defaults to the frame count). Loading: ours timed in fresh
processes; diffusers' own single-file SDXL loading is not (it wants the hub's config folders).
Prints a table with ratios to diffusers; asserts nothing. About a minute on two idle CPU cores.

    .venv/bin/python bench/sdxl_vs_diffusers.py [--frames 16] [--size 64] [--steps 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import _harness as harness


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    harness.add_compare_arguments(parser, frames=16, size=64, steps=10, repeat=5, rounds=1)
    parser.set_defaults(vae_chunk=None)
    args = parser.parse_args()
    args.vae_chunk = args.vae_chunk or args.frames
    if args.worker:
        harness.print_json(harness.compare_worker(args))
        return
    with tempfile.TemporaryDirectory() as models:
        from animdiff.testing.sdxl import SDXL_FILES, write_tiny_sdxl_files

        write_tiny_sdxl_files(Path(models))
        harness.compare(
            __file__,
            args,
            Path(models),
            SDXL_FILES["sdxl"],
            SDXL_FILES["mm-sdxl-beta-ckpt"],
            "tiny SDXL + AnimateDiff-XL",
            peer_loads=False,
        )


if __name__ == "__main__":
    main()
