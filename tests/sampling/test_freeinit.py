"""FreeInit's filters equal the reference's formulas, element by element; the mixing keeps what it should."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from animdiff.sampling.freeinit import (
    FILTERS,
    low_pass_filter,
    mix_frequencies,
    reinit_noise,
    renoise,
)

SHAPES = [(16, 8, 8), (5, 7, 9), (8, 12, 6), (1, 4, 4), (24, 16, 16)]
STOPS = [(0.25, 0.25), (0.5, 0.1), (0.1, 0.7), (1.0, 1.0), (0.33, 0.66)]


def _formula(method: str, shape: tuple[int, int, int], d_s: float, d_t: float, order: int) -> torch.Tensor:
    """The reference's definition, one element at a time in Python floats."""
    frames, height, width = shape
    out = torch.zeros(shape)
    if d_s == 0 or d_t == 0:
        return out
    reach_t, reach_s = round(frames // 2 * d_t), round((height // 2) * d_s)
    for t, h, w in itertools.product(range(frames), range(height), range(width)):
        d2 = ((d_s / d_t) * (2 * t / frames - 1)) ** 2 + (2 * h / height - 1) ** 2 + (2 * w / width - 1) ** 2
        if method == "gaussian":
            value = math.exp(-d2 / (2 * d_s**2))
        elif method == "butterworth":
            value = 1 / (1 + (d2 / d_s**2) ** order)
        elif method == "ideal":
            value = 1.0 if d2 <= 2 * d_s else 0.0
        else:  # box: the reference's slices [centre - reach : centre + reach] on each axis
            inside = (
                t in range(frames)[frames // 2 - reach_t : frames // 2 + reach_t]
                and h in range(height)[height // 2 - reach_s : height // 2 + reach_s]
                and w in range(width)[width // 2 - reach_s : width // 2 + reach_s]
            )
            value = 1.0 if inside else 0.0
        out[t, h, w] = value
    return out


@pytest.mark.parametrize("method", FILTERS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("d_s", "d_t"), STOPS)
def test_filter_equals_the_formula(method: str, shape: tuple[int, int, int], d_s: float, d_t: float) -> None:
    for order in (4, 2) if method == "butterworth" else (4,):
        got = low_pass_filter((1, 4, *shape), method, d_s, d_t, order)
        want = _formula(method, shape, d_s, d_t, order)
        assert got.shape == (1, 4, *shape) and got.dtype == torch.float32
        for channel in range(4):
            torch.testing.assert_close(got[0, channel], want, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("method", FILTERS)
def test_zero_stop_frequency_gives_an_empty_mask(method: str) -> None:
    assert not low_pass_filter((2, 4, 8, 8, 8), method, 0.0, 0.25).any()
    assert not low_pass_filter((2, 4, 8, 8, 8), method, 0.25, 0.0).any()


def test_box_keeps_the_reference_slices_for_narrow_latents() -> None:
    """Its spatial reach comes from the height alone; on a narrower width a reach past the centre
    makes the slice start negative, which Python counts from the end: the reference then keeps only
    the right half of the columns. Kept as is, so results match the reference's."""
    mask = low_pass_filter((8, 12, 6), "box", 1.0, 1.0)
    assert mask[4, 6].tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]


def test_ideal_uses_twice_d_s_not_its_square() -> None:
    """The reference's quirk: with d_s = 0.25 the ideal filter keeps D² <= 0.5, far wider than 0.0625."""
    mask = low_pass_filter((16, 16, 16), "ideal", 0.25, 0.25)
    assert mask[8, 8, 12] == 1.0  # D² = 0.25: outside d_s², inside 2·d_s
    assert mask[8, 0, 0] == 0.0  # D² = 2


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown FreeInit filter 'butter'"):
        low_pass_filter((8, 8, 8), "butter", 0.25, 0.25)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        low_pass_filter((8, 8, 8), "box", 1.5, 0.25)


def test_mixing_takes_low_frequencies_from_one_and_high_from_the_other() -> None:
    generator = torch.Generator().manual_seed(0)
    shape = (1, 4, 16, 8, 8)
    low = torch.randn(shape, generator=generator)
    high = torch.randn(shape, generator=generator)
    lpf = low_pass_filter(shape, "butterworth", 0.25, 0.25)
    torch.testing.assert_close(mix_frequencies(low, high, torch.ones(shape)), low, atol=1e-5, rtol=0)
    torch.testing.assert_close(mix_frequencies(low, high, torch.zeros(shape)), high, atol=1e-5, rtol=0)
    # Complementary masks split a signal into two parts that add back up to it.
    parts = mix_frequencies(low, torch.zeros(shape), lpf) + mix_frequencies(torch.zeros(shape), low, lpf)
    torch.testing.assert_close(parts, low, atol=1e-5, rtol=0)
    # The mask is 1 at the centre (the zero frequency after fftshift), so the mean is low's.
    mixed = mix_frequencies(low, high, lpf)
    torch.testing.assert_close(mixed.mean(dim=(-3, -2, -1)), low.mean(dim=(-3, -2, -1)), atol=1e-5, rtol=0)
    # Low frequencies really are low: a constant-in-time, smooth low source survives; noise is damped.
    smooth = torch.ones(shape)
    assert (mix_frequencies(smooth, torch.zeros(shape), lpf) - smooth).abs().max() < 1e-5
    assert mix_frequencies(high, torch.zeros(shape), lpf).std() < 0.5 * high.std()


def test_mixing_keeps_the_dtype() -> None:
    shape = (1, 4, 8, 8, 8)
    x = torch.randn(shape).half()
    assert mix_frequencies(x, x, low_pass_filter(shape, "gaussian", 0.25, 0.25)).dtype == torch.float16


def test_reinit_noise_renoises_with_the_initial_noise_and_mixes() -> None:
    generator = torch.Generator().manual_seed(1)
    shape = (1, 4, 8, 8, 8)
    x0 = torch.randn(shape, generator=generator)
    noise = torch.randn(shape, generator=generator)
    fresh = torch.randn(shape, generator=generator)
    betas = torch.linspace(0.00085, 0.012, 1000)
    alphas = torch.cumprod(1 - betas, 0)
    z = renoise(x0, noise, alphas[999])
    torch.testing.assert_close(z, alphas[999].sqrt() * x0 + (1 - alphas[999]).sqrt() * noise)
    lpf = low_pass_filter(shape, "gaussian", 0.25, 0.25)
    assert torch.equal(reinit_noise(x0, noise, lpf, alphas), mix_frequencies(z, noise, lpf))
    assert torch.equal(reinit_noise(x0, noise, lpf, alphas, high=fresh), mix_frequencies(z, fresh, lpf))


# --- in the sampling run ------------------------------------------------------------------------------


def test_iterations_restart_the_window_step_counter(animator, tiny_params, monkeypatch) -> None:
    import animdiff.pipeline as pipeline_module

    steps: list[int] = []
    real = pipeline_module.context_windows

    def recording(step, *args):
        steps.append(step)
        return real(step, *args)

    monkeypatch.setattr(pipeline_module, "context_windows", recording)
    params = tiny_params(freeinit_enable=True, freeinit_iters=3, frames=12, steps=3)
    events = []
    animator.run(params, progress=events.append, write=False)
    assert steps == [0, 1, 2] * 3
    denoise = [e for e in events if e.phase == "denoise" and e.window == 0]
    assert [e.step for e in denoise][-1] == denoise[-1].total == 9


def test_second_iteration_starts_from_the_reinitialised_noise(animator, tiny_params, monkeypatch) -> None:
    """FreeInit's two runs equal a normal run, then a run from `reinit_noise` of its result."""
    import animdiff.pipeline as pipeline_module
    from animdiff.family import motion_family
    from animdiff.models.detect import Kind
    from animdiff.sampling.noise import frame_generators, initial_noise

    params = tiny_params(steps=3, seed=7)
    first = animator.run(params, write=False).latents
    noise = initial_noise(frame_generators(7, 8), 64, 64)
    lpf = low_pass_filter((4, 8, 8, 8), "gaussian", 0.5, 0.25)
    alphas = motion_family(Kind.MM_V2).betas.alphas_cumprod()
    mixed = reinit_noise(first.transpose(0, 1), noise.transpose(0, 1), lpf, alphas).transpose(0, 1)
    with monkeypatch.context() as patch:
        patch.setattr(pipeline_module, "initial_noise", lambda *args: mixed.clone())
        second = animator.run(params, write=False).latents
    both = animator.run(
        params.model_copy(
            update={
                "freeinit_enable": True,
                "freeinit_iters": 2,
                "freeinit_filter": "gaussian",
                "freeinit_ds": 0.5,
            }
        ),
        write=False,
    )
    assert torch.equal(both.latents, second)
    assert "freeinit_enable: True" in both.infotext and "freeinit_filter: gaussian" in both.infotext
    assert "freeinit_ds: 0.5" in both.infotext and "freeinit_iters: 2" in both.infotext


def test_freeinit_settings_read_back_from_the_infotext(animator, tiny_params) -> None:
    from animdiff.output.infotext import params_from_infotext
    from animdiff.params import make_params

    params = tiny_params(
        freeinit_enable=True, freeinit_filter="box", freeinit_dt=0.5, freeinit_iters=2, steps=1
    )
    result = animator.run(params, write=False)
    back = make_params(params_from_infotext(result.infotext))
    assert (back.freeinit_enable, back.freeinit_filter, back.freeinit_dt, back.freeinit_iters) == (
        True,
        "box",
        0.5,
        2,
    )


def test_freeinit_on_sdxl(animator, tiny_params) -> None:
    params = tiny_params(
        checkpoint="tiny-sdxl.safetensors",
        motion_module="tiny-mm-sdxl-v10-beta.ckpt",
        freeinit_enable=True,
        freeinit_iters=2,
        steps=2,
    )
    result = animator.run(params, write=False)
    assert torch.isfinite(result.latents).all() and "freeinit_enable: True" in result.infotext
