"""Animator: validated params -> a checked job -> frames -> post-processing -> files.

The CLI, the HTTP API and the web UI all go through `Animator.prepare` (everything that can be
checked before sampling; see prepare.py) and `Animator.execute` (load, encode, sample, decode,
post-process, write). One job at a time per Animator; models stay loaded between jobs (keyed by
file identity, dtype and device), and so does the FILM model, so a second job with the same files
starts sampling at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from animdiff import __version__
from animdiff.control_inputs import PreparedUnit, unit_hints
from animdiff.control_units import ControlNetUnit, is_inpaint_module
from animdiff.decode import decode_frames, vae_tiling
from animdiff.errors import CancelledError, ParamsError
from animdiff.img2img_inputs import init_frames, inpaint_masks, last_frame
from animdiff.interpolate.film import FilmInterpolator
from animdiff.models.cache import LoadedModels, ModelCache, file_key
from animdiff.models.fp8 import fp8_dtype
from animdiff.models.lora import apply_loras
from animdiff.models.motion_xl import BetaSchedule
from animdiff.models.offload import on_device
from animdiff.models.store import ModelStore
from animdiff.output import (
    ENCODABLE,
    OutputOptions,
    build_infotext,
    encode,
    encode_frames_png,
    write_animation,
)
from animdiff.output.save import select_formats
from animdiff.params import Params
from animdiff.postprocess import film_inbetween_count, is_closed_loop, ping_pong, uses_ping_pong
from animdiff.prepare import FrameCounts, Job, prepare, resolve_device
from animdiff.prompts.conditioning import frame_conditioning
from animdiff.sampling.context import context_windows
from animdiff.sampling.controlnet import ControlLayer, ControlUnit
from animdiff.sampling.freeinit import freeinit_sample, low_pass_filter
from animdiff.sampling.guidance import Conditioning, WindowedDenoiser
from animdiff.sampling.img2img import (
    blend_init_latents,
    encode_frames,
    latent_blend_weights,
    sample_from,
    strength_timesteps,
)
from animdiff.sampling.inpaint import LatentInpaint
from animdiff.sampling.loop import StepInfo, sample
from animdiff.sampling.noise import frame_generators, initial_noise
from animdiff.sampling.samplers import make_scheduler

__all__ = ["Animator", "FrameCounts", "Job", "Progress", "Result", "RunOptions", "encode_outputs"]

PHASES = ("load", "encode", "denoise", "decode", "interpolate", "write")


@dataclass(frozen=True)
class Progress:
    """One progress event. `step`/`total` count the phase's work (model evaluations while
    denoising, frames while decoding, in-between frames while interpolating, files while
    writing); `window`/`windows` are the context windows done in the current evaluation.
    `latents` (after each denoising step only) lets a server draw a preview without a VAE."""

    phase: str
    step: int = 0
    total: int = 0
    window: int = 0
    windows: int = 0
    latents: torch.Tensor | None = field(default=None, repr=False, compare=False)


ProgressCallback = Callable[[Progress], None]


def freeinit_iterations(params: Params) -> int:
    """Sampling runs of a job: FreeInit's iterations when it is on, else one."""
    return params.freeinit_iters if params.freeinit_enable else 1


def phase_totals(job: Job) -> dict[str, int]:
    """Each phase's total, known before the job starts (so a display never changes its total)."""
    params, counts = job.params, job.counts
    frames = counts.video_length
    if uses_ping_pong(params.closed_loop, frames, counts.context):
        frames = max(2 * frames - 2, 1)
    closed = is_closed_loop(params.closed_loop, counts.video_length, counts.context)
    interpolate = film_inbetween_count(frames, params.interp_x, closed) if job.film_model else 0
    return {
        "load": 1,
        "encode": 1,
        "denoise": job.model_evaluations * freeinit_iterations(params),
        "decode": counts.video_length,
        "interpolate": interpolate,
        "write": len(select_formats(params.formats)) if job.out_dir is not None else 0,
    }


@dataclass
class Result:
    frames: list[Image.Image]
    files: dict[str, Path]
    infotext: str
    seed: int
    latents: torch.Tensor
    warnings: list[str] = field(default_factory=list)
    fps: int | None = None  # the rate written (None: the settings' own, else the default)


@dataclass
class RunOptions:
    """How to run (not what to draw): never changes the result beyond float rounding (`fp8` rounds
    the weights themselves)."""

    device: str | None = None  # "cuda", "cpu"; None picks CUDA when there is one
    windows_per_call: int = 1  # context windows batched into one UNet call (--window-batch)
    vae_chunk: int | None = None  # frames per VAE call (--vae-chunk); None: by size (decode.py)
    film_model: Path | None = None
    # Memory options: models in CPU memory, each on the device only for its phase (--offload);
    # the VAE decoding each frame in overlapping tiles (--vae-tiling).
    offload: bool = False
    vae_tiling: bool = False
    # The UNet's and motion module's Linear/Conv weights stored as float8 and cast per layer (--fp8):
    # the one option here that changes results, by rounding those weights to 3 mantissa bits.
    fp8: bool = False

    def __post_init__(self) -> None:
        if self.fp8:
            fp8_dtype()  # refused here, before any model loads, where torch has no float8
        counts = {"--window-batch": self.windows_per_call}
        if self.vae_chunk is not None:  # None: by size
            counts["--vae-chunk"] = self.vae_chunk
        for flag, value in counts.items():
            if not isinstance(value, int) or value < 1:
                raise ParamsError(f"{flag} must be a whole number of at least 1, got {value!r}")


class Animator:
    def __init__(
        self,
        models_dir: Path | None = None,
        out_dir: Path | None = Path("outputs"),
        options: RunOptions | None = None,
    ) -> None:
        self.store = ModelStore(models_dir)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.options = options or RunOptions()
        self.device = resolve_device(self.options.device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        storage = torch.device("cpu") if self.options.offload else self.device
        self.cache = ModelCache(storage, self.dtype, compute_device=self.device, fp8=self.options.fp8)
        self._film: tuple[tuple, FilmInterpolator] | None = None
        self._lock = threading.Lock()

    # --- the job --------------------------------------------------------------------------------------

    def prepare(self, params: Params, write: bool = True) -> Job:
        """Resolve and check everything before any model loads (see prepare.py)."""
        return prepare(
            params,
            self.store,
            device=self.device,
            out_dir=self.out_dir if write else None,
            film_model=self.options.film_model,
        )

    def run(
        self,
        params: Params,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        write: bool = True,
    ) -> Result:
        return self.execute(self.prepare(params, write=write), progress, cancel)

    def execute(
        self, job: Job, progress: ProgressCallback | None = None, cancel: threading.Event | None = None
    ) -> Result:
        """Run a prepared job: load (cached), encode, sample, decode, post-process, write."""
        emit = progress or (lambda _event: None)
        params, counts = job.params, job.counts
        with self._lock, torch.inference_mode():
            emit(Progress("load", 0, 1))
            models = self.load_job(job)
            emit(Progress("load", 1, 1))
            warnings = list(job.warnings)
            latents = self.sample_job(job, models, emit, cancel, warnings)
            emit(Progress("decode", 0, counts.video_length))
            vae = models.parts.vae
            with on_device(vae, self.device, self.options.offload), vae_tiling(vae, self.options.vae_tiling):
                frames = decode_frames(
                    vae,
                    latents[: counts.video_length],
                    self.options.vae_chunk,
                    lambda done, total: emit(Progress("decode", done, total)),
                )
            frames = self.postprocess(job, frames, emit)
        images = [Image.fromarray(f) for f in frames]
        infotext = build_infotext(
            params,
            seed=job.seed,
            frames=counts.video_length,
            overlap=counts.overlap,
            generated=counts.batch,
            model_name=models.checkpoint_name,
            model_hash=models.checkpoint_hash,
            motion_module=models.motion_name,
            mm_hash=models.motion_hash,
            version=f"animdiff {__version__}",
            fps=job.fps,
            context=counts.context,
            controlnets=self.controlnet_infotext(job),
        )
        result = Result(images, {}, infotext, job.seed, latents, warnings, job.fps)
        if job.out_dir is not None:
            total = len(select_formats(params.formats))
            emit(Progress("write", 0, total))
            written = write_animation(
                images,
                params.formats,
                job.out_dir,
                job.seed,
                infotext,
                OutputOptions.from_params(params, job.fps),
                request_id=params.request_id,
            )
            emit(Progress("write", total, total))
            result.files = written.files
            result.warnings.extend(written.warnings)
        return result

    # --- models ---------------------------------------------------------------------------------------

    def load_job(self, job: Job) -> LoadedModels:
        return self.cache.get(job.checkpoint, job.motion_module, job.params.groupnorm, job.family)

    def load(self, params: Params) -> LoadedModels:
        """The models a job with these settings uses (checked as `prepare` checks them)."""
        return self.load_job(self.prepare(params, write=False))

    # --- sampling -------------------------------------------------------------------------------------

    def generate(
        self,
        params: Params,
        models: LoadedModels,
        counts: FrameCounts,
        seed: int,
        emit: ProgressCallback,
        cancel: threading.Event | None = None,
        warnings: list[str] | None = None,
    ) -> torch.Tensor:
        """Sampled latents for the whole generated batch: (batch, 4, height/8, width/8), float32."""
        job = self.prepare(params.model_copy(update={"seed": seed}), write=False)
        if job.counts != counts:
            raise ParamsError(f"frame counts {counts} do not match the settings' {job.counts}")
        return self.sample_job(job, models, emit, cancel, warnings)

    def sample_job(
        self,
        job: Job,
        models: LoadedModels,
        emit: ProgressCallback,
        cancel: threading.Event | None = None,
        warnings: list[str] | None = None,
    ) -> torch.Tensor:
        emit(Progress("encode", 0, 1))
        # LoRAs change the cached weights in place for this job only; leaving the block restores them.
        with (
            torch.inference_mode(False),
            apply_loras(
                models.unet,
                models.parts.text_encoder,
                list(job.loras),
                text_encoder_2=getattr(models.parts, "text_encoder_2", None),
            ) as applied,
        ):
            if warnings is not None:
                warnings.extend(applied.warnings)
            with torch.inference_mode():
                return self._sample(job, models, emit, cancel)

    def _sample(
        self,
        job: Job,
        models: LoadedModels,
        emit: ProgressCallback,
        cancel: threading.Event | None,
    ) -> torch.Tensor:
        params, counts = job.params, job.counts
        encoders = [getattr(models.parts, name, None) for name in ("text_encoder", "text_encoder_2")]
        offload = self.options.offload
        with on_device(encoders[0], self.device, offload), on_device(encoders[1], self.device, offload):
            encoder = job.family.text_conditioner(
                models.parts, clip_skip=params.clip_skip, width=params.width, height=params.height
            )
            cond, uncond = frame_conditioning(
                encoder, job.plan, params.negative_prompt, counts.batch, params.prompt_interpolation
            )
        emit(Progress("encode", 1, 1))
        conditioning = Conditioning(
            cond.tokens.to(self.device),
            uncond.tokens.to(self.device),
            params.cfg_scale,
            self.control_layer(job),
            cond_vector=None if cond.vector is None else cond.vector.to(self.device),
            uncond_vector=None if uncond.vector is None else uncond.vector.to(self.device),
        )
        generators = frame_generators(job.seed, counts.batch)
        noise = initial_noise(generators, params.height, params.width).to(self.device)
        init_latents, masks = None, None
        if job.img2img is not None:
            noise, init_latents, masks = self._init_latents(job, models, generators, noise)
        evaluations = job.model_evaluations
        iterations = freeinit_iterations(params)
        total = evaluations * iterations
        position = {"step": 0, "offset": 0}

        def schedule(step: int) -> list[list[int]]:
            return context_windows(
                step, counts.video_length, counts.context, params.stride, counts.overlap, params.closed_loop
            )

        def check_cancel() -> None:
            if cancel is not None and cancel.is_set():
                raise CancelledError("cancelled")

        def on_window(done: int, windows: int) -> None:
            check_cancel()
            emit(Progress("denoise", position["step"], total, done, windows))

        def on_step(info: StepInfo) -> None:
            check_cancel()
            position["step"] = position["offset"] + info.step + 1
            emit(Progress("denoise", position["step"], total, latents=info.latents))

        denoiser = WindowedDenoiser(
            models.video_model,
            conditioning,
            schedule,
            fuse=params.fuse,
            windows_per_call=self.options.windows_per_call,
            on_window=on_window,
        )
        betas = job.motion_family.betas

        def run(start: torch.Tensor, iteration: int) -> torch.Tensor:
            # Each FreeInit iteration is a whole sampling run: the window step counter restarts.
            denoiser.step = 0
            position["offset"] = iteration * evaluations
            scheduler = make_scheduler(params.sampler, betas.scheduler_config())
            if job.img2img is None:
                return sample(
                    denoiser, scheduler, start, params.steps, generators=generators, callback=on_step
                )
            strength = job.img2img.strength
            after_step = None
            if masks is not None and init_latents is not None:
                kept = strength_timesteps(scheduler, params.steps, strength, device=start.device)
                after_step = LatentInpaint(init_latents, start, masks, scheduler, kept.timesteps)
            return sample_from(
                denoiser,
                scheduler,
                init_latents,
                start,
                params.steps,
                strength,
                generators=generators,
                callback=on_step,
                after_step=after_step,
            )

        emit(Progress("denoise", 0, total))
        with on_device(models.unet, self.device, offload):
            return self._denoise(run, noise, params, betas, iterations)

    def _init_latents(
        self, job: Job, models: LoadedModels, generators: list[torch.Generator], noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(sampler noise, init latents, latent masks or None) of an img2img job.

        An init image is VAE-encoded once and blended per frame with the first noise draw (the
        reference's latent power / scale, 9.4), so the sampler gets each generator's second draw;
        video to video encodes the source frames (posterior means) and keeps the first draw.
        """
        plan = job.img2img
        assert plan is not None
        params, counts = job.params, job.counts
        vae = models.parts.vae
        frames = init_frames(plan, counts.batch, params.width, params.height)
        last = last_frame(plan, params.width, params.height)
        with on_device(vae, self.device, self.options.offload):
            init = encode_frames(vae, frames, self.options.vae_chunk).to(noise)
            last_latent = None if last is None else encode_frames(vae, [last]).to(noise)
        if plan.init_image is not None:
            alpha, beta = latent_blend_weights(
                counts.batch,
                params.latent_power,
                params.latent_scale,
                last=last_latent is not None,
                latent_power_last=params.latent_power_last,
                latent_scale_last=params.latent_scale_last,
            )
            init = blend_init_latents(init, noise, alpha, beta, last_latent)
            noise = initial_noise(generators, params.height, params.width).to(self.device)
        masks = inpaint_masks(plan, counts.batch, params.width, params.height)
        return noise, init, None if masks is None else masks.to(noise)

    @staticmethod
    def _denoise(
        run: Callable[[torch.Tensor, int], torch.Tensor],
        noise: torch.Tensor,
        params: Params,
        betas: BetaSchedule,
        iterations: int,
    ) -> torch.Tensor:
        """One sampling run, or FreeInit's `iterations` of them."""
        if iterations == 1:
            return run(noise, 0).float()
        lpf = low_pass_filter(
            (noise.shape[1], *noise.shape[0:1], *noise.shape[2:]),
            params.freeinit_filter,
            params.freeinit_ds,
            params.freeinit_dt,
            device=noise.device,
        )
        alphas = betas.alphas_cumprod()
        return freeinit_sample(run, noise, iterations=iterations, lpf=lpf, alphas_cumprod=alphas).float()

    # --- ControlNet ------------------------------------------------------------------------------------

    def control_layer(self, job: Job) -> ControlLayer | None:
        """The job's ControlNet units with their hints (read and preprocessed once, kept as uint8
        on the CPU; each window moves only its own frames' hints to the device)."""
        if not job.controlnets:
            return None
        nets = self.cache.controlnets([unit.model for unit in job.controlnets])
        params, total = job.params, job.model_evaluations
        units = []
        for prepared, net in zip(job.controlnets, nets, strict=True):
            unit = prepared.unit
            if is_inpaint_module(unit.module):
                hints = self._inpaint_hints(job, prepared)
            else:
                hints = unit_hints(prepared, job.counts.batch, params.width, params.height)
            units.append(
                ControlUnit(
                    model=net.model,
                    hints=torch.from_numpy(np.ascontiguousarray(hints)).permute(0, 3, 1, 2),
                    weight=unit.weight,
                    control_mode=unit.control_mode,
                    applies=lambda step, unit=unit: unit.applies_at(step, total),
                )
            )
        return ControlLayer(units)

    @staticmethod
    def _inpaint_hints(job: Job, prepared: PreparedUnit) -> np.ndarray:
        """The inpaint ControlNet's hints: the unit's frames with the job's masked pixels at -1."""
        from animdiff.control import read_video_frames, resize_frame
        from animdiff.control.folder import load_image
        from animdiff.control.masks import inpaint_hints, read_mask_folder

        plan, params, count = job.img2img, job.params, job.counts.batch
        assert plan is not None and plan.mask_folder is not None  # prepare checks it
        size = (params.width, params.height)
        if prepared.frames is None:
            frames = [resize_frame(load_image(prepared.source), size, prepared.unit.resize_mode)] * count
        else:
            frames = read_video_frames(prepared.source, count, size, prepared.unit.resize_mode)
        images = plan.source_frames if plan.source_frames is not None else 1
        masks = read_mask_folder(plan.mask_folder, images, size, frames=count)
        masks = masks + [masks[-1]] * (count - len(masks))
        return inpaint_hints(frames, masks)

    def controlnet_infotext(self, job: Job) -> list[tuple[int, ControlNetUnit, str, str | None]]:
        """(index, unit, model name, short hash) of each unit, for the infotext."""
        return [
            (unit.index, unit.unit, _model_name(unit.model), self.cache.short_hash(unit.model, 8))
            for unit in job.controlnets
        ]

    # --- after decoding -------------------------------------------------------------------------------

    def film(self, path: Path) -> FilmInterpolator:
        """The FILM model, loaded once and kept while the file is unchanged."""
        key = file_key(path)
        if self._film is None or self._film[0] != key:
            self._film = (key, FilmInterpolator(path, self.device))
        return self._film[1]

    def postprocess(self, job: Job, frames: list[np.ndarray], emit: ProgressCallback) -> list[np.ndarray]:
        params, counts = job.params, job.counts
        if uses_ping_pong(params.closed_loop, counts.video_length, counts.context):
            frames = ping_pong(frames)
        if job.film_model is not None:
            closed = is_closed_loop(params.closed_loop, counts.video_length, counts.context)
            frames = self.film(job.film_model).interpolate(
                frames,
                params.interp_x,
                closed=closed,
                progress=lambda done, total: emit(Progress("interpolate", done, total)),
            )
        return frames


def encode_outputs(result: Result, params: Params) -> dict[str, bytes | list[bytes]]:
    """The reference API's answer without files: each chosen video format as file bytes, and with
    `frame` every frame as PNG bytes (infotext embedded), in the order gif, mp4, webp, webm, frame."""
    options = OutputOptions.from_params(params, result.fps)
    out: dict[str, bytes | list[bytes]] = {}
    for fmt in ("gif", "mp4", "webp", "webm"):
        if fmt in params.formats and fmt in ENCODABLE:
            out[fmt] = encode(result.frames, fmt, result.infotext, options, warnings=result.warnings)
    if "frame" in params.formats:
        out["frame"] = encode_frames_png(result.frames, result.infotext)
    return out


def _model_name(path: Path) -> str:
    return path.stem if path.is_file() else path.name
