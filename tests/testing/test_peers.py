"""The benches' peer: diffusers' AnimateDiffPipeline on our files, on the device and dtypes ours uses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from animdiff.testing.peers import (
    diffusers_pipeline_from_files,
    diffusers_pipeline_sharing,
    peer_device_dtype,
    tiny_diffusers_pipeline,
    write_diffusers_config,
)

CHECKPOINT = "Stable-diffusion/tiny-sd15.safetensors"
MOTION = "AnimateDiff/tiny-mm-v2.ckpt"


def latents(pipe, **kwargs) -> torch.Tensor:
    out = pipe(
        prompt="a corgi running on the beach",
        num_frames=8,
        height=64,
        width=64,
        num_inference_steps=2,
        guidance_scale=7.5,
        generator=torch.Generator("cpu").manual_seed(1),
        output_type="latent",
        **kwargs,
    ).frames
    return out.float()


@pytest.fixture(scope="module")
def reference() -> torch.Tensor:
    return latents(tiny_diffusers_pipeline("v2", "DDIM"))


def test_peer_follows_the_animator_device_rule() -> None:
    assert peer_device_dtype("cpu") == (torch.device("cpu"), torch.float32)
    assert peer_device_dtype("cuda") == (torch.device("cuda"), torch.float16)


def test_diffusers_loads_our_files_offline_to_the_same_weights(models_dir: Path, tmp_path, reference) -> None:
    config = write_diffusers_config(models_dir / CHECKPOINT, models_dir / MOTION, tmp_path / "config")
    pipe = diffusers_pipeline_from_files(models_dir / CHECKPOINT, models_dir / MOTION, config, "DDIM")
    assert pipe.unet.dtype == pipe.text_encoder.dtype == pipe.vae.dtype == torch.float32
    # diffusers recomputes the positional encodings the tiny file holds rounded to float16.
    assert (latents(pipe) - reference).abs().max().item() < 1e-2


def test_peer_over_the_animator_tensors_shares_them(animator, tiny_params, reference) -> None:
    models = animator.load(tiny_params(groupnorm="reference"))
    pipe = diffusers_pipeline_sharing(models, "DDIM")
    shared = models.parts.unet.conv_in.weight.data_ptr()
    assert pipe.unet.conv_in.weight.data_ptr() == shared
    assert (latents(pipe) - reference).abs().max().item() < 1e-4


def test_float16_peer_decodes_with_a_float32_vae() -> None:
    """As ours runs on CUDA: UNet and text encoder in float16, the VAE in float32."""
    pipe = tiny_diffusers_pipeline("v2", "DDIM", dtype=torch.float16)
    assert (pipe.unet.dtype, pipe.text_encoder.dtype, pipe.vae.dtype) == (
        torch.float16,
        torch.float16,
        torch.float32,
    )
    frames = pipe(
        prompt="a corgi",
        num_frames=8,
        height=64,
        width=64,
        num_inference_steps=1,
        generator=torch.Generator("cpu").manual_seed(1),
        output_type="np",
        decode_chunk_size=4,
    ).frames
    assert frames.shape == (1, 8, 64, 64, 3)
