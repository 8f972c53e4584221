"""What the VAE's frames a call cost and save: the real-size SD VAE (random weights, float32 as animdiff
runs it) decoding the same frames through `decode.decoded_chunks` at several chunk sizes, in one
process, the sizes taking turns run by run; seconds a frame (median) and the memory a decode adds
(`_harness.AddedMemory`), each against 8 frames a call (animdiff's fixed chunk before it followed
the size). CUDA when present, else the CPU; the default chunk at this size is marked.

    .venv/bin/python bench/vae_chunk.py [--size 256] [--frames 8] [--chunks 1,4,8] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import _harness as harness


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256, help="frame width and height in pixels")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--chunks", default="1,4,8", help="frames a call to compare (8 is the baseline)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device")
    parser.add_argument("--threads", type=int, default=harness.default_threads())
    args = parser.parse_args()
    harness.setup(args.threads)
    import torch
    from diffusers import AutoencoderKL

    from animdiff.decode import decoded_chunks, frames_per_vae_call
    from animdiff.testing.real_size import real_vae_config

    device = harness.resolve_device(args.device)
    chunks = sorted({int(c) for c in args.chunks.split(",")} | {8})
    torch.manual_seed(0)
    vae = AutoencoderKL(**real_vae_config()).eval().requires_grad_(False).to(device)
    side = args.size // 8
    latents = torch.randn(args.frames, 4, side, side, generator=torch.Generator().manual_seed(1))
    default = frames_per_vae_call(args.size, args.size, dtype=vae.dtype)

    def decode(chunk: int) -> None:
        with torch.inference_mode():
            for image in decoded_chunks(vae, latents, chunk):
                del image
        harness.synchronize(device)

    decode(default)  # warm-up, not timed
    seconds: dict[int, list[float]] = {c: [] for c in chunks}
    added: dict[int, float] = {}
    for run in range(args.runs):
        order = chunks if run % 2 == 0 else chunks[::-1]
        for chunk in order:
            with harness.AddedMemory(device) as memory:
                start = time.perf_counter()
                decode(chunk)
                seconds[chunk].append(time.perf_counter() - start)
            added[chunk] = max(added.get(chunk, 0.0), memory.added_mib)
    base = statistics.median(seconds[8])
    print(
        f"real-size SD VAE decode, float32, {args.frames} frames of {args.size}x{args.size} on {device} "
        f"({args.threads} threads), median of {args.runs}; memory: {harness.memory_check(device)}"
    )
    print(f"{'frames a call':>14}{'s a frame':>12}{'time vs 8':>12}{'added MiB':>12}{'vs 8':>8}")
    for chunk in chunks:
        median = statistics.median(seconds[chunk])
        mark = " (default)" if chunk == default else ""
        print(
            f"{chunk:>14}{median / args.frames:>12.3f}{median / base:>12.2f}"
            f"{added[chunk]:>12.0f}{added[chunk] / added[8]:>8.2f}{mark}"
        )


if __name__ == "__main__":
    main()
