"""Tiny models with the real architectures, written in the real on-disk layouts.

The SD1.5 checkpoint, the motion modules and the rest are built from the same diffusers and
transformers classes as the real ones, at toy width (32-64 channels instead of 320-1280), and
saved with the key names, containers and extras of the published files. Tests, `make demo` and
the benchmarks load them through the same code path a user's files take. Weights are rounded to
float16 precision so that files stored in float16 reload bit-exactly into float32 modules.

Their norms have 8 groups, not SD's 32. At the 64x64 pixels the tests draw, the deepest UNet
level is 1x1, where 32 groups of 64 channels normalise 2 values each: their spread can be as small
as 4e-5, so the norm amplifies float rounding a thousandfold and results depend on which CPU
kernels (AVX-512, AVX2, default) ran. With 8 groups every norm sees at least 8 values; the
loader derives the same count from the widths (`convert.norm_groups`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from animdiff.models.convert import shipped_config
from animdiff.testing import layouts
from animdiff.testing.film import write_film_standin

TINY_CHANNELS = (32, 32, 64, 64)
TINY_NORM_GROUPS = 8
TINY_TEXT_WIDTH = 32


@dataclass
class TinySD:
    """The diffusers/transformers modules a tiny checkpoint was written from."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel


def _round_to_half(module: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return module.eval().requires_grad_(False)


def tiny_unet_config() -> dict:
    return shipped_config(
        "sd15_unet.json",
        block_out_channels=list(TINY_CHANNELS),
        norm_num_groups=TINY_NORM_GROUPS,
        cross_attention_dim=TINY_TEXT_WIDTH,
        sample_size=8,
    )


def tiny_vae_config() -> dict:
    return shipped_config(
        "sd15_vae.json",
        block_out_channels=list(TINY_CHANNELS),
        norm_num_groups=TINY_NORM_GROUPS,
        layers_per_block=1,
        sample_size=64,
    )


def tiny_text_config() -> dict:
    return shipped_config(
        "sd15_text_encoder.json",
        hidden_size=TINY_TEXT_WIDTH,
        projection_dim=TINY_TEXT_WIDTH,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=1,
    )


def _trained_looking_layer_norms(text_encoder: CLIPTextModel) -> CLIPTextModel:
    """Layer norms with affine values away from the (1, 0) initialisation, as trained ones have.

    With a zero bias every token of the output averages to zero, and A1111's emphasis rescales
    a weighted prompt by the ratio of two such averages, ~1e-8 over ~1e-8: an arbitrary factor,
    or 0/0. Trained encoders' outputs average far from zero; the tiny one's must too.
    """
    with torch.no_grad():
        for module in text_encoder.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.1)
                module.bias.normal_(0.5, 0.25)
    return text_encoder


def tiny_sd(seed: int = 0) -> TinySD:
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**tiny_unet_config())
    vae = AutoencoderKL(**tiny_vae_config())
    text_encoder = _trained_looking_layer_norms(CLIPTextModel(CLIPTextConfig(**tiny_text_config())))
    return TinySD(_round_to_half(unet), _round_to_half(vae), _round_to_half(text_encoder))


def sd_checkpoint_state(sd: TinySD) -> dict[str, torch.Tensor]:
    """The single-file LDM layout: UNet, VAE, CLIP (with `text_model.` and position_ids), DDPM extras."""
    state = {
        **layouts.unet_to_ldm(sd.unet.state_dict(), sd.unet.config),
        **layouts.vae_to_ldm(sd.vae.state_dict(), sd.vae.config),
        **layouts.clip_to_ldm(sd.text_encoder.state_dict(), sd.text_encoder.config.max_position_embeddings),
        **layouts.ldm_schedule_buffers(),
    }
    return {k: v.contiguous() for k, v in state.items()}


def write_checkpoint(path: Path, state: dict[str, torch.Tensor], *, half: bool = True) -> Path:
    """`.safetensors` (float16, as most shared checkpoints) or `.ckpt` (Lightning's wrapper, float32)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        tensors = {k: (v.half() if half and v.is_floating_point() else v) for k, v in state.items()}
        save_file(tensors, str(path))
    else:
        torch.save({"state_dict": state, "global_step": 840000, "epoch": 6}, path)
    return path


# --- motion modules ------------------------------------------------------------------------------


MOTION_SEEDS = {"v1": 11, "v2": 12, "v3": 13, "sdxl-beta": 14, "hotshot": 15, "animatelcm": 16}


def tiny_motion_adapter(version: str) -> MotionAdapter:
    """A tiny MotionAdapter shaped like the published v1 (pe 24), v2 (pe 32, mid block) or v3 (pe 32)."""
    torch.manual_seed(MOTION_SEEDS[version])
    config = shipped_config("motion_adapter.json")
    sdxl = version in ("sdxl-beta", "hotshot")
    config.update(
        block_out_channels=list(TINY_CHANNELS[1:] if sdxl else TINY_CHANNELS),
        motion_norm_num_groups=TINY_NORM_GROUPS,
        use_motion_mid_block=version in ("v2", "animatelcm"),
        motion_max_seq_length=24 if version in ("v1", "hotshot") else 32,
    )
    adapter = MotionAdapter(**config)
    # Upstream zero-initialises the output projections; random ones make the module do something.
    with torch.no_grad():
        for name, param in adapter.named_parameters():
            if name.endswith("proj_out.weight"):
                param.normal_(0.0, 0.05)
    return _round_to_half(adapter)


def motion_module_state(version: str, adapter: MotionAdapter | None = None) -> dict[str, torch.Tensor]:
    """The file contents for each published motion-module layout."""
    adapter = adapter or tiny_motion_adapter(version)
    state = layouts.motion_to_guoyww(adapter.state_dict())
    if version == "hotshot":
        state = layouts.guoyww_to_hotshot(state)
    if version == "animatelcm":
        state = {k: v for k, v in state.items() if "pos_encoder" not in k}
    return {k: v.clone().contiguous() for k, v in state.items()}


def write_motion_module(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """guoyww published plain state dicts (`torch.save(dict)`), float32; conversions are safetensors."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.half() for k, v in state.items()}, str(path))
    else:
        torch.save(dict(state), path)
    return path


# --- the models folder ------------------------------------------------------------------------------


MOTION_FILES = {
    "v1": "tiny-mm-v1.ckpt",
    "v2": "tiny-mm-v2.ckpt",
    "v3": "tiny-mm-v3.safetensors",
    "sdxl-beta": "tiny-mm-sdxl-beta.safetensors",
    "hotshot": "tiny-hotshotxl.safetensors",
    "animatelcm": "tiny-animatelcm.safetensors",
}


def write_models_dir(root: Path) -> dict[str, Path]:
    """An A1111-layout models folder of tiny models; returns name -> path of what was written."""
    root = Path(root)
    written: dict[str, Path] = {}
    sd = tiny_sd()
    state = sd_checkpoint_state(sd)
    written["sd15"] = write_checkpoint(root / "Stable-diffusion" / "tiny-sd15.safetensors", state)
    for version, name in MOTION_FILES.items():
        written[f"mm-{version}"] = write_motion_module(
            root / "AnimateDiff" / name, motion_module_state(version)
        )
    for folder in ("Lora", "ControlNet", "VAE"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    from animdiff.testing.lora import write_lora_files  # here: it imports this module

    written.update(write_lora_files(root, sd))
    from animdiff.testing.controlnet import write_tiny_controlnets  # here: it imports this module

    written.update(write_tiny_controlnets(root, sd))
    from animdiff.testing.sdxl import write_tiny_sdxl_files  # here: it imports this module

    written.update(write_tiny_sdxl_files(root))
    # Where Deforum keeps FILM inside an A1111 models folder, so `--interp FILM` finds it.
    written["film"] = write_film_standin(root / "Deforum" / "film_interpolation" / "film_net_fp16.pt")
    return written
