"""Everything about a job that can be known before sampling, resolved and checked up front.

A user with real models pays minutes for a render; a mistake found after it (a missing FILM file,
an output folder that cannot be written, a motion LoRA that is an image LoRA) throws those
minutes away. `prepare` resolves and checks every input that does not need the model weights in
memory: file names to files, their detected kinds and whether they fit together, LoRA tags, the
prompt schedule against the frame count, the FILM file, the device and the output folder. The
`Job` it returns is plain data that `Animator.execute` only runs, so a bad input can only fail
here, before any model loads.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch

from animdiff.choices import resolve_overlap
from animdiff.control_inputs import PreparedUnit, fewest_frames, prepare_units, source_fps
from animdiff.control_units import is_inpaint_module
from animdiff.errors import LoraError, ModelNotFoundError, NotSupportedYetError, OutputError, ParamsError
from animdiff.family import SD15, SDXL, ModelFamily, family_for, motion_family
from animdiff.img2img_inputs import Img2ImgPlan, prepare_img2img, source_folder
from animdiff.models.detect import PE_LENGTH, Detected, Kind, detect_file
from animdiff.models.lora import LoraRequest
from animdiff.models.motion_xl import MotionFamily
from animdiff.models.store import ModelStore, looks_like_hub_id
from animdiff.params import DEFAULT_CONTEXT, DEFAULT_FPS, Params, check_supported, resolve_seed
from animdiff.prompts.conditioning import PromptPlan, plan_prompts
from animdiff.prompts.syntax import ExtraNetwork
from animdiff.sampling.context import context_windows

# Image LoRAs that fit an SD1.5 checkpoint; motion LoRAs patch the motion module instead.
PROMPT_LORA_KINDS = (Kind.LORA_SD15, Kind.MOTION_LORA)


@dataclass(frozen=True)
class FrameCounts:
    """The reference's frame rules, resolved once per job."""

    video_length: int  # frames written (0 resolved to the context batch size)
    batch: int  # frames generated: max(video_length, context)
    overlap: int
    context: int  # context batch size in use: the setting, capped by the control frames

    @classmethod
    def resolve(
        cls, params: Params, control_frames: int | None = None, trained_length: int = DEFAULT_CONTEXT
    ) -> FrameCounts:
        """`control_frames`: the fewest frames among the ControlNet units' inputs, when any;
        `trained_length`: the motion module's, the context batch size when the settings give none.

        The reference's rules with control frames: a frame count above them is capped to them,
        so is the context batch size, and 0 frames means all of them; the overlap is resolved
        from the context batch size before any capping (and kept below the capped size).
        """
        context = params.context or trained_length
        if params.overlap >= context:
            raise ParamsError(
                f"overlap {params.overlap} must be smaller than context batch size {context}"
                + ("" if params.context else " (the motion module's trained length; set --context)")
            )
        overlap = resolve_overlap(context, params.overlap)
        video_length = params.frames or context
        if control_frames is not None:
            video_length = min(video_length, control_frames)
            context = min(context, control_frames)
            if params.frames == 0:
                video_length = control_frames
            overlap = min(overlap, context - 1)
        return cls(video_length, max(video_length, context), overlap, context)


@dataclass(frozen=True)
class Job:
    """A checked job: the settings as given plus everything resolved from them."""

    params: Params
    seed: int
    counts: FrameCounts
    checkpoint: Path | str  # a file or folder, or a hub id (only when nothing local matched)
    checkpoint_kind: Kind | None  # None for a hub id: known once downloaded
    motion_module: Path
    motion_kind: Kind
    loras: tuple[LoraRequest, ...]
    plan: PromptPlan
    film_model: Path | None
    out_dir: Path | None
    device: torch.device
    model_evaluations: int  # denoiser calls in the sampling run (Heun at 20 steps: 39)
    windows_per_evaluation: tuple[int, int]  # fewest and most context windows of one call
    warnings: tuple[str, ...] = field(default=())
    controlnets: tuple[PreparedUnit, ...] = field(default=())
    fps: int = DEFAULT_FPS  # of the written animation: the user's, else the source video's, else 8
    img2img: Img2ImgPlan | None = None  # init latents from an image or the source frames; masks

    @property
    def family(self) -> ModelFamily:
        """SD1.5 or SDXL: loading and text conditioning (family.py)."""
        return family_for(self.checkpoint_kind)

    @property
    def motion_family(self) -> MotionFamily:
        """The motion module's training schedule, GroupNorm rule, trained length and limit."""
        return motion_family(self.motion_kind)

    def summary(self) -> list[str]:
        """What will run, in the words a user checks before waiting for it."""
        low, high = self.windows_per_evaluation
        windows = str(low) if low == high else f"{low}-{high}"
        frames = f"{self.counts.video_length} frames written"
        if self.counts.batch != self.counts.video_length:
            frames += f" ({self.counts.batch} generated)"
        lines = [
            f"checkpoint: {self.checkpoint}",
            f"motion module: {self.motion_module} ({self.motion_kind}; {self.family.name}, "
            f"{self.motion_family.betas.beta_schedule} betas to {self.motion_family.betas.beta_end:g}, "
            f"trained on {self.motion_family.trained_length} frames)",
            f"seed: {self.seed}",
            f"frames: {frames}, context {self.counts.context}, {windows} window(s) per step, {self.fps} fps",
            f"sampler: {self.params.sampler}, {self.params.steps} steps "
            f"({self.model_evaluations} model evaluations), device {self.device}",
        ]
        if self.params.freeinit_enable:
            p = self.params
            lines.append(
                f"FreeInit: {p.freeinit_iters} sampling runs ({p.freeinit_iters}x the time), "
                f"{p.freeinit_filter} filter, d_s {p.freeinit_ds:g}, d_t {p.freeinit_dt:g}"
            )
        lines += [
            f"LoRA: {lora.path.name} (unet {lora.unet_weight:g}, te {lora.te_weight:g})"
            for lora in self.loras
        ]
        lines += [unit.describe() for unit in self.controlnets]
        if self.img2img is not None:
            lines.append(self.img2img.describe())
        if self.film_model is not None:
            lines.append(f"FILM: {self.film_model}")
        return lines


def resolve_device(name: str | None) -> torch.device:
    """The torch device for a user's `--device`, refused with a reason when it cannot work here."""
    if name is None or not str(name).strip():
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(name).strip())
    except (RuntimeError, ValueError):
        raise ParamsError(f"device {name!r} is not a device name; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise ParamsError(
                f"device {name!r}: this PyTorch build has no CUDA support; install a CUDA build "
                "(see the README's GPU section) or use --device cpu"
            )
        if not torch.cuda.is_available():
            raise ParamsError(f"device {name!r}: no CUDA device is available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ParamsError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ParamsError(f"device {name!r}: Apple's MPS backend is not available here")
    elif device.type != "cpu":
        raise ParamsError(f"device {name!r} is not supported; use cpu or cuda")
    return device


def check_output_folder(out_dir: Path) -> None:
    """Create the folder and a probe file in it (then remove the probe), or say why it fails."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"output folder {out_dir}: a file of that name is in the way") from None
    except OSError as exc:
        raise OutputError(f"output folder {out_dir} cannot be created: {exc.strerror or exc}") from exc
    if not out_dir.is_dir():
        raise OutputError(f"output folder {out_dir}: a file of that name is in the way")
    probe = out_dir / f".animdiff-probe-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"")
    except OSError as exc:
        raise OutputError(f"output folder {out_dir} is not writable: {exc.strerror or exc}") from exc
    finally:
        if probe.exists():
            os.unlink(probe)


def prepare(
    params: Params,
    store: ModelStore,
    *,
    device: torch.device,
    out_dir: Path | None,
    film_model: Path | None = None,
) -> Job:
    """Resolve and check the job; raises an `AnimdiffError` before anything heavy happens."""
    check_supported(params)
    store.check()
    warnings: list[str] = []
    checkpoint, checkpoint_kind = _checkpoint(params, store)
    family = family_for(checkpoint_kind)
    motion_module, motion = _motion_module(params, store, family, checkpoint)
    module_family = motion_family(motion.kind)
    _check_context(params, motion_module, motion, module_family)
    img2img = prepare_img2img(params)
    if img2img is not None and params.freeinit_enable:
        raise NotSupportedYetError("FreeInit with img2img, video to video or inpainting is not supported yet")
    if img2img is not None and family is SDXL:
        raise NotSupportedYetError(f"img2img with SDXL checkpoints ({checkpoint}) is not supported yet")
    # The units read the inpaint layout's image/ folder, like the init latents.
    shared = source_folder(params) if params.video_path else None
    unit_params = params.model_copy(update={"video_path": str(shared)}) if shared is not None else params
    # Each unit's ControlNet must be of the checkpoint's family; refused here, before anything loads.
    controlnets = prepare_units(unit_params, store, checkpoint, sdxl=family is SDXL)
    control_frames = fewest_frames(controlnets)
    for unit in controlnets:
        if is_inpaint_module(unit.unit.module) and (img2img is None or img2img.mask_folder is None):
            raise ParamsError(
                f"ControlNet unit {unit.index}: module {unit.unit.module} needs masks: a video path with "
                "image/ and mask/ folders, or --mask-path"
            )
    if img2img is not None and img2img.source_frames is not None:
        control_frames = min(img2img.source_frames, control_frames or img2img.source_frames)
    counts = FrameCounts.resolve(params, control_frames, module_family.trained_length)
    if family is SDXL and params.clip_skip != 1:
        warnings.append(
            f"clip skip {params.clip_skip} is not used with SDXL checkpoints: both encoders give their "
            "penultimate layer, as A1111 does for SDXL"
        )
    if not params.prompt.strip():
        warnings.append("the prompt is empty: the animation follows the negative prompt and chance alone")
    if counts.video_length < counts.context:
        warnings.append(
            f"{counts.video_length} frames with context batch size {counts.context}: {counts.batch} frames "
            f"are generated and the first {counts.video_length} kept (the motion module needs a full "
            f"context); set --context {counts.video_length} to generate only what is written"
        )
    warnings += _control_warnings(params, controlnets, control_frames, counts)
    plan = plan_prompts(
        params.prompt,
        video_length=counts.video_length,
        batch=counts.batch,
        context=counts.context,
        closed_loop=params.closed_loop,
    )
    loras = tuple(
        _prompt_loras(plan.networks, store, family, checkpoint) + _motion_loras(params, store, family)
    )
    film = _film(params, store, film_model)
    evaluations = _model_evaluations(params, img2img.strength if img2img is not None else 1.0)
    job = Job(
        params=params,
        seed=resolve_seed(params.seed),
        counts=counts,
        checkpoint=checkpoint,
        checkpoint_kind=checkpoint_kind,
        motion_module=motion_module,
        motion_kind=motion.kind,
        loras=loras,
        plan=plan,
        film_model=film,
        out_dir=out_dir,
        device=device,
        model_evaluations=evaluations,
        windows_per_evaluation=_window_counts(params, counts, evaluations),
        warnings=tuple(warnings),
        controlnets=controlnets,
        fps=params.fps or source_fps(controlnets) or _source_fps(img2img) or DEFAULT_FPS,
        img2img=img2img,
    )
    if out_dir is not None:
        check_output_folder(out_dir)  # last: nothing is created for a job refused above
    return job


def _control_warnings(
    params: Params, controlnets: tuple[PreparedUnit, ...], control_frames: int | None, counts: FrameCounts
) -> list[str]:
    """What the ControlNet inputs change about the settings as given."""
    warnings = []
    if control_frames is not None and params.frames > control_frames:
        warnings.append(
            f"{params.frames} frames are capped to {control_frames}, the frames of the shortest "
            "ControlNet input"
        )
    if params.context is not None and counts.context < params.context:
        warnings.append(
            f"context batch size {params.context} is capped to {counts.context}, the frames of the "
            "shortest ControlNet input"
        )
    v2v = params.denoising_strength is not None and not params.init_image
    if (params.video_source or params.video_path) and not v2v and all(u.unit.has_input for u in controlnets):
        given = "video_source" if params.video_source else "video_path"
        warnings.append(f"{given} is not used: every ControlNet unit has its own input")
    return warnings


def _checkpoint(params: Params, store: ModelStore) -> tuple[Path | str, Kind | None]:
    from animdiff.models.detect import CHECKPOINT_KINDS

    if params.checkpoint is None:
        path = store.default("checkpoint", CHECKPOINT_KINDS)
    else:
        found = store.find(params.checkpoint, "checkpoint")
        if found is None:
            if looks_like_hub_id(params.checkpoint):
                return params.checkpoint, None
            raise store.not_found(params.checkpoint, "checkpoint")
        path = found
    detected = detect_file(path)
    if not (SD15.fits(detected.kind) or SDXL.fits(detected.kind)):
        from animdiff.models.load import require_sd15_checkpoint

        require_sd15_checkpoint(path, detected)  # says what the file is instead
    return path, detected.kind


def _motion_module(
    params: Params, store: ModelStore, family: ModelFamily, checkpoint: Path | str
) -> tuple[Path, Detected]:
    if params.motion_module is None:
        # The first module of the checkpoint's family, so an SDXL checkpoint alone picks an SDXL
        # module; for SD1.5 an AnimateDiff one (v1/v2/v3) before AnimateLCM, which needs its LoRA.
        try:
            path = store.default("motion_module", family.default_motion_kinds)
        except ModelNotFoundError:
            path = store.default("motion_module", family.motion_kinds)
    else:
        path = store.resolve(params.motion_module, "motion_module")
    detected = detect_file(path)
    family.require_motion_module(path, detected, checkpoint)
    return path, detected


def _check_context(params: Params, path: Path, motion: Detected, family: MotionFamily) -> None:
    limit = motion.pe_length or PE_LENGTH.get(motion.kind) or family.max_context
    if params.context is not None and params.context > limit:
        raise ParamsError(
            f"context batch size {params.context} is above the limit of {limit} frames of "
            f"{path.name} ({motion.kind})"
        )


def _prompt_loras(
    networks: list[ExtraNetwork], store: ModelStore, family: ModelFamily, checkpoint: Path | str
) -> list[LoraRequest]:
    """`<lora:name:weight>` tags: image LoRAs from the LoRA folders, motion LoRAs as well."""
    requests = []
    for net in networks:
        path = store.resolve_first(net.name, ("lora", "motion_lora"), asked_as=f"<lora:{net.name}>")
        kind = detect_file(path).kind
        if kind == Kind.LORA_SDXL and family is SD15:
            raise LoraError(
                f"<lora:{net.name}>: {path} is an SDXL LoRA; it does not fit SD1.5 checkpoints ({checkpoint})"
            )
        if family is SDXL and kind in PROMPT_LORA_KINDS:
            raise LoraError(
                f"<lora:{net.name}>: {path} is a {kind} for SD1.5; it does not fit the SDXL checkpoint "
                f"{checkpoint}"
            )
        if kind not in family.lora_kinds:
            raise LoraError(f"<lora:{net.name}>: {path} is a {kind}, not a LoRA")
        requests.append(LoraRequest(path, unet_weight=net.unet_weight, te_weight=net.te_weight))
    return requests


def _motion_loras(params: Params, store: ModelStore, family: ModelFamily) -> list[LoraRequest]:
    requests = []
    if params.motion_loras and family is SDXL:
        raise NotSupportedYetError("motion LoRAs are for SD1.5 motion modules (v2); not for SDXL checkpoints")
    for lora in params.motion_loras:
        path = store.resolve(lora.name, "motion_lora")
        kind = detect_file(path).kind
        if kind != Kind.MOTION_LORA:
            hint = (
                f"; an image LoRA goes into the prompt as <lora:{path.stem}:{lora.strength:g}>"
                if kind in (Kind.LORA_SD15, Kind.LORA_SDXL)
                else ""
            )
            raise LoraError(f"motion LoRA {lora.name!r}: {path} is a {kind}, not a motion LoRA{hint}")
        requests.append(LoraRequest(path, unet_weight=lora.strength, te_weight=0.0))
    return requests


def _film(params: Params, store: ModelStore, explicit: Path | None) -> Path | None:
    if params.interp != "FILM":
        return None
    from animdiff.interpolate.film import find_film_model

    return find_film_model(store.root, explicit)


def _model_evaluations(params: Params, strength: float = 1.0) -> int:
    """How many times the sampler calls the model: the progress total, known before sampling
    (with a denoising strength, the evaluations of the part of the schedule that runs)."""
    from animdiff.sampling.img2img import strength_timesteps
    from animdiff.sampling.samplers import make_scheduler

    scheduler = make_scheduler(params.sampler)
    return len(strength_timesteps(scheduler, params.steps, strength, device="cpu").timesteps)


def _source_fps(plan: Img2ImgPlan | None) -> int | None:
    """The rate of a video to video source file (frame folders have none)."""
    if plan is None or plan.source is None or plan.source.is_dir():
        return None
    from animdiff.control import probe_video

    fps = probe_video(plan.source).fps
    return max(1, min(240, round(fps))) if fps else None


def _window_counts(params: Params, counts: FrameCounts, evaluations: int) -> tuple[int, int]:
    """Distinct windows per model evaluation (a repeated window is computed once)."""
    sizes = set()
    for step in range(max(evaluations, 1)):  # strength 0 runs none; the schedule is still described
        windows = context_windows(
            step, counts.video_length, counts.context, params.stride, counts.overlap, params.closed_loop
        )
        sizes.add(len({tuple(w) for w in windows}))
    return min(sizes), max(sizes)
