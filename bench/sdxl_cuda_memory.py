"""SDXL at 1024x1024 with 16 frames: does it fit a 24 GB card, and what each memory option costs.

Real-size SDXL base + AnimateDiff-XL with random weights (the `--real-size --sdxl` factory, cached
as in bench/realsize_sdxl_vs_diffusers.py), 16 frames in one context window, 1024x1024, DDIM, CFG
7.5, run as users run it (float16, the SDXL VAE in float32). Each option set runs in a fresh
process whose CUDA memory is capped at `--cap-gib` (24 by default, through
`torch.cuda.set_per_process_memory_fraction`), so "fits a 24 GB card" is a job that finishes under
that cap on a larger card, not a reading compared by hand. Printed for each option set: finished
or out of memory, the peak memory allocated and reserved over the whole process (models included,
which is what the card must hold), load time, and the time of a job after a warm-up, also against
the plain run's (what `--offload` and `--fp8` cost in time). A forward hook on the VAE's decoder
records the dtype it ran in and whether every decoded value was finite.

Not part of `make test` nor of `make bench`: it needs a CUDA card with more memory than the cap
(and about 8 GB of disk for the files). `--tiny` runs the same on the tiny SDXL files, on the CPU
too (no cap there), to check the script itself.

    .venv/bin/python bench/sdxl_cuda_memory.py [--cap-gib 24] [--steps 2] [--options plain,offload,fp8]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _harness as harness

#: Option sets: name -> RunOptions fields.
OPTION_SETS: dict[str, dict[str, Any]] = {
    "plain": {},
    "vae-chunk-1": {"vae_chunk": 1},
    "vae-chunk-8": {"vae_chunk": 8},
    "vae-tiling": {"vae_tiling": True},
    "offload": {"offload": True},
    "fp8": {"fp8": True},
    "offload+fp8": {"offload": True, "fp8": True},
}
GiB = 2**30


def _cap(device: str, cap_gib: float) -> float | None:
    """Limit this process to `cap_gib` of the card; None where there is no cap (CPU)."""
    if not device.startswith("cuda") or cap_gib <= 0:
        return None
    import torch

    total = torch.cuda.get_device_properties(device).total_memory
    if total < cap_gib * GiB:
        raise SystemExit(f"the card has {total / GiB:.1f} GiB, less than the {cap_gib} GiB cap")
    torch.cuda.set_per_process_memory_fraction(cap_gib * GiB / total, device)
    return cap_gib


def _peaks(device: str) -> dict[str, float]:
    if device.startswith("cuda"):
        import torch

        return {
            "peak_allocated_gib": torch.cuda.max_memory_allocated() / GiB,
            "peak_reserved_gib": torch.cuda.max_memory_reserved() / GiB,
        }
    return {"peak_allocated_gib": harness._status_mib("VmHWM") / 1024, "peak_reserved_gib": float("nan")}


def worker(args: Any) -> dict[str, Any]:
    harness.setup(args.threads)
    import torch

    from animdiff.pipeline import Animator, RunOptions

    device = harness.resolve_device(args.device)
    cap = _cap(device, args.cap_gib)
    options = {"vae_chunk": args.vae_chunk, **OPTION_SETS[args.worker]}
    params = harness._params(args, sampler="DDIM")
    out: dict[str, Any] = {"options": args.worker, "device": device, "cap_gib": cap}
    try:
        start = time.perf_counter()
        animator = Animator(Path(args.models), None, RunOptions(device=device, **options))
        models = animator.load(params)
        harness.synchronize(device)
        out["load_s"] = time.perf_counter() - start
        decoded: list[tuple[str, bool]] = []

        def watch(_module: Any, _inputs: Any, output: torch.Tensor) -> None:
            decoded.append((str(output.dtype).removeprefix("torch."), bool(torch.isfinite(output).all())))

        hook = models.parts.vae.decoder.register_forward_hook(watch)
        animator.run(params, write=False)  # warm-up: also the first job's peak
        start = time.perf_counter()
        animator.run(params, write=False)
        harness.synchronize(device)
        out["job_s"] = time.perf_counter() - start
        hook.remove()
        out["vae_dtypes"] = sorted({dtype for dtype, _ in decoded})
        out["vae_finite"] = all(finite for _, finite in decoded)
        out["unet_dtype"] = str(models.unet.dtype).removeprefix("torch.")
        out["finished"] = True
    except torch.cuda.OutOfMemoryError as error:
        out["finished"] = False
        out["error"] = str(error).splitlines()[0]
    out.update(_peaks(device))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--options",
        default="plain,offload,fp8,offload+fp8",
        help="comma-separated, from: " + ", ".join(OPTION_SETS),
    )
    parser.add_argument("--cap-gib", type=float, default=24.0, help="CUDA memory cap per process (0: none)")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=16, help="frames, all in one context window")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--vae-chunk", type=int, help="frames per VAE call (default: animdiff's, by size)")
    parser.add_argument("--tiny", action="store_true", help="the tiny SDXL files instead (checks the script)")
    parser.add_argument("--cache", help="real-size models folder (default: as realsize_sdxl_vs_diffusers.py)")
    parser.add_argument("--json", help="also write every measurement to this file")
    harness.add_run_arguments(parser, choices=list(OPTION_SETS))
    args = parser.parse_args()
    if args.worker:
        harness.print_json(worker(args))
        return
    if not args.tiny and not harness.resolve_device(args.device).startswith("cuda"):
        parser.error("real size at 1024x1024 needs a CUDA card (--tiny checks the script anywhere)")
    chosen = [name.strip() for name in args.options.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in OPTION_SETS]
    if unknown:
        parser.error(f"unknown option sets {unknown}; choose from {list(OPTION_SETS)}")
    with tempfile.TemporaryDirectory() as scratch:
        if args.tiny:
            from animdiff.testing.sdxl import SDXL_FILES, write_tiny_sdxl_files

            root = Path(scratch)
            write_tiny_sdxl_files(root)
            files, title = (SDXL_FILES["sdxl"], SDXL_FILES["mm-sdxl-beta-ckpt"]), "tiny SDXL + AnimateDiff-XL"
        else:
            from animdiff.testing.real_size import REAL_SDXL_FILES, write_real_size_dir

            root = harness.realsize_dir(args.cache)
            write_real_size_dir(root, log=lambda message: print(message, file=sys.stderr), sdxl=True)
            files = (REAL_SDXL_FILES["sdxl"], REAL_SDXL_FILES["mm-sdxl"])
            title = "real-size SDXL base + AnimateDiff-XL (random weights)"
        names = ("size", "frames", "steps", "vae_chunk", "cap_gib", "threads", "device")
        forwarded = harness.worker_argv(args, root, files[0], files[1], names)
        results = [
            harness.run_worker(__file__, ["--worker", name, *forwarded], args.threads) for name in chosen
        ]
    report(title, args, results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def report(title: str, args: Any, results: list[dict[str, Any]]) -> None:
    first = results[0]
    cap = f"capped at {first['cap_gib']} GiB" if first["cap_gib"] else "no cap"
    print(
        f"{title}: {args.frames} frames in one context window, {args.size}x{args.size}, {args.steps} DDIM "
        f"steps, CFG 7.5, VAE {args.vae_chunk or 'by size'} frames a call; device {first['device']}, {cap}; "
        "one fresh process per option set, 1 warm-up job then 1 timed"
    )
    header = [
        "options",
        "finished",
        "peak alloc GiB",
        "peak reserved GiB",
        "load s",
        "job s",
        "x plain",
        "VAE dtype",
        "VAE finite",
    ]
    print(f"{header[0]:14}" + "".join(f"{h:>18}" for h in header[1:]))
    plain = next((r.get("job_s") for r in results if r["options"] == "plain"), None)
    for r in results:
        job = r.get("job_s")
        ratio = f"{job / plain:.2f}" if job and plain else "-"
        cells = [
            "yes" if r["finished"] else "out of memory",
            f"{r['peak_allocated_gib']:.2f}",
            f"{r['peak_reserved_gib']:.2f}",
            f"{r.get('load_s', float('nan')):.1f}",
            f"{job:.2f}" if job else "-",
            ratio,
            ",".join(r.get("vae_dtypes", [])) or "-",
            str(r.get("vae_finite", "-")),
        ]
        print(f"{r['options']:14}" + "".join(f"{c:>18}" for c in cells))
    print(f"UNet dtype: {first.get('unet_dtype', '-')}")


if __name__ == "__main__":
    main()
