"""FreeInit: re-initialise the noise from the previous result's low frequencies, as the reference does.

FreeInit samples the whole clip several times. Before each run after the first, the previous result
x0 is noised back to the last training step with the run's *initial* noise,
z = sqrt(ᾱ[999])·x0 + sqrt(1 − ᾱ[999])·noise, and the new initial noise takes z's low spatio-temporal
frequencies and the initial noise's high ones, mixed in the 3-D Fourier domain over (frames, h, w)
with a low-pass mask. The reference reuses the same initial noise for the high frequencies every
iteration (drawing fresh noise is commented out there); `reinit_noise` does the same by default.

Everything here is a pure function of tensors; `freeinit_sample` runs the iterations through a
callable that does one full sampling run (the pipeline's, which restarts its step counter).
Latents are (..., frames, h, w): the frame axis is the third from last, as in diffusers'
(videos, channels, frames, h, w).

The filters follow the reference exactly, quirks included: with D² = ((d_s/d_t)(2t/T − 1))² +
(2h/H − 1)² + (2w/W − 1)², the ideal filter keeps D² ≤ 2·d_s (not d_s²); the box keeps a block of
±round(T//2·d_t) frames and ±round((H//2)·d_s) rows *and* columns (H for both) around the centre,
as half-open slices (on latents narrower than tall a reach past the centre starts the column slice
below 0, which Python counts from the end, so the reference keeps only the right-hand columns; so
do we); any filter is all zeros when d_s or d_t is 0. Values are computed in float64
(the reference uses Python floats) and stored as float32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from animdiff.choices import FREEINIT_FILTERS

FILTERS = FREEINIT_FILTERS
# The reference re-noises to the last training step, whatever the sampler's schedule.
RENOISE_STEP = 999
_FFT_DIMS = (-3, -2, -1)


def low_pass_filter(
    shape: Sequence[int],
    method: str,
    d_s: float,
    d_t: float,
    order: int = 4,
    device: torch.device | None = None,
) -> torch.Tensor:
    """The reference's 3-D low-pass mask for latents of `shape` (..., frames, h, w), float32.

    `d_s` / `d_t`: spatial / temporal stop frequency in [0, 1] (the reference's default 0.25 each);
    `order`: the Butterworth filter's order n (4 in the reference). The mask is centred for
    fftshift-ed spectra and equal along every leading axis (batch, channels).
    """
    if method not in FILTERS:
        raise ValueError(f"unknown FreeInit filter {method!r}; choose one of {', '.join(FILTERS)}")
    if not (0.0 <= d_s <= 1.0 and 0.0 <= d_t <= 1.0):
        raise ValueError(f"FreeInit stop frequencies must lie in [0, 1], got d_s={d_s}, d_t={d_t}")
    shape = tuple(int(n) for n in shape)
    if len(shape) < 3:
        raise ValueError(f"latents need at least (frames, h, w) axes, got shape {shape}")
    frames, height, width = shape[-3:]
    if d_s == 0 or d_t == 0:
        return torch.zeros(shape, dtype=torch.float32, device=device)
    if method == "box":
        mask = _box(frames, height, width, d_s, d_t)
    else:
        d2 = _squared_distance(frames, height, width, d_s, d_t)
        if method == "gaussian":
            mask = torch.exp(-d2 / (2 * d_s**2))
        elif method == "butterworth":
            mask = 1 / (1 + (d2 / d_s**2) ** order)
        else:  # ideal
            mask = (d2 <= d_s * 2).to(torch.float64)
    return mask.to(torch.float32).expand(shape).clone().to(device)


def _squared_distance(frames: int, height: int, width: int, d_s: float, d_t: float) -> torch.Tensor:
    """D² for every (t, h, w), float64; the time axis is stretched by d_s/d_t so one radius serves both."""
    t = (d_s / d_t) * (2 * torch.arange(frames, dtype=torch.float64) / frames - 1)
    h = 2 * torch.arange(height, dtype=torch.float64) / height - 1
    w = 2 * torch.arange(width, dtype=torch.float64) / width - 1
    return t[:, None, None] ** 2 + h[None, :, None] ** 2 + w[None, None, :] ** 2


def _box(frames: int, height: int, width: int, d_s: float, d_t: float) -> torch.Tensor:
    mask = torch.zeros(frames, height, width, dtype=torch.float64)
    reach_s = round(int(height // 2) * d_s)  # Python's round (half to even), as the reference
    reach_t = round(frames // 2 * d_t)
    t0, h0, w0 = frames // 2, height // 2, width // 2
    mask[t0 - reach_t : t0 + reach_t, h0 - reach_s : h0 + reach_s, w0 - reach_s : w0 + reach_s] = 1.0
    return mask


def mix_frequencies(low: torch.Tensor, high: torch.Tensor, lpf: torch.Tensor) -> torch.Tensor:
    """`low`'s frequencies under the mask plus `high`'s outside it, back in the latent domain.

    Computed in float32 (FFT over frames, h, w with fftshift, as the reference) and returned in
    `low`'s dtype.
    """
    if low.shape != high.shape:
        raise ValueError(f"cannot mix latents of shapes {tuple(low.shape)} and {tuple(high.shape)}")
    lpf = lpf.to(device=low.device, dtype=torch.float32)
    low_freq = torch.fft.fftshift(torch.fft.fftn(low.float(), dim=_FFT_DIMS), dim=_FFT_DIMS)
    high_freq = torch.fft.fftshift(torch.fft.fftn(high.float(), dim=_FFT_DIMS), dim=_FFT_DIMS)
    mixed = low_freq * lpf + high_freq * (1 - lpf)
    out = torch.fft.ifftn(torch.fft.ifftshift(mixed, dim=_FFT_DIMS), dim=_FFT_DIMS).real
    return out.to(low.dtype)


def renoise(x0: torch.Tensor, noise: torch.Tensor, alpha_cumprod: float | torch.Tensor) -> torch.Tensor:
    """x0 diffused forward to a step with cumulative ᾱ: sqrt(ᾱ)·x0 + sqrt(1 − ᾱ)·noise (DDPM's q(x_t|x0))."""
    alpha = torch.as_tensor(alpha_cumprod, dtype=torch.float64)
    return (alpha.sqrt().item() * x0.float() + (1 - alpha).sqrt().item() * noise.float()).to(x0.dtype)


def reinit_noise(
    x0: torch.Tensor,
    initial_noise: torch.Tensor,
    lpf: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    *,
    high: torch.Tensor | None = None,
    step: int = RENOISE_STEP,
) -> torch.Tensor:
    """The next iteration's initial noise.

    `alphas_cumprod`: the schedule the motion module runs with (the family's betas, not SD's), as
    the reference re-noises with the swapped schedule. `high`: the high-frequency source; the
    reference uses `initial_noise` itself, which is the default.
    """
    noised = renoise(x0, initial_noise, alphas_cumprod[step])
    return mix_frequencies(noised, initial_noise if high is None else high, lpf)


def freeinit_sample(
    run: Callable[[torch.Tensor, int], torch.Tensor],
    noise: torch.Tensor,
    *,
    iterations: int,
    lpf: torch.Tensor,
    alphas_cumprod: torch.Tensor,
) -> torch.Tensor:
    """FreeInit's loop over whole sampling runs; latents are (frames, C, h, w) as the loop keeps them.

    `run(noise, iteration)` is one full sampling run from unit-variance noise (the caller restarts
    its step counter there). Iteration 0 starts from `noise`; each later one from `reinit_noise` of
    the previous result, whose high frequencies are `noise`'s again. `lpf` is the mask for
    (C, frames, h, w).
    """
    x = run(noise, 0)
    for iteration in range(1, iterations):
        mixed = reinit_noise(x.transpose(0, 1), noise.transpose(0, 1), lpf, alphas_cumprod)
        x = run(mixed.transpose(0, 1).contiguous(), iteration)
    return x
