"""Ray workers: GPUs on this machine and others, fed from the server's own job queue.

`animdiff serve --workers auto` joins the Ray cluster of this machine (after `ray start`) or starts
a local one; `--workers ray://HOST:PORT` joins a remote one through Ray Client.
Each worker is a long-lived Ray actor that keeps its models loaded between jobs: one per GPU
(`num_gpus=1`, so one job per GPU at a time), or `--ray-actors N` CPU actors of
`--ray-cpus-per-actor` each. The store stays the only source of truth: a dispatcher thread in the
server claims queued jobs for free actors (the same atomic claim as local workers, so several
servers can feed one cluster from a shared PostgreSQL queue), calls `actor.run`, copies the
actor's progress into the store as it comes, forwards cancels (also those another server
recorded), and writes the returned files into the results folder. The API and the UI see no
difference, except that a job's `worker` names the actor and its machine.

Warm-model affinity: the oldest queued job goes to a free worker that already holds its checkpoint
and motion module when there is one, else to an empty worker, else to any free one.
Faults: a worker that dies mid-job (actor killed, node lost) makes its job `interrupted`, queued
again at most `--requeue-limit` times and preferably on another worker; its replacement starts
in the background. The claim's attempt number fences every later write, so a job never runs twice
at once and a dead run's late answer changes nothing. Without the `ray` extra nothing here is
imported; `--workers` then stops with a message naming the extra.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from animdiff.errors import AnimdiffError, CancelledError
from animdiff.server.results import Results
from animdiff.server.settings import ServerSettings
from animdiff.server.store import CANCELED, FAILED, SUCCEEDED, JobRecord, JobStore
from animdiff.server.worker import OUT_OF_MEMORY, WorkerPool

log = logging.getLogger("animdiff.server")
POLL_S = 0.1
IDLE_POLL_S = 1.0
START_TIMEOUT_S = 300.0
LOOKAHEAD = 100  # queued jobs the dispatcher considers at once


class RayMissingError(AnimdiffError):
    http_status = 500


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayMissingError(
            "--workers needs Ray: pip install 'animdiff[ray]' (or leave --workers out for local workers)"
        ) from None
    return ray


def model_key(params: dict[str, Any]) -> tuple[Any, Any]:
    """What a worker keeps loaded between jobs: the checkpoint and the motion module."""
    return params.get("checkpoint"), params.get("motion_module")


# --- inside the actor ---------------------------------------------------------------------------------


class _ProgressSink:
    """Stands in for the store inside an actor: collects what the job reports until drained."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple] = []

    def set_progress(self, job_id: str, progress: dict[str, Any], event: bool = True) -> None:
        with self._lock:
            self._items.append(("progress", job_id, progress, event))

    def add_event(self, job_id: str, type_: str, data: dict[str, Any]) -> None:
        with self._lock:
            self._items.append(("event", job_id, type_, data))

    def cancel_requested(self, job_id: str) -> bool:
        return False

    def drain(self) -> list[tuple]:
        with self._lock:
            items, self._items = self._items, []
        return items


class WorkerActor:
    """One Ray worker: an Animator whose model cache lives as long as the actor."""

    def __init__(self, label: str, settings: ServerSettings, device: str | None, threads: int) -> None:
        import torch

        from animdiff.pipeline import Animator
        from animdiff.server.worker import Worker

        if device == "cpu":
            torch.set_num_threads(max(1, threads))
        self.animator = Animator(settings.models_dir, None, settings.run_options(device))
        self.name = f"{label} ({socket.gethostname()}, {self.animator.device})"
        self.sink = _ProgressSink()
        self.worker = Worker(self.name, self.animator, self.sink, None, settings)  # type: ignore[arg-type]
        self._cancels: dict[str, threading.Event] = {}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "pid": os.getpid(), "host": socket.gethostname()}

    def run(self, job_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """Run one job; the answer carries the files (bytes), since the server may be elsewhere."""
        from animdiff.server.worker import classify

        cancel = self._cancels.setdefault(job_id, threading.Event())
        partial = Path(tempfile.mkdtemp(prefix="animdiff-ray-"))
        try:
            outcome = self.worker._execute(SimpleNamespace(id=job_id, params=params), partial, cancel)
            folder: Path = outcome.pop("folder")
            files = {
                path.relative_to(folder).as_posix(): path.read_bytes()
                for path in sorted(folder.rglob("*"))
                if path.is_file()
            }
            return {"status": SUCCEEDED, "outcome": outcome, "files": files}
        except CancelledError:
            return {"status": CANCELED}
        except Exception as exc:
            error_type, message = classify(exc)
            if error_type == OUT_OF_MEMORY:
                self.worker._free_memory()
            return {"status": FAILED, "error_type": error_type, "error": message}
        finally:
            self._cancels.pop(job_id, None)
            shutil.rmtree(partial, ignore_errors=True)

    def cancel(self, job_id: str) -> None:
        self._cancels.setdefault(job_id, threading.Event()).set()

    def drain(self) -> list[tuple]:
        return self.sink.drain()


# --- in the server ------------------------------------------------------------------------------------


@dataclass
class Slot:
    """One worker as the dispatcher sees it."""

    index: int
    actor: Any = None
    name: str = ""
    ready: bool = False
    holds: tuple[Any, Any] | None = None
    record: JobRecord | None = None
    ref: Any = None
    cancel_sent: bool = False
    generation: int = 0  # replacements of a dead actor: ray-1, then ray-1r1, ...
    history: list[str] = field(default_factory=list)  # job ids it ran, for tests and logs


class RayPool(WorkerPool):
    """The WorkerPool interface (start, stop, wake, cancel, running) over Ray actors."""

    def __init__(
        self, store: JobStore, results: Results, settings: ServerSettings, publish: Any = lambda: None
    ) -> None:
        super().__init__([])
        self.store, self.results, self.settings, self.publish = store, results, settings, publish
        self.slots: list[Slot] = []
        self._avoid: dict[str, set[int]] = {}  # job id -> slots it died on
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._owns_ray = False
        self._ray: Any = None
        self._actor_class: Any = None
        self._gpu = False
        self.thread = threading.Thread(target=self._loop, name="animdiff-ray-dispatcher", daemon=True)

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        ray = self._ray = import_ray()
        if not ray.is_initialized():
            self._connect(ray)
            self._owns_ray = True
        gpus = int(ray.cluster_resources().get("GPU", 0))
        self._gpu = gpus > 0
        count = self.settings.ray_actors or max(gpus, 1)
        if self._gpu:
            self._actor_class = ray.remote(num_gpus=1, max_concurrency=4)(WorkerActor)
        else:
            cpus = self.settings.ray_cpus_per_actor
            self._actor_class = ray.remote(num_cpus=cpus, max_concurrency=4)(WorkerActor)
        self.slots = [Slot(i) for i in range(count)]
        pending = [(slot, self._spawn(slot)) for slot in self.slots]
        for slot, ref in pending:
            self._ready(slot, ray.get(ref, timeout=START_TIMEOUT_S))
        log.info("Ray workers: %s", ", ".join(slot.name for slot in self.slots))
        super().start()  # the heartbeat
        self.thread.start()

    def _connect(self, ray: Any) -> None:
        """`auto`: the cluster this machine belongs to (`ray start` ran here), else a new local
        one; `ray://HOST:PORT`: a remote cluster through Ray Client."""
        options = dict(include_dashboard=False, configure_logging=False)
        if self.settings.workers != "auto":
            try:
                ray.init(address=self.settings.workers, **options)
            except Exception as exc:
                raise RayMissingError(f"cannot join the Ray cluster {self.settings.workers}: {exc}") from None
            return
        try:
            ray.init(address="auto", **options)
        except (ConnectionError, RuntimeError, ValueError):  # none here (or one that has stopped)
            ray.init(address="local", **options)

    def _spawn(self, slot: Slot) -> Any:
        device = None if self._gpu else "cpu"
        threads = int(self.settings.ray_cpus_per_actor)
        label = f"ray-{slot.index}" + (f"r{slot.generation}" if slot.generation else "")
        slot.actor = self._actor_class.remote(label, self.settings, device, threads)
        return slot.actor.describe.remote()

    def _ready(self, slot: Slot, description: dict[str, Any]) -> None:
        with self._lock:
            slot.name, slot.ready, slot.holds = description["name"], True, None
        self._wake.set()

    def _replace(self, slot: Slot) -> None:
        """A new actor for a dead one, started in the background (loading takes a while)."""

        def replace() -> None:
            while not self._stop.is_set():
                try:
                    self._ready(slot, self._ray.get(self._spawn(slot), timeout=START_TIMEOUT_S))
                    log.warning("Ray worker %s replaced", slot.name)
                    return
                except Exception:
                    log.exception("cannot start a replacement for Ray worker %d", slot.index)
                    self._stop.wait(10)

        threading.Thread(target=replace, name=f"animdiff-ray-replace-{slot.index}", daemon=True).start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Running jobs are cancelled and stay `running` in the store: the next start (or, on a
        shared queue, another server) treats them as a crash would."""
        self._stop.set()
        self._wake.set()
        if self.thread.is_alive():
            self.thread.join(timeout)
        super().stop(timeout)
        if self._ray is None:
            return
        for slot in self.slots:
            if slot.actor is not None:
                try:
                    self._ray.kill(slot.actor)
                except Exception:
                    log.debug("killing Ray worker %d failed", slot.index, exc_info=True)
        if self._owns_ray:
            self._ray.shutdown()

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> bool:
        with self._lock:
            for slot in self.slots:
                if slot.record is not None and slot.record.id == job_id:
                    slot.actor.cancel.remote(job_id)
                    slot.cancel_sent = True
                    return True
        return False

    def running(self) -> list[str]:
        with self._lock:
            return [slot.record.id for slot in self.slots if slot.record is not None]

    # --- the dispatcher ------------------------------------------------------------------------------

    def _loop(self) -> None:
        ray = self._ray
        while not self._stop.is_set():
            try:
                self._assign()
            except Exception:
                log.exception("Ray dispatcher: cannot read the queue")
                self._stop.wait(IDLE_POLL_S)
                continue
            busy = [slot for slot in self.slots if slot.ref is not None]
            if not busy:
                self._wake.wait(IDLE_POLL_S)
                self._wake.clear()
                continue
            ready, _ = ray.wait([slot.ref for slot in busy], num_returns=1, timeout=POLL_S)
            for slot in busy:
                self._pump(slot)
            done = {ref.hex() for ref in ready}  # Ray Client answers with new ref objects: compare ids
            for slot in busy:
                if slot.ref.hex() in done:
                    self._complete(slot)
        for slot in self.slots:  # stopping: cancel what runs, leave it `running`
            if slot.ref is not None and slot.actor is not None:
                try:
                    slot.actor.cancel.remote(slot.record.id)
                except Exception:
                    log.debug("cancel on stop failed", exc_info=True)

    def _assign(self) -> None:
        free = [slot for slot in self.slots if slot.ready and slot.record is None]
        if not free:
            return
        for record in self.store.queued(LOOKAHEAD):
            slot = self._choose(record, free)
            if slot is None:
                continue
            claimed = self.store.claim(slot.name, job_id=record.id)
            if claimed is None:
                continue  # cancelled, or another server's dispatcher took it
            with self._lock:
                slot.record, slot.cancel_sent = claimed, False
                slot.ref = slot.actor.run.remote(claimed.id, claimed.params)
            slot.history.append(claimed.id)
            free.remove(slot)
            self.publish()
            if not free:
                return

    def _choose(self, record: JobRecord, free: list[Slot]) -> Slot | None:
        avoid = self._avoid.get(record.id, set())
        if any(slot.ready and slot.index not in avoid for slot in self.slots):
            candidates = [slot for slot in free if slot.index not in avoid]
        else:
            candidates = free  # the only workers left are those it died on
        key = model_key(record.params)
        for wanted in (lambda s: s.holds == key, lambda s: s.holds is None, lambda s: True):
            for slot in candidates:
                if wanted(slot):
                    return slot
        return None

    def _pump(self, slot: Slot) -> None:
        """Progress from the actor into the store; cancels recorded in the store to the actor."""
        record = slot.record
        try:
            items = self._ray.get(slot.actor.drain.remote(), timeout=30)
        except Exception:
            return  # a dead actor: its job's answer says so
        for item in items:
            if item[0] == "progress":
                self.store.set_progress(record.id, item[2], event=item[3])
            else:
                self.store.add_event(record.id, item[2], item[3])
        if items:
            self.publish()
        if not slot.cancel_sent and self.store.cancel_requested(record.id):
            self.cancel(record.id)

    def _complete(self, slot: Slot) -> None:
        with self._lock:
            record, ref = slot.record, slot.ref
            slot.record = slot.ref = None
        assert record is not None
        try:
            answer = self._ray.get(ref)
        except self._ray.exceptions.RayActorError as exc:
            self._died(slot, record, exc)
            return
        except Exception as exc:
            log.exception("Ray job %s failed", record.id)
            self.store.finish(
                record.id,
                FAILED,
                error_type="internal",
                error=f"{type(exc).__name__}",
                attempt=record.attempt,
            )
            self.publish()
            return
        try:
            self._record(slot, record, answer)
        finally:
            self.publish()

    def _record(self, slot: Slot, record: JobRecord, answer: dict[str, Any]) -> None:
        status = answer["status"]
        if status == SUCCEEDED:
            slot.holds = model_key(record.params)
            partial = self.results.start(record.id)
            try:
                out = partial / "out"
                for name, data in answer["files"].items():
                    path = out / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
                if not answer["files"]:
                    raise AnimdiffError("the job wrote no files")
                files = self.results.commit(record.id, partial, out)
            except Exception as exc:
                self.results.discard(partial)
                self.store.finish(
                    record.id, FAILED, error_type="internal", error=str(exc), attempt=record.attempt
                )
                return
            outcome = answer["outcome"]
            self.store.finish(
                record.id,
                SUCCEEDED,
                warnings=outcome.pop("warnings"),
                result={**outcome, "files": files},
                attempt=record.attempt,
            )
        elif status == CANCELED:
            slot.holds = model_key(record.params)
            if self._stop.is_set() and not self.store.cancel_requested(record.id):
                return  # stopped by the server's shutdown: stays running, recovered as a crash
            self.store.finish(
                record.id,
                CANCELED,
                error_type="canceled",
                error="canceled while running",
                attempt=record.attempt,
            )
        else:
            if answer.get("error_type") == OUT_OF_MEMORY:
                slot.holds = None
            self.store.finish(
                record.id,
                FAILED,
                error_type=answer.get("error_type"),
                error=answer.get("error"),
                attempt=record.attempt,
            )

    def _died(self, slot: Slot, record: JobRecord, exc: BaseException) -> None:
        with self._lock:
            slot.ready, slot.holds = False, None
            slot.generation += 1
        requeue = record.attempt <= self.settings.requeue_limit
        error = f"worker {slot.name} died while running this job ({type(exc).__name__})"
        status = self.store.interrupt(record.id, record.attempt, error, requeue)
        log.warning("job %s: %s; now %s", record.id, error, status)
        if requeue:
            self._avoid.setdefault(record.id, set()).add(slot.index)
        self.publish()
        if not self._stop.is_set():
            self._replace(slot)


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """A small helper for tests and the bench."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
