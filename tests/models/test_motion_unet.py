"""The reference's GroupNorm statistics, checked against GroupNorm applied by hand."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from torch import nn

from animdiff.models.detect import Kind
from animdiff.models.load import build_motion_unet, load_checkpoint, load_motion_module
from animdiff.models.motion_unet import CrossFrameGroupNorm, FrameCount, MotionUNet, PerFrameGroupNorm


def norm() -> nn.GroupNorm:
    torch.manual_seed(0)
    layer = nn.GroupNorm(4, 8)
    nn.init.normal_(layer.weight)
    nn.init.normal_(layer.bias)
    return layer


def test_per_frame_norm_normalises_each_frame_alone() -> None:
    layer = norm()
    x = torch.randn(2, 8, 5, 3, 3) * torch.arange(1, 6).reshape(1, 1, 5, 1, 1)  # frames of other scales
    expected = torch.stack([layer(x[:, :, f]) for f in range(5)], dim=2)
    assert torch.allclose(PerFrameGroupNorm(layer)(x), expected, atol=1e-5)


def test_cross_frame_norm_normalises_each_video_as_a_whole() -> None:
    layer = norm()
    frames = FrameCount(4)
    rows = torch.randn(2 * 4, 8, 3, 3)  # two videos of four frames, frame-major rows
    out = CrossFrameGroupNorm(layer, frames)(rows)
    for video in range(2):
        clip = rows[video * 4 : (video + 1) * 4]  # (frames, C, h, w)
        joined = clip.permute(1, 0, 2, 3).reshape(1, 8, 4 * 3, 3)  # all frames in one image
        expected = layer(joined).reshape(8, 4, 3, 3).permute(1, 0, 2, 3)
        assert torch.allclose(out[video * 4 : (video + 1) * 4], expected, atol=1e-5)


def _norm_kinds(unet: MotionUNet) -> dict[str, int]:
    counts = {"per_frame": 0, "cross_frame": 0, "plain": 0}
    for module in unet.unet.modules():
        if isinstance(module, PerFrameGroupNorm):
            counts["per_frame"] += 1
        elif isinstance(module, CrossFrameGroupNorm):
            counts["cross_frame"] += 1
    wrapped = {
        id(m.norm) for m in unet.unet.modules() if isinstance(m, PerFrameGroupNorm | CrossFrameGroupNorm)
    }
    counts["plain"] = sum(
        1 for m in unet.unet.modules() if isinstance(m, nn.GroupNorm) and id(m) not in wrapped
    )
    return counts


def test_reference_mode_wraps_the_right_norms(models_dir: Path) -> None:
    parts = load_checkpoint(models_dir / "Stable-diffusion" / "tiny-sd15.safetensors")
    for name, kind in (("tiny-mm-v1.ckpt", Kind.MM_V1), ("tiny-mm-v2.ckpt", Kind.MM_V2)):
        motion = load_motion_module(models_dir / "AnimateDiff" / name)
        motion_blocks = sum(
            isinstance(m, AnimateDiffTransformer3D)
            for m in build_motion_unet(parts.unet, motion.adapter, path=motion.path).modules()
        )
        reference = _norm_kinds(
            MotionUNet(build_motion_unet(parts.unet, motion.adapter, path=motion.path), kind)
        )
        assert reference["per_frame"] == motion_blocks
        if kind is Kind.MM_V1:
            assert reference["cross_frame"] > 0 and reference["plain"] == 0
        else:
            assert reference["cross_frame"] == 0 and reference["plain"] > 0
        plain = _norm_kinds(
            MotionUNet(build_motion_unet(parts.unet, motion.adapter, path=motion.path), kind, "diffusers")
        )
        assert plain["per_frame"] == plain["cross_frame"] == 0
