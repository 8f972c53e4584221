"""The real-size SDXL files: layout on the `meta` device (no gigabytes), the streamed writer on tiny parts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from animdiff.models.detect import Kind, detect, detect_file
from animdiff.models.sdxl import load_sdxl_checkpoint
from animdiff.testing import __main__ as cli
from animdiff.testing.real_size import (
    REAL_SDXL_FILES,
    real_size_sdxl_states,
    sdxl_parts_filled,
    write_sdxl_checkpoint_streamed,
)
from animdiff.testing.sdxl import (
    tiny_clip_l_config,
    tiny_open_clip_config,
    tiny_sdxl_unet_config,
    tiny_sdxl_vae_config,
)


@pytest.fixture(scope="module")
def states() -> dict[str, dict[str, torch.Tensor]]:
    return real_size_sdxl_states(device="meta")


UNET = "model.diffusion_model."
OPEN_CLIP = "conditioner.embedders.1.model."
# Shapes of the published sd_xl_base_1.0.safetensors (SGM layout).
SDXL_SHAPES = {
    UNET + "input_blocks.0.0.weight": (320, 4, 3, 3),
    UNET + "time_embed.0.weight": (1280, 320),
    UNET + "label_emb.0.0.weight": (1280, 2816),
    UNET + "label_emb.0.2.weight": (1280, 1280),
    UNET + "input_blocks.4.1.proj_in.weight": (640, 640),
    UNET + "input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight": (640, 2048),
    UNET + "input_blocks.8.1.transformer_blocks.9.ff.net.0.proj.weight": (10240, 1280),
    UNET + "middle_block.1.transformer_blocks.9.attn1.to_q.weight": (1280, 1280),
    UNET + "output_blocks.2.2.conv.weight": (1280, 1280, 3, 3),
    UNET + "output_blocks.8.0.skip_connection.weight": (320, 640, 1, 1),
    UNET + "out.2.weight": (4, 320, 3, 3),
    "first_stage_model.decoder.mid.attn_1.q.weight": (512, 512, 1, 1),
    "first_stage_model.quant_conv.weight": (8, 8, 1, 1),
    "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": (49408, 768),
    "conditioner.embedders.0.transformer.text_model.embeddings.position_ids": (1, 77),
    "conditioner.embedders.0.transformer.text_model.encoder.layers.11.mlp.fc1.weight": (3072, 768),
    OPEN_CLIP + "token_embedding.weight": (49408, 1280),
    OPEN_CLIP + "positional_embedding": (77, 1280),
    OPEN_CLIP + "transformer.resblocks.31.attn.in_proj_weight": (3840, 1280),
    OPEN_CLIP + "transformer.resblocks.31.mlp.c_fc.weight": (5120, 1280),
    OPEN_CLIP + "text_projection": (1280, 1280),
    OPEN_CLIP + "ln_final.weight": (1280,),
    OPEN_CLIP + "logit_scale": (),
}
MM = "temporal_transformer"
MM_XL_SHAPES = {
    f"down_blocks.0.motion_modules.0.{MM}.transformer_blocks.0.attention_blocks.0.pos_encoder.pe": (
        1,
        32,
        320,
    ),
    f"down_blocks.2.motion_modules.1.{MM}.transformer_blocks.0.ff.net.0.proj.weight": (10240, 1280),
    f"up_blocks.0.motion_modules.2.{MM}.proj_out.weight": (1280, 1280),
    f"up_blocks.2.motion_modules.0.{MM}.norm.weight": (320,),
}


def test_checkpoint_has_the_published_key_groups_shapes_and_size(states) -> None:
    sd = states["sdxl"]
    groups = {
        UNET: 1680,
        "first_stage_model.": 248,
        "conditioner.embedders.0.transformer.": 197,
        OPEN_CLIP: 390,
    }
    assert {prefix: sum(k.startswith(prefix) for k in sd) for prefix in groups} == groups
    assert len(sd) == sum(groups.values()) == 2515  # as sd_xl_base_1.0.safetensors
    assert {k: tuple(sd[k].shape) for k in SDXL_SHAPES} == SDXL_SHAPES
    assert {t.dtype for t in sd.values()} == {torch.float16, torch.int64}
    size = sum(t.numel() * t.element_size() for t in sd.values())
    assert abs(size - 6.94e9) < 0.01e9  # the published fp16 file: 6.94 GB


def test_motion_module_is_animatediff_xl_at_real_size(states) -> None:
    mm = states["mm-sdxl"]
    assert len(mm) == 420
    assert {k: tuple(mm[k].shape) for k in MM_XL_SHAPES} == MM_XL_SHAPES
    assert not any(k.startswith(("down_blocks.3.", "mid_block.")) for k in mm)
    assert abs(sum(t.numel() * 4 for t in mm.values()) - 0.95e9) < 0.01e9  # float32, as published


def test_files_are_detected_as_what_they_imitate(states) -> None:
    assert detect({k: tuple(v.shape) for k, v in states["sdxl"].items()}).kind == Kind.SDXL
    found = detect({k: tuple(v.shape) for k, v in states["mm-sdxl"].items()})
    assert (found.kind, found.pe_length) == (Kind.MM_SDXL_BETA, 32)


def test_streamed_checkpoint_holds_each_part_exactly_and_loads(tmp_path: Path) -> None:
    """The writer the real size uses, on tiny parts: header offsets, order and dtypes are right when
    every tensor reads back equal to the parts it streamed, and the file loads as an SDXL."""
    configs = {
        "unet": tiny_sdxl_unet_config(),
        "vae": tiny_sdxl_vae_config(),
        "text_encoder": tiny_clip_l_config(),
        "text_encoder_2": tiny_open_clip_config(),
    }
    path = write_sdxl_checkpoint_streamed(tmp_path / "Stable-diffusion" / "x.safetensors", configs, seed=3)
    written = load_file(str(path))
    expected = {k: v for _, state in sdxl_parts_filled(configs, seed=3) for k, v in state.items()}
    assert list(written) and set(written) == set(expected)
    for key, value in expected.items():
        want = value if not value.is_floating_point() else value.half()
        assert written[key].dtype == want.dtype and torch.equal(written[key], want), key
    assert detect_file(path).kind is Kind.SDXL
    parts = load_sdxl_checkpoint(path)
    norm = parts.unet.down_blocks[0].resnets[0].norm1
    assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and not norm.bias.any()
    linear = parts.unet.time_embedding.linear_1
    assert 0 < linear.weight.abs().max() <= 1 / linear.in_features**0.5


def test_sdxl_option_is_wired(monkeypatch, tmp_path: Path, capsys) -> None:
    from animdiff.testing import real_size

    calls = []

    def fake_write(root: Path, *, reuse: bool, log, sdxl: bool = False) -> dict[str, Path]:
        calls.append((root, reuse, sdxl))
        return {key: root / name for key, name in REAL_SDXL_FILES.items()}

    monkeypatch.setattr(real_size, "write_real_size_dir", fake_write)
    assert cli.main(["--real-size", str(tmp_path), "--sdxl"]) == 0
    assert calls == [(tmp_path, True, True)]
    assert capsys.readouterr().out.split() == list(REAL_SDXL_FILES.values())
    with pytest.raises(SystemExit):
        cli.main([str(tmp_path), "--sdxl"])
