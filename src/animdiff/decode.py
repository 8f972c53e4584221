"""Latents -> RGB frames, a few frames per VAE call so memory does not grow with the frame count."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from diffusers import AutoencoderKL


@torch.no_grad()
def decode_frames(
    vae: AutoencoderKL,
    latents: torch.Tensor,
    chunk: int = 8,
    on_chunk: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """(frames, 4, h, w) latents -> HxWx3 uint8 frames.

    Pixel values are truncated to integers after scaling to [0, 255], as A1111 does (diffusers
    rounds instead), so saved frames match the web UI's for the same decoded image.
    """
    frames: list[np.ndarray] = []
    scale = vae.config.scaling_factor
    for start in range(0, latents.shape[0], chunk):
        batch = latents[start : start + chunk].to(device=vae.device, dtype=vae.dtype) / scale
        image = vae.decode(batch, return_dict=False)[0].float()
        image = ((image + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0
        frames.extend(image.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy())
        if on_chunk is not None:
            on_chunk(len(frames), latents.shape[0])
    return frames
