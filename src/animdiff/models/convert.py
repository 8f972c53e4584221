"""Original key layouts -> diffusers/transformers names, and architecture numbers from shapes.

A single-file checkpoint (LDM layout) or a guoyww motion module carries no config. The shipped
JSON files in `configs/` hold the published SD1.5 / AnimateDiff architecture; everything a
file's tensor shapes can tell (channel counts, depth, widths, positional-encoding length, mid
block) is read from the file and overrides them, so one code path serves real files and the
tiny test models alike. What shapes cannot tell (head counts) comes from the JSON; norm groups are
SD's 32 for every published width (see `norm_groups`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any

import torch
from diffusers.loaders.single_file_utils import (
    convert_animatediff_checkpoint_to_diffusers,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
)

from animdiff.errors import ModelFileError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIXES = ("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer.")
CLIP_HEAD_WIDTH = 64
PUBLISHED_NORM_GROUPS = 32
NARROW_CHANNELS_PER_GROUP = 4

Tensors = Mapping[str, torch.Tensor]


@cache
def _shipped(name: str) -> dict[str, Any]:
    text = resources.files("animdiff.models.configs").joinpath(name).read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def shipped_config(name: str, **changes: Any) -> dict[str, Any]:
    """A fresh copy of one of the JSON architecture files, with `changes` (a smaller model's widths)."""
    return {**json.loads(json.dumps(_shipped(name))), **changes}


def norm_groups(widths: Iterable[int]) -> int:
    """GroupNorm groups for a model of these block widths, which no file stores.

    Every published SD1.5 model, VAE and motion module is at least 320 channels wide and has 32
    groups. Narrower ones are our tiny test models: 32 groups of one or two channels would
    normalise a handful of values at their 1x1 level and amplify float rounding a thousandfold,
    so they have groups of 4 channels (8 groups at 32 channels), and this is how the loader knows.
    """
    return min(PUBLISHED_NORM_GROUPS, min(widths) // NARROW_CHANNELS_PER_GROUP)


def _count(keys: list[str], pattern: str) -> int:
    """Number of distinct integers captured by `pattern` (one group) among the keys."""
    regex = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := regex.match(k))})


# --- SD1.5 UNet ------------------------------------------------------------------------------------


def unet_config_from_ldm(sd: Tensors) -> dict[str, Any]:
    """SD1.5 UNet config with widths and depth taken from an LDM state dict."""
    config = shipped_config("sd15_unet.json")
    keys = [k.removeprefix(UNET_PREFIX) for k in sd if k.startswith(UNET_PREFIX)]
    shape = {k.removeprefix(UNET_PREFIX): tuple(v.shape) for k, v in sd.items() if k.startswith(UNET_PREFIX)}
    n_input = _count(keys, r"input_blocks\.(\d+)\.")
    n_down = _count(keys, r"input_blocks\.(\d+)\.0\.op\.weight") + 1
    layers = (n_input - 1 - (n_down - 1)) // n_down
    if n_input < 2 or layers < 1 or 1 + n_down * layers + n_down - 1 != n_input:
        raise ModelFileError("the UNet's input blocks do not form an SD-style UNet")
    channels, attn = [], []
    for b in range(n_down):
        first = 1 + b * (layers + 1)
        out = shape.get(f"input_blocks.{first}.0.out_layers.3.weight")
        if out is None:
            raise ModelFileError(f"the UNet has no resnet at input block {first}")
        channels.append(out[0])
        attn.append(any(k.startswith(f"input_blocks.{first}.1.") for k in keys))
    config["block_out_channels"] = channels
    config["norm_num_groups"] = norm_groups(channels)
    config["layers_per_block"] = layers
    config["down_block_types"] = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn]
    config["up_block_types"] = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)]
    config["in_channels"] = shape["input_blocks.0.0.weight"][1]
    config["out_channels"] = shape["out.2.weight"][0]
    to_k = next((s for k, s in shape.items() if k.endswith("attn2.to_k.weight")), None)
    if to_k is not None:
        config["cross_attention_dim"] = to_k[1]
    proj_in = next((s for k, s in shape.items() if k.endswith(".proj_in.weight")), None)
    if proj_in is not None:
        config["use_linear_projection"] = len(proj_in) == 2
    return config


def unet_from_ldm(sd: Tensors, config: dict[str, Any]) -> dict[str, torch.Tensor]:
    return dict(convert_ldm_unet_checkpoint(dict(sd), config))


# --- SD1.5 VAE -------------------------------------------------------------------------------------


def vae_config_from_ldm(sd: Tensors) -> dict[str, Any]:
    config = shipped_config("sd15_vae.json")
    shape = {k.removeprefix(VAE_PREFIX): tuple(v.shape) for k, v in sd.items() if k.startswith(VAE_PREFIX)}
    keys = list(shape)
    n = _count(keys, r"encoder\.down\.(\d+)\.")
    if n == 0:
        raise ModelFileError("the checkpoint has no VAE (first_stage_model.*) weights")
    config["block_out_channels"] = [shape[f"encoder.down.{i}.block.0.conv2.weight"][0] for i in range(n)]
    config["norm_num_groups"] = norm_groups(config["block_out_channels"])
    config["layers_per_block"] = _count(keys, r"encoder\.down\.0\.block\.(\d+)\.")
    config["down_block_types"] = ["DownEncoderBlock2D"] * n
    config["up_block_types"] = ["UpDecoderBlock2D"] * n
    config["latent_channels"] = shape["decoder.conv_in.weight"][1]
    return config


def vae_from_ldm(sd: Tensors, config: dict[str, Any]) -> dict[str, torch.Tensor]:
    return dict(convert_ldm_vae_checkpoint(dict(sd), config))


# --- CLIP text encoder -----------------------------------------------------------------------------


def clip_from_ldm(sd: Tensors) -> dict[str, torch.Tensor]:
    """Text-encoder tensors with the checkpoint prefix and the `text_model.` level removed.

    Files written with transformers 4.x carry `text_model.`; older ones do not. We strip both so
    the caller can add whatever level the installed transformers expects.
    """
    out = {}
    for key, value in sd.items():
        for prefix in CLIP_PREFIXES:
            if key.startswith(prefix):
                out[key.removeprefix(prefix)] = value
                break
    return out


def clip_config_from_state(sd: Tensors) -> dict[str, Any]:
    config = shipped_config("sd15_text_encoder.json")
    tokens = sd.get("embeddings.token_embedding.weight")
    positions = sd.get("embeddings.position_embedding.weight")
    if tokens is None or positions is None:
        raise ModelFileError("the checkpoint has no CLIP text encoder (cond_stage_model.transformer.*)")
    hidden = tokens.shape[1]
    config["vocab_size"] = tokens.shape[0]
    config["hidden_size"] = hidden
    config["projection_dim"] = hidden
    config["max_position_embeddings"] = positions.shape[0]
    config["num_hidden_layers"] = _count(list(sd), r"encoder\.layers\.(\d+)\.")
    config["intermediate_size"] = sd["encoder.layers.0.mlp.fc1.weight"].shape[0]
    config["num_attention_heads"] = max(1, hidden // CLIP_HEAD_WIDTH)
    return config


# --- motion modules ------------------------------------------------------------------------------------


def motion_config_from_guoyww(sd: Tensors, pe_length: int) -> dict[str, Any]:
    """MotionAdapter config from an original-layout motion module."""
    config = shipped_config("motion_adapter.json")
    keys = list(sd)
    n = _count(keys, r"down_blocks\.(\d+)\.motion_modules\.")
    config["block_out_channels"] = [
        sd[f"down_blocks.{b}.motion_modules.0.temporal_transformer.proj_in.weight"].shape[0] for b in range(n)
    ]
    config["motion_norm_num_groups"] = norm_groups(config["block_out_channels"])
    config["motion_layers_per_block"] = _count(keys, r"down_blocks\.0\.motion_modules\.(\d+)\.")
    config["use_motion_mid_block"] = any(k.startswith("mid_block.") for k in keys)
    config["motion_max_seq_length"] = pe_length
    return config


def motion_from_guoyww(sd: Tensors, pe_length: int) -> dict[str, torch.Tensor]:
    """diffusers MotionAdapter tensors, positional encodings included.

    diffusers' converter drops the stored `pe` tables (one per attention block in the original
    layout, one per transformer block in diffusers). The reference loads the stored tables, so we
    carry the first attention block's table over instead of recomputing it.
    """
    out = dict(convert_animatediff_checkpoint_to_diffusers(dict(sd)))
    for key, value in sd.items():
        if key.endswith("attention_blocks.0.pos_encoder.pe"):
            block = key.removesuffix("attention_blocks.0.pos_encoder.pe").replace(".temporal_transformer", "")
            out[f"{block}pos_embed.pe"] = value[:, :pe_length]
    return out
