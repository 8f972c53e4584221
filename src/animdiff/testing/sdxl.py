"""A tiny SDXL and its motion modules, written the way users' SDXL files are.

The modules are diffusers' and transformers' own classes with SDXL's structure where it shows:
three UNet levels (no attention on the first, transformer depth 1 and 2 on the others, the mid
block as deep as the last level), linear attention projections, the `text_time` size/crop
embedding fed by the second encoder's pooled output, a CLIP-L-shaped first encoder (quick GELU)
and an OpenCLIP-bigG-shaped second one (GELU, wider, with a text projection whose output width
differs from its input so a transposed projection cannot pass unnoticed).

The checkpoint is written in Stability's SGM single-file layout: `model.diffusion_model.*` with LDM
names and `label_emb`, `first_stage_model.*`, `conditioner.embedders.0.transformer.text_model.*`
(transformers 4.x names, `position_ids` included) and `conditioner.embedders.1.model.*` under
OpenCLIP's own names (fused `in_proj`, `ln_1`, `mlp.c_fc`, `text_projection` applied as `x @ P`,
`logit_scale`). The motion modules are the factory's SDXL adapters (the UNet's widths) in the
AnimateDiff-XL layout (a plain pickled dict, as `mm_sdxl_v10_beta.ckpt`), HotShot-XL's published
layout and the reference's re-keyed copy. As in factory.py, norms have `TINY_NORM_GROUPS` groups
and every value is float16-representable, so float16 files reload bit-exactly.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from animdiff.models.convert import shipped_config
from animdiff.models.ldm_names import ldm_unet_name
from animdiff.testing import layouts
from animdiff.testing.factory import (
    TINY_CHANNELS,
    TINY_NORM_GROUPS,
    _round_to_half,
    _trained_looking_layer_norms,
    motion_module_state,
    tiny_motion_adapter,
    tiny_vae_config,
    write_checkpoint,
    write_motion_module,
)

# The factory's SDXL motion adapters are this wide; the UNet must be too for them to fit.
TINY_SDXL_CHANNELS = TINY_CHANNELS[1:]
TINY_SDXL_DEPTHS = (1, 1, 2)  # transformer blocks per level (the first level has no attention)
TINY_CLIP_L_WIDTH = 32
TINY_OPEN_CLIP_WIDTH = 48
TINY_POOLED_WIDTH = 40
TINY_TIME_EMBED = 8
SDXL_SEED = 41
# OpenCLIP's trained temperature, ln(100); stored in real files, used by nothing here.
_LOGIT_SCALE = math.log(100.0)
_LABEL_EMB = {"add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}
_OPEN_CLIP_NAMES = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}

SDXL_FILES = {
    "sdxl": "Stable-diffusion/tiny-sdxl.safetensors",
    "mm-sdxl-beta-ckpt": "AnimateDiff/tiny-mm-sdxl-v10-beta.ckpt",
    "mm-hotshot": "AnimateDiff/tiny-hotshotxl.safetensors",
    "mm-hotshot-rekeyed": "AnimateDiff/tiny-mm-sdxl-hs.safetensors",
    "lora-sdxl-tiny": "Lora/tiny-sdxl-lora.safetensors",
}


@dataclass
class TinySDXL:
    """The diffusers/transformers modules a tiny SDXL checkpoint is written from."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    text_encoder_2: CLIPTextModelWithProjection


def tiny_sdxl_unet_config() -> dict[str, Any]:
    config = shipped_config("sdxl_unet.json")
    config.update(
        block_out_channels=list(TINY_SDXL_CHANNELS),
        transformer_layers_per_block=list(TINY_SDXL_DEPTHS),
        attention_head_dim=[max(1, c // 64) for c in TINY_SDXL_CHANNELS],
        norm_num_groups=TINY_NORM_GROUPS,
        cross_attention_dim=TINY_CLIP_L_WIDTH + TINY_OPEN_CLIP_WIDTH,
        addition_time_embed_dim=TINY_TIME_EMBED,
        projection_class_embeddings_input_dim=6 * TINY_TIME_EMBED + TINY_POOLED_WIDTH,
        sample_size=8,
    )
    return config


def tiny_sdxl_vae_config() -> dict[str, Any]:
    config = tiny_vae_config()
    sdxl = shipped_config("sdxl_vae.json")
    config.update(scaling_factor=sdxl["scaling_factor"], force_upcast=sdxl["force_upcast"])
    return config


def tiny_clip_l_config() -> dict[str, Any]:
    config = shipped_config("sdxl_text_encoder.json")
    config.update(
        hidden_size=TINY_CLIP_L_WIDTH,
        projection_dim=TINY_CLIP_L_WIDTH,
        intermediate_size=2 * TINY_CLIP_L_WIDTH,
        num_hidden_layers=3,
        num_attention_heads=1,
    )
    return config


def tiny_open_clip_config() -> dict[str, Any]:
    config = shipped_config("sdxl_text_encoder_2.json")
    config.update(
        hidden_size=TINY_OPEN_CLIP_WIDTH,
        projection_dim=TINY_POOLED_WIDTH,
        intermediate_size=4 * TINY_OPEN_CLIP_WIDTH,
        num_hidden_layers=3,
        num_attention_heads=1,
    )
    return config


def tiny_sdxl(seed: int = SDXL_SEED) -> TinySDXL:
    """Deterministic for a seed; the reference the tests compare loaded files with."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**tiny_sdxl_unet_config())
    vae = AutoencoderKL(**tiny_sdxl_vae_config())
    te1 = _trained_looking_layer_norms(CLIPTextModel(CLIPTextConfig(**tiny_clip_l_config())))
    te2 = _trained_looking_layer_norms(CLIPTextModelWithProjection(CLIPTextConfig(**tiny_open_clip_config())))
    return TinySDXL(_round_to_half(unet), _round_to_half(vae), _round_to_half(te1), _round_to_half(te2))


# --- the SGM layout ------------------------------------------------------------------------------------


def unet_to_sgm(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """LDM names for the UNet, with SDXL's size/crop embedding as `label_emb.0.{0,2}`."""
    out = {}
    layers, up_types = config["layers_per_block"], config["up_block_types"]
    for key, value in state.items():
        for diffusers, ldm in _LABEL_EMB.items():
            if key.startswith(diffusers + "."):
                name = ldm + key.removeprefix(diffusers)
                break
        else:
            name = ldm_unet_name(key, layers, up_types)
        out["model.diffusion_model." + name] = value
    return out


def clip_l_to_sgm(state: Mapping[str, torch.Tensor], positions: int) -> dict[str, torch.Tensor]:
    prefix = "conditioner.embedders.0.transformer.text_model."
    out = {
        prefix + k.removeprefix("text_model."): v for k, v in state.items() if not k.endswith("position_ids")
    }
    out[prefix + "embeddings.position_ids"] = torch.arange(positions, dtype=torch.int64).unsqueeze(0)
    return out


def open_clip_to_sgm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' CLIPTextModelWithProjection tensors under OpenCLIP's names (the loader's inverse)."""
    prefix = "conditioner.embedders.1.model."
    state = {k.removeprefix("text_model."): v for k, v in state.items() if not k.endswith("position_ids")}
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = value
        elif key == "embeddings.position_embedding.weight":
            out["positional_embedding"] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        elif m := re.fullmatch(r"final_layer_norm\.(weight|bias)", key):
            out[f"ln_final.{m[1]}"] = value
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", key):
            fused.setdefault(f"transformer.resblocks.{m[1]}.attn.in_proj_{m[3]}", {})[m[2]] = value
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key):
            out[f"transformer.resblocks.{m[1]}.{_OPEN_CLIP_NAMES[m[2]]}.{m[3]}"] = value
        else:
            raise KeyError(f"no OpenCLIP name for {key}")
    for name, parts in fused.items():
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    out["logit_scale"] = torch.tensor(_LOGIT_SCALE)
    return {prefix + k: v for k, v in out.items()}


def sdxl_checkpoint_state(sd: TinySDXL) -> dict[str, torch.Tensor]:
    """The full single-file checkpoint contents in the SGM layout."""
    state = {
        **unet_to_sgm(sd.unet.state_dict(), sd.unet.config),
        **layouts.vae_to_ldm(sd.vae.state_dict(), sd.vae.config),
        **clip_l_to_sgm(sd.text_encoder.state_dict(), sd.text_encoder.config.max_position_embeddings),
        **open_clip_to_sgm(sd.text_encoder_2.state_dict()),
    }
    return {k: v.clone().contiguous() for k, v in state.items()}


# --- motion modules and LoRA -----------------------------------------------------------------------------


def tiny_xl_adapter(family: str) -> MotionAdapter:
    """'sdxl-beta' (AnimateDiff-XL, pe 32) or 'hotshot' (pe 24): the factory's adapters at these widths."""
    return tiny_motion_adapter(family)


def hotshot_rekeyed_state(adapter: MotionAdapter | None = None) -> dict[str, torch.Tensor]:
    """The reference's re-keyed HotShot-XL copy: guoyww names, a length-24 `pe`."""
    state = layouts.motion_to_guoyww((adapter or tiny_xl_adapter("hotshot")).state_dict())
    return {k: v.clone().contiguous() for k, v in state.items()}


def sdxl_lora_state(sd: TinySDXL, rank: int = 2, seed: int = 43) -> dict[str, torch.Tensor]:
    """A kohya SDXL LoRA for the tiny SDXL: LDM-named UNet attention layers, both encoders' q/v."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def put(base: str, module: torch.nn.Module) -> None:
        out_features, in_features = module.weight.shape
        down = (torch.randn(rank, in_features, generator=generator) / in_features**0.5).half().float()
        up = (torch.randn(out_features, rank, generator=generator) * 0.1).half().float()
        state[f"{base}.lora_down.weight"], state[f"{base}.lora_up.weight"] = down, up
        state[f"{base}.alpha"] = torch.tensor(float(rank))

    config = sd.unet.config
    for name, module in sd.unet.named_modules():
        if re.fullmatch(r".*\.transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)", name):
            layer = ldm_unet_name(name, config.layers_per_block, config.up_block_types)
            put("lora_unet_" + layer.replace(".", "_"), module)
    for prefix, encoder in (("lora_te1_", sd.text_encoder), ("lora_te2_", sd.text_encoder_2)):
        for name, module in encoder.named_modules():
            if re.fullmatch(r"(?:text_model\.)?encoder\.layers\.\d+\.self_attn\.(q|v)_proj", name):
                put(prefix + "text_model_" + name.removeprefix("text_model.").replace(".", "_"), module)
    return state


def write_tiny_sdxl_files(root: Path, sd: TinySDXL | None = None) -> dict[str, Path]:
    """The tiny SDXL checkpoint, its motion modules in every layout and a LoRA, in an A1111 models folder.

    Returns name -> path (names in `SDXL_FILES`). `tiny-hotshotxl.safetensors` has the same
    contents as the one factory.write_models_dir writes.
    """
    root = Path(root)
    sd = sd or tiny_sdxl()
    paths = {name: root / relative for name, relative in SDXL_FILES.items()}
    write_checkpoint(paths["sdxl"], sdxl_checkpoint_state(sd))
    write_motion_module(paths["mm-sdxl-beta-ckpt"], motion_module_state("sdxl-beta"))
    write_motion_module(paths["mm-hotshot"], motion_module_state("hotshot"))
    write_motion_module(paths["mm-hotshot-rekeyed"], hotshot_rekeyed_state())
    paths["lora-sdxl-tiny"].parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.half().contiguous() for k, v in sdxl_lora_state(sd).items()}, str(paths["lora-sdxl-tiny"])
    )
    return paths


def write_tiny_sdxl_folder(path: Path, sd: TinySDXL | None = None) -> Path:
    """A diffusers SDXL folder as the hub has them (text encoders under transformers 4.x names)."""
    path = Path(path)
    sd = sd or tiny_sdxl()
    path.mkdir(parents=True, exist_ok=True)
    index = {
        "_class_name": "StableDiffusionXLPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    }
    (path / "model_index.json").write_text(json.dumps(index, indent=2))
    sd.unet.save_pretrained(path / "unet")
    sd.vae.save_pretrained(path / "vae")
    for folder, model in (("text_encoder", sd.text_encoder), ("text_encoder_2", sd.text_encoder_2)):
        (path / folder).mkdir(exist_ok=True)
        config = model.config.to_dict()
        config["architectures"] = [type(model).__name__]
        (path / folder / "config.json").write_text(json.dumps(config, indent=2))
        state = {
            (k if k.startswith(("text_model.", "text_projection.")) else f"text_model.{k}"): v.contiguous()
            for k, v in model.state_dict().items()
        }
        save_file(state, str(path / folder / "model.safetensors"))
    return path


# --- diffusers' peer ---------------------------------------------------------------------------------------


def open_clip_tokenizer() -> Any:
    """OpenCLIP's tokenizer as diffusers' SDXL folders have it: CLIP's BPE, padded with "!" (id 0)."""
    from transformers import CLIPTokenizer

    from animdiff.models.tokenizer import clip_tokenizer, find_bpe_file, vocabulary_from_bpe

    base = clip_tokenizer()
    vocab, merges = vocabulary_from_bpe(find_bpe_file())
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        bos_token=base.bos_token,
        eos_token=base.eos_token,
        unk_token=base.unk_token,
        pad_token="!",
        model_max_length=77,
    )


def diffusers_sdxl_pipeline_sharing(
    models: Any, scheduler_config: dict[str, Any], sampler: str = "DDIM", unet: Any = None
) -> Any:
    """diffusers' AnimateDiffSDXLPipeline over the tensors `Animator.load` returned (no second copy).

    Its UNet with motion modules is diffusers' own class built by `build_motion_unet` over the loaded
    tensors, every one of them included: handed the 2-D UNet instead, the pipeline would convert it
    with diffusers 0.42's `from_unet2d`, which leaves the size/pooled-text embedding (`add_embedding`)
    freshly initialised (see tests/test_parity_sdxl.py). `scheduler_config`: the motion module's betas
    (AnimateDiff-XL's differ from SDXL's). `unet`: another UNet to hand the pipeline (the parity
    test gives the 2-D UNet, for diffusers' own conversion).
    """
    from diffusers import AnimateDiffSDXLPipeline

    from animdiff.models.load import build_motion_unet
    from animdiff.models.tokenizer import clip_tokenizer
    from animdiff.sampling.samplers import make_scheduler

    parts = models.parts
    if unet is None:
        unet = build_motion_unet(parts.unet, models.motion.adapter, path=models.motion.path)
    pipe = AnimateDiffSDXLPipeline(
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        text_encoder_2=parts.text_encoder_2,
        tokenizer=clip_tokenizer(),
        tokenizer_2=open_clip_tokenizer(),
        unet=unet,
        motion_adapter=models.motion.adapter,
        scheduler=make_scheduler(sampler, scheduler_config),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
