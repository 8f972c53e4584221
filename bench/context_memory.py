"""Time and peak memory against the frame count at a fixed context batch size.

With context windows the UNet only ever sees `context` frames at once, so the time should grow
with the number of windows (about linearly in frames) and the peak memory only by the per-frame
buffers (latents, embeddings, decoded frames). Each frame count runs in its own subprocess after
a warm-up at 16 frames, so a run's peak-memory growth is its own. Prints ratios to the 16-frame
run, the peer measured in the same invocation. Not a test: nothing is asserted.

    .venv/bin/python bench/context_memory.py [--frames 16 32 64 128] [--context 16] [--size 128]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from animdiff.decode import decode_frames
    from animdiff.params import make_params
    from animdiff.pipeline import Animator, FrameCounts

    animator = Animator(Path(args.models), None)

    def params(frames: int):
        return make_params(
            prompt="a corgi running on the beach",
            checkpoint="tiny-sd15.safetensors",
            motion_module="tiny-mm-v2.ckpt",
            frames=frames,
            context=args.context,
            width=args.size,
            height=args.size,
            steps=args.steps,
            sampler="Euler",
            seed=1,
        )

    def run(frames: int) -> torch.Tensor:
        p = params(frames)
        models = animator.load(p)
        counts = FrameCounts.resolve(p)
        with torch.inference_mode():
            latents = animator.generate(p, models, counts, p.seed, lambda event: None)
            decode_frames(models.parts.vae, latents, chunk=8)
        return latents

    run(args.context)  # warm-up: loads the models and reaches the steady state of one window
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.max_memory_allocated()
    else:
        before = peak_rss_mib()
    start = time.perf_counter()
    latents = run(args.worker)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mib()
    return {
        "frames": args.worker,
        "seconds": seconds,
        "peak_mib": peak,
        "growth_mib": max(0.0, peak - (before / 2**20 if cuda else before)),
        "latents_mib": latents.numel() * latents.element_size() / 2**20,
        "device": "cuda" if cuda else "cpu",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--context", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--models", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as models:
        from animdiff.testing.factory import write_models_dir

        write_models_dir(Path(models))
        for frames in args.frames:
            argv = [sys.executable, __file__, "--worker", str(frames), "--models", models]
            argv += [f"--{k}={getattr(args, k)}" for k in ("context", "size", "steps", "threads")]
            done = subprocess.run(argv, capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    base = rows[0]
    print(
        f"context {args.context}, {args.size}x{args.size}, {args.steps} Euler steps, CFG 7.5, "
        f"tiny SD1.5 + v2, {base['device']}, ratios against the {base['frames']}-frame run"
    )
    columns = ("frames", "seconds", "time x", "peak MiB", "peak x", "growth MiB", "latents MiB")
    print(" ".join(f"{c:>11}" for c in columns))
    for r in rows:
        values = (
            f"{r['frames']:d}",
            f"{r['seconds']:.2f}",
            f"{r['seconds'] / base['seconds']:.2f}",
            f"{r['peak_mib']:.0f}",
            f"{r['peak_mib'] / base['peak_mib']:.3f}",
            f"{r['growth_mib']:.1f}",
            f"{r['latents_mib']:.2f}",
        )
        print(" ".join(f"{v:>11}" for v in values))


if __name__ == "__main__":
    main()
