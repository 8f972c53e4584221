"""SDXL ControlNets: diffusers folders and diffusers-named single files load, and a unit's
residuals (with SDXL's per-frame added conditioning) equal diffusers' own ControlNet call."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from safetensors.torch import save_file

from animdiff.control_units import ControlNetUnit
from animdiff.errors import ModelTypeError, NotSupportedYetError
from animdiff.models.controlnet import load_controlnet
from animdiff.models.detect import Kind, detect_file
from animdiff.sampling.controlnet import ControlLayer, ControlUnit, Residuals
from animdiff.sampling.guidance import Conditioning, WindowedDenoiser, guided_windows
from animdiff.testing.controlnet import controlnet_file_state, tiny_sdxl_controlnet, write_controlnet
from animdiff.testing.sdxl import TINY_POOLED_WIDTH, tiny_sdxl

FRAMES, TOKENS, SIZE = 4, 5, 8
XL = "tiny-sdxl.safetensors"


def _randomised_zero_convs(model: ControlNetModel) -> ControlNetModel:
    """from_unet leaves the output convolutions at zero, which would hide every residual."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith(("controlnet_down_blocks.", "controlnet_mid_block.")):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return model


@pytest.fixture(scope="module")
def unet() -> UNet2DConditionModel:
    return tiny_sdxl().unet


@pytest.fixture(scope="module")
def reference(unet: UNet2DConditionModel) -> ControlNetModel:
    return _randomised_zero_convs(ControlNetModel.from_unet(unet))


@pytest.fixture(scope="module")
def files(reference: ControlNetModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("xl-controlnets")
    single = root / "diffusers_xl_canny_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(single))
    folder = root / "controlnet-canny-sdxl-tiny"
    reference.save_pretrained(folder)
    return {"file": single, "folder": folder}


def test_sdxl_controlnets_load_to_the_same_tensors(files, reference) -> None:
    for path in files.values():
        loaded = load_controlnet(path, pooled_width=TINY_POOLED_WIDTH)
        assert loaded.kind is Kind.CONTROLNET_SDXL
        got, want = loaded.model.state_dict(), reference.state_dict()
        assert set(got) == set(want)
        for key, value in want.items():
            assert torch.equal(got[key], value), key
        for key in (
            "block_out_channels",
            "down_block_types",
            "transformer_layers_per_block",
            "attention_head_dim",
            "layers_per_block",
            "cross_attention_dim",
            "use_linear_projection",
            "norm_num_groups",
            "addition_embed_type",
            "addition_time_embed_dim",
            "projection_class_embeddings_input_dim",
            "conditioning_embedding_out_channels",
        ):
            assert list(_listed(loaded.model.config[key])) == list(_listed(reference.config[key])), key


def _listed(value):
    return value if isinstance(value, list | tuple) else [value]


def test_sdxl_controlnets_with_original_names_are_not_supported_yet(tmp_path: Path) -> None:
    path = write_controlnet(tmp_path / "xl-ldm.safetensors", controlnet_file_state(tiny_sdxl_controlnet()))
    assert detect_file(path).kind is Kind.CONTROLNET_SDXL
    with pytest.raises(NotSupportedYetError, match=r"xl-ldm\.safetensors is an SDXL ControlNet"):
        load_controlnet(path)


def _inputs(unet: UNet2DConditionModel) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float64)

    time_ids = torch.tensor([64.0, 64.0, 0.0, 0.0, 64.0, 64.0], dtype=torch.float64)
    features = unet.add_time_proj(time_ids).flatten().to(torch.float64)
    pooled, unpooled = rand(FRAMES, TINY_POOLED_WIDTH), rand(1, TINY_POOLED_WIDTH)
    return {
        "x": rand(FRAMES, 4, SIZE, SIZE),
        "cond": rand(FRAMES, TOKENS, 80),
        "uncond": rand(1, TOKENS, 80),
        "pooled": pooled,
        "unpooled": unpooled,
        "time_ids": time_ids,
        "cond_vector": torch.cat([pooled, features.expand(FRAMES, -1)], dim=1),
        "uncond_vector": torch.cat([unpooled, features[None]], dim=1),
        "hints": torch.rand((FRAMES, 3, 8 * SIZE, 8 * SIZE), generator=generator, dtype=torch.float64),
    }


class _VideoUNet:
    """The UNet on video batches the way the denoiser calls it, with the test's size/crop ids."""

    def __init__(self, unet: UNet2DConditionModel, time_ids: torch.Tensor) -> None:
        self.unet, self.time_ids = unet, time_ids
        self.residuals: list[Residuals | None] = []

    def __call__(self, batch, t, embeddings, residuals=None, vector=None):
        rows = batch.permute(0, 2, 1, 3, 4).flatten(0, 1)
        self.residuals.append(residuals)
        extra = {}
        if residuals is not None:
            extra = {
                "down_block_additional_residuals": tuple(residuals.down),
                "mid_block_additional_residual": residuals.mid,
            }
        added = {
            "text_embeds": vector[:, :TINY_POOLED_WIDTH],
            "time_ids": self.time_ids.expand(rows.shape[0], -1),
        }
        eps = self.unet(rows, t, embeddings, added_cond_kwargs=added, return_dict=False, **extra)[0]
        return eps.unflatten(0, (batch.shape[0], batch.shape[2])).permute(0, 2, 1, 3, 4)


def test_a_window_with_an_sdxl_unit_equals_diffusers_controlnet_and_unet(files, reference, unet) -> None:
    loaded = load_controlnet(files["file"], torch.float64, pooled_width=TINY_POOLED_WIDTH)
    unet64, reference64 = unet.to(torch.float64), reference.to(torch.float64)
    inputs = _inputs(unet64)
    unit = ControlUnit(loaded.model, inputs["hints"], weight=0.7)
    conditioning = Conditioning(
        inputs["cond"],
        inputs["uncond"],
        7.5,
        ControlLayer([unit]),
        cond_vector=inputs["cond_vector"],
        uncond_vector=inputs["uncond_vector"],
    )
    t = torch.tensor(500.0, dtype=torch.float64)
    window = [1, 2]
    with torch.no_grad():
        got = guided_windows(_VideoUNet(unet64, inputs["time_ids"]), inputs["x"], t, [window], conditioning)[
            0
        ]

        rows = torch.tensor(window)
        sample = torch.cat([inputs["x"][rows], inputs["x"][rows]])
        embeddings = torch.cat([inputs["cond"][rows], inputs["uncond"].expand(2, -1, -1)])
        added = {
            "text_embeds": torch.cat([inputs["pooled"][rows], inputs["unpooled"].expand(2, -1)]),
            "time_ids": inputs["time_ids"].expand(4, -1),
        }
        hint = torch.cat([inputs["hints"][rows], inputs["hints"][rows]])
        down, mid = reference64(
            sample, t, embeddings, controlnet_cond=hint, added_cond_kwargs=added, return_dict=False
        )
        eps = unet64(
            sample,
            t,
            embeddings,
            added_cond_kwargs=added,
            down_block_additional_residuals=tuple(d * 0.7 for d in down),
            mid_block_additional_residual=mid * 0.7,
            return_dict=False,
        )[0]
    eps_cond, eps_uncond = eps.chunk(2)
    torch.testing.assert_close(got, eps_uncond + 7.5 * (eps_cond - eps_uncond), rtol=1e-9, atol=1e-9)
    assert loaded.model.add_embedding.linear_1._forward_pre_hooks == {}  # the call left no hook behind


def test_guidance_end_leaves_later_evaluations_unchanged(files, unet) -> None:
    loaded = load_controlnet(files["folder"], torch.float64)
    unet64 = unet.to(torch.float64)
    inputs = _inputs(unet64)
    settings = ControlNetUnit(model="m", guidance_end=0.5)
    unit = ControlUnit(loaded.model, inputs["hints"], applies=lambda step: settings.applies_at(step, 2))

    def denoiser(control: ControlLayer | None) -> tuple[WindowedDenoiser, _VideoUNet]:
        model = _VideoUNet(unet64, inputs["time_ids"])
        conditioning = Conditioning(
            inputs["cond"],
            inputs["uncond"],
            5.0,
            control,
            cond_vector=inputs["cond_vector"],
            uncond_vector=inputs["uncond_vector"],
        )
        return WindowedDenoiser(model, conditioning, lambda step: [list(range(FRAMES))]), model

    t = torch.tensor(300.0, dtype=torch.float64)
    with_unit, model = denoiser(ControlLayer([unit]))
    without, _ = denoiser(None)
    with torch.no_grad():
        first, later = with_unit(inputs["x"], t), with_unit(inputs["x"], t)
        plain = without(inputs["x"], t)
    assert model.residuals[0] is not None and model.residuals[1] is None
    assert not torch.allclose(first, plain)
    assert torch.equal(later, plain)


# --- a job's ControlNets must be of its checkpoint's family -----------------------------------------------


@pytest.fixture(scope="module")
def xl_models(models_dir: Path, files, tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("xl") / "models"
    for folder in ("Stable-diffusion", "AnimateDiff", "ControlNet"):
        shutil.copytree(models_dir / folder, models / folder)
    shutil.copy(files["file"], models / "ControlNet" / files["file"].name)
    return models


@pytest.fixture(scope="module")
def xl_frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("frames")
    for i in range(2):
        Image.new("RGB", (64, 64), (40 * i, 90, 160)).save(root / f"{i}.png")
    return root


@pytest.mark.parametrize(
    ("checkpoint", "module", "controlnet", "message"),
    [
        (
            XL,
            "tiny-mm-sdxl-v10-beta.ckpt",
            "tiny-controlnet-canny",
            "is an SD1.5 ControlNet; it does not fit the SDXL",
        ),
        (
            "tiny-sd15.safetensors",
            "tiny-mm-v2.ckpt",
            "diffusers_xl_canny_tiny",
            "is an SDXL ControlNet; it does not fit the SD1.5",
        ),
    ],
)
def test_controlnets_of_the_other_family_are_refused_naming_both_files(
    xl_models, xl_frames, tiny_params, tmp_path, monkeypatch, checkpoint, module, controlnet, message
) -> None:
    from animdiff.pipeline import Animator, RunOptions

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the mismatch was reported")

    monkeypatch.setattr("animdiff.models.cache.ModelCache.get", refuse)
    monkeypatch.setattr("animdiff.models.cache.ModelCache.controlnets", refuse)
    animator = Animator(xl_models, tmp_path, RunOptions(device="cpu"))
    params = tiny_params(
        checkpoint=checkpoint,
        motion_module=module,
        video_path=str(xl_frames),
        controlnet_units=[ControlNetUnit(model=controlnet, module="none")],
    )
    with pytest.raises(ModelTypeError, match=message) as err:
        animator.prepare(params, False)
    assert checkpoint in str(err.value) and controlnet in str(err.value)


def test_an_sdxl_job_renders_with_an_sdxl_unit(xl_models, xl_frames, tiny_params, tmp_path) -> None:
    """A diffusers-named SDXL ControlNet file in a job on the tiny SDXL checkpoint changes its latents
    (loaded for the checkpoint's pooled text width)."""
    from animdiff.pipeline import Animator, RunOptions

    animator = Animator(xl_models, tmp_path, RunOptions(device="cpu"))
    common = dict(checkpoint=XL, motion_module="tiny-mm-sdxl-v10-beta.ckpt", frames=2, context=2, steps=2)
    unit = ControlNetUnit(model="diffusers_xl_canny_tiny", module="none")
    latents = []
    for units in ([unit], []):
        source = {"video_path": str(xl_frames)} if units else {}
        params = tiny_params(**common, **source, controlnet_units=units)
        job = animator.prepare(params, write=False)
        assert len(job.controlnets) == len(units)
        with torch.inference_mode():
            latents.append(animator.sample_job(job, animator.load_job(job), lambda event: None))
    assert torch.isfinite(latents[0]).all()
    assert (latents[0] - latents[1]).abs().max().item() > 1e-4
