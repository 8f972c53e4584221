"""diffusers' own AnimateDiffPipeline: the peer for parity tests and benches.

A comparison is only fair when the peer runs where and how ours runs: the same device, the same
dtype for the UNet, motion modules and text encoder, and the VAE in `VAE_DTYPE` (ours keeps SD1.5's
VAE in float32 because it overflows in float16). `peer_device_dtype` gives the rule `Animator`
follows (CUDA in float16 when there is one, else the CPU in float32); every function here takes the
device and dtype to use.

Three ways to build the peer:
- `tiny_diffusers_pipeline`: from the tiny modules `animdiff.testing.factory` builds (the same
  weights the tiny files hold), for the parity tests;
- `diffusers_pipeline_from_files`: diffusers' own single-file loaders read the same checkpoint and
  motion-module files ours reads, offline, given the config folder `write_diffusers_config` writes
  (what a diffusers user downloads next to the weights). Its load time is diffusers' load time;
- `diffusers_pipeline_sharing`: over the very tensors an `Animator` has loaded (no second copy),
  so that both can run in one process, turn about, on the same weights: the way to compare
  sampling speed without drift between processes and without twice the memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AnimateDiffPipeline, MotionAdapter

from animdiff.models import convert
from animdiff.models.cache import LoadedModels
from animdiff.models.detect import detect
from animdiff.models.files import read_shapes
from animdiff.models.load import VAE_DTYPE, build_motion_unet
from animdiff.models.tokenizer import clip_tokenizer
from animdiff.sampling.samplers import make_scheduler


class PeerPipeline(AnimateDiffPipeline):
    """AnimateDiffPipeline, unchanged but for one cast: latents meet the VAE in the VAE's dtype.

    diffusers assumes one dtype for the whole pipeline; with the VAE kept in float32 next to a
    float16 UNet (as ours runs) its decode would fail on the dtype mismatch.
    """

    def decode_latents(self, latents: torch.Tensor, decode_chunk_size: int = 16) -> torch.Tensor:
        return super().decode_latents(latents.to(self.vae.dtype), decode_chunk_size)


def peer_device_dtype(device: str | torch.device | None = None) -> tuple[torch.device, torch.dtype]:
    """Where and in what dtype `Animator` runs (and so the peer must): CUDA float16, else CPU float32."""
    where = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return where, (torch.float16 if where.type == "cuda" else torch.float32)


def _assemble(pipe: AnimateDiffPipeline, sampler: str, device: torch.device, vae_dtype: torch.dtype):
    components = {**pipe.components, "scheduler": make_scheduler(sampler)}
    peer = PeerPipeline(**components)
    peer.to(device)
    peer.vae.to(dtype=vae_dtype)
    peer.set_progress_bar_config(disable=True)
    return peer


def tiny_diffusers_pipeline(
    version: str = "v2",
    sampler: str = "DDIM",
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    vae_dtype: torch.dtype = VAE_DTYPE,
) -> PeerPipeline:
    """The same weights our tiny files hold, with our offline tokenizer and scheduler settings."""
    from animdiff.testing.factory import tiny_motion_adapter, tiny_sd

    sd = tiny_sd()
    pipe = AnimateDiffPipeline(
        vae=sd.vae,
        text_encoder=sd.text_encoder,
        tokenizer=clip_tokenizer(),
        unet=sd.unet,
        motion_adapter=tiny_motion_adapter(version),
        scheduler=make_scheduler(sampler),
    )
    pipe.to(dtype=dtype)
    return _assemble(pipe, sampler, torch.device(device), vae_dtype)


# --- from the files, with diffusers' own loaders ----------------------------------------------------------


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def _shape_only(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


def write_diffusers_config(checkpoint: Path, motion_module: Path, folder: Path) -> Path:
    """The diffusers-format config folder for these files (model_index.json, one config per part).

    The architecture is read from the files' shapes (as ours does), so one function serves the
    tiny and the real-size files. diffusers' single-file loaders take it as `config=`; with it they
    never reach the network.
    """
    sd = _shape_only(read_shapes(Path(checkpoint)))
    folder = Path(folder)
    _write_json(folder / "unet" / "config.json", convert.unet_config_from_ldm(sd))
    _write_json(folder / "vae" / "config.json", convert.vae_config_from_ldm(sd))
    text = convert.clip_config_from_state(convert.clip_from_ldm(sd))
    _write_json(
        folder / "text_encoder" / "config.json",
        {**text, "architectures": ["CLIPTextModel"], "model_type": "clip_text_model"},
    )
    clip_tokenizer().save_pretrained(str(folder / "tokenizer"))
    make_scheduler("DDIM").save_config(str(folder / "scheduler"))
    motion = _shape_only(read_shapes(Path(motion_module)))
    pe_length = detect({k: tuple(v.shape) for k, v in motion.items()}).pe_length or 0
    _write_json(
        folder / "motion_adapter" / "config.json", convert.motion_config_from_guoyww(motion, pe_length)
    )
    _write_json(
        folder / "model_index.json",
        {
            "_class_name": "AnimateDiffPipeline",
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "scheduler": ["diffusers", "DDIMScheduler"],
            "motion_adapter": ["diffusers", "MotionAdapter"],
            "feature_extractor": [None, None],
            "image_encoder": [None, None],
        },
    )
    return folder


def diffusers_pipeline_from_files(
    checkpoint: Path,
    motion_module: Path,
    config: Path,
    sampler: str = "DDIM",
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    vae_dtype: torch.dtype = VAE_DTYPE,
) -> PeerPipeline:
    """diffusers' `from_single_file` on our files (offline, `config` from `write_diffusers_config`).

    diffusers recomputes the sinusoidal positional encodings instead of reading the file's; for
    published files (and the real-size ones) they are the same numbers, for the tiny files (rounded
    to float16) they differ in the fourth decimal.
    """
    adapter = MotionAdapter.from_single_file(
        str(motion_module),
        config=str(config),
        subfolder="motion_adapter",
        torch_dtype=dtype,
        local_files_only=True,
    )
    pipe = AnimateDiffPipeline.from_single_file(
        str(checkpoint), config=str(config), motion_adapter=adapter, torch_dtype=dtype, local_files_only=True
    )
    return _assemble(pipe, sampler, torch.device(device), vae_dtype)


def diffusers_pipeline_sharing(models: LoadedModels, sampler: str = "DDIM") -> PeerPipeline:
    """diffusers' pipeline over the tensors `Animator.load` returned: same weights, device, dtypes.

    It gets its own `UNetMotionModel` (sharing the tensors), exactly as diffusers builds one, so
    ours' GroupNorm mode does not reach it.
    """
    unet = build_motion_unet(models.parts.unet, models.motion.adapter, path=models.motion.path)
    pipe = PeerPipeline(
        vae=models.parts.vae,
        text_encoder=models.parts.text_encoder,
        tokenizer=clip_tokenizer(),
        unet=unet,
        motion_adapter=models.motion.adapter,
        scheduler=make_scheduler(sampler),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
