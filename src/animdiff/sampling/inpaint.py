"""Inpainting with an ordinary (4-channel) UNet: keep the unmasked region from the source.

Conventions: `mask` is 1 where the frame is repainted and 0 where the source is kept (A1111's
`nmask`, diffusers' `mask`), shaped (frames or 1, 1 or 4, h, w) at the latent size.

**What we do (diffusers' convention, `StableDiffusionInpaintPipeline` with a 4-channel UNet).**
After every scheduler step i the latents are blended with the source latents noised to the
level the latents are now at, the next timestep's, and with the clean source after the last step:

    x = add_noise(init, noise, timesteps[i + 1]) * (1 - mask) + x * mask     (i < last)
    x = init * (1 - mask) + x * mask                                         (i = last)

with the same `noise` that noised the init latents at the start, so the kept region follows
the very trajectory the init started on. The k-diffusion schedulers read the noise level of that
`add_noise` at their current step index, which `step` has just advanced to i + 1.

**A1111 differs.** Its CFG denoiser blends the *denoised prediction* (x0) with the *clean* init
latent inside every model evaluation (`denoised = init_latent * mask + nmask * denoised`, where
its `mask` is the kept region), unless "mask before denoising" is set, and blends the final
samples once more. The two agree on the output's kept region (the source exactly) and differ
slightly inside the seam; diffusers' form is what our parity tests can check and it needs no
access to the model's x0, so the layer stays a pure post-step function of the loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

# A1111's "Masked content" choices that are applied in latent space before sampling.
FILL_ORIGINAL = "original"
FILL_LATENT_NOISE = "latent noise"
FILL_LATENT_NOTHING = "latent nothing"
LATENT_FILLS = (FILL_ORIGINAL, FILL_LATENT_NOISE, FILL_LATENT_NOTHING)


def blend_kept(kept: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`kept * (1 - mask) + x * mask`: the kept region from `kept`, the repainted one from `x`."""
    m = mask.to(device=x.device, dtype=x.dtype)
    return kept.to(x) * (1.0 - m) + x * m


@dataclass
class LatentInpaint:
    """The `after_step` hook of `img2img.sample_from` that keeps the unmasked region.

    `init_latents` are the clean source latents, `noise` the noise that `noised_init` used, and
    `timesteps` the schedule that runs (`StrengthSchedule.timesteps`); `scheduler` is the run's
    own scheduler, whose state `add_noise` reads.
    """

    init_latents: torch.Tensor
    noise: torch.Tensor
    mask: torch.Tensor
    scheduler: SchedulerMixin
    timesteps: torch.Tensor

    def kept_at(self, i: int) -> torch.Tensor:
        """The source latents at the noise level of the latents after step i."""
        if i >= len(self.timesteps) - 1:
            return self.init_latents
        t = self.timesteps[i + 1 : i + 2].to(self.init_latents.device)
        return self.scheduler.add_noise(self.init_latents, self.noise.to(self.init_latents), t)

    def __call__(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return blend_kept(self.kept_at(i), x, self.mask)


def fill_masked(
    init_latents: torch.Tensor,
    mask: torch.Tensor,
    fill: str = FILL_ORIGINAL,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """A1111's latent "Masked content" options, applied to the init latents before sampling.

    - "original": the source latents as they are (A1111's default);
    - "latent noise": unit noise where repainted (`noise`, per frame: A1111 draws it from the
      frames' seeds, i.e. the first draw of each frame's generator);
    - "latent nothing": zeros where repainted.

    A1111's "fill" (a blurred colour fill of the masked pixels) works on pixels before encoding,
    so it is not a latent operation and is not offered here.
    """
    if fill == FILL_ORIGINAL:
        return init_latents
    if fill == FILL_LATENT_NOTHING:
        return blend_kept(init_latents, torch.zeros_like(init_latents), mask)
    if fill == FILL_LATENT_NOISE:
        if noise is None:
            raise ValueError('"latent noise" needs the noise to fill with')
        return blend_kept(init_latents, noise.to(init_latents), mask)
    raise ValueError(f"unknown masked content {fill!r}; choose from {', '.join(LATENT_FILLS)}")
