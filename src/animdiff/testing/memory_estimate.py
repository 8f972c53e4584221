"""SD1.5 and SDXL with their motion modules at real size on `meta`: the memory a job holds on a
CUDA card, per phase.

The models are SD1.5 + mm_sd_v15_v2 and SDXL base + mm_sdxl_v10_beta at their published sizes
(the `--real-size` factory's configs), in the dtypes animdiff gives them on CUDA: float16, the VAEs
float32 (and float8 weights with `fp8`, converted as the model cache converts them). Each phase
then runs animdiff's own code on meta tensors under `meta_memory.LiveBytes`: the text encoders on
one prompt and its negative, one guided model evaluation of a context window through
`WindowedDenoiser` and the UNet with motion modules (the largest moment of sampling: the sampler's
own tensors are a few latents; `windows_per_call` windows in that one call, as `--window-batch`
puts them; with `controlnets` that many full-size ControlNets, made from the UNet's config, act
on every frame), and the VAE decode of every frame in `decoded_chunks`, tiled with `vae_tiling`
when asked. What is resident follows `offload`: every model in every phase without it, only the
phase's model with it.

The numbers are bytes as `torch.cuda.max_memory_allocated` counts them; the CUDA context, library
workspaces and the allocator's reserve come on top (see meta_memory). Seconds to run, no GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import ControlNetModel

from animdiff.decode import decoded_chunks
from animdiff.decode import vae_tiling as tiled
from animdiff.models.cache import LoadedModels
from animdiff.models.controlnet import ControlNet
from animdiff.models.detect import Kind
from animdiff.models.fp8 import store_fp8
from animdiff.models.load import MotionModule, StableDiffusionParts, build_motion_unet
from animdiff.models.motion_unet import MotionUNet
from animdiff.models.motion_xl import FAMILIES, LAYOUT_GUOYWW, XLMotionModule
from animdiff.models.sdxl import SDXLParts
from animdiff.models.tokenizer import MAX_LENGTH as TOKENS
from animdiff.models.tokenizer import PromptTokenizer, clip_tokenizer
from animdiff.sampling.controlnet import ControlLayer, ControlUnit
from animdiff.sampling.guidance import Conditioning, WindowedDenoiser
from animdiff.testing.meta_memory import CudaAttention, LiveBytes
from animdiff.testing.real_size import (
    build_sdxl_part,
    real_sdxl_configs,
    real_size_motion_adapter,
    real_size_sd,
    real_size_sdxl_motion_adapter,
)

PHASES = ("encode", "denoise", "decode")


@dataclass(frozen=True)
class JobMemory:
    """Peak bytes of each phase (resident weights included) and of the weights alone."""

    phases: dict[str, int]
    weights: dict[str, int]

    @property
    def peak(self) -> int:
        return max(self.phases.values())

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.phases.__getitem__)


def _models(
    parts: StableDiffusionParts | SDXLParts, motion: MotionModule, name: str, fp8: bool
) -> LoadedModels:
    if fp8:
        store_fp8(parts.unet)
        store_fp8(motion.adapter)
    model = build_motion_unet(parts.unet, motion.adapter, path=motion.path, fp8=fp8)
    return LoadedModels(
        parts=parts,
        motion=motion,
        unet=MotionUNet(model, motion.kind, "reference"),
        checkpoint_name=name,
        checkpoint_hash=None,
        motion_name=motion.path.name,
        motion_hash=None,
    )


def sd15_models_on_meta(fp8: bool = False) -> LoadedModels:
    """SD1.5 + mm_sd_v15_v2 on `meta`, as the model cache holds them on CUDA (the VAE in float32,
    `load.VAE_DTYPE`)."""
    sd = real_size_sd(device="meta")
    unet, vae, text_encoder = sd.unet.half(), sd.vae.float(), sd.text_encoder.half()
    path = Path("v1-5-pruned-emaonly.safetensors")
    parts = StableDiffusionParts(unet, vae, text_encoder, PromptTokenizer(clip_tokenizer()), path, Kind.SD15)
    adapter = real_size_motion_adapter(device="meta").half()
    motion = MotionModule(adapter, Kind.MM_V2, 32, Path("mm_sd_v15_v2.ckpt"))
    return _models(parts, motion, "v1-5-pruned-emaonly", fp8)


def sdxl_models_on_meta(fp8: bool = False) -> LoadedModels:
    """SDXL base + AnimateDiff-XL on `meta`, as the model cache holds them on CUDA."""
    configs = real_sdxl_configs()

    def part(name: str, half: bool = True) -> torch.nn.Module:
        module = build_sdxl_part(name, configs[name], "meta").eval().requires_grad_(False)
        return module.half() if half else module.float()  # not .to(dtype): diffusers warns

    unet, vae = part("unet"), part("vae", half=False)
    text_encoder, text_encoder_2 = part("text_encoder"), part("text_encoder_2")
    adapter = real_size_sdxl_motion_adapter(device="meta").half()
    path = Path("mm_sdxl_v10_beta.ckpt")
    motion = XLMotionModule(adapter, Kind.MM_SDXL_BETA, 32, path, FAMILIES[Kind.MM_SDXL_BETA], LAYOUT_GUOYWW)
    parts = SDXLParts(unet, vae, text_encoder, text_encoder_2, Path("sd_xl_base_1.0.safetensors"), Kind.SDXL)
    return _models(parts, motion, "sd_xl_base_1.0", fp8)


def controlnet_on_meta(models: LoadedModels) -> ControlNet:
    """A ControlNet of the checkpoint's own size (diffusers builds it from the UNet's config: about
    1.25 billion weights for SDXL), float16 on `meta`, sliced as loaded ControlNets are."""
    with torch.device("meta"):
        model = ControlNetModel.from_unet(models.parts.unet, load_weights_from_unet=False)
    kind = Kind.CONTROLNET_SDXL if models.unet.takes_vector else Kind.CONTROLNET_SD15
    return ControlNet(model.half().eval().requires_grad_(False), kind, Path("controlnet.safetensors"))


def estimate_job(
    models: LoadedModels,
    *,
    width: int = 1024,
    height: int = 1024,
    context: int = 16,
    windows_per_call: int = 1,
    offload: bool = False,
    vae_chunk: int | None = None,
    vae_tiling: bool = False,
    controlnets: int = 0,
) -> JobMemory:
    """Each phase's peak for a job of `windows_per_call` windows of `context` frames (one UNet call)
    at `width` x `height`, CFG on, with `models` (`sd15_models_on_meta` or `sdxl_models_on_meta`)."""
    parts = models.parts
    encoders = tuple(e for e in (parts.text_encoder, getattr(parts, "text_encoder_2", None)) if e is not None)
    nets = [controlnet_on_meta(models).model for _ in range(controlnets)]
    by_phase = {"encode": encoders, "denoise": (models.unet, *nets), "decode": (parts.vae,)}
    every = tuple(m for modules in by_phase.values() for m in modules)
    weights = {phase: _bytes_of(*modules) for phase, modules in by_phase.items()}
    phases: dict[str, int] = {}
    frames = context * windows_per_call
    windows = [list(range(start, start + context)) for start in range(0, frames, context)]
    latents = torch.empty(frames, 4, height // 8, width // 8, device="meta")

    def tracker(phase: str) -> LiveBytes:
        live = LiveBytes()
        live.hold_modules(*(by_phase[phase] if offload else every))
        live.hold([latents])
        return live

    with torch.inference_mode(), CudaAttention():
        live = tracker("encode")
        with live:
            ids = torch.zeros(2, TOKENS, dtype=torch.long, device="meta")
            for encoder in encoders:
                encoder(ids, output_hidden_states=True)
        phases["encode"] = live.peak

        width_text = sum(encoder.config.hidden_size for encoder in encoders)
        vector = parts.unet.config.projection_class_embeddings_input_dim if models.unet.takes_vector else None
        conditioning = Conditioning(
            torch.empty(frames, TOKENS, width_text, device="meta"),
            torch.empty(1, TOKENS, width_text, device="meta"),
            7.5,
            cond_vector=None if vector is None else torch.empty(frames, vector, device="meta"),
            uncond_vector=None if vector is None else torch.empty(1, vector, device="meta"),
        )
        if nets:  # not held: they stay in CPU memory (each call's uint8 slice is counted, a few MiB)
            hints = torch.empty(frames, 3, height, width, dtype=torch.uint8, device="meta")
            conditioning.control = ControlLayer([ControlUnit(net, hints) for net in nets])
        denoiser = WindowedDenoiser(
            models.video_model, conditioning, lambda _step: windows, windows_per_call=windows_per_call
        )
        live = tracker("denoise")
        live.hold([conditioning.cond, conditioning.uncond])
        live.hold([t for t in (conditioning.cond_vector, conditioning.uncond_vector) if t is not None])
        with live:
            denoiser(latents, torch.tensor(999.0, device="meta"))
        phases["denoise"] = live.peak

        live = tracker("decode")
        with live, tiled(parts.vae, vae_tiling):
            for image in decoded_chunks(parts.vae, latents, vae_chunk):
                del image
        phases["decode"] = live.peak
    return JobMemory(phases, weights)


def _bytes_of(*modules: torch.nn.Module) -> int:
    live = LiveBytes()
    live.hold_modules(*modules)
    return live.current
