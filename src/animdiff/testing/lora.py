"""Tiny LoRA files in the layouts users actually have.

kohya/A1111 LoRAs (`lora_unet_...`/`lora_te_...` with `.alpha`, 1x1 convs stored as 4-D conv
LoRAs, float16 safetensors), an SDXL LoRA (only its key names and widths matter), and the
original AnimateDiff layout (`...processor.to_q_lora.down.weight`) of the motion LoRAs and of the
v3 domain adapter, pickled as guoyww published them. The shapes fit the factory's tiny models, so
the loader is tested on the same code path as users' files. Values are rounded to float16 so
every container reloads them exactly.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from diffusers import MotionAdapter, UNet2DConditionModel
from safetensors.torch import save_file
from torch import nn
from transformers import CLIPTextModel

from animdiff.models.ldm_names import ldm_unet_name
from animdiff.testing.factory import TinySD, tiny_motion_adapter, tiny_sd

_PROJECTIONS = r"\.attn[12]\.(to_q|to_k|to_v|to_out\.0)"
_UNET_ATTENTION = re.compile(r".*\.attentions\.\d+\.transformer_blocks\.\d+" + _PROJECTIONS)
_UNET_PROJ_IN = re.compile(r".*\.attentions\.\d+\.proj_in")
_TEXT = re.compile(r"(?:text_model\.)?encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])")
_MOTION_ATTENTION = re.compile(r".*\.motion_modules\.\d+\.transformer_blocks\.\d+" + _PROJECTIONS)


def _pair(
    generator: torch.Generator, module: nn.Module, rank: int, conv: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (down, up) for one layer, large enough that the delta is visible in the weights."""
    out_features, in_features = module.weight.shape[:2]
    down = torch.randn(rank, in_features, generator=generator) / in_features**0.5
    up = torch.randn(out_features, rank, generator=generator) * 0.1
    down, up = down.half().float(), up.half().float()
    if conv:
        return down[:, :, None, None], up[:, :, None, None]
    return down, up


def _named(model: nn.Module, pattern: re.Pattern[str]) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if pattern.fullmatch(n)]


def kohya_lora_state(
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    rank: int = 4,
    seed: int = 1,
    alpha: float = 2.0,
    *,
    ldm_names: bool = False,
) -> dict[str, torch.Tensor]:
    """A kohya-trained SD1.5 LoRA: attention projections, proj_in (as a 1x1 conv LoRA), CLIP layers.

    `ldm_names=True` writes the UNet keys with LDM layer names (`lora_unet_input_blocks_1_1_...`),
    as some older SD1.5 LoRAs have them; the tensors are the same for the same seed.
    """
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    config = unet.config
    for name, module in [*_named(unet, _UNET_ATTENTION), *_named(unet, _UNET_PROJ_IN)]:
        conv = isinstance(module, nn.Conv2d)
        layer = ldm_unet_name(name, config.layers_per_block, config.up_block_types) if ldm_names else name
        _put(state, "lora_unet_" + layer.replace(".", "_"), _pair(generator, module, rank, conv), alpha)
    for name, module in _named(text_encoder, _TEXT):
        base = "lora_te_text_model_" + name.removeprefix("text_model.").replace(".", "_")
        _put(state, base, _pair(generator, module, rank, False), alpha)
    return state


def _put(
    state: dict[str, torch.Tensor], base: str, pair: tuple[torch.Tensor, torch.Tensor], alpha: float
) -> None:
    state[f"{base}.lora_down.weight"], state[f"{base}.lora_up.weight"] = pair
    state[f"{base}.alpha"] = torch.tensor(float(alpha))


def sdxl_lora_state(rank: int = 2, seed: int = 3) -> dict[str, torch.Tensor]:
    """A few entries of a kohya SDXL LoRA: both text encoders and an LDM-named 2048-wide attn2."""
    generator = torch.Generator().manual_seed(seed)
    widths = {
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (768, 768),
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj": (1280, 1280),
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k": (640, 2048),
    }
    state: dict[str, torch.Tensor] = {}
    for base, (out_features, in_features) in widths.items():
        down = torch.randn(rank, in_features, generator=generator).half().float()
        up = torch.randn(out_features, rank, generator=generator).half().float()
        _put(state, base, (down, up), rank)
    return state


def _original_pairs(
    model: nn.Module, pattern: re.Pattern[str], rank: int, seed: int
) -> dict[str, torch.Tensor]:
    """`<path>.processor.to_q_lora.down.weight` entries for the layers `pattern` picks."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, module in _named(model, pattern):
        path, _, projection = name.removesuffix(".0").rpartition(".")
        down, up = _pair(generator, module, rank, False)
        state[f"{path}.processor.{projection}_lora.down.weight"] = down
        state[f"{path}.processor.{projection}_lora.up.weight"] = up
    return state


def _to_original_motion_path(key: str) -> str:
    """diffusers motion-module names -> guoyww's (`temporal_transformer`, `attention_blocks.N`)."""
    key = re.sub(r"(\.motion_modules\.\d+)\.", r"\1.temporal_transformer.", key)
    return key.replace(".attn1.", ".attention_blocks.0.").replace(".attn2.", ".attention_blocks.1.")


def motion_lora_state(adapter: MotionAdapter, rank: int = 4, seed: int = 21) -> dict[str, torch.Tensor]:
    """A v2 motion LoRA (`v2_lora_ZoomIn.ckpt` layout), mid-block entries included when present."""
    state = _original_pairs(adapter, _MOTION_ATTENTION, rank, seed)
    return {_to_original_motion_path(k): v for k, v in state.items()}


def domain_adapter_state(
    unet: UNet2DConditionModel, rank: int = 4, seed: int = 31
) -> dict[str, torch.Tensor]:
    """The v3 domain adapter (`v3_sd15_adapter.ckpt` layout): LoRA on every spatial attention."""
    return _original_pairs(unet, _UNET_ATTENTION, rank, seed)


def write_lora_files(root: Path, sd: TinySD | None = None) -> dict[str, Path]:
    """Tiny LoRA files in an A1111 models folder; pass `sd` when the tiny models are already built."""
    root = Path(root)
    sd = sd or tiny_sd()
    (root / "Lora").mkdir(parents=True, exist_ok=True)
    (root / "AnimateDiff").mkdir(parents=True, exist_ok=True)
    files = {
        "lora-style": root / "Lora" / "tiny-style.safetensors",
        "lora-detail": root / "Lora" / "tiny-detail.safetensors",
        "lora-sdxl-style": root / "Lora" / "tiny-sdxl-style.safetensors",
        "lora-v3-adapter": root / "Lora" / "v3_sd15_adapter.ckpt",
        "motion-lora-zoom-in": root / "AnimateDiff" / "v2_lora_TinyZoomIn.ckpt",
    }
    _save_half(files["lora-style"], kohya_lora_state(sd.unet, sd.text_encoder, seed=1))
    _save_half(files["lora-detail"], kohya_lora_state(sd.unet, sd.text_encoder, seed=2, alpha=4.0))
    _save_half(files["lora-sdxl-style"], sdxl_lora_state())
    torch.save(domain_adapter_state(sd.unet), files["lora-v3-adapter"])
    torch.save(motion_lora_state(tiny_motion_adapter("v2")), files["motion-lora-zoom-in"])
    return files


def _save_half(path: Path, state: dict[str, torch.Tensor]) -> None:
    """kohya saves float16 safetensors (alpha included)."""
    save_file({k: v.half().contiguous() for k, v in state.items()}, str(path))
