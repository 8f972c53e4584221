"""Latents -> RGB frames, a few frames per VAE call so memory does not grow with the frame count."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from diffusers import AutoencoderKL

#: Bytes of pixel values one VAE call decodes (or encodes) at most unless `--vae-chunk` says
#: otherwise: frames x width x height x the VAE's bytes per value. animdiff's VAEs run in float32,
#: so that is 1 frame from 363x363 up (512x512 is one), 4 of 256x256, 8 (the most) from 181x181
#: down. The VAE's activations grow with it, about 0.75 GiB a float32 512x512 frame: at 8 frames a
#: call the decode, not the denoise, would be a job's peak (bench/memory_estimate.py,
#: tests/testing/test_meta_memory.py).
VAE_CALL_BYTES = 512 * 512 * 4
MAX_FRAMES_PER_VAE_CALL = 8

#: `--vae-tiling`'s tiles: 512 pixels a side (64 latents), overlapping by a quarter (diffusers'
#: blending). SD1.5's VAE config gives diffusers this size; SDXL's says 1024, with which a frame of
#: 1024x1024 or less would be decoded whole and the option would save nothing.
TILE_PIXELS = 512


@contextmanager
def vae_tiling(vae: AutoencoderKL, enabled: bool = True, tile_pixels: int = TILE_PIXELS) -> Iterator[None]:
    """diffusers' tiled decoding with tiles of `tile_pixels`, whatever the VAE's config says; the
    VAE's own tiling state is put back afterwards (it is a cached model)."""
    if not enabled:
        yield
        return
    factor = pixels_per_latent(vae)
    saved = (vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size)
    vae.enable_tiling()
    vae.tile_sample_min_size = tile_pixels
    vae.tile_latent_min_size = tile_pixels // factor
    try:
        yield
    finally:
        vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size = saved


def pixels_per_latent(vae: AutoencoderKL) -> int:
    """How many pixels a side one latent stands for (8 for SD1.5's and SDXL's VAEs)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def frames_per_vae_call(width: int, height: int, chunk: int | None = None, *, dtype: torch.dtype) -> int:
    """`chunk` when the user set one; else as many frames of the VAE's `dtype` as fit
    `VAE_CALL_BYTES` (1 to 8)."""
    if chunk is not None:
        return chunk
    per_frame = width * height * dtype.itemsize
    return max(1, min(MAX_FRAMES_PER_VAE_CALL, VAE_CALL_BYTES // per_frame))


def decoded_chunks(
    vae: AutoencoderKL, latents: torch.Tensor, chunk: int | None = None
) -> Iterator[torch.Tensor]:
    """Each chunk of frames decoded: (n, 3, H, W) float32 pixel values in [0, 255] on the VAE's
    device. The one place a chunk's size and dtype are chosen (benchmarks run it without pixels);
    `chunk` None: by size (`frames_per_vae_call`)."""
    factor = pixels_per_latent(vae)
    width, height = latents.shape[-1] * factor, latents.shape[-2] * factor
    chunk = frames_per_vae_call(width, height, chunk, dtype=vae.dtype)
    scale = vae.config.scaling_factor
    for start in range(0, latents.shape[0], chunk):
        batch = latents[start : start + chunk].to(device=vae.device, dtype=vae.dtype) / scale
        image = vae.decode(batch, return_dict=False)[0].float()
        yield ((image + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0


@torch.no_grad()
def decode_frames(
    vae: AutoencoderKL,
    latents: torch.Tensor,
    chunk: int | None = None,
    on_chunk: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """(frames, 4, h, w) latents -> HxWx3 uint8 frames.

    Pixel values are truncated to integers after scaling to [0, 255], as A1111 does (diffusers
    rounds instead), so saved frames match the web UI's for the same decoded image.
    """
    frames: list[np.ndarray] = []
    for image in decoded_chunks(vae, latents, chunk):
        frames.extend(image.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy())
        if on_chunk is not None:
            on_chunk(len(frames), latents.shape[0])
    return frames
