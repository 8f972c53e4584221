"""Faults fail their own job with a message; the worker goes on with the next job."""

from __future__ import annotations

import errno
import shutil
import time
from pathlib import Path

import torch

from animdiff.output import writers
from animdiff.output.writers import Writer
from server_helpers import tiny_job, wait_for


def run_queue(client, bodies: list[dict]) -> list[dict]:
    ids = [client.post("/api/v1/jobs", json=body).json()["id"] for body in bodies]
    client.app.state.ctx.pool.start()
    return [wait_for(client, job_id) for job_id in ids]


def no_partials(client) -> bool:
    return not list(client.app.state.ctx.results.root.glob(".partial-*"))


def test_model_file_removed_mid_queue(make_client, models_dir: Path) -> None:
    doomed = models_dir / "AnimateDiff" / "doomed-mm.ckpt"
    shutil.copy(models_dir / "AnimateDiff" / "tiny-mm-v2.ckpt", doomed)
    client = make_client(start_workers=False)
    try:
        first = client.post("/api/v1/jobs", json=tiny_job(motion_module="doomed-mm.ckpt"))
        assert first.status_code == 202, first.text
    finally:
        doomed.unlink()
    second = client.post("/api/v1/jobs", json=tiny_job()).json()["id"]
    client.app.state.ctx.pool.start()
    failed = wait_for(client, first.json()["id"])
    assert failed["status"] == "failed" and "doomed-mm.ckpt" in failed["error"]
    assert failed["error_type"] == "ModelNotFoundError" and failed["files"] == []
    assert wait_for(client, second)["status"] == "succeeded"
    assert no_partials(client)


def test_out_of_memory_fails_only_that_job(make_client, animator, monkeypatch) -> None:
    original = animator.sample_job

    def sample_job(job, *args, **kwargs):
        if job.params.prompt == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(job, *args, **kwargs)

    monkeypatch.setattr(animator, "sample_job", sample_job)
    client = make_client(start_workers=False)
    oom, after = run_queue(client, [tiny_job(prompt="oom"), tiny_job()])
    assert oom["status"] == "failed" and oom["error_type"] == "out_of_memory"
    assert "out of memory" in oom["error"] and "20.00 GiB" in oom["error"]
    assert after["status"] == "succeeded"
    assert no_partials(client)


def test_disk_full_fails_only_that_job(make_client, monkeypatch) -> None:
    real = writers.WRITERS["gif"]
    state = {"calls": 0}

    def full_disk(frames, path, infotext, options):
        state["calls"] += 1
        if state["calls"] == 1:
            path.write_bytes(b"GIF89a partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real.write(frames, path, infotext, options)

    monkeypatch.setitem(writers.WRITERS, "gif", Writer(".gif", full_disk))
    client = make_client(start_workers=False)
    full, after = run_queue(client, [tiny_job(formats=["txt", "gif"]), tiny_job()])
    assert full["status"] == "failed" and full["error_type"] == "disk_full", full
    assert "No space left" in full["error"] and full["files"] == []
    assert not client.app.state.ctx.results.folder(full["id"]).exists()
    assert after["status"] == "succeeded"
    assert no_partials(client)


def test_unexpected_exception_is_a_failed_job(make_client, animator, monkeypatch) -> None:
    original = animator.sample_job

    def sample_job(job, *args, **kwargs):
        if job.params.prompt == "bug":
            raise ZeroDivisionError("division by zero")
        return original(job, *args, **kwargs)

    monkeypatch.setattr(animator, "sample_job", sample_job)
    client = make_client(start_workers=False)
    bug, after = run_queue(client, [tiny_job(prompt="bug"), tiny_job()])
    assert bug["status"] == "failed" and bug["error_type"] == "internal"
    assert bug["error"] == "ZeroDivisionError: division by zero"
    assert after["status"] == "succeeded"


def test_a1111_call_whose_job_fails_gets_500_with_the_message(make_client, animator, monkeypatch) -> None:
    from test_a1111 import payload

    original = animator.sample_job

    def sample_job(job, *args, **kwargs):
        if job.params.prompt == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory")
        return original(job, *args, **kwargs)

    monkeypatch.setattr(animator, "sample_job", sample_job)
    client = make_client()
    body = payload()
    body["prompt"] = "oom"
    answer = client.post("/sdapi/v1/txt2img", json=body)
    assert answer.status_code == 500
    assert answer.json()["error"] == "out_of_memory" and "out of memory" in answer.json()["detail"]
    assert client.post("/sdapi/v1/txt2img", json=payload()).status_code == 200


def test_retention_applied_by_the_worker_between_jobs(make_client) -> None:
    client = make_client(start_workers=False, retention_bytes=0)
    first, second = run_queue(client, [tiny_job(), tiny_job(seed=3)])
    assert first["status"] == second["status"] == "succeeded"
    wait_for(client, second["id"])
    expired = client.get(f"/api/v1/jobs/{first['id']}").json()
    deadline = time.monotonic() + 10
    while not expired["expired"] and time.monotonic() < deadline:
        expired = client.get(f"/api/v1/jobs/{first['id']}").json()
    assert expired["expired"] and expired["files"] == []
    assert client.get(f"/api/v1/jobs/{first['id']}/files/x.gif").status_code == 410
