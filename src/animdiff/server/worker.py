"""One worker thread per device: take the oldest queued job, run it, record how it ended, go on.

A job is prepared again when it starts (a model file removed since submit fails that job, not
the server), written into a partial folder and moved into place only when complete. Whatever
one job raises (a bad file, out of memory, a full disk, a bug) fails that job alone with its
message; the worker frees memory after an out-of-memory and takes the next job. Cancel: the
store's flag plus this worker's `threading.Event`, which the pipeline checks at every model
call; a cancelled job keeps no files. Retention runs between jobs, never during one.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from animdiff.errors import AnimdiffError, CancelledError
from animdiff.output import encode_frames_png
from animdiff.params import validate_params
from animdiff.pipeline import Animator, Progress, phase_totals
from animdiff.prepare import check_output_folder
from animdiff.server.previews import Previews
from animdiff.server.progress import ProgressTracker
from animdiff.server.results import FRAMES_FOLDER, Results
from animdiff.server.settings import ServerSettings
from animdiff.server.store import CANCELED, FAILED, RUNNING, SUCCEEDED, JobRecord, JobStore

log = logging.getLogger("animdiff.server")
IDLE_POLL_S = 1.0
IDLE_RETENTION_S = 60.0
OUT_OF_MEMORY = "out_of_memory"


class Worker:
    def __init__(
        self,
        name: str,
        animator: Animator,
        store: JobStore,
        results: Results,
        settings: ServerSettings,
        publish: Callable[[], None] = lambda: None,
        previews: Previews | None = None,
    ) -> None:
        self.name = name
        self.previews = previews
        self.animator = animator
        self.store = store
        self.results = results
        self.settings = settings
        self.publish = publish
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._current: tuple[str, threading.Event] | None = None
        self._last_retention = 0.0
        self.thread = threading.Thread(target=self._loop, name=f"animdiff-{name}", daemon=True)

    # --- control from the HTTP threads ----------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            if self._current is not None:
                self._current[1].set()  # a stopping server cancels the job it runs
        if self.thread.is_alive():
            self.thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> bool:
        """Signal the running job if it is this one (the store's flag is already set)."""
        with self._lock:
            if self._current is not None and self._current[0] == job_id:
                self._current[1].set()
                return True
        return False

    @property
    def current(self) -> str | None:
        with self._lock:
            return None if self._current is None else self._current[0]

    # --- the loop ------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                record = self.store.claim(self.name)
            except Exception:  # the database itself failed: keep trying, slowly
                log.exception("worker %s: cannot read the queue", self.name)
                self._stop.wait(IDLE_POLL_S)
                continue
            if record is None:
                if time.monotonic() - self._last_retention > IDLE_RETENTION_S:
                    self._retention()
                self._wake.wait(IDLE_POLL_S)
                self._wake.clear()
                continue
            self.publish()
            self.run_job(record)
            self.publish()
            self._retention()

    def _retention(self) -> None:
        self._last_retention = time.monotonic()
        try:
            self.results.apply_retention(
                self.store, self.settings.retention_age_s, self.settings.retention_bytes
            )
        except Exception:
            log.exception("retention failed")

    def run_job(self, record: JobRecord) -> None:
        cancel = threading.Event()
        with self._lock:
            self._current = (record.id, cancel)
        if self.store.cancel_requested(record.id):
            cancel.set()  # cancelled between the claim and now
        partial: Path | None = None
        try:
            partial = self.results.start(record.id)
            outcome = self._execute(record, partial, cancel)
            files = self.results.commit(record.id, partial, outcome.pop("folder"))
            self.store.finish(
                record.id,
                SUCCEEDED,
                warnings=outcome.pop("warnings"),
                result={**outcome, "files": files},
                attempt=record.attempt,
            )
        except BaseException as exc:
            self.results.discard(partial)
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt / SystemExit: the job stays running, and a restart interrupts it
            self._fail(record, exc)
        finally:
            with self._lock:
                self._current = None
            if self.previews is not None:
                self.previews.drop(record.id)

    def _execute(self, record: JobRecord, partial: Path, cancel: threading.Event) -> dict[str, Any]:
        params = validate_params(record.params)
        job = self.animator.prepare(params, write=False)
        out_root = partial / "out"
        check_output_folder(out_root)
        job = replace(job, out_dir=out_root)
        tracker = ProgressTracker(phase_totals(job), self.settings.progress_interval_s)

        def on_progress(event: Progress) -> None:
            self._preview(record.id, event)
            if not tracker.should_store(event):
                return
            self.store.set_progress(record.id, tracker.describe(event))
            self.publish()

        result = self.animator.execute(job, progress=on_progress, cancel=cancel)
        if cancel.is_set():
            raise CancelledError("cancelled")  # cancelled after the last model call: keep nothing
        written = _date_folder(result.files, out_root)
        if "frame" in params.formats:
            frames = written / FRAMES_FOLDER
            frames.mkdir()
            for index, data in enumerate(encode_frames_png(result.frames, result.infotext)):
                (frames / f"{index:05}.png").write_bytes(data)
        return {
            "folder": written,
            "warnings": list(result.warnings),
            "seed": result.seed,
            "infotext": result.infotext,
            "fps": result.fps or job.fps,
            "frames": len(result.frames),
        }

    def _preview(self, job_id: str, event: Progress) -> None:
        """A preview from the latents the event carries (when the pipeline sends them), throttled."""
        latents = getattr(event, "latents", None)
        if self.previews is None or latents is None or not self.previews.due(job_id):
            return
        number = self.previews.put(job_id, latents)
        self.store.add_event(
            job_id, "job.preview", {"preview": number, "url": f"/api/v1/jobs/{job_id}/preview"}
        )
        self.publish()

    def _fail(self, record: JobRecord, exc: Exception) -> None:
        if (
            isinstance(exc, CancelledError)
            and self._stop.is_set()
            and not self.store.cancel_requested(record.id)
        ):
            # The server is stopping, the user did not cancel: leave the job `running`, so the next
            # start treats it as a crash would (interrupted, requeued only if the operator opted in).
            log.warning("job %s stopped by the server's shutdown", record.id)
            return
        if isinstance(exc, CancelledError):
            self.store.finish(
                record.id,
                CANCELED,
                error_type="canceled",
                error="canceled while running",
                attempt=record.attempt,
            )
            return
        error_type, message = classify(exc)
        if error_type == OUT_OF_MEMORY:
            self._free_memory()
        if error_type == "internal":
            log.error("job %s failed:\n%s", record.id, "".join(traceback.format_exception(exc)))
        self.store.finish(record.id, FAILED, error_type=error_type, error=message, attempt=record.attempt)

    def _free_memory(self) -> None:
        """Drop the cached models: the next job reloads what it needs into a clean device."""
        from animdiff.models.cache import ModelCache

        self.animator.cache = ModelCache(self.animator.device, self.animator.dtype)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _date_folder(files: dict[str, Path], out_root: Path) -> Path:
    """The `AnimateDiff/<date>` folder the writers filled."""
    for path in files.values():
        return path.parent
    raise AnimdiffError(f"the job wrote no files into {out_root}")


def classify(exc: BaseException) -> tuple[str, str]:
    """(error type, message for the user) of a failed job."""
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    text = str(exc)
    if (
        isinstance(exc, oom | MemoryError)
        or "out of memory" in text.lower()
        or "can't allocate memory" in text
    ):
        return (
            OUT_OF_MEMORY,
            f"out of memory: {text or type(exc).__name__}; try fewer frames, a smaller size or context",
        )
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "disk_full", f"no space left on the device: {text}"
    cause = exc.__cause__
    if isinstance(exc, AnimdiffError):
        if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
            return "disk_full", text
        return type(exc).__name__, text
    return "internal", f"{type(exc).__name__}: {text}"


def remove_partials(store: JobStore, results: Results) -> None:
    """Crash left-overs at startup. On a queue several servers share (and so, usually, a shared
    data dir) the partial folders of jobs still running elsewhere are kept."""
    if not store.shared:
        results.remove_partials()
        return
    import shutil

    from animdiff.server.results import PARTIAL_PREFIX

    running = {record.id for record in store.list(RUNNING, limit=1_000_000)[0]}
    for path in results.root.glob(f"{PARTIAL_PREFIX}*"):
        if path.name[len(PARTIAL_PREFIX) :] not in running:
            shutil.rmtree(path, ignore_errors=True)


class Heartbeat:
    """Marks the jobs this server runs as alive every `heartbeat_s`; on a queue several servers
    share it also recovers the jobs of a server that died (silent for `stale_after_s`)."""

    def __init__(
        self,
        store: JobStore,
        settings: ServerSettings,
        running: Callable[[], list[str]],
        publish: Callable[[], None] = lambda: None,
    ) -> None:
        self.store, self.settings, self.running, self.publish = store, settings, running, publish
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="animdiff-heartbeat", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_s):
            try:
                self.store.heartbeat(self.running())
                if self.store.shared:
                    recovered = self.store.recover(
                        self.settings.requeue_interrupted,
                        stale_after_s=self.settings.stale_after_s,
                        max_attempts=self.settings.requeue_limit + 1,
                    )
                    if recovered:
                        log.warning("recovered jobs of a server that stopped: %s", recovered)
                        self.publish()
            except Exception:
                log.exception("heartbeat failed")


class WorkerPool:
    """The workers of a server, one per device."""

    def __init__(self, workers: list[Worker], heartbeat: Heartbeat | None = None) -> None:
        self.workers = workers
        self.heartbeat = heartbeat

    def start(self) -> None:
        for worker in self.workers:
            worker.start()
        if self.heartbeat is not None:
            self.heartbeat.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
        for worker in self.workers:
            worker.stop(timeout)

    def wake(self) -> None:
        for worker in self.workers:
            worker.wake()

    def cancel(self, job_id: str) -> bool:
        return any(worker.cancel(job_id) for worker in self.workers)

    def running(self) -> list[str]:
        return [job for job in (w.current for w in self.workers) if job is not None]
