"""Which layers of a UNet with motion modules belong to the motion modules: their batch is videos x
latent pixels, not frames, which is what the attention split and the feed-forward slicing go by."""

from __future__ import annotations

from typing import TypeVar

from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from torch import nn

M = TypeVar("M", bound=nn.Module)


def inside_motion_modules(unet: nn.Module, kind: type[M]) -> list[M]:
    """Every `kind` module inside `unet`'s motion modules (diffusers' `AnimateDiffTransformer3D`)."""
    return [
        part
        for block in unet.modules()
        if isinstance(block, AnimateDiffTransformer3D)
        for part in block.modules()
        if isinstance(part, kind)
    ]
