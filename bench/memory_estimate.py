"""What a job holds on a CUDA card, estimated on the CPU: SDXL at 1024x1024 with 16 frames under each
memory option, and the reference's published memory figures against ours for the same settings.

Real-size models (SD1.5 + mm_sd_v15_v2, SDXL base + AnimateDiff-XL; random weights) run on PyTorch's
`meta` device through animdiff's own code (animdiff.testing.memory_estimate): each phase's peak of
allocated bytes, the weights resident in it included, as `torch.cuda.max_memory_allocated` would
count it. Not counted: the CUDA context, cuBLAS/cuDNN workspaces and the caching allocator's reserve
(bench/sdxl_cuda_memory.py measures all of it where a card is). No GPU, no weight files, seconds per
row (`vae-tiling` about half a minute: diffusers blends tile edges one pixel column at a time).

`window-batch-2` is two 16-frame windows (32 frames) in one UNet call, as `--window-batch 2` makes
them: its motion modules' attention batch (65,536 rows) is past what FlashAttention launches, so the
row also shows that the pieces animdiff cuts it into run (on meta a launch CUDA refuses raises, as
it would there). `controlnet` adds one full-size ControlNet acting on every frame (video to video).

The reference figures are the A1111 extension's own (its docs/performance.md: an RTX 4090, PyTorch
SDP attention, cond and uncond in one batch; how they were read is not stated, so they may include
the CUDA context that the estimate leaves out). `ff-one-piece` rows run every feed-forward in one
piece, as the extension does (animdiff slices large ones); `vae-chunk-8` rows decode the fixed 8
frames a VAE call animdiff used before its chunk followed the size and dtype.

    .venv/bin/python bench/memory_estimate.py [--size 1024] [--frames 16] [--options plain,offload]
    .venv/bin/python bench/memory_estimate.py --only reference
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import _harness as harness

#: Option set -> estimate_job arguments (RunOptions' memory fields; fp8 picks the models).
OPTION_SETS: dict[str, dict[str, Any]] = {
    "plain": {},
    "offload": {"offload": True},
    "fp8": {"fp8": True},
    "offload+fp8": {"offload": True, "fp8": True},
    "vae-tiling": {"vae_tiling": True},
    "vae-chunk-8": {"vae_chunk": 8},
    "window-batch-2": {"windows_per_call": 2},
    "controlnet": {"controlnets": 1},
}

#: (setting, family, width, height, frames, the reference's figure in GB).
REFERENCE_FIGURES = (
    ("SD1.5 + motion module, 512x512, 16 frames", "sd15", 512, 512, 16, 5.60),
    ("SDXL + AnimateDiff-XL, 1024x768, 16 frames", "sdxl", 1024, 768, 16, 13.87),
)
#: The reference table's rows: (label, --vae-chunk, feed-forwards sliced).
ROWS = (("defaults", None, True), ("ff-one-piece", None, False), ("vae-chunk-8", 8, True))
GiB = 2**30


def _gib(n: int) -> str:
    return f"{n / GiB:.2f}"


def option_table(args: argparse.Namespace, chosen: list[str]) -> list[dict[str, Any]]:
    from animdiff.decode import frames_per_vae_call
    from animdiff.testing.memory_estimate import PHASES, estimate_job, sdxl_models_on_meta

    models = {fp8: sdxl_models_on_meta(fp8) for fp8 in {OPTION_SETS[n].get("fp8", False) for n in chosen}}
    results = []
    for name in chosen:
        options = dict(OPTION_SETS[name])
        fp8 = options.pop("fp8", False)
        job = estimate_job(models[fp8], width=args.size, height=args.size, context=args.frames, **options)
        vae_dtype = models[fp8].parts.vae.dtype
        chunk = frames_per_vae_call(args.size, args.size, options.get("vae_chunk"), dtype=vae_dtype)
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
        cells = [str(r["vae_chunk"]), *(_gib(r[p]) for p in PHASES), _gib(r["peak"])]
        cells.append("yes" if r["peak"] < args.card_gib * GiB else "no")
        print(f"{r['options']:14}" + "".join(f"{c:>19}" for c in cells))
    weights = results[0]["weights"]
    print("weights GiB: " + ", ".join(f"{phase} {_gib(b)}" for phase, b in weights.items()))
    return results


def reference_table() -> list[dict[str, Any]]:
    from animdiff.decode import frames_per_vae_call
    from animdiff.testing.memory_estimate import (
        PHASES,
        estimate_job,
        sd15_models_on_meta,
        sdxl_models_on_meta,
    )

    makers = {"sd15": sd15_models_on_meta, "sdxl": sdxl_models_on_meta}
    results = []
    for setting, family, width, height, frames, published in REFERENCE_FIGURES:
        models = makers[family]()
        budget = models.unet.ff_budget.bytes
        for label, chunk, sliced in ROWS:
            models.unet.ff_budget.bytes = budget if sliced else None
            job = estimate_job(models, width=width, height=height, context=frames, vae_chunk=chunk)
            vae_chunk = frames_per_vae_call(width, height, chunk, dtype=models.parts.vae.dtype)
            results.append(
                {"setting": setting, "reference_gb": published, "options": label, "vae_chunk": vae_chunk}
                | {p: job.phases[p] for p in PHASES}
                | {"peak": job.peak, "peak_phase": job.peak_phase}
            )
    print()
    print(
        "the A1111 extension's published figures (RTX 4090, SDP attention, cond/uncond batched) against "
        "animdiff's estimate, GiB allocated at each phase's peak"
    )
    header = ["setting", "reference GB", "options", "VAE frames a call", *PHASES, "peak"]
    print(f"{header[0]:44}" + "".join(f"{h:>18}" for h in header[1:]))
    for r in results:
        cells = [f"{r['reference_gb']:.2f}", r["options"], str(r["vae_chunk"])]
        cells += [_gib(r[p]) for p in PHASES] + [f"{_gib(r['peak'])} ({r['peak_phase']})"]
        print(f"{r['setting']:44}" + "".join(f"{c:>18}" for c in cells))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--options", default=",".join(OPTION_SETS), help="from: " + ", ".join(OPTION_SETS))
    parser.add_argument("--only", choices=("options", "reference"), help="print one of the two tables")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=16, help="frames of a context window")
    parser.add_argument("--card-gib", type=float, default=24.0, help="the card size to compare with")
    parser.add_argument("--json", help="also write the estimates to this file")
    args = parser.parse_args()
    harness.setup(1)
    chosen = [name.strip() for name in args.options.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in OPTION_SETS]
    if unknown:
        parser.error(f"unknown option sets {unknown}; choose from {list(OPTION_SETS)}")
    out: dict[str, Any] = {}
    if args.only != "reference":
        out["options"] = option_table(args, chosen)
    if args.only != "options":
        out["reference"] = reference_table()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
