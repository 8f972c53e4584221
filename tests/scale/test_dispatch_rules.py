"""The Ray dispatcher's rules without a cluster (fast; Ray not needed): affinity, avoidance of
the worker a job died on, and the requeue limit."""

from __future__ import annotations

from pathlib import Path

from animdiff.server.ray_pool import RayPool, Slot
from animdiff.server.results import Results
from animdiff.server.settings import ServerSettings
from animdiff.server.store import JobStore


def make_pool(tmp_path: Path, **overrides) -> RayPool:
    settings = ServerSettings(models_dir=tmp_path, data_dir=tmp_path / "data", workers="auto", **overrides)
    store = JobStore(settings.database)
    pool = RayPool(store, Results(settings.results_dir), settings)
    pool.slots = [Slot(i, name=f"ray-{i}", ready=True) for i in range(3)]
    return pool


def params(module: str) -> dict:
    return {"checkpoint": "a.safetensors", "motion_module": module}


def test_affinity_then_empty_then_any(tmp_path: Path) -> None:
    pool = make_pool(tmp_path)
    first, second, third = pool.slots
    first.holds = ("a.safetensors", "v1.ckpt")
    second.holds = ("a.safetensors", "v2.ckpt")
    pool.store.add("j", "native", params("v2.ckpt"))
    record = pool.store.get("j")
    assert pool._choose(record, [first, second, third]) is second  # warm
    assert pool._choose(record, [first, third]) is third  # empty before evicting
    assert pool._choose(record, [first]) is first  # any free one rather than wait


def test_requeued_job_avoids_the_worker_it_died_on_and_the_limit_holds(tmp_path: Path) -> None:
    pool = make_pool(tmp_path, requeue_limit=1)
    pool._stop.set()  # no replacement actors here
    first, second, third = pool.slots
    pool.store.add("j", "native", params("v1.ckpt"))
    record = pool.store.claim(first.name)
    pool._died(first, record, RuntimeError("killed"))
    assert pool.store.get("j").status == "queued" and not first.ready and first.generation == 1
    first.ready = True  # its replacement is up
    queued = pool.store.get("j")
    assert pool._choose(queued, [first, second]) is second
    assert pool._choose(queued, [first]) is None  # waits for another worker
    second.ready = third.ready = False
    assert pool._choose(queued, [first]) is first  # ... unless it is the only one left
    record = pool.store.claim(second.name)
    assert record.attempt == 2
    pool._died(second, record, RuntimeError("killed again"))
    final = pool.store.get("j")
    assert final.status == "interrupted" and "died" in final.error
    types = [e.type for e in pool.store.events_after("j")]
    assert types == [
        "job.queued",
        "job.started",
        "job.interrupted",
        "job.queued",
        "job.started",
        "job.interrupted",
    ]
