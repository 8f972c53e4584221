"""Initial noise with A1111's seed convention: one CPU generator per frame, seeded seed + i.

Frame i's noise is the first draw of its own generator, so it does not depend on the frame
count or the device: the same seed gives the same frames on CPU and CUDA, and a 16-frame
animation starts from the same noise as the first 16 frames of a 32-frame one. Ancestral
samplers keep drawing from the same per-frame generators, as A1111's do.
"""

from __future__ import annotations

import torch

LATENT_CHANNELS = 4
LATENT_SCALE = 8


def frame_generators(seed: int, frames: int) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(seed + i) for i in range(frames)]


def initial_noise(
    generators: list[torch.Generator], height: int, width: int, channels: int = LATENT_CHANNELS
) -> torch.Tensor:
    """(frames, channels, height/8, width/8) float32 on the CPU, one draw per frame generator."""
    shape = (channels, height // LATENT_SCALE, width // LATENT_SCALE)
    return torch.stack([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators])
