"""Latent inpainting: the kept region follows the noised source each step (diffusers' convention)."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest
import torch

from animdiff.sampling.img2img import sample_from, strength_timesteps
from animdiff.sampling.inpaint import (
    FILL_LATENT_NOISE,
    FILL_LATENT_NOTHING,
    FILL_ORIGINAL,
    LatentInpaint,
    blend_kept,
    fill_masked,
)
from animdiff.sampling.noise import frame_generators, initial_noise
from animdiff.sampling.samplers import SAMPLER_NAMES, make_scheduler

FRAMES, HEIGHT, WIDTH, STEPS = 3, 32, 32, 8


def _denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return 0.3 * torch.tanh(x) + 0.01 * torch.cos(x * 3) * (float(t) / 1000.0)


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    init = torch.randn((FRAMES, 4, HEIGHT // 8, WIDTH // 8), generator=torch.Generator().manual_seed(5))
    noise = initial_noise(frame_generators(11, FRAMES), HEIGHT, WIDTH)
    mask = torch.zeros(1, 4, HEIGHT // 8, WIDTH // 8)
    mask[..., WIDTH // 16 :] = 1.0  # repaint the right half
    return init, noise, mask


def _run(name: str, strength: float, mask: torch.Tensor) -> torch.Tensor:
    init, noise, _ = _inputs()
    scheduler = make_scheduler(name)
    timesteps = strength_timesteps(scheduler, STEPS, strength).timesteps  # what sample_from will run
    hook = LatentInpaint(init, noise, mask, scheduler, timesteps)
    generators = frame_generators(11, FRAMES)
    return sample_from(
        _denoiser, scheduler, init, noise, STEPS, strength, generators=generators, after_step=hook
    )


def _diffusers_inpaint_loop(name: str, strength: float, mask: torch.Tensor) -> torch.Tensor:
    """StableDiffusionInpaintPipeline with a 4-channel UNet, minus the UNet and the VAE."""
    from diffusers import StableDiffusionInpaintPipeline

    init, noise, _ = _inputs()
    scheduler = make_scheduler(name)
    scheduler.set_timesteps(STEPS)
    fake = SimpleNamespace(scheduler=scheduler)
    timesteps, _ = StableDiffusionInpaintPipeline.get_timesteps(fake, STEPS, strength, "cpu")
    if strength == 1.0:  # is_strength_max: pure noise
        x = noise * scheduler.init_noise_sigma
    else:
        x = scheduler.add_noise(init, noise, timesteps[:1])
    generators = frame_generators(11, FRAMES)
    kwargs = {"generator": generators} if "generator" in inspect.signature(scheduler.step).parameters else {}
    for i, t in enumerate(timesteps):
        eps = _denoiser(scheduler.scale_model_input(x, t), t)
        x = scheduler.step(eps, t, x, return_dict=False, **kwargs)[0]
        proper = init
        if i < len(timesteps) - 1:
            proper = scheduler.add_noise(init, noise, torch.tensor([timesteps[i + 1]]))
        x = (1 - mask) * proper + mask * x
    return x


@pytest.mark.parametrize("name", SAMPLER_NAMES)
@pytest.mark.parametrize("strength", [1.0, 0.75])
def test_matches_diffusers_inpaint_loop(name: str, strength: float) -> None:
    _, _, mask = _inputs()
    assert torch.equal(_run(name, strength, mask), _diffusers_inpaint_loop(name, strength, mask))


@pytest.mark.parametrize("name", ["Euler a", "DPM++ 2M Karras", "DDIM", "Heun"])
def test_kept_region_is_the_source_and_the_rest_is_repainted(name: str) -> None:
    init, _, mask = _inputs()
    out = _run(name, 0.75, mask)
    keep = mask.expand_as(out) == 0
    assert torch.equal(out[keep], init[keep])
    assert not torch.allclose(out[~keep], init[~keep])


def test_empty_mask_keeps_everything_and_full_mask_is_plain_img2img() -> None:
    init, noise, mask = _inputs()
    assert torch.equal(_run("DDIM", 0.75, torch.zeros_like(mask)), init)
    plain = sample_from(_denoiser, make_scheduler("DDIM"), init, noise, STEPS, 0.75)
    assert torch.equal(_run("DDIM", 0.75, torch.ones_like(mask)), plain)


def test_kept_at_noise_levels() -> None:
    init, noise, mask = _inputs()
    scheduler = make_scheduler("DDIM")
    timesteps = strength_timesteps(scheduler, STEPS, 0.5).timesteps
    hook = LatentInpaint(init, noise, mask, scheduler, timesteps)
    abar = scheduler.alphas_cumprod[int(timesteps[1])]
    assert torch.allclose(hook.kept_at(0), abar.sqrt() * init + (1 - abar).sqrt() * noise, atol=1e-6)
    assert hook.kept_at(len(timesteps) - 1) is init


def test_blend_kept_and_fills() -> None:
    init, noise, mask = _inputs()
    x = torch.full_like(init, 7.0)
    out = blend_kept(init, x, mask)
    assert torch.equal(out[..., : WIDTH // 16], init[..., : WIDTH // 16])
    assert torch.all(out[..., WIDTH // 16 :] == 7.0)
    assert fill_masked(init, mask, FILL_ORIGINAL) is init
    nothing = fill_masked(init, mask, FILL_LATENT_NOTHING)
    assert torch.all(nothing[..., WIDTH // 16 :] == 0) and torch.equal(nothing[..., :2], init[..., :2])
    noisy = fill_masked(init, mask, FILL_LATENT_NOISE, noise)
    assert torch.equal(noisy[..., WIDTH // 16 :], noise[..., WIDTH // 16 :])
    with pytest.raises(ValueError, match="needs the noise"):
        fill_masked(init, mask, FILL_LATENT_NOISE)
    with pytest.raises(ValueError, match="unknown masked content"):
        fill_masked(init, mask, "fill")
