"""Time and the memory sampling adds, against the frame count at a fixed context batch size.

With context windows the UNet only ever sees `context` frames at once, so the time should grow
with the number of windows (about linearly in frames) and the memory a run adds only by the
per-frame buffers (latents, per-frame prompt embeddings, decoded frames), not by the activations.

Each frame count runs in a fresh process: load the models, one warm-up run (`context` frames,
1 step), then `--repeat` measured runs of `Animator.run(params, write=False)` (best time, largest
memory). Memory is what a run adds to what the process held before it (`AddedMemory` in
bench/_harness.py): on CUDA the peak of allocated memory minus what was allocated before; on the
CPU the peak resident set (VmHWM, reset through /proc/self/clear_refs just before the run) minus
the resident set then. The header shows the method reading a temporary allocation of known size.
Ratios are to the first (smallest) frame count, measured in the same invocation. Not a test:
nothing is asserted.

Tiny models by default (about a minute); `--real-size` uses the real-size random-weight models of
bench/realsize_vs_diffusers.py (same cache folder; 64x64 pixels keep it feasible on a CPU, where
128 frames take minutes).

    .venv/bin/python bench/context_memory.py [--frames 16 32 64 128] [--context 16] [--real-size]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _harness as harness

# glibc otherwise moves its mmap threshold up as big blocks are freed and then serves them from
# the heap, whose pages it may keep: resident memory would depend on the allocation history.
# A fixed threshold hands every block of 1 MiB or more straight back on free.
EXACT_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(2**20)}


def worker(args: argparse.Namespace) -> dict[str, Any]:
    harness.setup(args.threads)
    import torch

    from animdiff.params import make_params
    from animdiff.pipeline import Animator, RunOptions

    device = harness.resolve_device(args.device)

    def params(frames: int, steps: int):
        return make_params(
            prompt=harness.PROMPT,
            checkpoint=args.checkpoint,
            motion_module=args.motion_module,
            frames=frames,
            context=args.context,
            width=args.size,
            height=args.size,
            steps=steps,
            sampler=args.sampler,
            seed=1,
            formats="gif",
        )

    animator = Animator(Path(args.models), None, RunOptions(device=device, vae_chunk=args.vae_chunk))
    start = time.perf_counter()
    animator.load(params(args.context, 1))
    load_s = time.perf_counter() - start
    animator.run(params(args.context, 1), write=False)  # warm-up: first-call work is not sampling's
    held = harness.held_mib(device)
    job = params(args.worker, args.steps)
    seconds, added = [], []
    for _ in range(args.repeat):
        with harness.AddedMemory(device) as memory:
            start = time.perf_counter()
            result = animator.run(job, write=False)
            harness.synchronize(device)
            seconds.append(time.perf_counter() - start)
        added.append(memory.added_mib)
    return {
        "frames": args.worker,
        "seconds": min(seconds),
        "load_s": load_s,
        "added_mib": max(added),
        "held_mib": held,
        "latents_mib": result.latents.numel() * result.latents.element_size() / 2**20,
        "device": device,
        "dtype": "float16" if device.startswith("cuda") else "float32",
        "threads": torch.get_num_threads(),
        "memory": harness.memory_check(device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--context", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--sampler", default="Euler")
    parser.add_argument("--vae-chunk", type=int, default=8)
    parser.add_argument("--repeat", type=int, help="measured runs per row (default 3 tiny, 1 real size)")
    parser.add_argument("--real-size", action="store_true", help="real-size random-weight models")
    parser.add_argument("--cache", help="with --real-size: their folder (see bench/realsize_vs_diffusers.py)")
    harness.add_run_arguments(parser, type=int)
    args = parser.parse_args()
    if args.worker:
        harness.print_json(worker(args))
        return
    if args.repeat is None:
        args.repeat = 1 if args.real_size else 3
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        if args.real_size:
            from animdiff.testing.real_size import write_real_size_dir

            root = harness.realsize_dir(args.cache)
            written = write_real_size_dir(root, log=lambda message: print(message, file=sys.stderr))
            label = "real-size SD1.5 + v2 (random weights)"
        else:
            from animdiff.testing.factory import write_models_dir

            root = Path(scratch)
            written = write_models_dir(root)
            label = "tiny SD1.5 + v2"
        rows = []
        for frames in args.frames:
            names = ("context", "size", "steps", "sampler", "threads", "vae_chunk", "device", "repeat")
            models = harness.worker_argv(args, root, written["sd15"].name, written["mm-v2"].name, names)
            argv = ["--worker", str(frames), *models]
            started = time.perf_counter()
            rows.append(harness.run_worker(__file__, argv, args.threads, EXACT_MALLOC))
            rows[-1]["wall_s"] = time.perf_counter() - started
    print_table(args, label, rows, time.perf_counter() - began)


def print_table(args: argparse.Namespace, label: str, rows: list[dict[str, Any]], total: float) -> None:
    base = rows[0]
    print(
        f"{label}: context {args.context}, {args.size}x{args.size}, {args.steps} {args.sampler} steps, "
        f"CFG 7.5, {base['device']} {base['dtype']}, {base['threads']} threads; one fresh process per row, "
        f"best of {args.repeat} run(s) after a warm-up"
    )
    print(f"memory added by the run: {base['memory']}")
    columns = (
        "frames",
        "run s",
        "time x",
        "added MiB",
        "added x",
        "+MiB",
        "KiB/frame",
        "held MiB",
        "process s",
    )
    print("".join(f"{c:>11}" for c in columns))
    for r in rows:
        extra = r["added_mib"] - base["added_mib"]
        frames = r["frames"] - base["frames"]
        values = (
            f"{r['frames']:d}",
            f"{r['seconds']:.2f}",
            f"{r['seconds'] / base['seconds']:.2f}",
            f"{r['added_mib']:.1f}",
            f"{r['added_mib'] / base['added_mib']:.3f}",
            f"{extra:.1f}",
            f"{extra * 1024 / frames:.0f}" if frames else "-",
            f"{r['held_mib']:.0f}",
            f"{r['wall_s']:.0f}",
        )
        print("".join(f"{v:>11}" for v in values))
    print(
        "added: peak during the run above what the process held before it; +MiB and KiB/frame: "
        f"growth over the {base['frames']}-frame row. Decoded frames stay in memory for the whole run: "
        f"{args.size * args.size * 3 / 1024:.0f} KiB a frame. Bench took {total:.0f} s."
    )


if __name__ == "__main__":
    main()
