"""fp8 weight storage (--fp8): float8 Linear/Conv weights, cast per layer, on the tiny models.

The tolerances come from float8_e4m3fn's rounding: 3 mantissa bits, so a weight moves by at most
1/16 of itself (2**-10 absolute below the smallest normal, 2**-6). What is exact is tested exactly:
an fp8 layer computes what the float32 layer computes on the rounded weights, and the fp8 UNet is
the float32 UNet with rounded Linear/Conv weights, bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from animdiff.cli import main
from animdiff.errors import ParamsError
from animdiff.models.fp8 import (
    RELATIVE_ROUNDING,
    SUBNORMAL_ROUNDING,
    Fp8Conv2d,
    Fp8Linear,
    is_fp8,
    store_fp8,
    weight_bytes,
)
from animdiff.models.lora import LoraRequest, apply_loras
from animdiff.pipeline import Animator, RunOptions

FP8 = torch.float8_e4m3fn
CASES = {
    "sd15": ("tiny-sd15.safetensors", "tiny-mm-v2.ckpt"),
    "sdxl": ("tiny-sdxl.safetensors", "tiny-mm-sdxl-v10-beta.ckpt"),
}


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The raw bytes of a tensor, to compare float8 tensors exactly (and NaN-safely)."""
    return tensor.detach().contiguous().view(torch.uint8).clone()


def _cast_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]


def test_layers_compute_with_the_rounded_weight_and_keep_the_rest() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.Flatten(), nn.Linear(8 * 25, 5)
    )
    reference = [m.weight.detach().clone() for m in (model[0], model[3])]
    x = torch.randn(2, 3, 5, 5)
    saved = store_fp8(model)
    conv, norm, linear = model[0], model[1], model[3]
    assert type(conv) is Fp8Conv2d and type(linear) is Fp8Linear and type(norm) is nn.GroupNorm
    assert conv.weight.dtype == linear.weight.dtype == FP8
    assert conv.bias.dtype == linear.bias.dtype == norm.weight.dtype == torch.float32
    assert saved == 3 * (conv.weight.numel() + linear.weight.numel())  # 4 bytes -> 1 per weight
    for before, layer in zip(reference, (conv, linear), strict=True):
        error = (layer.weight.float() - before).abs()
        bound = torch.maximum(before.abs() * RELATIVE_ROUNDING, torch.full_like(before, SUBNORMAL_ROUNDING))
        assert bool((error <= bound).all())
        assert error.max() > 0  # rounded, not kept
    expected = torch.nn.functional.conv2d(x, conv.weight.float(), conv.bias, padding=1)
    assert torch.equal(conv(x), expected)
    hidden = model[2](model[1](conv(x)))
    assert torch.equal(linear(hidden), torch.nn.functional.linear(hidden, linear.weight.float(), linear.bias))
    again = [_bits(m.weight) for m in (conv, linear)]
    assert store_fp8(model) == 0  # converting twice changes nothing
    assert all(torch.equal(a, _bits(m.weight)) for a, m in zip(again, (conv, linear), strict=True))


def test_no_float8_in_torch_is_refused_before_anything_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(torch, "float8_e4m3fn")
    with pytest.raises(ParamsError, match=r"--fp8 needs PyTorch 2\.1 or newer"):
        RunOptions(device="cpu", fp8=True)
    RunOptions(device="cpu")  # without --fp8 nothing asks for float8


@pytest.fixture(scope="module")
def loaded(models_dir: Path, tiny_params):
    """Per family: (params, float32 models, fp8 models), each from an Animator of its own."""
    out = {}
    for family, (checkpoint, module) in CASES.items():
        params = tiny_params(checkpoint=checkpoint, motion_module=module)
        plain = Animator(models_dir, None, RunOptions(device="cpu"))
        fp8 = Animator(models_dir, None, RunOptions(device="cpu", fp8=True))
        out[family] = (params, plain, fp8)
    return out


def _unet_inputs(models, frames: int = 4) -> tuple:
    generator = torch.Generator().manual_seed(7)
    config = models.parts.unet.config
    sample = torch.randn(1, 4, frames, 8, 8, generator=generator)
    context = torch.randn(frames, 77, config.cross_attention_dim, generator=generator)
    vector = None
    if models.unet.takes_vector:
        vector = torch.randn(frames, config.projection_class_embeddings_input_dim, generator=generator)
    return sample, torch.tensor(501), context, vector


@pytest.mark.parametrize("family", list(CASES))
def test_weights_are_float8_shared_and_a_quarter_of_float32(loaded, family: str) -> None:
    params, plain, fp8 = loaded[family]
    ours, theirs = fp8.load(params), plain.load(params)
    layers = _cast_layers(ours.unet.unet)
    assert layers and all(type(m) in (Fp8Linear, Fp8Conv2d) and is_fp8(m.weight) for _, m in layers)
    for model in (ours.parts.unet, ours.motion.adapter):  # the cached models hold the float8 tensors
        assert all(is_fp8(m.weight) for _, m in _cast_layers(model))
    shared = {t.data_ptr() for t in (*ours.parts.unet.parameters(), *ours.motion.adapter.parameters())}
    assert {p.data_ptr() for p in ours.unet.unet.parameters()} <= shared  # no second copy
    floats = [t for t in (*ours.unet.unet.parameters(), *ours.unet.unet.buffers()) if t.is_floating_point()]
    kept = [t for t in floats if not is_fp8(t)]
    assert kept and all(t.dtype == torch.float32 for t in kept)  # biases, norms, positional encodings
    assert ours.unet.dtype == torch.float32  # the compute dtype, not the first weight's
    before, after = weight_bytes(theirs.unet.unet), weight_bytes(ours.unet.unet)
    assert before["fp8"] == 0 and after["fp8"] * 4 == before["other"] - after["other"]
    ratio = (after["fp8"] + after["other"]) / before["other"]
    print(
        f"{family}: UNet with motion modules {before['other']} -> {sum(after.values())} bytes ({ratio:.3f})"
    )
    assert 0.25 < ratio < 0.3  # a quarter, plus the float32 biases and norms of tiny layers


@pytest.mark.numerics
@pytest.mark.parametrize("family", list(CASES))
def test_fp8_unet_is_the_float32_unet_on_rounded_weights(loaded, family: str) -> None:
    params, plain, fp8 = loaded[family]
    models32, models8 = plain.load(params), fp8.load(params)
    sample, t, context, vector = _unet_inputs(models32)
    with torch.inference_mode():
        eps32 = models32.unet(sample, t, context, vector=vector)
        eps8 = models8.unet(sample, t, context, vector=vector)
    # Against float32 as loaded. Each layer's weights move by at most 1/16 of themselves (RMS about
    # 1/16/sqrt(3): round to nearest spreads the error evenly over half an ulp), independently, so
    # each cast layer a signal crosses adds that relative error in quadrature; the tiny UNets' main
    # path crosses about a dozen, hence 2/16 = 1/16/sqrt(3)*sqrt(12) as the bound. Measured: 0.078
    # (SD1.5) and 0.084 (SDXL).
    relative = ((eps8 - eps32).norm() / eps32.norm()).item()
    print(f"{family}: relative RMS difference of one UNet call, fp8 vs float32: {relative:.4f}")
    assert 0 < relative < 2 * RELATIVE_ROUNDING
    # Exactly: the float32 UNet whose Linear/Conv weights are rounded to float8 and back.
    rounded = Animator(plain.store.root, None, RunOptions(device="cpu")).load(params)
    with torch.no_grad():
        for _, module in _cast_layers(rounded.unet.unet):
            module.weight.data = module.weight.data.to(FP8).float()
    with torch.inference_mode():
        eps_rounded = rounded.unet(sample, t, context, vector=vector)
    assert torch.equal(eps8, eps_rounded)


def test_lora_merges_into_float8_weights_and_restores_them_exactly(loaded, models_dir: Path) -> None:
    """As A1111 with FP8 weight on: the LoRA delta is added in float32 and the sum stored as float8;
    the job's end puts back the float8 weights it saved, byte for byte."""
    params, _, fp8 = loaded["sd15"]
    models = fp8.load(params)
    weights = {n: m.weight for n, m in _cast_layers(models.unet.unet)}
    before = {n: _bits(w) for n, w in weights.items()}
    request = LoraRequest(models_dir / "Lora" / "tiny-style.safetensors", unet_weight=0.8, te_weight=0.8)
    with apply_loras(models.unet, models.parts.text_encoder, [request]):
        changed = [n for n, w in weights.items() if not torch.equal(_bits(w), before[n])]
        assert changed and all(is_fp8(w) for w in weights.values())
    assert all(torch.equal(_bits(w), before[n]) for n, w in weights.items())


def test_lora_jobs_with_fp8_leave_the_next_job_unchanged(loaded, tiny_params) -> None:
    _, _, fp8 = loaded["sd15"]
    plain_params = tiny_params(steps=2)
    first = fp8.run(plain_params, write=False)
    with_lora = fp8.run(tiny_params(steps=2, prompt="a cat <lora:tiny-style:0.8>"), write=False)
    again = fp8.run(plain_params, write=False)
    assert not torch.equal(with_lora.latents, first.latents)
    assert torch.equal(again.latents, first.latents)


def test_cli_generates_with_fp8(models_dir: Path, tmp_path: Path, capsys) -> None:
    argv = ["generate", "a corgi", "--models-dir", str(models_dir), "--out", str(tmp_path)]
    argv += ["--checkpoint", "tiny-sdxl.safetensors", "--motion-module", "tiny-mm-sdxl-v10-beta.ckpt"]
    argv += ["--width", "64", "--height", "64", "--steps", "2", "--frames", "8", "--context", "8"]
    argv += ["--seed", "3", "--format", "gif", "--device", "cpu", "--quiet", "--fp8"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    gif = dict(line.split(": ", 1) for line in lines[1:])["gif"]
    assert Image.open(gif).n_frames == 8


def test_real_size_weights_take_a_quarter_of_float32_and_half_of_float16() -> None:
    """At the published SD1.5 and SDXL sizes (on `meta`: shapes only), as the README states."""
    from diffusers import MotionAdapter, UNet2DConditionModel

    from animdiff.models.convert import shipped_config
    from animdiff.testing.real_size import real_motion_config, real_sdxl_motion_config

    sizes = {}
    for name, unet_config, motion_config in (
        ("sd15", shipped_config("sd15_unet.json"), real_motion_config()),
        ("sdxl", shipped_config("sdxl_unet.json"), real_sdxl_motion_config()),
    ):
        for dtype in (torch.float32, torch.float16):
            with torch.device("meta"):
                models = [UNet2DConditionModel(**unet_config), MotionAdapter(**motion_config)]
            before = after = 0
            for model in models:
                for tensor in (*model.parameters(), *model.buffers()):
                    tensor.data = tensor.data.to(dtype)
                before += weight_bytes(model)["other"]
                store_fp8(model)
                after += sum(weight_bytes(model).values())
            sizes[name, dtype] = (before / 2**20, after / 2**20)
            assert after / before == pytest.approx(0.25 if dtype == torch.float32 else 0.5, abs=0.002)
    assert sizes["sdxl", torch.float16] == pytest.approx((5349.35, 2676.75), abs=0.01)  # MiB, UNet + motion
    assert sizes["sd15", torch.float32] == pytest.approx((5009.97, 1256.63), abs=0.01)
