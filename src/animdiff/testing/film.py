"""A stand-in for Deforum's FILM model, for tests and offline demos.

The real `film_net_fp16.pt` cannot be shipped or downloaded here, yet the loader should be
exercised for real (TorchScript file, fp16 weights, `torch.jit.load`). The stand-in has FILM's
exact call signature and storage format, and a behaviour simple enough to predict: a linear blend
of the two frames by `batch_dt`, plus a convolution whose weights start at zero (so the file holds
real fp16 parameters, like the original, without changing the blend).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn


class FilmStandIn(nn.Module):
    """forward(x0, x1, batch_dt) -> frame at time batch_dt between x0 and x1, in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.refine = nn.Conv2d(6, 3, kernel_size=3, padding=1)
        nn.init.zeros_(self.refine.weight)
        nn.init.zeros_(self.refine.bias)

    def forward(self, x0: Tensor, x1: Tensor, batch_dt: Tensor) -> Tensor:
        t = batch_dt.reshape(-1, 1, 1, 1).to(x0.dtype)
        blend = x0 + (x1 - x0) * t
        return (blend + self.refine(torch.cat([x0, x1], dim=1))).clamp(0, 1)


def write_film_standin(path: Path) -> Path:
    """Script the stand-in, store it in fp16 like the real file, and return `path`.

    Parent folders are created, so callers can aim straight at
    `<models>/Deforum/film_interpolation/film_net_fp16.pt`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        scripted = torch.jit.script(FilmStandIn().eval())
        scripted.half().save(str(path))
    return path
