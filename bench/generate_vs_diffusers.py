"""Our text-to-animation path against diffusers' AnimateDiffPipeline, tiny models, same run.

Same device, dtype (CUDA: float16 with the VAE in float32; CPU: float32) and thread count on both
sides. Loading is timed in fresh processes of its own: ours `Animator.load`, diffusers' own
single-file loaders on the same files. Sampling: one process per GroupNorm mode of ours
(`groupnorm="reference"`, the default users get, and `groupnorm="diffusers"`) loads ours once,
puts diffusers' AnimateDiffPipeline over the same loaded tensors, warms both up, then runs them
turn about, `--repeat` times each: `Animator.run(params, write=False)` against `pipe(...)`, both
prompt to PIL frames, with the memory each run adds. Prints a table with ratios to diffusers. Not
a test: nothing is asserted. About a minute on two idle CPU cores (more when other work shares
them; the CPU-time column is the steady one then). The real-size version is
bench/realsize_vs_diffusers.py.

    .venv/bin/python bench/generate_vs_diffusers.py [--frames 16] [--size 64] [--steps 10] [--threads 1]
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
    args = parser.parse_args()
    if args.worker:
        harness.print_json(harness.compare_worker(args))
        return
    with tempfile.TemporaryDirectory() as models:
        from animdiff.testing.factory import write_models_dir

        written = write_models_dir(Path(models))
        harness.compare(
            __file__,
            args,
            Path(models),
            str(written["sd15"].relative_to(models)),
            str(written["mm-v2"].relative_to(models)),
            "tiny SD1.5 + motion module v2",
        )


if __name__ == "__main__":
    main()
