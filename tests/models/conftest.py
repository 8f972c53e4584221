"""Fixtures the model tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from animdiff.models.load import build_motion_unet, load_checkpoint, load_motion_module
from animdiff.models.motion_unet import MotionUNet


@pytest.fixture(scope="module")
def tiny_unet(models_dir: Path) -> MotionUNet:
    """The tiny SD1.5 UNet with the tiny v2 motion module, as the pipeline builds it (tests copy it
    before changing it)."""
    parts = load_checkpoint(models_dir / "Stable-diffusion" / "tiny-sd15.safetensors")
    motion = load_motion_module(models_dir / "AnimateDiff" / "tiny-mm-v2.ckpt")
    return MotionUNet(build_motion_unet(parts.unet, motion.adapter, path=motion.path), motion.kind)
