"""Server load: 20 clients submit 200 tiny jobs at once; none may be lost, FIFO must hold, and the
status endpoint must stay fast while jobs run (the event loop never waits on the model).

The server runs as its own process (uvicorn, as `animdiff serve` runs it) on tiny models written
to a temporary folder, on CUDA when there is one (else the CPU, float32; `--device` overrides),
with `--threads` threads. Status latency is measured twice in the same run: with the queue idle (the
peer: the same request on the same server with nothing to do) and while jobs run; the table
prints both and their ratio.

    python bench/server_load.py [--clients 20] [--jobs 200] [--samples 400] [--device cpu]
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

JOB = dict(
    prompt="a corgi running on the beach",
    checkpoint="tiny-sd15.safetensors",
    motion_module="tiny-mm-v3.safetensors",
    width=64,
    height=64,
    steps=1,
    seed=1,
    frames=8,
    context=8,
    sampler="DDIM",
    formats=["gif"],
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(models: Path, data: Path, port: int, device: str, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "animdiff.server", "--models-dir", str(models), "--data-dir", str(data)]
    command += ["--port", str(port), "--device", device, "--log-level", "warning", "--max-queue", "100000"]
    process = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not start")


def latencies(base: str, path: str, samples: int, stop: threading.Event | None = None) -> list[float]:
    out = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for _ in range(samples):
            if stop is not None and stop.is_set():
                break
            start = time.perf_counter()
            answer = client.get(path)
            out.append(time.perf_counter() - start)
            answer.raise_for_status()
    return out


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--samples", type=int, default=400, help="status requests per measurement")
    parser.add_argument("--device", help="cuda or cpu (default: cuda when there is one)")
    parser.add_argument("--threads", type=int, default=1, help="threads of the server process")
    args = parser.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    from animdiff.testing.factory import write_models_dir

    with tempfile.TemporaryDirectory() as tmp:
        models, data = Path(tmp) / "models", Path(tmp) / "data"
        write_models_dir(models)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = start_server(models, data, port, device, args.threads)
        try:
            # warm-up: load the models once, then measure the idle status latency (the peer)
            first = httpx.post(f"{base}/api/v1/jobs", json=JOB, timeout=30).json()["id"]
            while httpx.get(f"{base}/api/v1/jobs/{first}").json()["status"] != "succeeded":
                time.sleep(0.1)
            idle = latencies(base, f"/api/v1/jobs/{first}", args.samples)

            per_client = args.jobs // args.clients

            def client_submits(index: int) -> list[tuple[str, float]]:
                out = []
                with httpx.Client(base_url=base, timeout=60) as client:
                    for n in range(per_client):
                        answer = client.post("/api/v1/jobs", json={**JOB, "seed": index * 1000 + n})
                        answer.raise_for_status()
                        out.append((answer.json()["id"], time.perf_counter()))
                return out

            started = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                submitted = [
                    item for batch in pool.map(client_submits, range(args.clients)) for item in batch
                ]
            submit_s = time.perf_counter() - started
            stop = threading.Event()
            busy: list[float] = []
            probe = threading.Thread(
                target=lambda: busy.extend(
                    latencies(base, f"/api/v1/jobs/{submitted[0][0]}", args.samples, stop)
                )
            )
            probe.start()
            ids = {job_id for job_id, _ in submitted}
            while True:
                queued = httpx.get(f"{base}/api/v1/jobs", params={"status": "queued", "limit": 1}).json()[
                    "total"
                ]
                running = httpx.get(f"{base}/api/v1/jobs", params={"status": "running", "limit": 1}).json()[
                    "total"
                ]
                if queued == 0 and running == 0:
                    break
                time.sleep(0.2)
            total_s = time.perf_counter() - started
            stop.set()
            probe.join()
            jobs = []
            offset = 0
            while True:
                page = httpx.get(f"{base}/api/v1/jobs", params={"limit": 500, "offset": offset}).json()
                jobs += page["jobs"]
                offset += len(page["jobs"])
                if offset >= page["total"]:
                    break
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)

    mine = [j for j in jobs if j["id"] in ids]
    lost = len(ids) - len(mine)
    failed = [j for j in mine if j["status"] != "succeeded"]
    starts = [j["started_at"] for j in mine]  # listed in submission (queue) order
    fifo = all(a <= b for a, b in itertools.pairwise(starts))
    rows = [
        ("device, server threads", f"{device}, {args.threads}"),
        ("jobs submitted / stored / succeeded", f"{len(ids)} / {len(mine)} / {len(mine) - len(failed)}"),
        ("lost", str(lost)),
        ("FIFO order kept", "yes" if fifo else "NO"),
        (f"submit wall time ({args.clients} clients)", f"{submit_s:.2f} s"),
        ("all jobs done", f"{total_s:.1f} s ({len(ids) / total_s:.1f} jobs/s)"),
        (
            "status latency idle (peer): median / p99",
            f"{statistics.median(idle) * 1e3:.1f} / {p99(idle) * 1e3:.1f} ms",
        ),
        (
            "status latency while jobs run: median / p99",
            f"{statistics.median(busy) * 1e3:.1f} / {p99(busy) * 1e3:.1f} ms ({len(busy)} requests)",
        ),
        ("ratio busy / idle (median)", f"{statistics.median(busy) / statistics.median(idle):.2f}x"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if lost or failed or not fifo:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
