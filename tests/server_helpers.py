"""Helpers the server, UI and scale-out tests share (a module beside the root conftest, so every
test folder can import it; pytest puts this folder on the path for that conftest)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

TERMINAL = {"succeeded", "failed", "canceled", "interrupted"}


def tiny_job(**overrides: Any) -> dict[str, Any]:
    """Native settings for a job that runs in a fraction of a second on the tiny models."""
    values: dict[str, Any] = dict(
        prompt="a corgi running on the beach",
        checkpoint="tiny-sd15.safetensors",
        motion_module="tiny-mm-v2.ckpt",
        width=64,
        height=64,
        steps=2,
        seed=42,
        frames=8,
        context=8,
        sampler="DDIM",
        formats=["gif"],
    )
    values.update(overrides)
    return values


def wait_denoising(client: TestClient, job_id: str, timeout: float = 60) -> dict:
    """The job once it is sampling (a cancel then lands at a model call); fails if it ended first."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] == "running" and job["progress"].get("phase") == "denoise":
            return job
        if job["status"] in TERMINAL or time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} never seen denoising: {job['status']} {job['progress']}")
        time.sleep(0.005)


def wait_for(client: TestClient, job_id: str, statuses: set[str] = TERMINAL, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s: {job}")
        time.sleep(0.02)
