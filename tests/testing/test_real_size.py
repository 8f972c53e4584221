"""The real-size files' layout, checked on the `meta` device: names and shapes, no gigabytes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from animdiff.testing import __main__ as cli
from animdiff.testing.real_size import REAL_FILES, real_size_states


@pytest.fixture(scope="module")
def states() -> dict[str, dict[str, torch.Tensor]]:
    return real_size_states(device="meta")


# Shapes of the published SD1.5 checkpoint (v1-5-pruned-emaonly) and mm_sd_v15_v2.ckpt.
SD15_SHAPES = {
    "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
    "model.diffusion_model.time_embed.0.weight": (1280, 320),
    "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320, 1, 1),
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
    "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
    "model.diffusion_model.input_blocks.7.1.transformer_blocks.0.ff.net.0.proj.weight": (10240, 1280),
    "model.diffusion_model.middle_block.1.proj_out.weight": (1280, 1280, 1, 1),
    "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
    "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.attn1.to_q.weight": (320, 320),
    "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
    "first_stage_model.encoder.conv_in.weight": (128, 3, 3, 3),
    "first_stage_model.decoder.mid.attn_1.q.weight": (512, 512, 1, 1),
    "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight": (128, 256, 1, 1),
    "first_stage_model.quant_conv.weight": (8, 8, 1, 1),
    "first_stage_model.post_quant_conv.weight": (4, 4, 1, 1),
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (49408, 768),
    "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": (77, 768),
    "cond_stage_model.transformer.text_model.embeddings.position_ids": (1, 77),
    "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc1.weight": (3072, 768),
    "cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,),
}
MM = "temporal_transformer"
MM_V2_SHAPES = {
    f"down_blocks.0.motion_modules.0.{MM}.transformer_blocks.0.attention_blocks.0.pos_encoder.pe": (
        1,
        32,
        320,
    ),
    f"mid_block.motion_modules.0.{MM}.transformer_blocks.0.attention_blocks.1.pos_encoder.pe": (1, 32, 1280),
    f"down_blocks.0.motion_modules.0.{MM}.norm.weight": (320,),
    f"down_blocks.0.motion_modules.0.{MM}.proj_in.weight": (320, 320),
    f"down_blocks.0.motion_modules.0.{MM}.transformer_blocks.0.ff.net.0.proj.weight": (2560, 320),
    f"down_blocks.3.motion_modules.1.{MM}.transformer_blocks.0.ff_norm.weight": (1280,),
    f"up_blocks.0.motion_modules.0.{MM}.transformer_blocks.0.attention_blocks.0.to_q.weight": (1280, 1280),
    f"up_blocks.3.motion_modules.2.{MM}.proj_out.weight": (320, 320),
}


def test_checkpoint_has_the_published_key_groups_and_shapes(states) -> None:
    sd = states["sd15"]
    groups = {
        "model.diffusion_model.": 686,
        "first_stage_model.": 248,
        "cond_stage_model.transformer.text_model.": 197,
    }
    for prefix, count in groups.items():
        assert sum(k.startswith(prefix) for k in sd) == count, prefix
    assert len(sd) == sum(groups.values()) + 14  # DDPM buffers and EMA counters
    assert {k: tuple(sd[k].shape) for k in SD15_SHAPES} == SD15_SHAPES


def test_checkpoint_is_the_size_of_a_published_fp16_file(states) -> None:
    """About 2.13 GB in float16 (position_ids stay int64), as the shared fp16 SD1.5 files are."""
    sd = states["sd15"]
    size = sum(t.numel() * (2 if t.is_floating_point() else t.element_size()) for t in sd.values())
    assert abs(size - 2.13e9) < 0.01e9


def test_motion_module_is_v2_at_real_size(states) -> None:
    mm = states["mm-v2"]
    assert len(mm) == 588
    assert {k: tuple(mm[k].shape) for k in MM_V2_SHAPES} == MM_V2_SHAPES
    modules = {k.split(f".{MM}.")[0] for k in mm}
    assert len(modules) == 21  # 4 down blocks x 2, the mid block, 4 up blocks x 3
    assert all(len([k for k in mm if k.startswith(m + ".")]) == 28 for m in modules)
    assert abs(sum(t.numel() * 4 for t in mm.values()) - 1.82e9) < 0.01e9  # float32, as published


def test_files_are_detected_as_what_they_imitate(states) -> None:
    from animdiff.models.detect import Kind, detect

    shapes = {name: {k: tuple(v.shape) for k, v in state.items()} for name, state in states.items()}
    assert detect(shapes["sd15"]).kind == Kind.SD15
    found = detect(shapes["mm-v2"])
    assert (found.kind, found.pe_length) == (Kind.MM_V2, 32)


def test_file_names_look_like_a_models_folder() -> None:
    assert REAL_FILES == {
        "sd15": "Stable-diffusion/realsize-sd15.safetensors",
        "mm-v2": "AnimateDiff/realsize-mm-v2.ckpt",
    }


def test_real_size_option_is_wired(monkeypatch, tmp_path: Path, capsys) -> None:
    from animdiff.testing import real_size

    calls = []

    def fake_write(root: Path, *, reuse: bool, log, sdxl: bool = False) -> dict[str, Path]:
        calls.append((root, reuse, sdxl))
        return {key: root / name for key, name in REAL_FILES.items()}

    monkeypatch.setattr(real_size, "write_real_size_dir", fake_write)
    assert cli.main(["--real-size", str(tmp_path)]) == 0
    assert calls == [(tmp_path, True, False)]
    assert capsys.readouterr().out.split() == list(REAL_FILES.values())
    with pytest.raises(SystemExit):
        cli.main([str(tmp_path), "--real-size", str(tmp_path)])
