"""What slicing the feed-forwards costs in time and saves in memory: one guided UNet call of the real-size
SD1.5 UNet + motion module v2 (random weights) on the same inputs, feed-forwards sliced (animdiff's
default) against one piece (as the reference runs them), the two taking turns run by run in one
process; median seconds and the memory a call adds (`_harness.AddedMemory`). CUDA in float16 when
present, else the CPU in float32 (about 5 GB of memory; a call at 256x256 with 16 frames takes about
a minute on two cores). `--budget-mib` changes the slice budget to see more or less slicing.

    .venv/bin/python bench/feed_forward_slices.py [--size 256] [--frames 16] [--runs 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import _harness as harness


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256, help="frame width and height in pixels")
    parser.add_argument("--frames", type=int, default=16, help="frames in the context window")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--budget-mib", type=int, help="the slice budget (default animdiff's)")
    parser.add_argument("--device")
    parser.add_argument("--threads", type=int, default=harness.default_threads())
    args = parser.parse_args()
    harness.setup(args.threads)
    import torch

    from animdiff.models.detect import Kind
    from animdiff.models.feed_forward_slices import FF_SLICE_BYTES, sliced_blocks
    from animdiff.models.load import build_motion_unet
    from animdiff.models.motion_unet import MotionUNet
    from animdiff.testing.real_size import real_size_motion_adapter, real_size_sd

    device = harness.resolve_device(args.device)
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    sd = real_size_sd()
    adapter = real_size_motion_adapter()
    unet = MotionUNet(build_motion_unet(sd.unet, adapter, path=Path("mm_sd_v15_v2.ckpt")), Kind.MM_V2)
    unet = unet.to(device=device, dtype=dtype)
    del sd, adapter
    budget = FF_SLICE_BYTES if args.budget_mib is None else args.budget_mib * 2**20
    generator = torch.Generator().manual_seed(0)
    side = args.size // 8
    sample = torch.randn(2, 4, args.frames, side, side, generator=generator).to(device, dtype)
    text = torch.randn(2 * args.frames, 77, 768, generator=generator).to(device, dtype)
    timestep = torch.tensor(500, device=device)

    def call(sliced: bool) -> tuple[float, float]:
        unet.ff_budget.bytes = budget if sliced else None
        with torch.inference_mode(), harness.AddedMemory(device) as memory:
            start = time.perf_counter()
            unet(sample, timestep, text)
            harness.synchronize(device)
            seconds = time.perf_counter() - start
        return seconds, memory.added_mib

    call(True)  # warm-up, not timed
    pieces = len(sliced_blocks(unet.unet))
    results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for run in range(args.runs):
        for sliced in (True, False) if run % 2 == 0 else (False, True):
            results[sliced].append(call(sliced))
    print(
        f"real-size SD1.5 UNet + motion module v2, one guided call: {args.frames} frames of "
        f"{args.size}x{args.size}, {dtype} on {device} ({args.threads} threads), median of {args.runs}; "
        f"slice budget {budget / 2**20:.0f} MiB, {pieces} blocks sliced; "
        f"memory: {harness.memory_check(device)}"
    )
    median = {key: [statistics.median(r[i] for r in runs) for i in (0, 1)] for key, runs in results.items()}
    print(f"{'feed-forwards':>14}{'seconds':>10}{'added MiB':>12}")
    for label, sliced in (("one piece", False), ("sliced", True)):
        print(f"{label:>14}{median[sliced][0]:>10.2f}{median[sliced][1]:>12.0f}")
    (cut_s, cut_mib), (one_s, one_mib) = median[True], median[False]
    print(f"sliced / one piece: time {cut_s / one_s:.2f}, memory {cut_mib / one_mib:.2f}")


if __name__ == "__main__":
    main()
