"""--fp8 against float32/float16 weights: what float8 storage saves and what it costs, same run.

Two sides, each in fresh processes of its own, alternating round by round: ours as users run it
(`RunOptions()`), and ours with `RunOptions(fp8=True)` (the UNet's and motion module's Linear/Conv
weights stored as float8_e4m3fn and cast per layer). Same device, dtype and threads for both (see
bench/_harness.py). For each side: the bytes of the UNet with motion modules' tensors (float8 and
the rest), the memory held after loading, then the sampling time of `Animator.run(params,
write=False)` (prompt to PIL frames) after one warm-up, and the memory a run adds. Asserts nothing.

Models: the tiny SD1.5 + motion module v2 (default; a few seconds), the tiny SDXL + AnimateDiff-XL
(`--sdxl`), or the real-size SD1.5 + v2 random-weight files (`--real-size`, from the same cache
as bench/realsize_vs_diffusers.py; a few minutes on a CPU, peak about 7 GB).

    .venv/bin/python bench/fp8_weights.py [--real-size] [--sdxl] [--threads 1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _harness as harness

SIDES = {"plain": "weights in the compute dtype", "fp8": "--fp8 (float8 storage)"}


def _params(args: Any) -> Any:
    return harness._params(args, sampler="DDIM")


def worker(args: Any) -> dict[str, Any]:
    harness.setup(args.threads)
    import torch

    from animdiff.models.fp8 import weight_bytes
    from animdiff.pipeline import Animator, RunOptions

    device = harness.resolve_device(args.device)
    fp8 = args.worker == "fp8"
    params = _params(args)
    start = time.perf_counter()
    animator = Animator(Path(args.models), None, RunOptions(device=device, fp8=fp8))
    models = animator.load(params)
    harness.synchronize(device)
    load_s = time.perf_counter() - start
    harness._release_freed_memory()
    held = harness.held_mib(device)
    tensors = weight_bytes(models.unet.unet)
    animator.run(params, write=False)  # warm-up
    runs = [harness._timed(lambda: animator.run(params, write=False), device) for _ in range(args.repeat)]
    return {
        "side": args.worker,
        "device": device,
        "dtype": str(animator.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "load_s": load_s,
        "held_mib": held,
        "fp8_bytes": tensors["fp8"],
        "other_bytes": tensors["other"],
        "runs": runs,
        "memory": harness.memory_check(device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--real-size", action="store_true", help="the real-size SD1.5 + v2 files")
    parser.add_argument("--sdxl", action="store_true", help="the tiny SDXL + AnimateDiff-XL")
    parser.add_argument("--cache", help="real-size models folder (default: as realsize_vs_diffusers.py)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None, help="default: 10 tiny, 2 real size")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per process (5 tiny, 2 real)")
    parser.add_argument("--rounds", type=int, default=1, help="processes per side, alternating")
    harness.add_run_arguments(parser, choices=list(SIDES))
    args = parser.parse_args()
    args.steps = args.steps or (2 if args.real_size else 10)
    args.repeat = args.repeat or (2 if args.real_size else 5)
    if args.worker:
        harness.print_json(worker(args))
        return
    if args.real_size and args.sdxl:
        parser.error("--real-size is SD1.5 only here (real-size SDXL in float32 needs ~15 GB)")
    with tempfile.TemporaryDirectory() as scratch:
        if args.real_size:
            from animdiff.testing.real_size import REAL_FILES, write_real_size_dir

            root = harness.realsize_dir(args.cache)
            write_real_size_dir(root, log=lambda message: print(message, file=sys.stderr))
            files, title = (REAL_FILES["sd15"], REAL_FILES["mm-v2"]), "real-size SD1.5 + motion module v2"
        elif args.sdxl:
            from animdiff.testing.sdxl import SDXL_FILES, write_tiny_sdxl_files

            root = Path(scratch)
            write_tiny_sdxl_files(root)
            files, title = (SDXL_FILES["sdxl"], SDXL_FILES["mm-sdxl-beta-ckpt"]), "tiny SDXL + AnimateDiff-XL"
        else:
            from animdiff.testing.factory import write_models_dir

            root = Path(scratch)
            written = write_models_dir(root)
            files = tuple(str(written[k].relative_to(root)) for k in ("sd15", "mm-v2"))
            title = "tiny SD1.5 + motion module v2"
        names = ("frames", "size", "steps", "repeat", "threads", "device")
        forwarded = harness.worker_argv(args, root, files[0], files[1], names)
        began = time.perf_counter()
        results: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
        for round_ in range(args.rounds):
            for side in SIDES if round_ % 2 == 0 else list(SIDES)[::-1]:
                result = harness.run_worker(__file__, ["--worker", side, *forwarded], args.threads)
                results[side].append(result)
    report(title, args, results, time.perf_counter() - began)


def report(title: str, args: Any, results: dict[str, list[dict[str, Any]]], total: float) -> None:
    first = results["plain"][0]
    print(
        f"{title}: {args.frames} frames (one context window), {args.size}x{args.size}, {args.steps} DDIM "
        f"steps, CFG 7.5; device {first['device']}, {first['dtype']}, {first['threads']} threads; "
        f"{args.rounds} round(s) of fresh processes, 1 warm-up then {args.repeat} runs each"
    )
    print(f"memory added by a run: {first['memory']}")
    header = [
        "side",
        "weights MiB",
        "x weights",
        "held MiB",
        "load s",
        "best s",
        "median s",
        "cpu s",
        "x cpu",
    ]
    header += ["added MiB"]
    print(f"{header[0]:34}" + "".join(f"{h:>12}" for h in header[1:]))
    base: dict[str, float] = {}
    for side, label in SIDES.items():
        rows = results[side]
        runs = [run for row in rows for run in row["runs"]]
        weights = (rows[0]["fp8_bytes"] + rows[0]["other_bytes"]) / harness.MiB
        cpu = statistics.median(r["cpu_s"] for r in runs)
        base = base or {"weights": weights, "cpu": cpu}
        values = [
            f"{weights:.1f}",
            f"{weights / base['weights']:.3f}",
            f"{max(r['held_mib'] for r in rows):.0f}",
            f"{min(r['load_s'] for r in rows):.2f}",
            f"{min(r['seconds'] for r in runs):.3f}",
            f"{statistics.median(r['seconds'] for r in runs):.3f}",
            f"{cpu:.2f}",
            f"{cpu / base['cpu']:.3f}",
            f"{max(r['added_mib'] for r in runs):.0f}",
        ]
        print(f"{label:34}" + "".join(f"{v:>12}" for v in values))
    fp8 = results["fp8"][0]
    print(
        f"UNet with motion modules under --fp8: {fp8['fp8_bytes'] / harness.MiB:.1f} MiB of float8 weights, "
        f"{fp8['other_bytes'] / harness.MiB:.1f} MiB of other tensors (biases, norms, positional encodings)"
    )
    print(
        "weights: the UNet with motion modules' tensors; held: process memory after loading; "
        "x: against the first row"
    )
    print(f"bench took {total:.0f} s")


if __name__ == "__main__":
    main()
