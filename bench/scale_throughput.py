"""Scale-out throughput: jobs per minute with 1 and with 2 Ray CPU workers on the tiny models.

The server's own parts run in this process (the SQLite job store, the results folder and the Ray
dispatcher, as `animdiff serve --workers auto` runs them) on a small local Ray cluster; each worker
is an actor with one CPU and one thread. Each size gets a warm-up (one job per worker, so every
actor has loaded its models) and then `--jobs` jobs submitted at once; the clock runs from the
submit to the last job finished. The table prints jobs per minute for each size and the ratio
(2 workers / 1 worker; 2.0 would be perfect scaling, the machine's free cores permitting).

    python bench/scale_throughput.py [--jobs 20] [--steps 4] [--frames 8]

Needs the `ray` extra.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def job(steps: int, frames: int, seed: int) -> dict:
    return dict(
        prompt="a corgi running on the beach",
        checkpoint="tiny-sd15.safetensors",
        motion_module="tiny-mm-v2.ckpt",
        width=64,
        height=64,
        steps=steps,
        seed=seed,
        frames=frames,
        context=min(frames, 16),
        sampler="DDIM",
        formats=["gif"],
    )


def measure(workers: int, args: argparse.Namespace, models: Path, root: Path) -> float:
    """Jobs per minute with this many workers."""
    from animdiff.server.ray_pool import RayPool, wait_until
    from animdiff.server.results import Results
    from animdiff.server.settings import ServerSettings
    from animdiff.server.store import JobStore

    data = root / f"data-{workers}"
    settings = ServerSettings(
        models_dir=models, data_dir=data, workers="auto", ray_actors=workers, ray_cpus_per_actor=1
    )
    store = JobStore(settings.database)
    pool = RayPool(store, Results(settings.results_dir), settings)
    pool.start()
    try:

        def run(count: int, prefix: str) -> float:
            ids = [f"{prefix}{i:04}" for i in range(count)]
            start = time.perf_counter()
            for i, job_id in enumerate(ids):
                store.add(job_id, "native", job(args.steps, args.frames, i))
            pool.wake()
            finished = wait_until(
                lambda: store.count("succeeded") + store.count("failed") >= len(done) + count, 3600
            )
            elapsed = time.perf_counter() - start
            failed = [j for j in ids if store.get(j).status != "succeeded"]
            if not finished or failed:
                raise SystemExit(f"{len(failed)} job(s) did not succeed: {store.get(failed[0]).error}")
            done.extend(ids)
            return elapsed

        done: list[str] = []
        run(workers, "warm")
        elapsed = run(args.jobs, "job")
        used = {store.get(j).worker for j in done[workers:]}
        print(
            f"  {workers} worker(s): {args.jobs} jobs in {elapsed:.1f} s on {len(used)} worker(s)",
            file=sys.stderr,
        )
        return args.jobs * 60 / elapsed
    finally:
        pool.stop()
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args()
    try:
        import ray
    except ImportError:
        print("scale_throughput: skipped, ray is not installed (pip install 'animdiff[ray]')")
        return 0
    from animdiff.testing.factory import write_models_dir

    with tempfile.TemporaryDirectory(prefix="animdiff-scale-") as tmp:
        root = Path(tmp)
        write_models_dir(root / "models")
        ray.init(
            address="local",
            num_cpus=2,
            object_store_memory=80 * 2**20,
            include_dashboard=False,
            log_to_driver=False,
        )
        try:
            rates = {n: measure(n, args, root / "models", root) for n in (1, 2)}
        finally:
            ray.shutdown()
    print(f"scale throughput ({args.jobs} jobs, {args.steps} steps, {args.frames} frames, 64x64, CPU):")
    print("| workers | jobs/min |")
    print("|---|---|")
    for n, rate in rates.items():
        print(f"| {n} | {rate:.1f} |")
    print(f"ratio 2/1: {rates[2] / rates[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
