"""The denoising loop: noise, scheduler steps, progress and cancellation, nothing else.

As in k-diffusion, the loop only sees a denoiser, a callable `eps = denoise(x, t)` over the
whole frame range (frames on dim 0). Context windows, guidance and per-frame conditioning are
layers that build that callable, so the loop never changes when they do.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class StepInfo:
    """Passed to the step callback after every scheduler step; raising there aborts the run."""

    step: int
    total: int
    timestep: float
    latents: torch.Tensor


def sample(
    denoise: Denoiser,
    scheduler: SchedulerMixin,
    noise: torch.Tensor,
    steps: int,
    *,
    generators: list[torch.Generator] | None = None,
    callback: Callable[[StepInfo], None] | None = None,
) -> torch.Tensor:
    """Run `steps` scheduler steps from `noise` (unit variance) and return the final latents."""
    scheduler.set_timesteps(steps, device=noise.device)
    timesteps = scheduler.timesteps
    x = noise * scheduler.init_noise_sigma
    step_kwargs = {"generator": generators} if _takes_generator(scheduler) else {}
    for i, t in enumerate(timesteps):
        eps = denoise(scheduler.scale_model_input(x, t), t)
        x = scheduler.step(eps, t, x, return_dict=False, **step_kwargs)[0]
        if callback is not None:
            callback(StepInfo(i, len(timesteps), float(t), x))
    return x


def _takes_generator(scheduler: SchedulerMixin) -> bool:
    return "generator" in inspect.signature(scheduler.step).parameters
