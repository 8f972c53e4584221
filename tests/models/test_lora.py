"""LoRAs merged into the cached models: exact deltas, exact restore, every key accounted for."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from animdiff.errors import LoraError
from animdiff.models import lora as lora_module
from animdiff.models.files import read_state_dict
from animdiff.models.load import build_motion_unet, load_checkpoint, load_motion_module
from animdiff.models.lora import LoraRequest, apply_loras, read_lora
from animdiff.models.motion_unet import MotionUNet
from animdiff.testing.lora import kohya_lora_state

# Every test here claims an exact merge or restore (or one float32 rounding of it).
pytestmark = pytest.mark.numerics

# A merged weight is W + scale * up @ down in float32: a few roundings of a rank-4 sum, ~1e-7
# relative whatever the kernels; nothing downstream amplifies it.
TOL = {"rtol": 1e-5, "atol": 1e-6}
Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
PROJ_IN = "down_blocks.0.attentions.0.proj_in"
TE_Q = "encoder.layers.0.self_attn.q_proj"
MOTION_Q = "down_blocks.1.motion_modules.0.transformer_blocks.0.attn2.to_out.0"
MID_MOTION_K = "mid_block.motion_modules.0.transformer_blocks.0.attn1.to_k"


@dataclass
class Models:
    parts: object
    v2: object
    v3: object
    unet_v2: torch.nn.Module
    unet_v3: torch.nn.Module


@pytest.fixture(scope="module")
def models(models_dir: Path) -> Models:
    parts = load_checkpoint(models_dir / "Stable-diffusion" / "tiny-sd15.safetensors")
    v2 = load_motion_module(models_dir / "AnimateDiff" / "tiny-mm-v2.ckpt")
    v3 = load_motion_module(models_dir / "AnimateDiff" / "tiny-mm-v3.safetensors")
    return Models(
        parts,
        v2,
        v3,
        build_motion_unet(parts.unet, v2.adapter, path=v2.path),
        build_motion_unet(parts.unet, v3.adapter, path=v3.path),
    )


def lora_path(models_dir: Path, name: str) -> Path:
    folder = "AnimateDiff" if name.startswith("v2_lora") else "Lora"
    return models_dir / folder / name


def snapshot(*modules: torch.nn.Module) -> list[dict[str, torch.Tensor]]:
    return [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]


def assert_unchanged(saved: list[dict[str, torch.Tensor]], *modules: torch.nn.Module) -> None:
    for before, module in zip(saved, modules, strict=True):
        after = module.state_dict()
        assert set(after) == set(before)
        for key, value in before.items():
            assert torch.equal(after[key], value), key


def all_models(models: Models) -> tuple[torch.nn.Module, ...]:
    return (
        models.unet_v2,
        models.unet_v3,
        models.parts.unet,
        models.parts.text_encoder,
        models.v2.adapter,
        models.v3.adapter,
    )


def weight(model: torch.nn.Module, name: str) -> torch.Tensor:
    return model.get_submodule(name).weight.detach().clone()


def kohya_delta(state: dict[str, torch.Tensor], base: str, shape: torch.Size) -> torch.Tensor:
    down = state[f"{base}.lora_down.weight"].float()
    up = state[f"{base}.lora_up.weight"].float()
    scale = state[f"{base}.alpha"].float().item() / down.shape[0]
    return (scale * (up.flatten(1) @ down.flatten(1))).reshape(shape)


def original_delta(state: dict[str, torch.Tensor], prefix: str, shape: torch.Size) -> torch.Tensor:
    return (state[f"{prefix}.up.weight"].float() @ state[f"{prefix}.down.weight"].float()).reshape(shape)


# --- kohya LoRAs ------------------------------------------------------------------------------------


def test_kohya_lora_adds_weight_times_alpha_over_rank_times_up_down(models_dir: Path, models: Models) -> None:
    unet, te = models.unet_v2, models.parts.text_encoder
    path = lora_path(models_dir, "tiny-style.safetensors")
    state = read_state_dict(path)
    saved = snapshot(unet, te)
    before = {n: weight(unet, n) for n in (Q, PROJ_IN)} | {TE_Q: weight(te, TE_Q)}
    with apply_loras(unet, te, [LoraRequest(path, 0.7, 0.7)]) as applied:
        for name in (Q, PROJ_IN):
            expected = before[name] + 0.7 * kohya_delta(
                state, "lora_unet_" + name.replace(".", "_"), before[name].shape
            )
            torch.testing.assert_close(weight(unet, name), expected, **TOL)
        expected = before[TE_Q] + 0.7 * kohya_delta(
            state, "lora_te_text_model_" + TE_Q.replace(".", "_"), before[TE_Q].shape
        )
        torch.testing.assert_close(weight(te, TE_Q), expected, **TOL)
        assert len(applied.changed) == len(state) // 3
        changed = {c.split(":", 1)[1] + ".weight" for c in applied.changed}
        for module, old in zip((unet, te), saved, strict=True):
            for key, value in module.state_dict().items():
                assert torch.equal(value, old[key]) != (key in changed), key
    assert_unchanged(saved, unet, te)


def test_weight_zero_leaves_the_model_bit_identical(models_dir: Path, models: Models) -> None:
    saved = snapshot(*all_models(models))
    path = lora_path(models_dir, "tiny-style.safetensors")
    applied = apply_loras(models.unet_v2, models.parts.text_encoder, [LoraRequest(path, 0.0, 0.0)])
    assert applied.changed == []
    assert_unchanged(saved, *all_models(models))


def test_two_loras_add_up(models_dir: Path, models: Models) -> None:
    unet, te = models.unet_v2, models.parts.text_encoder
    a = LoraRequest(lora_path(models_dir, "tiny-style.safetensors"), 1.0, 1.0)
    b = LoraRequest(lora_path(models_dir, "tiny-detail.safetensors"), 1.0, 1.0)
    base = snapshot(unet, te)

    def after(requests: list[LoraRequest]) -> list[dict[str, torch.Tensor]]:
        with apply_loras(unet, te, requests):
            return snapshot(unet, te)

    only_a, only_b, both = after([a]), after([b]), after([a, b])
    for k in range(2):
        for key, original in base[k].items():
            summed = original + (only_a[k][key] - original) + (only_b[k][key] - original)
            torch.testing.assert_close(both[k][key], summed, **TOL)
    assert_unchanged(base, unet, te)


def test_text_and_unet_weights_act_separately(models_dir: Path, models: Models) -> None:
    unet, te = models.unet_v2, models.parts.text_encoder
    path = lora_path(models_dir, "tiny-style.safetensors")
    saved_unet, saved_te = snapshot(unet, te)
    with apply_loras(unet, te, [LoraRequest(path, unet_weight=1.0, te_weight=0.0)]):
        assert_unchanged([saved_te], te)
        assert not torch.equal(weight(unet, Q), saved_unet[Q + ".weight"])
    with apply_loras(unet, te, [LoraRequest(path, unet_weight=0.0, te_weight=1.0)]):
        assert_unchanged([saved_unet], unet)
        assert not torch.equal(weight(te, TE_Q), saved_te[TE_Q + ".weight"])
    assert_unchanged([saved_unet, saved_te], unet, te)


def test_ldm_named_keys_reach_the_same_layers(tmp_path: Path, models: Models) -> None:
    unet, te = models.parts.unet, models.parts.text_encoder
    diffusers_named = tmp_path / "diffusers-named.safetensors"
    ldm_named = tmp_path / "ldm-named.safetensors"
    save_file(kohya_lora_state(unet, te, seed=5), str(diffusers_named))
    save_file(kohya_lora_state(unet, te, seed=5, ldm_names=True), str(ldm_named))
    assert any(k.startswith("lora_unet_input_blocks_1_1_") for k in read_state_dict(ldm_named))
    results = []
    for path in (diffusers_named, ldm_named):
        with apply_loras(models.unet_v2, te, [LoraRequest(path, 0.8, 0.8)]) as applied:
            results.append((sorted(applied.changed), snapshot(models.unet_v2, te)))
    assert results[0][0] == results[1][0]
    for first, second in zip(results[0][1], results[1][1], strict=True):
        assert all(torch.equal(first[k], second[k]) for k in first)


def test_locon_3x3_conv_and_2d_lora_on_1x1_conv(tmp_path: Path, models: Models) -> None:
    unet = models.unet_v2
    conv, proj = "down_blocks.0.resnets.0.conv1", "down_blocks.0.attentions.0.proj_out"
    out_c, in_c = weight(unet, conv).shape[:2]
    state = {
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight": torch.randn(2, in_c, 3, 3),
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight": torch.randn(out_c, 2, 1, 1),
        "lora_unet_down_blocks_0_attentions_0_proj_out.lora_down.weight": torch.randn(2, 32),
        "lora_unet_down_blocks_0_attentions_0_proj_out.lora_up.weight": torch.randn(32, 2),
    }
    path = tmp_path / "locon.safetensors"
    save_file(state, str(path))
    before = {n: weight(unet, n) for n in (conv, proj)}
    with apply_loras(unet, None, [LoraRequest(path, 0.5, 1.0)]):
        for name in (conv, proj):
            base = "lora_unet_" + name.replace(".", "_")
            down, up = state[f"{base}.lora_down.weight"], state[f"{base}.lora_up.weight"]
            delta = 0.5 * (up.flatten(1) @ down.flatten(1)).reshape(before[name].shape)  # alpha = rank
            torch.testing.assert_close(weight(unet, name), before[name] + delta, **TOL)


def test_half_precision_weights_get_the_float32_sum_rounded_once(models_dir: Path, models: Models) -> None:
    te = copy.deepcopy(models.parts.text_encoder).half()
    path = lora_path(models_dir, "tiny-style.safetensors")
    state = read_state_dict(path)
    saved = snapshot(te)
    old = weight(te, TE_Q)
    with apply_loras(models.unet_v2, te, [LoraRequest(path, 0.0, 1.0)]):
        delta = kohya_delta(state, "lora_te_text_model_" + TE_Q.replace(".", "_"), old.shape)
        assert torch.equal(weight(te, TE_Q), (old.float() + delta).half())
    assert_unchanged(saved, te)


# --- restoring ----------------------------------------------------------------------------------------


def test_restore_is_bit_exact_everywhere_including_shared_tensors(models_dir: Path, models: Models) -> None:
    saved = snapshot(*all_models(models))
    requests = [
        LoraRequest(lora_path(models_dir, "tiny-style.safetensors"), 0.9, 0.6),
        LoraRequest(lora_path(models_dir, "tiny-detail.safetensors"), -0.4, 1.3),
        LoraRequest(lora_path(models_dir, "v3_sd15_adapter.ckpt"), 1.0, 1.0),
        LoraRequest(lora_path(models_dir, "v2_lora_TinyZoomIn.ckpt"), 0.75, 1.0),
    ]
    applied = apply_loras(models.unet_v2, models.parts.text_encoder, requests)
    # The change shows through the shared tensors of the cached UNet and motion module.
    assert not torch.equal(weight(models.parts.unet, Q), saved[2][Q + ".weight"])
    assert not torch.equal(weight(models.v2.adapter, MOTION_Q), saved[4][MOTION_Q + ".weight"])
    applied.restore()
    assert_unchanged(saved, *all_models(models))
    applied.restore()  # a second restore changes nothing
    assert_unchanged(saved, *all_models(models))


def test_a_file_that_fails_halfway_changes_nothing(tmp_path: Path, models_dir: Path, models: Models) -> None:
    state = read_state_dict(lora_path(models_dir, "tiny-style.safetensors"))
    bases = sorted({k.partition(".")[0] for k in state})
    broken = {b: f"lora_unet_no_such_layer_{i}" for i, b in enumerate(bases[len(bases) // 2 :])}
    bad = {
        broken.get(k.partition(".")[0], k.partition(".")[0]) + "." + k.partition(".")[2]: v
        for k, v in state.items()
    }
    path = tmp_path / "half-broken.safetensors"
    save_file(bad, str(path))
    saved = snapshot(*all_models(models))
    good = LoraRequest(lora_path(models_dir, "tiny-detail.safetensors"), 1.0, 1.0)
    with pytest.raises(LoraError, match=r"half-broken\.safetensors.*match no layer.*lora_unet_no_such_layer"):
        apply_loras(models.unet_v2, models.parts.text_encoder, [good, LoraRequest(path, 1.0, 1.0)])
    assert_unchanged(saved, *all_models(models))


def test_an_error_while_writing_weights_undoes_the_ones_written(
    models_dir: Path, models: Models, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = lora_module.low_rank_delta
    calls = []

    def failing(*args: object) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 20:
            raise RuntimeError("out of memory")
        return real(*args)

    monkeypatch.setattr(lora_module, "low_rank_delta", failing)
    saved = snapshot(*all_models(models))
    with pytest.raises(RuntimeError, match="out of memory"):
        apply_loras(
            models.unet_v2,
            models.parts.text_encoder,
            [LoraRequest(lora_path(models_dir, "tiny-style.safetensors"), 1.0, 1.0)],
        )
    assert len(calls) == 20
    assert_unchanged(saved, *all_models(models))


@pytest.mark.parametrize("where", ["inside", "apply-inside", "restore-inside"])
def test_works_under_inference_mode(models_dir: Path, models: Models, where: str) -> None:
    saved = snapshot(*all_models(models))
    request = LoraRequest(lora_path(models_dir, "tiny-style.safetensors"), 1.0, 1.0)
    with torch.inference_mode(where in ("inside", "apply-inside")):
        applied = apply_loras(models.unet_v2, models.parts.text_encoder, [request])
    assert not torch.equal(weight(models.unet_v2, Q), saved[0][Q + ".weight"])
    with torch.inference_mode(where in ("inside", "restore-inside")):
        applied.restore()
    assert_unchanged(saved, *all_models(models))
    assert not any(p.is_inference() for m in all_models(models) for p in m.parameters())


def test_the_frame_aware_wrapper_is_accepted(models_dir: Path, models: Models) -> None:
    wrapped = MotionUNet(models.unet_v2, models.v2.kind, groupnorm="diffusers")
    saved = snapshot(models.unet_v2)
    path = lora_path(models_dir, "tiny-style.safetensors")
    with apply_loras(wrapped, None, [LoraRequest(path, 1.0, 0.0)]) as applied:
        assert f"unet:{Q}" in applied.changed
        assert any("text-encoder entries not applied" in w for w in applied.warnings)
    assert_unchanged(saved, models.unet_v2)


# --- motion LoRAs and the v3 adapter --------------------------------------------------------------


def test_motion_lora_changes_only_motion_attention(models_dir: Path, models: Models) -> None:
    path = lora_path(models_dir, "v2_lora_TinyZoomIn.ckpt")
    state = read_state_dict(path)
    saved = snapshot(models.unet_v2)
    with apply_loras(models.unet_v2, models.parts.text_encoder, [LoraRequest(path, 0.6, 1.0)]) as applied:
        assert applied.warnings == []
        assert len(applied.changed) == len(state) // 2
        assert all(".motion_modules." in c for c in applied.changed)
        assert any(c.startswith("unet:mid_block.motion_modules.") for c in applied.changed)
        for name, prefix in (
            (
                MOTION_Q,
                "down_blocks.1.motion_modules.0.temporal_transformer.transformer_blocks.0"
                ".attention_blocks.1.processor.to_out_lora",
            ),
            (
                MID_MOTION_K,
                "mid_block.motion_modules.0.temporal_transformer.transformer_blocks.0"
                ".attention_blocks.0.processor.to_k_lora",
            ),
        ):
            old = saved[0][name + ".weight"]
            torch.testing.assert_close(
                weight(models.unet_v2, name), old + 0.6 * original_delta(state, prefix, old.shape), **TOL
            )
        changed = {c.split(":", 1)[1] + ".weight" for c in applied.changed}
        for key, value in models.unet_v2.state_dict().items():
            assert torch.equal(value, saved[0][key]) != (key in changed), key
    assert_unchanged(saved, models.unet_v2)


def test_motion_lora_mid_entries_are_skipped_with_a_warning_without_a_mid_block(
    models_dir: Path, models: Models
) -> None:
    path = lora_path(models_dir, "v2_lora_TinyZoomIn.ckpt")
    mid_entries = sum(k.startswith("mid_block.") for k in read_state_dict(path)) // 2
    total = len(read_state_dict(path)) // 2
    saved = snapshot(models.unet_v3)
    with apply_loras(models.unet_v3, None, [LoraRequest(path, 1.0, 1.0)]) as applied:
        assert len(applied.changed) == total - mid_entries > 0
        assert len(applied.warnings) == 1
        assert "v2_lora_TinyZoomIn.ckpt" in applied.warnings[0] and "mid block" in applied.warnings[0]
    assert_unchanged(saved, models.unet_v3)


def test_converted_diffusers_motion_lora_is_read_like_the_original(
    tmp_path: Path, models_dir: Path, models: Models
) -> None:
    original = lora_path(models_dir, "v2_lora_TinyZoomIn.ckpt")
    converted = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file(
        {
            "unet."
            + k.replace(".temporal_transformer", "")
            .replace(".attention_blocks.0", ".attn1")
            .replace(".attention_blocks.1", ".attn2"): v
            for k, v in read_state_dict(original).items()
        },
        str(converted),
    )
    a = read_lora(original, models.unet_v2)
    b = read_lora(converted, models.unet_v2)
    assert sorted((p.target, p.part) for p in a.patches) == sorted((p.target, p.part) for p in b.patches)
    assert {p.part for p in a.patches} == {"motion"}


def test_v3_domain_adapter_applies_to_the_spatial_attention(models_dir: Path, models: Models) -> None:
    path = lora_path(models_dir, "v3_sd15_adapter.ckpt")
    state = read_state_dict(path)
    saved = snapshot(models.unet_v3)
    with apply_loras(models.unet_v3, models.parts.text_encoder, [LoraRequest(path, 0.5, 1.0)]) as applied:
        assert len(applied.changed) == len(state) // 2
        assert all(".attentions." in c and "motion" not in c for c in applied.changed)
        prefix = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora"
        old = saved[0][Q + ".weight"]
        expected = old + 0.5 * original_delta(state, prefix, old.shape)
        torch.testing.assert_close(weight(models.unet_v3, Q), expected, **TOL)
    assert_unchanged(saved, models.unet_v3)


def test_peft_layout_with_alpha(tmp_path: Path, models: Models) -> None:
    down, up = torch.randn(2, 32), torch.randn(32, 2)
    state = {
        f"unet.{Q}.lora_A.weight": down,
        f"unet.{Q}.lora_B.weight": up,
        f"unet.{Q}.alpha": torch.tensor(1.0),
        f"text_encoder.text_model.{TE_Q}.lora.down.weight": down.clone(),
        f"text_encoder.text_model.{TE_Q}.lora.up.weight": up.clone(),
    }
    path = tmp_path / "peft.safetensors"
    save_file(state, str(path))
    found = {p.target: p for p in read_lora(path, models.unet_v2, models.parts.text_encoder).patches}
    assert found[Q].scale == pytest.approx(0.5) and found[Q].part == "unet"
    assert found[TE_Q].scale == 1.0 and found[TE_Q].part == "text"


# --- errors -------------------------------------------------------------------------------------------


def apply_one(models: Models, path: Path) -> None:
    apply_loras(models.unet_v2, models.parts.text_encoder, [LoraRequest(path, 1.0, 1.0)])


def test_sdxl_lora_on_sd15_is_refused(models_dir: Path, models: Models) -> None:
    with pytest.raises(
        LoraError, match=r"tiny-sdxl-style\.safetensors is an SDXL LoRA; the checkpoint is SD1\.5"
    ):
        apply_one(models, lora_path(models_dir, "tiny-sdxl-style.safetensors"))


@pytest.mark.parametrize(
    ("where", "kind"),
    [
        ("Stable-diffusion/tiny-sd15.safetensors", "SD1.5 checkpoint"),
        ("AnimateDiff/tiny-mm-v2.ckpt", "motion module v2"),
    ],
)
def test_a_model_that_is_not_a_lora_is_refused(
    models_dir: Path, models: Models, where: str, kind: str
) -> None:
    name = where.split("/")[1].replace(".", r"\.")
    with pytest.raises(LoraError, match=rf"{name} is not a LoRA \(detected as: {kind}\)"):
        apply_one(models, models_dir / where)


def test_lycoris_loha_is_refused(tmp_path: Path, models: Models) -> None:
    base = "lora_unet_" + Q.replace(".", "_")
    state = {f"{base}.hada_w1_a": torch.randn(32, 4), f"{base}.hada_w1_b": torch.randn(4, 32)}
    state[f"{base}.alpha"] = torch.tensor(4.0)
    path = tmp_path / "loha.safetensors"
    save_file(state, str(path))
    with pytest.raises(LoraError, match=r"loha\.safetensors: LyCORIS type LoHa \(hada\) is not supported"):
        apply_one(models, path)


def test_shape_mismatch_names_the_key(tmp_path: Path, models: Models) -> None:
    base = "lora_unet_" + Q.replace(".", "_")
    state = {f"{base}.lora_down.weight": torch.randn(4, 48), f"{base}.lora_up.weight": torch.randn(32, 4)}
    path = tmp_path / "wide.safetensors"
    save_file(state, str(path))
    with pytest.raises(
        LoraError, match=rf"wide\.safetensors: LoRA entry {base}\.lora_down\.weight .*does not fit"
    ):
        apply_one(models, path)


def test_missing_file_is_named(tmp_path: Path, models: Models) -> None:
    with pytest.raises(LoraError, match=r"nothing\.safetensors: LoRA file not found"):
        apply_one(models, tmp_path / "nothing.safetensors")
