"""File kinds are told from keys and shapes, never from names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from animdiff.models.detect import Kind, detect, detect_file
from animdiff.testing.factory import motion_module_state

EXPECTED = {
    "Stable-diffusion/tiny-sd15.safetensors": (Kind.SD15, None),
    "AnimateDiff/tiny-mm-v1.ckpt": (Kind.MM_V1, 24),
    "AnimateDiff/tiny-mm-v2.ckpt": (Kind.MM_V2, 32),
    "AnimateDiff/tiny-mm-v3.safetensors": (Kind.MM_V3, 32),
    "AnimateDiff/tiny-mm-sdxl-beta.safetensors": (Kind.MM_SDXL_BETA, 32),
    "AnimateDiff/tiny-hotshotxl.safetensors": (Kind.MM_HOTSHOT, 24),
    "AnimateDiff/tiny-animatelcm.safetensors": (Kind.MM_ANIMATELCM, 64),
}


@pytest.mark.parametrize(("relative", "expected"), EXPECTED.items())
def test_each_tiny_file_is_detected(
    models_dir: Path, relative: str, expected: tuple[Kind, int | None]
) -> None:
    found = detect_file(models_dir / relative)
    assert (found.kind, found.pe_length) == expected


def shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def test_v3_differs_from_v1_only_by_pe_length() -> None:
    v1, v3 = motion_module_state("v1"), motion_module_state("v3")
    assert set(v1) == set(v3)
    assert detect(shapes(v1)).kind is Kind.MM_V1
    assert detect(shapes(v3)).kind is Kind.MM_V3


def test_motion_module_layouts_use_the_published_key_names() -> None:
    v2 = motion_module_state("v2")
    assert "mid_block.motion_modules.0.temporal_transformer.proj_in.weight" in v2
    assert (
        "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe"
        in v2
    )
    assert "down_blocks.3.motion_modules.1.temporal_transformer.transformer_blocks.0.ff_norm.weight" in v2
    hotshot = motion_module_state("hotshot")
    assert any(k.endswith("pos_encoder.positional_encoding") for k in hotshot)
    assert not any("temporal_transformer" in k for k in hotshot)
    assert not any("pos_encoder" in k for k in motion_module_state("animatelcm"))


def test_kohya_lora_is_not_mistaken_for_animatelcm() -> None:
    # The reference's detector calls this AnimateLCM: it has `mid_block` and no positional encoding.
    lora = {
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight": (4, 1280),
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight": (1280, 4),
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q.alpha": (),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (4, 768),
    }
    assert detect(lora).kind is Kind.LORA_SD15


def test_sdxl_lora_and_checkpoint_kinds() -> None:
    assert (
        detect({"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 768)}).kind
        is Kind.LORA_SDXL
    )
    sdxl = {
        "model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
        "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": (49408, 768),
    }
    assert detect(sdxl).kind is Kind.SDXL
    inpaint = {
        "model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3),
        "cond_stage_model.transformer.x": (1,),
    }
    assert detect(inpaint).kind is Kind.SD15_INPAINT


def test_motion_lora_detected() -> None:
    key = (
        "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0."
        "attention_blocks.0.processor.to_q_lora.down.weight"
    )
    assert detect({key: (4, 320)}).kind is Kind.MOTION_LORA


def test_unknown_and_vae(tmp_path: Path) -> None:
    assert detect({"foo.weight": (3,)}).kind is Kind.UNKNOWN
    assert detect({"encoder.down.0.block.0.norm1.weight": (128,)}).kind is Kind.VAE
    path = tmp_path / "renamed-lora-as-checkpoint.safetensors"
    save_file(
        {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32)}, str(path)
    )
    assert detect_file(path).kind is Kind.LORA_SD15
