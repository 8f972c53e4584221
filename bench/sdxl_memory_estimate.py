"""SDXL at 1024x1024 with 16 frames: what each memory option holds on a CUDA card, estimated on the CPU.

`window-batch-2` is two 16-frame windows (32 frames) in one UNet call, as `--window-batch 2` makes them:
its motion modules' attention batch (65,536 rows) is past what FlashAttention launches, so it also
shows the pieces animdiff cuts it into run (on meta, a launch CUDA refuses raises as it would there).

Real-size SDXL base + AnimateDiff-XL run on PyTorch's `meta` device through animdiff's own code
(animdiff.testing.memory_estimate): each phase's peak of allocated bytes, the weights resident in
it included, as `torch.cuda.max_memory_allocated` would count it. Not counted: the CUDA context,
cuBLAS/cuDNN workspaces and the caching allocator's reserve (bench/sdxl_cuda_memory.py measures
all of it where a card is). No GPU, no weight files, seconds per option set (`vae-tiling` about
half a minute: diffusers blends tile edges one pixel column at a time).

    .venv/bin/python bench/sdxl_memory_estimate.py [--size 1024] [--frames 16] [--options plain,offload]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import _harness as harness

#: Option set -> estimate_sdxl_job arguments (RunOptions' memory fields).
OPTION_SETS: dict[str, dict[str, Any]] = {
    "plain": {},
    "offload": {"offload": True},
    "fp8": {"fp8": True},
    "offload+fp8": {"offload": True, "fp8": True},
    "vae-tiling": {"vae_tiling": True},
    "vae-chunk-8": {"vae_chunk": 8},
    "window-batch-2": {"windows_per_call": 2},
}
GiB = 2**30


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--options", default=",".join(OPTION_SETS), help="from: " + ", ".join(OPTION_SETS))
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=16, help="frames of a context window")
    parser.add_argument("--card-gib", type=float, default=24.0, help="the card size to compare with")
    parser.add_argument("--json", help="also write the estimates to this file")
    args = parser.parse_args()
    harness.setup(1)
    from animdiff.decode import frames_per_vae_call
    from animdiff.testing.memory_estimate import PHASES, estimate_sdxl_job, sdxl_models_on_meta

    chosen = [name.strip() for name in args.options.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in OPTION_SETS]
    if unknown:
        parser.error(f"unknown option sets {unknown}; choose from {list(OPTION_SETS)}")
    models = {
        fp8: sdxl_models_on_meta(fp8) for fp8 in {OPTION_SETS[name].get("fp8", False) for name in chosen}
    }
    results = []
    for name in chosen:
        options = OPTION_SETS[name]
        job = estimate_sdxl_job(
            width=args.size,
            height=args.size,
            context=args.frames,
            models=models[options.get("fp8", False)],
            **options,
        )
        chunk = frames_per_vae_call(args.size, args.size, options.get("vae_chunk"))
        results.append(
            {"options": name, "vae_chunk": chunk, **job.phases, "peak": job.peak, "weights": job.weights}
        )
    print(
        f"real-size SDXL base + AnimateDiff-XL, estimated on meta: {args.size}x{args.size}, "
        f"context windows of {args.frames} frames (one a call unless window-batch), CFG, float16 "
        "(VAE float32); GiB allocated at each phase's peak, resident weights included "
        "(plus the CUDA context and workspaces, not counted)"
    )
    header = ["options", "VAE frames a call", *PHASES, "peak", f"under {args.card_gib:g} GiB"]
    print(f"{header[0]:14}" + "".join(f"{h:>19}" for h in header[1:]))
    for r in results:
        cells = [str(r["vae_chunk"]), *(f"{r[p] / GiB:.2f}" for p in PHASES), f"{r['peak'] / GiB:.2f}"]
        cells.append("yes" if r["peak"] < args.card_gib * GiB else "no")
        print(f"{r['options']:14}" + "".join(f"{c:>19}" for c in cells))
    weights = results[0]["weights"]
    print("weights GiB: " + ", ".join(f"{phase} {b / GiB:.2f}" for phase, b in weights.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
