"""SDXL checkpoints -> diffusers/transformers modules, offline, with every key accounted for.

A1111 users keep SDXL models as single files in Stability's SGM layout:
- `model.diffusion_model.*`: the UNet under LDM names (as SD1.5's), plus `label_emb` (the size /
  crop / pooled-text embedding) and attention levels several transformer blocks deep;
- `first_stage_model.*`: the VAE, SD1.5's architecture with another latent scale;
- `conditioner.embedders.0.transformer.text_model.*`: CLIP ViT-L's text half (transformers names);
- `conditioner.embedders.1.model.*`: OpenCLIP ViT-bigG's text half under OpenCLIP's own names
  (`transformer.resblocks.N.attn.in_proj_weight`, `ln_1`, `mlp.c_fc`, `token_embedding`,
  `positional_embedding`, `ln_final`, `text_projection`), which transformers' classes do not use.
Diffusers folders (`model_index.json`, `unet/`, `vae/`, `text_encoder/`, `text_encoder_2/`) load too.

As for SD1.5 (load.py), no file carries a config: the shipped `sdxl_*.json` files hold SDXL base's
published architecture, the file's shapes override everything they can tell, and each module is
built on the meta device and given exactly the file's tensors. Nothing reaches for the hub.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from animdiff.errors import ModelFileError, ModelTypeError
from animdiff.models import convert
from animdiff.models.detect import CHECKPOINT_KINDS, Detected, Kind, detect, detect_file
from animdiff.models.files import read_state_dict
from animdiff.models.load import (
    VAE_DTYPE,
    _fail_coverage,
    _folder_config,
    _naming_file,
    _weights_file,
    assign_exact,
    build_on_meta,
    load_folder_module,
)

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_L_PREFIXES = ("conditioner.embedders.0.transformer.text_model.", "conditioner.embedders.0.transformer.")
OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."
# The refiner's only text encoder is OpenCLIP bigG, in the first embedder slot.
REFINER_PREFIX = "conditioner.embedders.0.model."
# SGM's attention layers and both CLIP text towers use 64-wide heads; shapes cannot tell the head count.
HEAD_WIDTH = 64
# size, crop and target size, two numbers each, each embedded with `addition_time_embed_dim` sinusoids
TIME_IDS = 6
# OpenCLIP entries that have no counterpart in transformers' text model and take no part in encoding.
_OPEN_CLIP_EXTRAS = frozenset({"logit_scale", "attn_mask"})
_OPEN_CLIP_LAYER = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}

Tensors = Mapping[str, torch.Tensor]


@dataclass
class SDXLParts:
    """The pieces of an SDXL model animdiff uses; tokenizers and prompt handling live elsewhere."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    text_encoder_2: CLIPTextModelWithProjection
    path: Path
    kind: Kind


def load_sdxl_checkpoint(path: Path, dtype: torch.dtype = torch.float32) -> SDXLParts:
    """An SDXL single-file checkpoint (SGM layout; .ckpt through safe unpickling) or diffusers folder.

    The VAE is always float32: SDXL's VAE overflows to NaN in float16.
    """
    path = Path(path)
    with _naming_file(path):
        if path.is_dir():
            return _load_folder(path, dtype)
        return _load_single_file(path, dtype)


def require_sdxl_checkpoint(path: Path, found: Detected) -> None:
    """Refuse, naming the file, anything that is not an SDXL checkpoint before any weight is built."""
    if found.kind in (Kind.SDXL, Kind.DIFFUSERS_SDXL):
        return
    if found.kind in CHECKPOINT_KINDS:
        raise ModelTypeError(f"{path} is an {found.kind}, not an SDXL checkpoint")
    raise ModelTypeError(f"{path} is a {found.kind}, not an SDXL checkpoint")


# --- single file ---------------------------------------------------------------------------------------


def _load_single_file(path: Path, dtype: torch.dtype) -> SDXLParts:
    sd = read_state_dict(path)
    require_sdxl_checkpoint(path, detect({k: tuple(v.shape) for k, v in sd.items()}))
    if not any(k.startswith(CLIP_L_PREFIXES) for k in sd) and any(k.startswith(REFINER_PREFIX) for k in sd):
        raise ModelTypeError(
            f"{path} is an SDXL refiner checkpoint (one OpenCLIP text encoder, no CLIP ViT-L); "
            "motion modules need an SDXL base-type checkpoint"
        )
    clip_l = clip_l_from_sgm(sd)
    open_clip = open_clip_from_sgm(sd, path)
    text_encoder = _text_encoder(
        CLIPTextModel, text_config(clip_l, "sdxl_text_encoder.json"), clip_l, path, dtype, "CLIP ViT-L"
    )
    te2_config = text_config(open_clip, "sdxl_text_encoder_2.json")
    text_encoder_2 = _text_encoder(
        CLIPTextModelWithProjection, te2_config, open_clip, path, dtype, "OpenCLIP ViT-bigG"
    )
    unet_config = unet_config_from_sgm(sd, pooled_width=te2_config["projection_dim"])
    unet = build_on_meta(
        lambda: UNet2DConditionModel(**unet_config),
        convert.unet_from_ldm(sd, unet_config),
        what="UNet",
        path=path,
        dtype=dtype,
    )
    vae_config = vae_config_from_sgm(sd)
    vae = build_on_meta(
        lambda: AutoencoderKL(**vae_config),
        convert.vae_from_ldm(sd, vae_config),
        what="VAE",
        path=path,
        dtype=VAE_DTYPE,
    )
    return SDXLParts(unet, vae, text_encoder, text_encoder_2, path, Kind.SDXL)


def unet_config_from_sgm(sd: Tensors, *, pooled_width: int) -> dict[str, Any]:
    """SDXL UNet config: SD1.5's shape reading (levels, widths, attention) plus SDXL's own numbers.

    Read from shapes: transformer depth per level (`input_blocks.N.1.transformer_blocks.M`), the
    `label_emb` input width, which is 6 sinusoid embeddings of the size/crop ids plus the pooled
    text embedding of the second encoder (`pooled_width`), hence `addition_time_embed_dim`.
    """
    shared = convert.unet_config_from_ldm(sd)
    config = convert.shipped_config("sdxl_unet.json")
    for key in (
        "block_out_channels",
        "layers_per_block",
        "down_block_types",
        "up_block_types",
        "in_channels",
        "out_channels",
        "cross_attention_dim",
        "use_linear_projection",
    ):
        config[key] = shared[key]
    channels = list(config["block_out_channels"])
    config["norm_num_groups"] = shared["norm_num_groups"]  # the same widths rule as SD1.5's
    keys = [k.removeprefix(UNET_PREFIX) for k in sd if k.startswith(UNET_PREFIX)]
    layers = config["layers_per_block"]
    depths = []
    for level in range(len(channels)):
        first = 1 + level * (layers + 1)
        depth = convert._count(keys, rf"input_blocks\.{first}\.1\.transformer_blocks\.(\d+)\.")
        depths.append(depth or 1)  # a level without attention: diffusers wants a placeholder
    config["transformer_layers_per_block"] = depths
    config["attention_head_dim"] = [max(1, c // HEAD_WIDTH) for c in channels]
    label = sd.get(UNET_PREFIX + "label_emb.0.0.weight")
    if label is None:
        raise ModelFileError("the UNet has no size/crop embedding (model.diffusion_model.label_emb.*)")
    extra = label.shape[1] - pooled_width
    if extra <= 0 or extra % TIME_IDS:
        raise ModelFileError(
            f"the UNet's size/crop embedding takes {label.shape[1]} inputs, which does not fit the "
            f"second text encoder's {pooled_width}-wide pooled output plus {TIME_IDS} size/crop ids"
        )
    config["projection_class_embeddings_input_dim"] = label.shape[1]
    config["addition_time_embed_dim"] = extra // TIME_IDS
    return config


def vae_config_from_sgm(sd: Tensors) -> dict[str, Any]:
    """SD1.5's VAE shape reading with SDXL's latent scale (0.13025) and float16 upcast flag."""
    shared = convert.vae_config_from_ldm(sd)
    config = convert.shipped_config("sdxl_vae.json")
    for key in (
        "block_out_channels",
        "layers_per_block",
        "down_block_types",
        "up_block_types",
        "latent_channels",
    ):
        config[key] = shared[key]
    config["norm_num_groups"] = shared["norm_num_groups"]
    return config


def clip_l_from_sgm(sd: Tensors) -> dict[str, torch.Tensor]:
    """The first encoder's tensors with transformers' names and without the `text_model.` level.

    `position_ids` (in files written by transformers 4.x) is dropped: current transformers
    makes it itself.
    """
    out = {}
    for key, value in sd.items():
        for prefix in CLIP_L_PREFIXES:
            if key.startswith(prefix):
                if not key.endswith("position_ids"):
                    out[key.removeprefix(prefix)] = value
                break
    if not out:
        raise ModelFileError("the checkpoint has no CLIP ViT-L text encoder (conditioner.embedders.0.*)")
    return out


def open_clip_from_sgm(sd: Tensors, path: Path) -> dict[str, torch.Tensor]:
    """OpenCLIP's text tower under transformers' names (no `text_model.` level), every key placed.

    OpenCLIP fuses q, k and v into one `in_proj` (stacked in that order along the output axis) and
    applies `text_projection` as `x @ P`, so transformers' Linear weight is its transpose.
    """
    out: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, value in sd.items():
        if not key.startswith(OPEN_CLIP_PREFIX):
            continue
        name = key.removeprefix(OPEN_CLIP_PREFIX)
        if name in _OPEN_CLIP_EXTRAS:
            continue
        if name == "token_embedding.weight":
            out["embeddings.token_embedding.weight"] = value
        elif name == "positional_embedding":
            out["embeddings.position_embedding.weight"] = value
        elif name == "text_projection":
            out["text_projection.weight"] = value.T.contiguous()
        elif name == "text_projection.weight":  # OpenCLIP configs with a Linear projection
            out["text_projection.weight"] = value
        elif m := re.fullmatch(r"ln_final\.(weight|bias)", name):
            out[f"final_layer_norm.{m[1]}"] = value
        elif m := re.fullmatch(r"transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)", name):
            for projection, chunk in zip("qkv", value.chunk(3, dim=0), strict=True):
                out[f"encoder.layers.{m[1]}.self_attn.{projection}_proj.{m[2]}"] = chunk
        elif (m := re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)", name)) and (
            m[2] in _OPEN_CLIP_LAYER
        ):
            out[f"encoder.layers.{m[1]}.{_OPEN_CLIP_LAYER[m[2]]}.{m[3]}"] = value
        else:
            unexpected.append(key)
    if unexpected:
        _fail_coverage(path, "OpenCLIP text encoder", [], unexpected, [])
    if not out:
        raise ModelFileError(
            "the checkpoint has no OpenCLIP ViT-bigG text encoder (conditioner.embedders.1.*)"
        )
    return out


def text_config(state: Tensors, shipped: str) -> dict[str, Any]:
    """CLIPTextConfig values: the shipped file's, with every size the tensors tell re-read from them."""
    config = convert.shipped_config(shipped)
    tokens = state.get("embeddings.token_embedding.weight")
    positions = state.get("embeddings.position_embedding.weight")
    fc1 = state.get("encoder.layers.0.mlp.fc1.weight")
    if tokens is None or positions is None or fc1 is None:
        raise ModelFileError(f"the text encoder lacks its embeddings or first layer ({shipped})")
    hidden = tokens.shape[1]
    config["vocab_size"] = tokens.shape[0]
    config["hidden_size"] = hidden
    config["max_position_embeddings"] = positions.shape[0]
    config["num_hidden_layers"] = convert._count(list(state), r"encoder\.layers\.(\d+)\.")
    config["intermediate_size"] = fc1.shape[0]
    config["num_attention_heads"] = max(1, hidden // HEAD_WIDTH)
    projection = state.get("text_projection.weight")
    config["projection_dim"] = projection.shape[0] if projection is not None else hidden
    return config


def _text_encoder(
    cls: type[CLIPTextModel] | type[CLIPTextModelWithProjection],
    config: dict[str, Any],
    state: Tensors,
    path: Path,
    dtype: torch.dtype,
    what: str,
) -> Any:
    """Built on the meta device (bigG has 700 M parameters to not initialise), then filled exactly.

    The installed transformers decides whether keys carry a `text_model.` level; `state` has none
    (except `text_projection`, which sits beside the text model). The non-persistent position ids
    are made here, as transformers would.
    """
    with torch.device("meta"):
        model = cls(CLIPTextConfig(**config))
    wants_level = any(k.startswith("text_model.") for k in model.state_dict())

    def name(key: str) -> str:
        return f"text_model.{key}" if wants_level and not key.startswith("text_projection.") else key

    cast = {name(k): (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    assign_exact(model, cast, what=f"{what} text encoder", path=path)
    embeddings = model.get_input_embeddings()
    owner = next(m for m in model.modules() if getattr(m, "token_embedding", None) is embeddings)
    owner.register_buffer(
        "position_ids", torch.arange(config["max_position_embeddings"]).expand((1, -1)), persistent=False
    )
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise ModelFileError(f"{path}: the {what} text encoder left tensors without values: {leftover[:5]}")
    return model.eval().requires_grad_(False)


# --- diffusers folder --------------------------------------------------------------------------------


def _load_folder(path: Path, dtype: torch.dtype) -> SDXLParts:
    require_sdxl_checkpoint(path, detect_file(path))
    unet = load_folder_module(path / "unet", UNet2DConditionModel, what="UNet", dtype=dtype)
    vae = load_folder_module(path / "vae", AutoencoderKL, what="VAE", dtype=VAE_DTYPE)
    encoders = []
    for folder, cls, what in (
        ("text_encoder", CLIPTextModel, "CLIP ViT-L"),
        ("text_encoder_2", CLIPTextModelWithProjection, "OpenCLIP ViT-bigG"),
    ):
        weights = _weights_file(path / folder, "model")
        state = {
            k.removeprefix("text_model."): v
            for k, v in read_state_dict(weights).items()
            if not k.endswith("position_ids")
        }
        known = CLIPTextConfig().to_dict()
        config = {k: v for k, v in _folder_config(path / folder).items() if k in known}
        encoders.append(_text_encoder(cls, config, state, weights, dtype, what))
    return SDXLParts(unet, vae, encoders[0], encoders[1], path, Kind.DIFFUSERS_SDXL)
