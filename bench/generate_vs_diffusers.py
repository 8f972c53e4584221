"""Our text-to-animation path against diffusers' AnimateDiffPipeline, same weights, same run.

Each side runs in its own subprocess (so peak memory is its own): load the tiny models, one
warm-up, then `--repeat` timed runs of prompt encoding + sampling + VAE decode to uint8 frames.
Prints a table and our time as a ratio of diffusers'. Not a test: nothing is asserted.

    .venv/bin/python bench/generate_vs_diffusers.py [--frames 16] [--size 128] [--steps 10]
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


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(side: str, args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from animdiff.params import make_params

    params = make_params(
        prompt="a corgi running on the beach",
        checkpoint="tiny-sd15.safetensors",
        motion_module="tiny-mm-v2.ckpt",
        frames=args.frames,
        context=args.frames,
        width=args.size,
        height=args.size,
        steps=args.steps,
        sampler="DDIM",
        seed=1,
        groupnorm="diffusers",
        formats="gif",
    )
    run = _ours(params, Path(args.models)) if side == "ours" else _diffusers(params)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    before = rss_mib()
    run()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        run()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else rss_mib()
    return {"side": side, "seconds": min(times), "peak_mib": peak, "loaded_mib": before, "device": device}


def _ours(params, models: Path):
    import torch

    from animdiff.decode import decode_frames
    from animdiff.pipeline import Animator, FrameCounts

    animator = Animator(models, None)
    loaded = animator.load(params)
    counts = FrameCounts.resolve(params)

    def run():
        with torch.inference_mode():
            latents = animator.generate(params, loaded, counts, params.seed, lambda event: None)
            return decode_frames(loaded.parts.vae, latents, chunk=16)

    return run


def _diffusers(params):
    import torch

    from animdiff.testing.peers import tiny_diffusers_pipeline

    pipe = tiny_diffusers_pipeline("v2", params.sampler)

    def run():
        generator = torch.Generator("cpu").manual_seed(params.seed)
        return pipe(
            prompt=params.prompt,
            num_frames=params.frames,
            height=params.height,
            width=params.width,
            num_inference_steps=params.steps,
            guidance_scale=params.cfg_scale,
            generator=generator,
            output_type="np",
            decode_chunk_size=16,
        ).frames

    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", choices=["ours", "diffusers"])
    parser.add_argument("--models")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return
    with tempfile.TemporaryDirectory() as models:
        from animdiff.testing.factory import write_models_dir

        write_models_dir(Path(models))
        results = {}
        for side in ("diffusers", "ours", "diffusers", "ours"):  # interleaved: drift hits both alike
            argv = [sys.executable, __file__, "--worker", side, "--models", models]
            argv += [f"--{k}={getattr(args, k)}" for k in ("frames", "size", "steps", "repeat", "threads")]
            out = (
                subprocess.run(argv, capture_output=True, text=True, check=True)
                .stdout.strip()
                .splitlines()[-1]
            )
            result = json.loads(out)
            best = results.get(side)
            if best is None or result["seconds"] < best["seconds"]:
                results[side] = result
    ours, theirs = results["ours"], results["diffusers"]
    print(
        f"{args.frames} frames, {args.size}x{args.size}, {args.steps} DDIM steps, CFG 7.5, "
        f"tiny SD1.5 + v2, {ours['device']}"
    )
    print(f"{'':10} {'seconds':>9} {'peak MiB':>9}")
    for side in ("diffusers", "ours"):
        r = results[side]
        print(f"{side:10} {r['seconds']:9.3f} {r['peak_mib']:9.0f}")
    print(f"time ratio ours/diffusers: {ours['seconds'] / theirs['seconds']:.3f}")
    print(f"peak memory ratio ours/diffusers: {ours['peak_mib'] / theirs['peak_mib']:.3f}")


if __name__ == "__main__":
    main()
