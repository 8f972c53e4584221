"""diffusers/transformers names -> the original on-disk layouts users' files have.

The inverse of what the loaders do, so the tiny test models can be written exactly as published
files are: LDM single-file checkpoints (CompVis names, CLIP under
`cond_stage_model.transformer.text_model.`), and guoyww motion modules. Only the tests, the demo
and the benchmarks use this module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from animdiff.models.ldm_names import ldm_unet_name


def unet_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    layers = config["layers_per_block"]
    up_types = config["up_block_types"]
    return {"model.diffusion_model." + ldm_unet_name(k, layers, up_types): v for k, v in state.items()}


def _vae_key(key: str, blocks: int) -> str:
    key = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
    key = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", key)
    key = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", key)
    key = re.sub(
        r"decoder\.up_blocks\.(\d+)\.resnets\.", lambda m: f"decoder.up.{blocks - 1 - int(m[1])}.block.", key
    )
    key = re.sub(
        r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
        lambda m: f"decoder.up.{blocks - 1 - int(m[1])}.upsample.",
        key,
    )
    key = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m[1]) + 1}.", key)
    if "mid_block.attentions.0." in key:
        key = key.replace("mid_block.attentions.0.", "mid.attn_1.")
        for new, old in (
            ("group_norm.", "norm."),
            ("to_q.", "q."),
            ("to_k.", "k."),
            ("to_v.", "v."),
            ("to_out.0.", "proj_out."),
        ):
            key = key.replace(new, old)
    return key


def vae_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    blocks = len(config["up_block_types"])
    out = {}
    for key, value in state.items():
        new = _vae_key(key, blocks)
        if ".mid.attn_1." in f".{new}" and value.ndim == 2:
            value = value[:, :, None, None]  # LDM stores the VAE attention projections as 1x1 convs
        out["first_stage_model." + new] = value
    return out


def clip_to_ldm(state: Mapping[str, torch.Tensor], positions: int) -> dict[str, torch.Tensor]:
    """CLIP text weights as transformers 4.x wrote them inside SD checkpoints, position_ids included."""
    prefix = "cond_stage_model.transformer.text_model."
    out = {
        prefix + k.removeprefix("text_model."): v for k, v in state.items() if not k.endswith("position_ids")
    }
    out[prefix + "embeddings.position_ids"] = torch.arange(positions, dtype=torch.int64).unsqueeze(0)
    return out


def ldm_schedule_buffers() -> dict[str, torch.Tensor]:
    """The DDPM buffers and EMA counters real LDM checkpoints carry (and loaders ignore)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas = torch.cumprod(1 - betas, 0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas[:-1]])
    variance = betas * (1 - prev) / (1 - alphas)
    buffers = {
        "betas": betas,
        "alphas_cumprod": alphas,
        "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": alphas.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1 - alphas).sqrt(),
        "log_one_minus_alphas_cumprod": (1 - alphas).log(),
        "sqrt_recip_alphas_cumprod": (1 / alphas).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1 / alphas - 1).sqrt(),
        "posterior_variance": variance,
        "posterior_log_variance_clipped": variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * prev.sqrt() / (1 - alphas),
        "posterior_mean_coef2": (1 - prev) * (1 - betas).sqrt() / (1 - alphas),
    }
    out = {k: v.float() for k, v in buffers.items()}
    out["model_ema.decay"] = torch.tensor(0.9999)
    out["model_ema.num_updates"] = torch.tensor(0, dtype=torch.int32)
    return out


def motion_to_guoyww(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers MotionAdapter tensors in the original AnimateDiff key layout (pe per attention block)."""
    out = {}
    for key, value in state.items():
        m = re.fullmatch(
            r"((?:down_blocks|up_blocks)\.\d+\.motion_modules\.\d+|mid_block\.motion_modules\.\d+)\.(.*)", key
        )
        if m is None:
            raise KeyError(f"not a motion-module key: {key}")
        head, rest = m[1], m[2]
        if rest.endswith("pos_embed.pe"):
            block = rest.removesuffix("pos_embed.pe")
            for attention in (0, 1):
                out[f"{head}.temporal_transformer.{block}attention_blocks.{attention}.pos_encoder.pe"] = value
            continue
        for new, old in (
            (".attn1.", ".attention_blocks.0."),
            (".attn2.", ".attention_blocks.1."),
            (".norm1.", ".norms.0."),
            (".norm2.", ".norms.1."),
            (".norm3.", ".ff_norm."),
        ):
            rest = rest.replace(new, old)
        out[f"{head}.temporal_transformer.{rest}"] = value
    return out


def guoyww_to_hotshot(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HotShot-XL's own names: `temporal_attentions.N.` and `positional_encoding`."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"\.motion_modules\.(\d+)\.temporal_transformer\.", r".temporal_attentions.\1.", key)
        out[key.replace("pos_encoder.pe", "pos_encoder.positional_encoding")] = value
    return out
