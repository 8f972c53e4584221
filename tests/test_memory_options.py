"""Memory options change where weights live and how the VAE decodes, never what is drawn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from animdiff.decode import TILE_PIXELS, decode_frames, decoded_chunks, frames_per_vae_call, vae_tiling
from animdiff.models.convert import shipped_config
from animdiff.models.load import VAE_DTYPE
from animdiff.models.offload import on_device
from animdiff.pipeline import Animator, RunOptions
from animdiff.sampling.img2img import encode_frames


def test_on_device_puts_back_the_same_tensors() -> None:
    module = torch.nn.Linear(3, 2)
    before = [p.data_ptr() for p in module.parameters()]
    with on_device(module, torch.device("cpu")):
        module(torch.ones(1, 3))
    assert [p.data_ptr() for p in module.parameters()] == before  # the same storage, not a copy


def test_offload_and_vae_tiling_give_the_same_frames(models_dir, tiny_params) -> None:
    params = tiny_params(steps=2, prompt="a cat <lora:tiny-style:0.5>")
    plain = Animator(models_dir, None, RunOptions(device="cpu")).run(params, write=False)
    options = RunOptions(device="cpu", offload=True, vae_tiling=True)
    animator = Animator(models_dir, None, options)
    first = animator.run(params, write=False)
    assert torch.equal(first.latents, plain.latents)
    assert [f.tobytes() for f in first.frames] == [f.tobytes() for f in plain.frames]  # 64 px: one tile
    models = animator.load(params)
    assert models.unet.device.type == "cpu" and not models.parts.vae.use_tiling


def test_frames_per_vae_call_follow_the_size_and_dtype_unless_set() -> None:
    """At most 1 MiB of pixel values a call (1 frame of 512x512 in float32, as animdiff's VAEs run;
    2 in float16), 8 frames at most, 1 at least: at 8 frames of 512x512 the decode would be a job's
    peak (tests/testing/test_meta_memory.py)."""
    sides = (64, 256, 384, 512, 768, 1024)
    assert [frames_per_vae_call(s, s, dtype=torch.float16) for s in sides] == [8, 8, 3, 2, 1, 1]
    assert [frames_per_vae_call(s, s, dtype=torch.float32) for s in sides] == [8, 4, 1, 1, 1, 1]
    assert frames_per_vae_call(512, 288, dtype=torch.float16) == 3
    assert frames_per_vae_call(1024, 1024, 5, dtype=torch.float32) == 5


def test_vae_calls_take_frames_by_size() -> None:
    """Decoding and video-to-video encoding both follow `frames_per_vae_call`: 4 frames of 256x256
    a call in float32."""
    config = shipped_config(
        "sdxl_vae.json", block_out_channels=[4] * 4, norm_num_groups=4, layers_per_block=1
    )
    vae = AutoencoderKL(**config).eval()  # 4 channels: frames cost little
    calls: list[int] = []
    for part in (vae.encoder, vae.decoder):
        part.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    with torch.no_grad():
        decode_frames(vae, torch.zeros(6, 4, 32, 32))
        assert calls == [4, 2]
        calls.clear()
        encode_frames(vae, [np.zeros((256, 256, 3), np.uint8)] * 6)
        assert calls == [4, 2]


def test_vae_tiling_decodes_a_1024_px_sdxl_frame_in_512_px_tiles() -> None:
    """SDXL's VAE config gives diffusers 1024-pixel tiles: without our tile size a 1024x1024 frame
    would be decoded whole, and `--vae-tiling` would save nothing where SDXL needs it."""
    config = shipped_config(
        "sdxl_vae.json", block_out_channels=[8] * 4, norm_num_groups=4, layers_per_block=1
    )
    vae = AutoencoderKL(**config).eval()  # SDXL's VAE config at 8 channels: a 1024-px decode is cheap
    assert vae.config.sample_size == 1024
    seen: list[tuple[int, ...]] = []
    hook = vae.decoder.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape[-2:])))
    latents = torch.randn(1, 4, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        (whole,) = decoded_chunks(vae, latents)
        assert seen == [(128, 128)] and not vae.use_tiling
        seen.clear()
        with vae_tiling(vae):
            (tiled,) = decoded_chunks(vae, latents)
    hook.remove()
    side = TILE_PIXELS // 8
    # Tiles start every 3/4 of a tile (diffusers' overlap of a quarter): 0, 48, 96 down and across.
    assert seen == [(min(side, 128 - y), min(side, 128 - x)) for y in (0, 48, 96) for x in (0, 48, 96)]
    assert tiled.shape == whole.shape == (1, 3, 1024, 1024)
    assert (vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size) == (False, 1024, 128)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_sdxl_decodes_in_float32_and_offload_keeps_the_result(models_dir, tiny_params) -> None:
    """Where the options do real work: float16 UNet, the SDXL VAE in float32 (it overflows in
    float16), finite decoded values, and `--offload` moving each model in for its phase only."""
    params = tiny_params(
        steps=2, checkpoint="tiny-sdxl.safetensors", motion_module="tiny-mm-sdxl-v10-beta.ckpt"
    )
    plain = Animator(models_dir, None, RunOptions(device="cuda"))
    models = plain.load(params)
    decoded: list[torch.Tensor] = []
    hook = models.parts.vae.decoder.register_forward_hook(lambda _m, _i, out: decoded.append(out))
    first = plain.run(params, write=False)
    hook.remove()
    assert models.unet.dtype == torch.float16 and models.unet.device.type == "cuda"
    assert decoded and all(d.dtype == VAE_DTYPE == torch.float32 and torch.isfinite(d).all() for d in decoded)
    offloaded = Animator(models_dir, None, RunOptions(device="cuda", offload=True))
    again = offloaded.run(params, write=False)
    assert offloaded.load(params).unet.device.type == "cpu"  # back in CPU memory between phases
    assert torch.equal(again.latents, first.latents)
    fp8 = Animator(models_dir, None, RunOptions(device="cuda", fp8=True)).run(params, write=False)
    assert torch.isfinite(fp8.latents).all()
