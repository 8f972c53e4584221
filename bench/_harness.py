"""What the benches share: device and threads, the memory a run adds, ours-vs-diffusers workers.

Rules every bench follows, so that a ratio means something:
- one device for everything measured: CUDA when there is one (ours in float16 with the VAE in
  float32, and the peer exactly so), else the CPU in float32; `--device` overrides;
- the same thread count in every process (`--threads`, default: the CPUs this process may use);
- loading is timed on its own, a warm-up run is excluded, and the sides alternate (process by
  process), so that drift from other work on the machine hits every side alike;
- memory is what a run adds to what was held before it started (`AddedMemory`), never a
  process high-water mark that imports and loading have already set.

Not a bench itself: running it does nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROMPT = "a corgi running on the beach"
REALSIZE_CACHE = Path(__file__).resolve().parent / ".realsize"
MiB = 2**20


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def realsize_dir(explicit: str | None) -> Path:
    """Where the real-size models live: `--cache`, else $ANIMDIFF_REALSIZE_DIR, else bench/.realsize."""
    return Path(explicit or os.environ.get("ANIMDIFF_REALSIZE_DIR") or REALSIZE_CACHE)


def setup(threads: int) -> None:
    """In a worker, before any work: the thread count every side uses."""
    import torch

    torch.set_num_threads(threads)


def resolve_device(name: str | None) -> str:
    import torch

    return name or ("cuda" if torch.cuda.is_available() else "cpu")


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


# --- memory a block of work adds ----------------------------------------------------------------------


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        match = re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE)
    return int(match[1]) / 1024 if match else float("nan")


def _release_freed_memory() -> None:
    """Give freed heap pages back to the OS, so they count again when a run takes them."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_high_water_mark() -> bool:
    """Linux resets VmHWM to the current RSS when "5" is written to clear_refs."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return _status_mib("VmHWM") <= _status_mib("VmRSS") + 1


class _RssPoller:
    """Fallback where clear_refs is refused: the highest VmRSS seen, polled every millisecond."""

    def __init__(self) -> None:
        self.peak = _status_mib("VmRSS")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE") / MiB
        with open("/proc/self/statm") as statm:
            while not self._stop.is_set():
                statm.seek(0)
                self.peak = max(self.peak, int(statm.read().split()[1]) * page)
                time.sleep(0.001)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, _status_mib("VmRSS"))


class AddedMemory:
    """`with AddedMemory(device) as m: work()`; then `m.added_mib`: the peak during the work above
    what was held when it began. CUDA: allocated tensor memory (reset peak, max allocated minus
    allocated before). CPU: resident memory, peak VmHWM (reset through clear_refs) minus VmRSS."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.added_mib = float("nan")
        self.method = "cuda max_memory_allocated" if self.cuda else "VmHWM after clear_refs"
        self._poller: _RssPoller | None = None

    def __enter__(self) -> AddedMemory:
        _release_freed_memory()
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated() / MiB
        else:
            self._base = _status_mib("VmRSS")
            if not _reset_high_water_mark():
                self.method = "VmRSS polled every 1 ms"
                self._poller = _RssPoller()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() / MiB
        elif self._poller is not None:
            peak = self._poller.stop()
        else:
            peak = _status_mib("VmHWM")
        self.added_mib = peak - self._base


def held_mib(device: str) -> float:
    """What the process holds now (after loading): CUDA allocated, or resident memory."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.memory_allocated() / MiB
    return _status_mib("VmRSS")


def memory_check(device: str, size_mib: int = 256) -> str:
    """Proof that the method sees a run's memory: a temporary allocation of known size."""
    import torch

    with AddedMemory(device) as memory:
        block = torch.ones(size_mib * MiB // 4, device=device)
        del block
    return f"{memory.method}; a temporary {size_mib} MiB tensor reads as {memory.added_mib:.1f} MiB"


def print_json(result: dict[str, Any]) -> None:
    print(json.dumps(result))


# --- subprocesses --------------------------------------------------------------------------------------


def run_worker(
    script: str, argv: list[str], threads: int, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run `script --worker ...` in a fresh process; its last stdout line is a JSON result."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), **(env or {})}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    done = subprocess.run(
        [sys.executable, script, *argv], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"worker {argv} failed with exit status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- ours against diffusers' AnimateDiffPipeline ---------------------------------------------------------
#
# Loading: each side loads in fresh processes of its own ("load:ours" = `Animator.load`,
# "load:diffusers" = diffusers' single-file loaders on the same files), alternating.
# Sampling: one process per GroupNorm mode of ours ("pair:reference", "pair:diffusers") holds
# ours and diffusers' pipeline over the same loaded tensors and runs them turn about, so every
# ratio compares two runs made next to each other.

MODES = {"reference": "ours, groupnorm=reference (default)", "diffusers": "ours, groupnorm=diffusers"}
WORKERS = ["load:ours", "load:diffusers", *(f"pair:{mode}" for mode in MODES)]


def add_run_arguments(parser: argparse.ArgumentParser, **worker: Any) -> None:
    """What every worker-based bench takes: threads and device, and the hidden arguments its
    parent passes to each worker process (`worker`: how `--worker` is parsed, e.g. choices=...)."""
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--device", help="cuda or cpu (default: cuda when there is one)")
    parser.add_argument("--worker", help=argparse.SUPPRESS, **worker)
    parser.add_argument("--models", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--motion-module", help=argparse.SUPPRESS)


def worker_argv(
    args: Any, models: Path, checkpoint: str, motion_module: str, names: tuple[str, ...]
) -> list[str]:
    """The arguments `add_run_arguments` hides, and those of `names` the parent was given, for a
    worker process to parse again."""
    argv = ["--models", str(models), "--checkpoint", checkpoint, "--motion-module", motion_module]
    for name in names:
        value = getattr(args, name)
        if value is not None:
            argv.append(f"--{name.replace('_', '-')}={value}")
    return argv


def add_compare_arguments(
    parser: argparse.ArgumentParser, *, frames: int, size: int, steps: int, repeat: int, rounds: int
) -> None:
    parser.add_argument("--frames", type=int, default=frames, help="frames, all in one context window")
    parser.add_argument("--size", type=int, default=size, help="width and height in pixels")
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--sampler", default="DDIM")
    parser.add_argument("--repeat", type=int, default=repeat, help="timed runs of each side per process")
    parser.add_argument("--rounds", type=int, default=rounds, help="processes per worker kind, alternating")
    parser.add_argument("--vae-chunk", type=int, default=8, help="frames per VAE decode call, both sides")
    add_run_arguments(parser, choices=WORKERS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-peer-load",
        dest="peer_load",
        action="store_false",
        help="skip timing diffusers' own loading (at real size on a CPU it peaks near 13 GB)",
    )
    parser.add_argument("--json", help="also write every measurement to this file")


def _params(args: Any, groupnorm: str = "reference", sampler: str | None = None) -> Any:
    """The benchmarked job's settings, from a worker's arguments."""
    from animdiff.params import make_params

    return make_params(
        prompt=PROMPT,
        checkpoint=Path(args.checkpoint).name,
        motion_module=Path(args.motion_module).name,
        frames=args.frames,
        context=args.frames,
        width=args.size,
        height=args.size,
        steps=args.steps,
        sampler=sampler or args.sampler,
        cfg_scale=7.5,
        seed=1,
        groupnorm=groupnorm,
        formats="gif",
    )


def _animator(args: Any, device: str) -> Any:
    from animdiff.pipeline import Animator, RunOptions

    return Animator(Path(args.models), None, RunOptions(device=device, vae_chunk=args.vae_chunk))


def _call_peer(pipe: Any, args: Any, chunked: bool = True) -> Any:
    """`chunked=False` for AnimateDiffSDXLPipeline, which decodes every frame in one VAE call (it has
    no chunk setting)."""
    import torch

    chunk = {"decode_chunk_size": args.vae_chunk} if chunked else {}
    return pipe(
        prompt=PROMPT,
        num_frames=args.frames,
        height=args.size,
        width=args.size,
        num_inference_steps=args.steps,
        guidance_scale=7.5,
        generator=torch.Generator("cpu").manual_seed(1),
        output_type="pil",
        **chunk,
    ).frames


def _peak_mib(device: str) -> float:
    """The process's peak so far: CUDA max allocated, or VmHWM (imports included, about 0.4 GB)."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / MiB
    return _status_mib("VmHWM")


def _load_worker(args: Any, device: str) -> dict[str, Any]:
    from animdiff.testing.peers import diffusers_pipeline_from_files, peer_device_dtype

    start = time.perf_counter()
    if args.worker == "load:ours":
        animator = _animator(args, device)
        loaded: Any = (animator, animator.load(_params(args, "reference")))
    else:
        where, dtype = peer_device_dtype(device)
        models = Path(args.models)
        loaded = diffusers_pipeline_from_files(
            models / args.checkpoint,
            models / args.motion_module,
            Path(args.config),
            args.sampler,
            device=where,
            dtype=dtype,
        )
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = _peak_mib(device)
    _release_freed_memory()
    held = held_mib(device)
    del loaded
    return {"load_s": seconds, "held_mib": held, "load_peak_mib": peak}


def _timed(run: Callable[[], Any], device: str) -> dict[str, float]:
    with AddedMemory(device) as memory:
        cpu = time.process_time()
        start = time.perf_counter()
        run()
        synchronize(device)
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
    return {"seconds": seconds, "cpu_s": cpu, "added_mib": memory.added_mib}


def _pair_worker(args: Any, device: str) -> dict[str, Any]:
    from animdiff.testing.peers import diffusers_pipeline_sharing

    params = _params(args, args.worker.removeprefix("pair:"))
    animator = _animator(args, device)
    job = animator.prepare(params, write=False)
    models = animator.load_job(job)
    if hasattr(models.parts, "text_encoder_2"):  # SDXL: diffusers' AnimateDiffSDXLPipeline
        from animdiff.testing.sdxl import diffusers_sdxl_pipeline_sharing

        betas = job.motion_family.betas.scheduler_config()
        pipe = diffusers_sdxl_pipeline_sharing(models, betas, args.sampler)
        peer: Callable[[], Any] = lambda: _call_peer(pipe, args, chunked=False)  # noqa: E731
    else:
        pipe = diffusers_pipeline_sharing(models, args.sampler)
        peer = lambda: _call_peer(pipe, args)  # noqa: E731
    runs = {"ours": lambda: animator.run(params, write=False), "diffusers": peer}
    for run in runs.values():
        run()  # warm-up, not counted
    synchronize(device)
    out: dict[str, list[dict[str, float]]] = {"ours": [], "diffusers": []}
    for index in range(args.repeat):
        for side in ("ours", "diffusers") if index % 2 == 0 else ("diffusers", "ours"):
            out[side].append(_timed(runs[side], device))
    return out


def compare_worker(args: Any) -> dict[str, Any]:
    setup(args.threads)
    import torch

    device = resolve_device(args.device)
    result = _load_worker(args, device) if args.worker.startswith("load:") else _pair_worker(args, device)
    result.update(
        worker=args.worker,
        device=device,
        dtype="float16" if device.startswith("cuda") else "float32",
        threads=torch.get_num_threads(),
        memory=memory_check(device),
    )
    return result


def compare(
    script: str,
    args: Any,
    models: Path,
    checkpoint: str,
    motion_module: str,
    title: str,
    *,
    peer_loads: bool = True,
) -> None:
    """Write the peer's config, run the workers alternately, print the table.

    `peer_loads=False`: diffusers' own loading is not timed (its single-file SDXL loader wants
    config folders from the hub); its sampling still runs over the tensors ours loaded.
    """
    import tempfile

    from animdiff.testing.peers import write_diffusers_config

    began = time.perf_counter()
    args.peer_load = args.peer_load and peer_loads
    with tempfile.TemporaryDirectory() as config:
        if args.peer_load:
            write_diffusers_config(models / checkpoint, models / motion_module, Path(config))
        names = ("frames", "size", "steps", "sampler", "repeat", "threads", "vae_chunk", "device")
        forwarded = [*worker_argv(args, models, checkpoint, motion_module, names), "--config", config]
        results: dict[str, list[dict[str, Any]]] = {worker: [] for worker in WORKERS}
        wall = dict.fromkeys(WORKERS, 0.0)
        loads = ("load:diffusers", "load:ours") if args.peer_load else ("load:ours",)
        for round_ in range(args.rounds):
            for group in (loads, ("pair:reference", "pair:diffusers")):
                for worker in group if round_ % 2 == 0 else group[::-1]:
                    started = time.perf_counter()
                    results[worker].append(run_worker(script, ["--worker", worker, *forwarded], args.threads))
                    wall[worker] += time.perf_counter() - started
    if args.json:
        Path(args.json).write_text(
            json.dumps({"args": vars(args), "results": results, "wall": wall}, indent=1)
        )
    print_compare(title, args, results, wall, time.perf_counter() - began)


def _summary(runs: list[dict[str, float]]) -> dict[str, float]:
    return {
        "best": min(r["seconds"] for r in runs),
        "median": statistics.median(r["seconds"] for r in runs),
        "cpu": statistics.median(r["cpu_s"] for r in runs),
        "added": max(r["added_mib"] for r in runs),
    }


def print_compare(
    title: str, args: Any, results: dict[str, list[dict[str, Any]]], wall: dict[str, float], total: float
) -> None:
    first = results["load:ours"][0]
    cuda = first["device"].startswith("cuda")
    print(
        f"{title}: {args.frames} frames (one context window), {args.size}x{args.size}, {args.steps} "
        f"{args.sampler} steps, CFG 7.5, VAE decode {args.vae_chunk} frames a call"
    )
    print(
        f"device {first['device']}, {first['dtype']} (VAE float32) on both sides, {first['threads']} "
        f"threads; {args.rounds} round(s) of fresh processes; per sampling process: 1 warm-up per side, "
        f"then {args.repeat} runs per side, turn about"
    )
    print(f"memory added by a run: {first['memory']}")
    for side, label in (("diffusers", "diffusers from_single_file"), ("ours", "ours Animator.load")):
        rows = results[f"load:{side}"]
        if rows:
            print(
                f"load, fresh process, best of {len(rows)}: {label:27} "
                f"{min(r['load_s'] for r in rows):7.2f} s, "
                f"held after {max(r['held_mib'] for r in rows):6.0f} MiB, "
                f"peak {max(r['load_peak_mib'] for r in rows):6.0f} MiB"
            )
    header = [
        "run (prompt to PIL frames)",
        "best s",
        "median s",
        "x best",
        "x paired",
        "added MiB",
        "x added",
    ]
    if not cuda:
        header[5:5] = ["cpu s", "x cpu"]
    print(f"{header[0]:38}" + "".join(f"{h:>10}" for h in header[1:]))
    verdicts = {}
    for mode, label in MODES.items():
        pairs = [
            (o, d) for r in results[f"pair:{mode}"] for o, d in zip(r["ours"], r["diffusers"], strict=True)
        ]
        ratios = [o["seconds"] / d["seconds"] for o, d in pairs]
        ours, peer = _summary([o for o, _ in pairs]), _summary([d for _, d in pairs])
        for name, s, paired in (
            (f"diffusers, beside {mode}", peer, 1.0),
            (label, ours, statistics.median(ratios)),
        ):
            values = [
                f"{s['best']:.3f}",
                f"{s['median']:.3f}",
                f"{s['best'] / peer['best']:.3f}",
                f"{paired:.3f}",
            ]
            if not cuda:
                values += [f"{s['cpu']:.2f}", f"{s['cpu'] / peer['cpu']:.3f}"]
            values += [f"{s['added']:.0f}", f"{s['added'] / peer['added']:.2f}" if peer["added"] > 0 else "-"]
            print(f"{name:38}" + "".join(f"{v:>10}" for v in values))
        print(f"{'':38}paired ratios: " + " ".join(f"{r:.3f}" for r in ratios))
        verdicts[mode] = ours["best"] / peer["best"] if cuda else ours["cpu"] / peer["cpu"]
    measure = "x best" if cuda else "x cpu"
    print(
        "x best: best / diffusers' best in the same processes; x paired: median of ours / the diffusers "
        "run next to it"
        + (
            ""
            if cuda
            else "; cpu s: median process CPU time of a run (contention from other work barely moves it)"
        )
    )
    default = verdicts["reference"]
    print(
        f"target, default path within 1.05x of diffusers ({measure}): {default:.3f}, "
        + ("met" if default <= 1.05 else "NOT met")
        + f"; groupnorm=diffusers {verdicts['diffusers']:.3f}"
    )
    print(f"bench took {total:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in wall.items() if v) + ")")


if __name__ == "__main__":
    pass
