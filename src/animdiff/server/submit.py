"""From a request's settings to a checked, stored job: the one door both APIs go through.

Everything a job needs is checked here, at submit, so a bad request is a 4xx at once and not a
failed job later: the settings model's own validation, input paths (resolved inside the input
folders and stored as real paths), model names (no paths out of the models folder; what
`prepare` resolved must lie inside it, symlinks followed), the server's caps on frames, size and
steps, and everything `Animator.prepare` checks without loading a model. The seed is resolved
here, so a client knows it from the first answer and a requeued job renders the same frames.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from animdiff.errors import AnimdiffError, ParamsError
from animdiff.params import Params
from animdiff.pipeline import Animator, Job
from animdiff.server.paths import PathRefusedError, check_relative_name, is_inside, resolve_input
from animdiff.server.settings import ServerSettings
from animdiff.server.store import QUEUED, JobStore

INPUT_FIELDS = ("video_source", "video_path", "init_image", "last_frame", "mask_path")
UNIT_INPUT_FIELDS = ("image", "batch_images")


class LimitError(AnimdiffError):
    """A setting above what this server's operator allows."""

    http_status = 422


class QueueFullError(AnimdiffError):
    http_status = 429


class JobService:
    def __init__(
        self,
        settings: ServerSettings,
        store: JobStore,
        checker: Animator,
        on_submit: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.checker = checker
        self.on_submit = on_submit
        # One check at a time: `prepare` may read whole .ckpt files to detect their kind, and twenty
        # clients submitting at once must not hold twenty copies in memory (the GIL serialises most
        # of that work anyway).
        self._check_lock = threading.Lock()

    # --- checks --------------------------------------------------------------------------------------

    def check(self, params: Params) -> tuple[Params, Job]:
        """The settings as they will be stored (inputs as real paths, seed resolved) and the job."""
        self._check_model_names(params)
        params = self._resolve_inputs(params)
        with self._check_lock:
            job = self.checker.prepare(params, write=False)
        self._check_models_inside(job)
        self._check_limits(job)
        return params.model_copy(update={"seed": job.seed}), job

    def _check_model_names(self, params: Params) -> None:
        names: list[tuple[str, str | None]] = [
            ("checkpoint", getattr(params, "checkpoint", None)),
            ("motion_module", getattr(params, "motion_module", None)),
        ]
        names += [
            (f"motion_loras.{i}.name", lora.name)
            for i, lora in enumerate(getattr(params, "motion_loras", []))
        ]
        for i, unit in enumerate(getattr(params, "controlnet_units", []) or []):
            names.append((f"controlnet_units.{i}.model", unit.model))
        for what, name in names:
            if name is not None:
                check_relative_name(name, what)

    def _resolve_inputs(self, params: Params) -> Params:
        roots = self.settings.input_roots
        updates: dict[str, Any] = {}
        for name in INPUT_FIELDS:
            value = getattr(params, name, None)
            if value:
                updates[name] = str(resolve_input(value, roots, name))
        units = getattr(params, "controlnet_units", None)
        if units:
            resolved = []
            for i, unit in enumerate(units):
                changed = {}
                for name in UNIT_INPUT_FIELDS:
                    value = getattr(unit, name, None)
                    if value:
                        changed[name] = str(resolve_input(value, roots, f"controlnet_units.{i}.{name}"))
                resolved.append({**unit.model_dump(), **changed})
            updates["controlnet_units"] = resolved
        if not updates:
            return params
        return params_from({**params.model_dump(), **updates})

    def _check_models_inside(self, job: Job) -> None:
        root = self.checker.store.root
        if isinstance(job.checkpoint, str):
            raise PathRefusedError(
                f"checkpoint {job.checkpoint!r} is not in the models folder, and this server does not "
                "download models"
            )
        files: list[tuple[str, Path]] = [("checkpoint", job.checkpoint), ("motion module", job.motion_module)]
        files += [("LoRA", lora.path) for lora in job.loras]
        files += [(f"ControlNet unit {unit.index}", unit.model) for unit in job.controlnets]
        for what, path in files:
            if root is None or not is_inside(path, root):
                raise PathRefusedError(
                    f"{what} {path.name!r}: only files inside the server's models folder may be used"
                )

    def _check_limits(self, job: Job) -> None:
        s, params, counts = self.settings, job.params, job.counts
        problems = []
        if counts.batch > s.max_frames:
            problems.append(
                f"{counts.batch} frames to generate is above this server's limit of {s.max_frames}"
            )
        for name in ("width", "height"):
            value = getattr(params, name)
            if value > s.max_size:
                problems.append(f"{name} {value} is above this server's limit of {s.max_size}")
        if params.steps > s.max_steps:
            problems.append(f"steps {params.steps} is above this server's limit of {s.max_steps}")
        if problems:
            raise LimitError("; ".join(problems))

    # --- submit --------------------------------------------------------------------------------------

    def submit(
        self,
        params: Params,
        kind: str = "native",
        request: dict[str, Any] | None = None,
        job_id: str | None = None,
    ) -> tuple[str, int, Job]:
        """Check and store; returns (id, position, the checked job)."""
        stored, job = self.check(params)
        if self.store.count(QUEUED) >= self.settings.max_queue:
            raise QueueFullError(f"the queue is full ({self.settings.max_queue} jobs); try again later")
        job_id = job_id or uuid.uuid4().hex
        position = self.store.add(job_id, kind, stored.model_dump(mode="json"), request)
        self.on_submit()
        return job_id, position, job


def params_from(values: Any, label: Callable[[str], str] = str) -> Params:
    """`validate_params` for request bodies: anything malformed is a ParamsError (422), including a
    validator that trips over a wrong type with a TypeError instead of a ValueError."""
    from animdiff.params import validate_params

    if not isinstance(values, dict):
        raise ParamsError(f"the settings must be a JSON object, not {type(values).__name__}")
    try:
        return validate_params(values, label)
    except (TypeError, AttributeError, KeyError) as exc:
        raise ParamsError(f"a setting has the wrong type: {exc}") from None


def validate_job_id(job_id: str) -> str:
    """Client-chosen ids (A1111's force_task_id) become folder names: keep them harmless."""
    if not job_id or len(job_id) > 64 or not all(c.isalnum() or c in "-_" for c in job_id):
        raise ParamsError(f"task id {job_id!r}: use 1-64 letters, digits, '-' or '_'")
    return job_id
