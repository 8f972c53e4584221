"""img2img and video to video: init latents, the reference's latent blend, denoising strength.

Independent pieces, each pure apart from the scheduler state that every run owns:

- **Latent blend** (the reference's "I2V traditional", one init image for every frame): frame i
  keeps `alpha[i]` of the init latent and gets `1 - alpha[i]` of noise, with
  `alpha[i] = max(0, 1 - i**power / scale)`, so the animation drifts away from the image; an
  optional last frame pulls the end of the animation towards a second image (`beta`).
- **Denoising strength**, with diffusers' img2img / video-to-video convention
  (`get_timesteps`): of `steps` steps, the last `min(int(steps * strength), steps)` are run, the
  slice of the scheduler's timesteps starting at `t_start * scheduler.order` (second-order
  schedulers interleave two timesteps per step). The init latents are noised to the first kept
  timestep with `scheduler.add_noise`.
- **`sample_from`**: the denoising loop of `loop.sample` run from noised init latents. Strength 1
  is text to video exactly (pure noise, the full schedule) and strength 0 runs nothing and returns
  the init latents, so both ends of the range mean what a user expects.
- **`encode_frames`**: source frames to init latents, chunked like `decode.decode_frames`.

Noise: in the reference the latent blend consumes the first draw of each frame's generator, so
the sampler's noise is the second draw (A1111's ImageRNG continues the same generators); a v2v
run without the blend uses the first draw, as text to video does.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from animdiff.decode import frames_per_vae_call
from animdiff.sampling.loop import Denoiser, StepInfo

# (step index, latents after that step) -> latents; how inpainting keeps the unmasked region.
AfterStep = Callable[[int, torch.Tensor], torch.Tensor]


# --- Latent blend (reference 9.4) -------------------------------------------------------------


def latent_blend_weights(
    video_length: int,
    latent_power: float = 1.0,
    latent_scale: float = 32.0,
    *,
    last: bool = False,
    latent_power_last: float = 1.0,
    latent_scale_last: float = 32.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-frame weights of the init latent (`alpha`) and of the last frame's latent (`beta`).

    `alpha[i] = max(0, 1 - i**latent_power / latent_scale)`, so frame 0 is the init image and
    later frames hold less of it. With a last frame, `beta[i]` is the same curve counted from the
    end (`j = video_length - 1 - i`); where `alpha + beta > 1` both are divided by their sum (the
    noise weight `1 - alpha - beta` would go negative), and the endpoints are forced in the
    reference's order: `alpha[0] = 1, alpha[-1] = 0, beta[0] = 0, beta[-1] = 1`. With one frame
    that order makes the single frame the last image, as in the reference.

    Float64 (frames,) tensors; `beta` is None without a last frame.
    """
    if video_length < 1:
        raise ValueError(f"video_length must be at least 1, got {video_length}")
    for name, value in (("latent_scale", latent_scale), ("latent_scale_last", latent_scale_last)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    alpha = _decay(range(video_length), latent_power, latent_scale)
    alpha[0] = 1.0
    if not last:
        return alpha, None
    beta = _decay(range(video_length - 1, -1, -1), latent_power_last, latent_scale_last)
    total = alpha + beta
    over = total > 1.0
    alpha[over] = alpha[over] / total[over]
    beta[over] = beta[over] / total[over]
    alpha[0] = 1.0
    alpha[-1] = 0.0
    beta[0] = 0.0
    beta[-1] = 1.0
    return alpha, beta


def _decay(indices: Sequence[int] | range, power: float, scale: float) -> torch.Tensor:
    return torch.tensor([max(0.0, 1.0 - float(i) ** power / scale) for i in indices], dtype=torch.float64)


def blend_init_latents(
    init: torch.Tensor,
    noise: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor | None = None,
    last: torch.Tensor | None = None,
) -> torch.Tensor:
    """`init * alpha + last * beta + noise * (1 - alpha - beta)`, per frame (frames on dim 0).

    `init` and `last` may have one row (one image for every frame) or one per frame; `noise`
    has one row per frame and fixes the shape, dtype and device of the result. The weights are
    applied in the latents' dtype, as the reference multiplies its float tensors.
    """
    frames = noise.shape[0]
    if alpha.shape != (frames,):
        raise ValueError(f"alpha has shape {tuple(alpha.shape)}, expected ({frames},) for {frames} frames")
    if (beta is None) != (last is None):
        raise ValueError("beta and last go together: give both for a last frame, or neither")
    a = _per_frame(alpha, noise)
    out = init.to(noise) * a
    weight_noise = 1.0 - a
    if beta is not None and last is not None:
        if beta.shape != (frames,):
            raise ValueError(f"beta has shape {tuple(beta.shape)}, expected ({frames},)")
        b = _per_frame(beta, noise)
        out = out + last.to(noise) * b
        weight_noise = weight_noise - b
    return out + noise * weight_noise


def _per_frame(weights: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return weights.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


# --- Denoising strength -----------------------------------------------------------------------


@dataclass(frozen=True)
class StrengthSchedule:
    """The part of a schedule that a denoising strength runs.

    `timesteps` are the scheduler timesteps to run (one model evaluation each; second-order
    schedulers have two per step), `begin_index` is where they start in `scheduler.timesteps`,
    and `steps` is the number of sampler steps they make (`int(steps * strength)`, capped).
    """

    timesteps: torch.Tensor
    begin_index: int
    steps: int

    @property
    def runs(self) -> bool:
        """False at strength 0 (or when `steps * strength` rounds down to 0): nothing to denoise."""
        return len(self.timesteps) > 0

    @property
    def full(self) -> bool:
        """The whole schedule (strength 1): the run is text to video."""
        return self.begin_index == 0 and self.runs


def strength_timesteps(
    scheduler: SchedulerMixin, steps: int, strength: float, device: torch.device | str | None = None
) -> StrengthSchedule:
    """Set `steps` timesteps on the scheduler and return the slice that `strength` runs.

    diffusers' `get_timesteps`: `init = min(int(steps * strength), steps)`, `t_start = steps -
    init`, timesteps from `t_start * scheduler.order`. The scheduler's begin index is set to that
    position (diffusers' img2img pipelines do the same) so that `add_noise` and the first `step`
    use the right noise level even where timesteps repeat (Heun, DPM2 and Karras schedules).

    When no step runs (`int(steps * strength) == 0`) the slice is empty, including for PLMS whose
    schedule has one timestep more than it has steps (diffusers would still run that one).

    A1111 counts one step more: `t_enc = int(min(strength, 0.999) * steps)`, then `t_enc + 1`
    steps from sigma index `steps - t_enc - 1` (so one step even at strength 0, and never pure
    noise). We follow diffusers, the parity anchor, whose ends are exact (0 = the source, 1 = text
    to video).
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"denoising strength must be between 0 and 1, got {strength}")
    scheduler.set_timesteps(steps, device=device)
    init_steps = min(int(steps * strength), steps)
    t_start = max(steps - init_steps, 0)
    begin = t_start * scheduler.order
    timesteps = scheduler.timesteps[begin:] if init_steps > 0 else scheduler.timesteps[:0]
    if init_steps > 0 and hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)
    return StrengthSchedule(timesteps=timesteps, begin_index=begin, steps=init_steps)


def noised_init(
    init_latents: torch.Tensor,
    noise: torch.Tensor,
    scheduler: SchedulerMixin,
    start_timestep: torch.Tensor | float | None,
) -> torch.Tensor:
    """The init latents at the noise level of `start_timestep` (None: no step runs, unchanged).

    `scheduler.add_noise` gives each scheduler's own form: `sqrt(abar) * x + sqrt(1 - abar) * n`
    for DDIM/PLMS/LCM and the multistep solvers (alpha_t, sigma_t), `x + sigma * n` for the
    k-diffusion schedulers (Euler, Heun, DPM2), whose latents are not variance preserving. Call
    it after `strength_timesteps`, which sets the begin index those schedulers read the sigma at.
    """
    if start_timestep is None:
        return init_latents
    t = torch.as_tensor(start_timestep).reshape(-1)[:1].to(init_latents.device)
    return scheduler.add_noise(init_latents, noise.to(init_latents), t)


# --- The loop -----------------------------------------------------------------------------------


def sample_from(
    denoise: Denoiser,
    scheduler: SchedulerMixin,
    init_latents: torch.Tensor | None,
    noise: torch.Tensor,
    steps: int,
    strength: float = 1.0,
    *,
    generators: list[torch.Generator] | None = None,
    callback: Callable[[StepInfo], None] | None = None,
    after_step: AfterStep | None = None,
    noise_init_at_full_strength: bool = False,
) -> torch.Tensor:
    """`loop.sample` generalised to img2img: run the `strength` part of `steps` from `init_latents`.

    - Strength 1 (or `init_latents` None, which requires it): exactly `loop.sample`, starting from
      `noise * init_noise_sigma` over the whole schedule, so v2v at strength 1 is text to video
      bit for bit. diffusers' v2v pipeline instead noises the init to the first timestep, which
      leaves a trace of it (weight sqrt(abar) at the first timestep: 0.04 at t=999, 0.05 at DDIM's
      t=951 for 20 steps; relative weight 1/sigma_max = 0.04 for the k-schedulers);
      `noise_init_at_full_strength=True` does that, for parity with it.
    - Strength 0 (no step runs): returns `init_latents` itself, untouched.
    - Otherwise the init latents noised to the first kept timestep, then the kept steps.

    `after_step(i, x)` runs after every scheduler step (before the callback) and returns the
    latents to continue from: inpainting keeps the unmasked region there (`inpaint.py`).
    `StepInfo.total` is the number of timesteps actually run.
    """
    if init_latents is None and strength != 1.0:
        raise ValueError("a denoising strength below 1 needs init latents")
    schedule = strength_timesteps(scheduler, steps, strength, device=noise.device)
    if not schedule.runs:
        if init_latents is None:  # unreachable: strength 1 always runs
            raise ValueError("nothing to denoise")
        return init_latents
    if init_latents is None or (schedule.full and not noise_init_at_full_strength):
        x = noise * scheduler.init_noise_sigma
    else:
        x = noised_init(init_latents, noise, scheduler, schedule.timesteps[0])
    # As in loop.sample: ancestral / SDE steps keep drawing from the frames' own generators.
    takes_generator = "generator" in inspect.signature(scheduler.step).parameters
    step_kwargs = {"generator": generators} if takes_generator else {}
    timesteps = schedule.timesteps
    for i, t in enumerate(timesteps):
        eps = denoise(scheduler.scale_model_input(x, t), t)
        x = scheduler.step(eps, t, x, return_dict=False, **step_kwargs)[0]
        if after_step is not None:
            x = after_step(i, x)
        if callback is not None:
            callback(StepInfo(i, len(timesteps), float(t), x))
    return x


# --- VAE encoding -------------------------------------------------------------------------------


@torch.no_grad()
def encode_frames(
    vae: torch.nn.Module,
    frames: Sequence[np.ndarray],
    chunk: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """HxWx3 uint8 frames -> (frames, 4, H/8, W/8) float32 latents on the CPU, times the VAE's
    scaling factor, a few frames per VAE call so memory follows the chunk, not the video.

    Pixels map to [-1, 1] as A1111 and diffusers both do. Without a generator the latent is the
    posterior's mean, so the same frames always give the same latents (strength 0 is then a plain
    VAE round trip); with one it is a sample, as diffusers' v2v pipeline draws it (for parity).
    """
    if not frames:
        raise ValueError("no frames to encode")
    height, width = np.asarray(frames[0]).shape[:2]
    param = next(vae.parameters())
    chunk = frames_per_vae_call(width, height, chunk, dtype=param.dtype)
    scale = vae.config.scaling_factor
    out: list[torch.Tensor] = []
    for start in range(0, len(frames), chunk):
        batch = np.stack([np.asarray(f, dtype=np.uint8) for f in frames[start : start + chunk]])
        pixels = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        dist = vae.encode(pixels.to(device=param.device, dtype=param.dtype)).latent_dist
        latents = dist.mode() if generator is None else dist.sample(generator)
        out.append((latents.float() * scale).cpu())
    return torch.cat(out)
