"""A1111 sampler names mapped onto diffusers schedulers.

Every scheduler gets the motion module's trained noise schedule (`make_scheduler`'s `betas`), by
default AnimateDiff's: betas linear from 0.00085 to 0.012
over 1000 steps (diffusers' `beta_schedule="linear"`). That is the schedule the motion modules
were trained with and the one the A1111 extension swaps in while a module is loaded; SD's own
`scaled_linear` schedule gives washed-out, flickering motion. The sampler settings below are the
diffusers equivalents of A1111's k-diffusion samplers (same noise levels, same update rule); they
are not bit-identical to A1111, whose samplers are a different implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

ANIMATEDIFF_BETAS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "linear",
}


@dataclass(frozen=True)
class SamplerSpec:
    """How one A1111 sampler name is built from a diffusers scheduler class (named, so that
    validating settings does not have to import diffusers)."""

    cls: str
    options: dict[str, Any]


_SPECS: dict[str, SamplerSpec] = {
    "Euler": SamplerSpec("EulerDiscreteScheduler", {"timestep_spacing": "linspace"}),
    "Euler a": SamplerSpec("EulerAncestralDiscreteScheduler", {"timestep_spacing": "linspace"}),
    "Heun": SamplerSpec("HeunDiscreteScheduler", {"timestep_spacing": "linspace"}),
    "DPM2": SamplerSpec("KDPM2DiscreteScheduler", {"timestep_spacing": "linspace"}),
    "DPM2 a": SamplerSpec("KDPM2AncestralDiscreteScheduler", {"timestep_spacing": "linspace"}),
    "DPM++ 2M": SamplerSpec(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "timestep_spacing": "linspace"},
    ),
    "DPM++ 2M Karras": SamplerSpec(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "DPM++ 2M SDE": SamplerSpec(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "timestep_spacing": "linspace"},
    ),
    "DPM++ 2M SDE Karras": SamplerSpec(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "UniPC": SamplerSpec("UniPCMultistepScheduler", {"timestep_spacing": "linspace"}),
    "LCM": SamplerSpec("LCMScheduler", {"timestep_spacing": "leading", "steps_offset": 1}),
    "DDIM": SamplerSpec(
        "DDIMScheduler",
        {"timestep_spacing": "leading", "steps_offset": 1, "clip_sample": False, "set_alpha_to_one": False},
    ),
    "PLMS": SamplerSpec(
        "PNDMScheduler", {"timestep_spacing": "leading", "steps_offset": 1, "skip_prk_steps": True}
    ),
}

SAMPLER_NAMES: tuple[str, ...] = tuple(_SPECS)


def canonical_sampler_name(name: str) -> str:
    """Match a sampler name case- and spacing-insensitively ("euler_a", "dpm++ 2m karras")."""
    wanted = _fold(name)
    for known in _SPECS:
        if _fold(known) == wanted:
            return known
    raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLER_NAMES)}")


def _fold(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum() or ch == "+")


def make_scheduler(name: str, betas: dict[str, Any] | None = None) -> SchedulerMixin:
    """A fresh scheduler for one job (schedulers hold per-run state, so never share one).

    `betas`: the training schedule's scheduler keys (the motion module's family, e.g.
    AnimateDiff-XL's scaled-linear to 0.020); AnimateDiff's linear schedule when not given.
    """
    import diffusers

    spec = _SPECS[canonical_sampler_name(name)]
    return getattr(diffusers, spec.cls)(**(betas or ANIMATEDIFF_BETAS), **spec.options)
