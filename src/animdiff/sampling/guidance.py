"""The denoiser layers: per-window classifier-free guidance over the UNet with motion modules.

`WindowedDenoiser` is the callable the sampling loop sees. Each call asks the window schedule
for this model evaluation's windows, evaluates each distinct window once (several per UNet call
when allowed), with the cond video and the uncond video of a window in one batch and the
per-frame prompt embeddings and ControlNet hints sliced with the window's frame indices (in one
place, `guided_windows`), then combines the guided outputs per frame with the chosen fuse
method. A window that the schedule repeats inside one step gives the same output again, so it
is computed once and fused at every position it has.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from animdiff.sampling.controlnet import ControlLayer
from animdiff.sampling.fuse import WindowFuser

WindowSchedule = Callable[[int], list[list[int]]]
# (windows done, distinct windows) after each model call: progress, and a place to cancel between calls
WindowCallback = Callable[[int, int], None]
# (videos, C, frames, h, w), timestep, (videos * frames, tokens, width) -> eps like the sample;
# called with a fourth argument, the ControlNet residuals, only when a ControlNet acts, and with
# `vector=` (per-row added conditioning) only for models that take one.
VideoModel = Callable[..., torch.Tensor]


@dataclass
class Conditioning:
    """Per-frame prompt embeddings for the whole generated batch, the negative one, and the scale."""

    cond: torch.Tensor  # (frames, tokens, width)
    uncond: torch.Tensor  # (1, tokens, width): the negative prompt is the same for every frame
    scale: float
    control: ControlLayer | None = None  # ControlNet units with their per-frame hints
    # Added conditioning (SDXL's pooled text + size features), one row per frame and the negative's
    # one row; None for models without it. Sliced and batched exactly like `cond` / `uncond`.
    cond_vector: torch.Tensor | None = None
    uncond_vector: torch.Tensor | None = None

    @property
    def guided(self) -> bool:
        """At scale 1 the uncond term cancels exactly, so it is not computed."""
        return self.scale != 1.0


def guided_windows(
    model: VideoModel,
    x: torch.Tensor,
    t: torch.Tensor,
    windows: list[list[int]],
    conditioning: Conditioning,
    step: int = 0,
) -> torch.Tensor:
    """Guided eps for several windows in one model call: (windows, window length, C, h, w).

    The one place where per-frame inputs are cut to the windows' frames: latents, prompt
    embeddings, added-conditioning vectors and each ControlNet unit's hints are indexed with the
    same frame list. `step` is
    the model evaluation (from 0), which decides the ControlNet units that act.
    """
    index = torch.tensor(windows, device=x.device)
    rows = index.flatten()
    videos = x[index].permute(0, 2, 1, 3, 4)  # (windows, C, length, h, w)
    cond = conditioning.cond[rows.to(conditioning.cond.device)]
    guided = conditioning.guided
    if guided:
        batch = torch.cat([videos, videos])
        embeddings = torch.cat([cond, conditioning.uncond.expand(cond.shape[0], -1, -1)])
    else:
        batch, embeddings = videos, cond
    options = {}
    if conditioning.cond_vector is not None:
        vector = conditioning.cond_vector[rows.to(conditioning.cond_vector.device)]
        if guided and conditioning.uncond_vector is not None:
            vector = torch.cat([vector, conditioning.uncond_vector.expand(vector.shape[0], -1)])
        options["vector"] = vector
    extra = []
    control = conditioning.control
    if control is not None:
        hints = [h[rows.to(h.device)] for h in control.hints]
        sample_rows = batch.permute(0, 2, 1, 3, 4).flatten(0, 1)  # the UNet's rows: video-major
        residuals = control.residuals(
            sample_rows, t, embeddings, hints, step=step, guided=guided, vector=options.get("vector")
        )
        if residuals is not None:
            extra.append(residuals)
    eps = model(batch, t, embeddings, *extra, **options)
    if guided:
        eps_cond, eps_uncond = eps.chunk(2)
        eps = eps_uncond + conditioning.scale * (eps_cond - eps_uncond)
    return eps.permute(0, 2, 1, 3, 4)


class WindowedDenoiser:
    """eps over the whole frame range, assembled from context windows.

    The step counter counts model evaluations from 0 (the reference's counter): second-order
    samplers call the denoiser twice per step, so their windows move twice per step too.
    """

    def __init__(
        self,
        model: VideoModel,
        conditioning: Conditioning,
        schedule: WindowSchedule,
        *,
        fuse: str = "overwrite",
        windows_per_call: int = 1,
        on_window: WindowCallback | None = None,
    ) -> None:
        if windows_per_call < 1:
            raise ValueError("windows_per_call must be at least 1")
        self.model = model
        self.conditioning = conditioning
        self.schedule = schedule
        self.fuse = fuse
        self.windows_per_call = windows_per_call
        self.on_window = on_window
        self.step = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        step = self.step
        windows = self.schedule(step)
        self.step += 1
        distinct = list(dict.fromkeys(tuple(w) for w in windows))
        outputs: dict[tuple[int, ...], torch.Tensor] = {}
        for start in range(0, len(distinct), self.windows_per_call):
            group = distinct[start : start + self.windows_per_call]
            eps = guided_windows(self.model, x, t, [list(w) for w in group], self.conditioning, step)
            outputs.update(zip(group, eps, strict=True))
            if self.on_window is not None:
                self.on_window(len(outputs), len(distinct))
        fuser = WindowFuser(self.fuse, x)
        for window in windows:
            fuser.add(list(window), outputs[tuple(window)])
        return fuser.result()
