"""Memory options change where weights live and how the VAE decodes, never what is drawn."""

from __future__ import annotations

import torch

from animdiff.models.offload import on_device
from animdiff.pipeline import Animator, RunOptions


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
