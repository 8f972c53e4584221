"""img2img pieces: the reference's latent blend (9.4), denoising strength with diffusers' convention,
and the loop from init latents (strength 1 = text to video bit for bit, strength 0 = the input)."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from animdiff.sampling.img2img import (
    blend_init_latents,
    encode_frames,
    latent_blend_weights,
    noised_init,
    sample_from,
    strength_timesteps,
)
from animdiff.sampling.loop import StepInfo, sample
from animdiff.sampling.noise import frame_generators, initial_noise
from animdiff.sampling.samplers import SAMPLER_NAMES, make_scheduler

FRAMES, HEIGHT, WIDTH = 3, 32, 40


def _denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in for the UNet that depends on both its inputs."""
    return 0.3 * torch.tanh(x) + 0.01 * torch.cos(x * 3) * (float(t) / 1000.0)


def _noise(seed: int = 7) -> tuple[torch.Tensor, list[torch.Generator]]:
    generators = frame_generators(seed, FRAMES)
    return initial_noise(generators, HEIGHT, WIDTH), generators


def _init() -> torch.Tensor:
    return torch.randn((FRAMES, 4, HEIGHT // 8, WIDTH // 8), generator=torch.Generator().manual_seed(99))


def _diffusers_get_timesteps(scheduler, steps: int, strength: float):
    from diffusers import AnimateDiffVideoToVideoPipeline

    scheduler.set_timesteps(steps)
    fake = SimpleNamespace(scheduler=scheduler)
    return AnimateDiffVideoToVideoPipeline.get_timesteps(fake, steps, scheduler.timesteps, strength, "cpu")


# --- latent blend -------------------------------------------------------------------------------


def test_blend_weights_power_1_scale_32_reference_example() -> None:
    alpha, beta = latent_blend_weights(16, 1, 32)
    assert beta is None
    assert alpha[0] == 1.0
    assert alpha[1] == pytest.approx(0.969, abs=5e-4)
    assert alpha[15] == pytest.approx(0.531, abs=5e-4)
    assert torch.equal(alpha, torch.tensor([1 - i / 32 for i in range(16)], dtype=torch.float64))


def test_blend_weights_power_2_reference_example() -> None:
    alpha, _ = latent_blend_weights(16, 2, 32)
    assert alpha[5] == pytest.approx(0.219, abs=5e-4)
    assert alpha[5] > 0
    assert torch.all(alpha[6:] == 0)


def test_blend_weights_with_last_frame_at_defaults_have_no_noise() -> None:
    alpha, beta = latent_blend_weights(16, last=True)
    assert beta is not None
    noise_weight = 1 - alpha - beta
    assert torch.allclose(noise_weight, torch.zeros(16, dtype=torch.float64), atol=1e-12)
    assert (alpha[0], alpha[-1], beta[0], beta[-1]) == (1.0, 0.0, 0.0, 1.0)
    # Mirror images of each other, and every frame in between a first/last mix.
    assert torch.allclose(alpha, beta.flip(0))
    assert torch.all(alpha[1:-1] > 0) and torch.all(beta[1:-1] > 0)


def test_blend_weights_last_frame_normalises_only_where_the_sum_exceeds_one() -> None:
    def curve(power: float, scale: float, indices: range) -> list[float]:
        return [max(0.0, 1 - i**power / scale) for i in indices]

    for power, scale, power_last, scale_last in [(2, 32, 2, 32), (1, 20, 2, 32), (1, 64, 0.5, 8)]:
        alpha, beta = latent_blend_weights(
            16, power, scale, last=True, latent_power_last=power_last, latent_scale_last=scale_last
        )
        assert beta is not None
        raw_a = curve(power, scale, range(16))
        raw_b = curve(power_last, scale_last, range(15, -1, -1))
        for i in range(1, 15):
            total = raw_a[i] + raw_b[i]
            expected = [raw_a[i] / total, raw_b[i] / total] if total > 1 else [raw_a[i], raw_b[i]]
            assert [alpha[i].item(), beta[i].item()] == pytest.approx(expected, abs=1e-12)
        assert (alpha[0], alpha[-1], beta[0], beta[-1]) == (1.0, 0.0, 0.0, 1.0)
    # Both curves at power 2, scale 32 reach 0 before the middle, which is then pure noise.
    alpha, beta = latent_blend_weights(16, 2, 32, last=True, latent_power_last=2, latent_scale_last=32)
    assert beta is not None
    assert torch.all((1 - alpha - beta)[6:10] == 1)


def test_blend_weights_single_frame_follows_the_reference_order() -> None:
    alpha, beta = latent_blend_weights(1, last=True)
    assert beta is not None
    assert (alpha.item(), beta.item()) == (0.0, 1.0)
    assert latent_blend_weights(1)[0].tolist() == [1.0]


def test_blend_weights_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="video_length"):
        latent_blend_weights(0)
    with pytest.raises(ValueError, match="latent_scale"):
        latent_blend_weights(4, 1, 0)


def test_blend_init_latents_formula_and_broadcast() -> None:
    init = torch.randn(1, 4, 2, 3)
    last = torch.randn(1, 4, 2, 3)
    noise = torch.randn(5, 4, 2, 3)
    alpha, beta = latent_blend_weights(5, last=True, latent_scale=4, latent_scale_last=4)
    out = blend_init_latents(init, noise, alpha, beta, last)
    for i in range(5):
        a, b = float(alpha[i]), float(beta[i])
        expected = init[0] * a + last[0] * b + noise[i] * (1 - a - b)
        assert torch.allclose(out[i], expected, atol=1e-6)
    assert torch.equal(out[0], init[0])  # alpha 1, beta 0
    assert torch.equal(out[-1], last[0])  # alpha 0, beta 1
    only_init = blend_init_latents(init.expand(5, -1, -1, -1), noise, latent_blend_weights(5)[0])
    assert torch.equal(only_init[0], init[0])
    with pytest.raises(ValueError, match="alpha"):
        blend_init_latents(init, noise, torch.ones(4))
    with pytest.raises(ValueError, match="together"):
        blend_init_latents(init, noise, alpha, beta)


# --- strength -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLER_NAMES)
@pytest.mark.parametrize("steps", [1, 7, 20])
def test_strength_timesteps_match_diffusers_get_timesteps(name: str, steps: int) -> None:
    for strength in (1.0, 0.999, 0.75, 0.5, 0.3, 0.05):
        expected, expected_steps = _diffusers_get_timesteps(make_scheduler(name), steps, strength)
        ours = strength_timesteps(make_scheduler(name), steps, strength)
        if int(steps * strength) == 0:
            assert not ours.runs and ours.steps == 0
            continue
        assert ours.steps == expected_steps
        assert torch.equal(ours.timesteps, expected), (name, steps, strength)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_full_strength_is_the_whole_schedule_and_zero_is_nothing(name: str) -> None:
    scheduler = make_scheduler(name)
    full = strength_timesteps(scheduler, 12, 1.0)
    assert full.full and full.begin_index == 0 and full.steps == 12
    assert torch.equal(full.timesteps, scheduler.timesteps)
    none = strength_timesteps(make_scheduler(name), 12, 0.0)
    assert not none.runs and not none.full and len(none.timesteps) == 0
    with pytest.raises(ValueError, match="strength"):
        strength_timesteps(make_scheduler(name), 12, 1.5)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_noised_init_matches_diffusers_add_noise(name: str) -> None:
    """The v2v pipeline's prepare_latents: add_noise at timesteps[:1], no begin index set."""
    init, (noise, _) = _init(), _noise()
    for strength in (0.8, 0.5):
        reference = make_scheduler(name)
        timesteps, _ = _diffusers_get_timesteps(reference, 10, strength)
        expected = reference.add_noise(init, noise, timesteps[:1])
        scheduler = make_scheduler(name)
        schedule = strength_timesteps(scheduler, 10, strength)
        ours = noised_init(init, noise, scheduler, schedule.timesteps[0])
        assert torch.equal(ours, expected), (name, strength)


def test_noised_init_forms() -> None:
    """k-schedulers add sigma * noise; the others are variance preserving."""
    init, (noise, _) = _init(), _noise()
    euler = make_scheduler("Euler")
    schedule = strength_timesteps(euler, 10, 0.5)
    sigma = euler.sigmas[schedule.begin_index]
    assert torch.allclose(noised_init(init, noise, euler, schedule.timesteps[0]), init + sigma * noise)
    ddim = make_scheduler("DDIM")
    schedule = strength_timesteps(ddim, 10, 0.5)
    abar = ddim.alphas_cumprod[int(schedule.timesteps[0])]
    expected = abar.sqrt() * init + (1 - abar).sqrt() * noise
    assert torch.allclose(noised_init(init, noise, ddim, schedule.timesteps[0]), expected, atol=1e-6)
    assert noised_init(init, noise, ddim, None) is init


# --- the loop -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_strength_1_equals_text_to_video_bit_for_bit(name: str) -> None:
    noise, generators = _noise()
    expected = sample(_denoiser, make_scheduler(name), noise, 6, generators=generators)
    noise, generators = _noise()
    ours = sample_from(_denoiser, make_scheduler(name), _init(), noise, 6, 1.0, generators=generators)
    assert torch.equal(ours, expected)
    noise, generators = _noise()
    no_init = sample_from(_denoiser, make_scheduler(name), None, noise, 6, generators=generators)
    assert torch.equal(no_init, expected)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_strength_0_returns_the_input(name: str) -> None:
    init, (noise, generators) = _init(), _noise()
    calls: list[int] = []

    def counting(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return _denoiser(x, t)

    out = sample_from(counting, make_scheduler(name), init, noise, 8, 0.0, generators=generators)
    assert out is init and not calls
    # 8 steps at strength 0.1 round down to no step either.
    assert sample_from(counting, make_scheduler(name), init, noise, 8, 0.1) is init and not calls


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_partial_strength_matches_diffusers_v2v_loop(name: str) -> None:
    """The v2v pipeline's steps 3-9 without the UNet: get_timesteps, add_noise, then its loop."""
    init = _init()
    steps, strength = 10, 0.6
    noise, generators = _noise()
    reference = make_scheduler(name)
    timesteps, _ = _diffusers_get_timesteps(reference, steps, strength)
    x = reference.add_noise(init, noise, timesteps[:1])
    kwargs = {"generator": generators} if "generator" in inspect.signature(reference.step).parameters else {}
    for t in timesteps:
        eps = _denoiser(reference.scale_model_input(x, t), t)
        x = reference.step(eps, t, x, return_dict=False, **kwargs)[0]
    noise, generators = _noise()
    seen: list[StepInfo] = []
    ours = sample_from(
        _denoiser,
        make_scheduler(name),
        init,
        noise,
        steps,
        strength,
        generators=generators,
        callback=seen.append,
    )
    assert torch.equal(ours, x)
    assert [info.step for info in seen] == list(range(len(timesteps)))
    assert {info.total for info in seen} == {len(timesteps)}


def test_full_strength_with_init_trace_option_is_diffusers_add_noise() -> None:
    init, (noise, _) = _init(), _noise()
    reference = make_scheduler("DDIM")
    timesteps, _ = _diffusers_get_timesteps(reference, 5, 1.0)
    x = reference.add_noise(init, noise, timesteps[:1])
    for t in timesteps:
        x = reference.step(_denoiser(reference.scale_model_input(x, t), t), t, x, return_dict=False)[0]
    ours = sample_from(
        _denoiser, make_scheduler("DDIM"), init, noise, 5, 1.0, noise_init_at_full_strength=True
    )
    assert torch.equal(ours, x)


def test_after_step_hook_replaces_the_latents() -> None:
    init, (noise, _) = _init(), _noise()
    seen: list[int] = []

    def hook(i: int, x: torch.Tensor) -> torch.Tensor:
        seen.append(i)
        return torch.zeros_like(x) if i == 3 else x

    out = sample_from(_denoiser, make_scheduler("DDIM"), init, noise, 8, 0.5, after_step=hook)
    assert seen == [0, 1, 2, 3]
    assert torch.equal(out, torch.zeros_like(out))
    with pytest.raises(ValueError, match="init latents"):
        sample_from(_denoiser, make_scheduler("DDIM"), None, noise, 8, 0.5)


# --- VAE encoding ---------------------------------------------------------------------------------


def test_encode_frames_chunks_and_scaling() -> None:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
    ).eval()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (16, 24, 3), dtype=np.uint8) for _ in range(5)]
    out = encode_frames(vae, frames, chunk=2)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    assert out.shape == (5, 4, 16 // factor, 24 // factor) and out.dtype == torch.float32
    pixels = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        expected = vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.equal(encode_frames(vae, frames, chunk=2), out)  # the mean: deterministic
    sampled = encode_frames(vae, frames, chunk=8, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(sampled, out)
    with pytest.raises(ValueError, match="no frames"):
        encode_frames(vae, [])
