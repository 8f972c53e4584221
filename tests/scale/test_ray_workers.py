"""Ray workers on a small local cluster (2 CPU actors, the tiny models), fed by the server's queue.

One server for the module (starting actors costs seconds): 20 jobs spread over both workers in
order and none lost; warm-model affinity; cancel through the API; a worker killed mid-job makes
its job interrupted and requeued, and it finishes on the other worker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("ray", reason="ray is not installed (pip install 'animdiff[ray]')")

from fastapi.testclient import TestClient

from animdiff.server.app import create_app
from animdiff.server.settings import ServerSettings
from server_helpers import tiny_job, wait_denoising, wait_for

pytestmark = pytest.mark.slow


def submit(client: TestClient, **overrides: Any) -> str:
    answer = client.post("/api/v1/jobs", json=tiny_job(**overrides))
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


@pytest.fixture(scope="module")
def client(ray_cluster, models_dir: Path, animator, tmp_path_factory) -> Iterator[TestClient]:
    settings = ServerSettings(
        models_dir=models_dir,
        data_dir=tmp_path_factory.mktemp("ray-data"),
        devices=("cpu",),
        progress_interval_s=0.0,
        workers="auto",
        ray_actors=2,
        ray_cpus_per_actor=1,
        requeue_limit=1,
    )
    with TestClient(create_app(settings, animators=[animator])) as test_client:
        yield test_client


def pool(client: TestClient):
    return client.app.state.ctx.pool


def test_twenty_jobs_spread_over_both_workers_none_lost(client: TestClient) -> None:
    ids = [submit(client, seed=i) for i in range(20)]
    views = [wait_for(client, job_id, timeout=120) for job_id in ids]
    assert [v["status"] for v in views] == ["succeeded"] * 20, [v["error"] for v in views]
    assert {v["worker"] for v in views} == {slot.name for slot in pool(client).slots}
    assert len({v["worker"] for v in views}) == 2
    started = [v["started_at"] for v in views]
    assert started == sorted(started)  # claimed in submission order
    assert all(v["attempt"] == 1 and v["files"] and v["seed"] == i for i, v in enumerate(views))
    gif = client.get(views[0]["files"][0]["url"])
    assert gif.status_code == 200 and gif.content[:6] == b"GIF89a"
    events = client.get(f"/api/v1/jobs/{ids[-1]}/events/list").json()
    types = [e["type"] for e in events]
    assert types[:2] == ["job.queued", "job.started"] and types[-1] == "job.succeeded"
    assert "job.progress" in types  # progress flows back from the actor


def test_warm_model_affinity(client: TestClient) -> None:
    """Each worker keeps the motion module it last ran: jobs for it go back to it."""
    first = wait_for(client, timeout=120, job_id=submit(client, motion_module="tiny-mm-v1.ckpt"))
    second = wait_for(client, timeout=120, job_id=submit(client, motion_module="tiny-mm-v2.ckpt"))
    assert first["worker"] != second["worker"]
    for _ in range(2):
        for module, expected in (("tiny-mm-v1.ckpt", first), ("tiny-mm-v2.ckpt", second)):
            view = wait_for(client, timeout=120, job_id=submit(client, motion_module=module))
            assert view["status"] == "succeeded" and view["worker"] == expected["worker"], module


def test_cancel_flows_to_the_actor(client: TestClient) -> None:
    job_id = submit(client, steps=60, frames=16, context=16)
    wait_denoising(client, job_id, timeout=120)
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").json()["cancel_requested"]
    view = wait_for(client, job_id, timeout=120)
    assert view["status"] == "canceled" and not view["files"]


def test_killed_worker_requeues_its_job_on_the_other(client: TestClient, ray_cluster) -> None:
    job_id = submit(client, steps=60, frames=16, context=16)
    running = wait_denoising(client, job_id, timeout=120)
    slot = next(s for s in pool(client).slots if s.record is not None and s.record.id == job_id)
    other = next(s for s in pool(client).slots if s is not slot)
    ray_cluster.kill(slot.actor)
    view = wait_for(client, job_id, timeout=120)
    assert view["status"] == "succeeded", view["error"]
    assert view["attempt"] == 2 and view["worker"] == other.name != running["worker"]
    types = [e["type"] for e in client.get(f"/api/v1/jobs/{job_id}/events/list").json()]
    assert types.count("job.started") == 2
    assert types.index("job.interrupted") < types.index("job.queued", 1) < types.index("job.succeeded")
    # The replacement worker comes up and takes jobs again.
    deadline = time.monotonic() + 120
    while not slot.ready:
        assert time.monotonic() < deadline, "no replacement worker"
        time.sleep(0.2)
    assert slot.name.startswith("ray-") and "r1" in slot.name
