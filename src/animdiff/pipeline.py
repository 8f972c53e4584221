"""Animator: validated params -> frames -> post-processing -> files. Owns the model cache.

The CLI, the HTTP API and the web UI all call `Animator.run`. One job at a time per Animator;
models stay loaded between jobs (keyed by file identity, dtype and device) so a second job with
the same checkpoint and motion module starts sampling at once.
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
from animdiff.decode import decode_frames
from animdiff.errors import CancelledError, ModelNotFoundError, ParamsError
from animdiff.models.cache import LoadedModels, ModelCache
from animdiff.models.detect import CHECKPOINT_KINDS
from animdiff.models.load import LOADABLE_MOTION_KINDS
from animdiff.models.lora import LoraRequest, apply_loras
from animdiff.models.store import ModelStore, looks_like_hub_id
from animdiff.output import (
    ENCODABLE,
    OutputOptions,
    build_infotext,
    encode,
    encode_frames_png,
    write_animation,
)
from animdiff.params import MotionLora, Params, check_supported, resolve_seed
from animdiff.postprocess import film_interpolate, is_closed_loop, ping_pong, uses_ping_pong
from animdiff.prompts.conditioning import PromptPlan, frame_embeddings, plan_prompts
from animdiff.prompts.encode import PromptEncoder
from animdiff.prompts.syntax import ExtraNetwork
from animdiff.sampling.context import context_windows
from animdiff.sampling.guidance import Conditioning, WindowedDenoiser
from animdiff.sampling.loop import StepInfo, sample
from animdiff.sampling.noise import frame_generators, initial_noise
from animdiff.sampling.samplers import make_scheduler


@dataclass(frozen=True)
class Progress:
    """One progress event: phase is load, encode, denoise, decode, interpolate or write."""

    phase: str
    step: int = 0
    total: int = 0


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class FrameCounts:
    """The reference's frame rules, resolved once per job."""

    video_length: int  # frames written (0 resolved to the context batch size)
    batch: int  # frames generated: max(video_length, context)
    overlap: int

    @classmethod
    def resolve(cls, params: Params) -> FrameCounts:
        video_length = params.frames or params.context
        return cls(video_length, max(video_length, params.context), params.resolved_overlap)


@dataclass
class Result:
    frames: list[Image.Image]
    files: dict[str, Path]
    infotext: str
    seed: int
    latents: torch.Tensor
    warnings: list[str] = field(default_factory=list)


@dataclass
class RunOptions:
    """How to run (not what to draw): never changes the result beyond float rounding."""

    device: str | None = None  # "cuda", "cpu"; None picks CUDA when there is one
    windows_per_call: int = 1  # context windows batched into one UNet call
    vae_chunk: int = 8  # frames per VAE decode call
    film_model: Path | None = None


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
        self.device = torch.device(self.options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.cache = ModelCache(self.device, self.dtype)
        self._lock = threading.Lock()

    # --- model selection ---------------------------------------------------------------------------

    def checkpoint_path(self, name: str | None) -> Path | str:
        if name is None:
            return self.store.default("checkpoint", CHECKPOINT_KINDS)
        try:
            return self.store.resolve(name, "checkpoint")
        except ModelNotFoundError:
            if looks_like_hub_id(name):
                return name
            raise

    def motion_module_path(self, name: str | None) -> Path:
        if name is None:
            return self.store.default("motion_module", LOADABLE_MOTION_KINDS)
        return self.store.resolve(name, "motion_module")

    def load(self, params: Params) -> LoadedModels:
        return self.cache.get(
            self.checkpoint_path(params.checkpoint),
            self.motion_module_path(params.motion_module),
            params.groupnorm,
        )

    # --- the job --------------------------------------------------------------------------------------

    def run(
        self,
        params: Params,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        write: bool = True,
    ) -> Result:
        check_supported(params)
        emit = progress or (lambda _event: None)
        with self._lock, torch.inference_mode():
            emit(Progress("load"))
            models = self.load(params)
            _check_context(params, models)
            counts = FrameCounts.resolve(params)
            seed = resolve_seed(params.seed)
            warnings: list[str] = []
            latents = self.generate(params, models, counts, seed, emit, cancel, warnings)
            emit(Progress("decode", 0, counts.video_length))
            frames = decode_frames(
                models.parts.vae,
                latents[: counts.video_length],
                self.options.vae_chunk,
                lambda done, total: emit(Progress("decode", done, total)),
            )
            frames = self.postprocess(params, counts, frames, emit)
        images = [Image.fromarray(f) for f in frames]
        infotext = build_infotext(
            params,
            seed=seed,
            frames=counts.video_length,
            overlap=counts.overlap,
            model_name=models.checkpoint_name,
            model_hash=models.checkpoint_hash,
            motion_module=models.motion_name,
            mm_hash=models.motion_hash,
            version=f"animdiff {__version__}",
        )
        result = Result(images, {}, infotext, seed, latents, warnings)
        if write and self.out_dir is not None:
            emit(Progress("write"))
            written = write_animation(
                images,
                params.formats,
                self.out_dir,
                seed,
                infotext,
                OutputOptions.from_params(params),
                request_id=params.request_id,
            )
            result.files = written.files
            result.warnings.extend(written.warnings)
        return result

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
        emit(Progress("encode"))
        plan = plan_prompts(
            params.prompt,
            video_length=counts.video_length,
            batch=counts.batch,
            context=params.context,
            closed_loop=params.closed_loop,
        )
        requests = self.lora_requests(plan.networks, params.motion_loras)
        # LoRAs change the cached weights in place for this job only; leaving the block restores them.
        with (
            torch.inference_mode(False),
            apply_loras(models.unet, models.parts.text_encoder, requests) as applied,
        ):
            if warnings is not None:
                warnings.extend(applied.warnings)
            with torch.inference_mode():
                return self._sample(params, models, counts, plan, seed, emit, cancel)

    def _sample(
        self,
        params: Params,
        models: LoadedModels,
        counts: FrameCounts,
        plan: PromptPlan,
        seed: int,
        emit: ProgressCallback,
        cancel: threading.Event | None,
    ) -> torch.Tensor:
        encoder = PromptEncoder(models.parts.text_encoder, models.parts.tokenizer, params.clip_skip)
        cond, uncond = frame_embeddings(
            encoder, plan, params.negative_prompt, counts.batch, params.prompt_interpolation
        )
        conditioning = Conditioning(cond.to(self.device), uncond.to(self.device), params.cfg_scale)
        generators = frame_generators(seed, counts.batch)
        noise = initial_noise(generators, params.height, params.width).to(self.device)

        def schedule(step: int) -> list[list[int]]:
            return context_windows(
                step, counts.video_length, params.context, params.stride, counts.overlap, params.closed_loop
            )

        denoiser = WindowedDenoiser(
            models.video_model,
            conditioning,
            schedule,
            fuse=params.fuse,
            windows_per_call=self.options.windows_per_call,
        )

        def on_step(info: StepInfo) -> None:
            if cancel is not None and cancel.is_set():
                raise CancelledError("cancelled")
            emit(Progress("denoise", info.step + 1, info.total))

        scheduler = make_scheduler(params.sampler)
        emit(Progress("denoise", 0, params.steps))
        return sample(
            denoiser, scheduler, noise, params.steps, generators=generators, callback=on_step
        ).float()

    def lora_requests(
        self, networks: list[ExtraNetwork], motion_loras: list[MotionLora]
    ) -> list[LoraRequest]:
        """Prompt `<lora:...>` tags (Lora folder, then motion-LoRA folders) and motion LoRA settings."""
        requests = []
        for net in networks:
            try:
                path = self.store.resolve(net.name, "lora")
            except ModelNotFoundError:
                path = self.store.resolve(net.name, "motion_lora")
            requests.append(LoraRequest(path, unet_weight=net.unet_weight, te_weight=net.te_weight))
        for lora in motion_loras:
            path = self.store.resolve(lora.name, "motion_lora")
            requests.append(LoraRequest(path, unet_weight=lora.strength, te_weight=0.0))
        return requests

    def postprocess(
        self, params: Params, counts: FrameCounts, frames: list[np.ndarray], emit: ProgressCallback
    ) -> list[np.ndarray]:
        if uses_ping_pong(params.closed_loop, counts.video_length, params.context):
            frames = ping_pong(frames)
        if params.interp == "FILM":
            closed = is_closed_loop(params.closed_loop, counts.video_length, params.context)
            frames = film_interpolate(
                frames,
                params.interp_x,
                closed,
                self.store.root,
                self.options.film_model,
                lambda done, total: emit(Progress("interpolate", done, total)),
            )
        return frames


def encode_outputs(result: Result, params: Params) -> dict[str, bytes | list[bytes]]:
    """The reference API's answer without files: each chosen video format as file bytes, and with
    `frame` every frame as PNG bytes (infotext embedded), in the order gif, mp4, webp, webm, frame."""
    options = OutputOptions.from_params(params)
    out: dict[str, bytes | list[bytes]] = {}
    for fmt in ("gif", "mp4", "webp", "webm"):
        if fmt in params.formats and fmt in ENCODABLE:
            out[fmt] = encode(result.frames, fmt, result.infotext, options, warnings=result.warnings)
    if "frame" in params.formats:
        out["frame"] = encode_frames_png(result.frames, result.infotext)
    return out


def _check_context(params: Params, models: LoadedModels) -> None:
    limit = models.motion.pe_length
    if params.context > limit:
        raise ParamsError(
            f"context batch size {params.context} is above the limit of {limit} frames of "
            f"{models.motion.path.name} ({models.motion.kind})"
        )
