"""The server as a real process: queued jobs survive `kill -9`, the running one is interrupted,
nothing partial is left on disk. Slow (two server starts, each importing torch)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from server_helpers import TERMINAL, tiny_job

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(models_dir: Path, data_dir: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [
        sys.executable,
        "-m",
        "animdiff.server",
        "--models-dir",
        str(models_dir),
        "--data-dir",
        str(data_dir),
    ]
    command += ["--port", str(port), "--device", "cpu", "--log-level", "warning"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {process.stderr.read().decode()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError("server did not start")


def wait_status(base: str, job_id: str, statuses: set[str], timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{base}/api/v1/jobs/{job_id}", timeout=5).json()
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"{job_id}: still {job['status']}")


def test_kill_9_then_restart(models_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start(models_dir, data, port)
    try:
        slow = httpx.post(f"{base}/api/v1/jobs", json=tiny_job(steps=100, frames=16), timeout=10).json()["id"]
        queued = [
            httpx.post(f"{base}/api/v1/jobs", json=tiny_job(seed=s), timeout=10).json()["id"] for s in (1, 2)
        ]
        job = wait_status(base, slow, {"running"} | TERMINAL)
        deadline = time.monotonic() + 60
        while job["status"] == "running" and job["progress"].get("phase") != "denoise":
            assert time.monotonic() < deadline, job
            job = httpx.get(f"{base}/api/v1/jobs/{slow}", timeout=5).json()
        assert job["status"] == "running", "the slow job ended before it could be killed"
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
    finally:
        if server.poll() is None:
            server.kill()
    server = start(models_dir, data, port)
    try:
        done = [wait_status(base, job_id, TERMINAL) for job_id in queued]
        assert [j["status"] for j in done] == ["succeeded", "succeeded"]
        interrupted = httpx.get(f"{base}/api/v1/jobs/{slow}", timeout=5).json()
        assert interrupted["status"] == "interrupted" and interrupted["files"] == []
        events = httpx.get(f"{base}/api/v1/jobs/{slow}/events/list", timeout=5).json()
        assert events[-1]["type"] == "job.interrupted"
        results = data / "results"
        assert sorted(p.name for p in results.iterdir()) == sorted(queued)  # nothing partial, nothing of slow
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
