"""The reference's GroupNorm statistics, checked against GroupNorm done by hand, and the diffusers
internals the wrappers rely on."""

from __future__ import annotations

from pathlib import Path

import diffusers
import pytest
import torch
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from torch import nn

from animdiff.models.detect import Kind
from animdiff.models.load import build_motion_unet, load_checkpoint, load_motion_module
from animdiff.models.motion_unet import CrossFrameGroupNorm, FrameCount, MotionUNet, PerFrameGroupNorm
from animdiff.testing.factory import TINY_TEXT_WIDTH

# Against the formula in float64, with inputs up to ~16, measured with the AVX-512, AVX2 and default
# kernels: 3e-15 in float64, 5e-7 in float32, 2e-3 in float16 (whose inputs are already rounded).
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-2}


def norm(dtype: torch.dtype = torch.float64, groups: int = 4, channels: int = 8) -> nn.GroupNorm:
    torch.manual_seed(0)
    layer = nn.GroupNorm(groups, channels, eps=1e-6)
    nn.init.normal_(layer.weight)
    nn.init.normal_(layer.bias)
    return layer.to(dtype)


def by_hand(images: torch.Tensor, layer: nn.GroupNorm) -> torch.Tensor:
    """GroupNorm's formula in float64 on (N, C, ...): statistics over each image's channel groups."""
    x = images.double()
    groups = x.reshape(x.shape[0], layer.num_groups, -1)
    mean = groups.mean(-1, keepdim=True)
    var = groups.var(-1, unbiased=False, keepdim=True)
    normalised = ((groups - mean) / torch.sqrt(var + layer.eps)).reshape(x.shape)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return normalised * layer.weight.double().reshape(shape) + layer.bias.double().reshape(shape)


def frames_of_other_scales(videos: int, channels: int, frames: int, side: int) -> torch.Tensor:
    """(videos, frames, channels, h, w) rows whose frames differ in scale and offset, in float64."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(videos, frames, channels, side, side, generator=generator, dtype=torch.float64)
    scale = torch.arange(1, frames + 1, dtype=torch.float64).reshape(1, frames, 1, 1, 1)
    return x * scale + scale - 3


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_per_frame_norm_is_group_norm_of_each_frame_alone(dtype: torch.dtype) -> None:
    layer = norm(dtype)
    rows = frames_of_other_scales(2, 8, 5, 3)
    x = rows.to(dtype).permute(0, 2, 1, 3, 4)  # (videos, C, frames, h, w) as diffusers hands it over
    out = PerFrameGroupNorm(layer)(x)
    assert out.dtype == dtype and out.shape == x.shape
    expected = torch.stack([by_hand(x[:, :, f], layer) for f in range(5)], dim=2)
    assert (out.double() - expected).abs().max().item() < TOLERANCE[dtype]
    whole_video = by_hand(x, layer)  # what statistics across all frames would give
    assert (whole_video - expected).abs().max().item() > 0.1


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_per_frame_norm_accepts_any_layout(dtype: torch.dtype) -> None:
    layer = norm(dtype)
    x = frames_of_other_scales(2, 8, 5, 3).permute(0, 2, 1, 3, 4).contiguous().to(dtype)
    expected = torch.stack([by_hand(x[:, :, f], layer) for f in range(5)], dim=2)
    assert (PerFrameGroupNorm(layer)(x).double() - expected).abs().max().item() < TOLERANCE[dtype]


def test_per_frame_norm_reads_diffusers_layout_without_a_copy() -> None:
    """diffusers passes a permuted view of contiguous rows; the kernel must get those rows as they are."""
    wrapper = PerFrameGroupNorm(norm(torch.float32))
    seen: list[torch.Tensor] = []
    wrapper.norm.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    rows = torch.randn(2 * 5, 8, 3, 3)
    x = rows.reshape(2, 5, 8, 3, 3).permute(0, 2, 1, 3, 4)
    wrapper(x)
    assert seen[0].data_ptr() == rows.data_ptr() and seen[0].is_contiguous()


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_cross_frame_norm_is_group_norm_of_each_whole_video(dtype: torch.dtype) -> None:
    layer = norm(dtype)
    frames = FrameCount(4)
    rows = frames_of_other_scales(2, 8, 4, 3).reshape(2 * 4, 8, 3, 3).to(dtype)  # frame-major rows
    out = CrossFrameGroupNorm(layer, frames)(rows)
    assert out.dtype == dtype and out.shape == rows.shape
    for video in range(2):
        clip = rows[video * 4 : (video + 1) * 4]  # (frames, C, h, w)
        joined = clip.permute(1, 0, 2, 3).reshape(1, 8, 4 * 3, 3)  # all frames as one image
        expected = by_hand(joined, layer).reshape(8, 4, 3, 3).permute(1, 0, 2, 3)
        assert (out[video * 4 : (video + 1) * 4].double() - expected).abs().max().item() < TOLERANCE[dtype]
        per_frame = by_hand(clip, layer)
        assert (per_frame - expected).abs().max().item() > 0.1


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


@pytest.fixture(scope="module")
def tiny_parts(models_dir: Path):
    return load_checkpoint(models_dir / "Stable-diffusion" / "tiny-sd15.safetensors")


def test_reference_mode_wraps_the_right_norms(models_dir: Path, tiny_parts) -> None:
    for name, kind in (("tiny-mm-v1.ckpt", Kind.MM_V1), ("tiny-mm-v2.ckpt", Kind.MM_V2)):
        motion = load_motion_module(models_dir / "AnimateDiff" / name)
        motion_blocks = sum(
            isinstance(m, AnimateDiffTransformer3D)
            for m in build_motion_unet(tiny_parts.unet, motion.adapter, path=motion.path).modules()
        )
        assert motion_blocks > 0
        reference = _norm_kinds(
            MotionUNet(build_motion_unet(tiny_parts.unet, motion.adapter, path=motion.path), kind)
        )
        assert reference["per_frame"] == motion_blocks
        if kind is Kind.MM_V1:
            assert reference["cross_frame"] > 0 and reference["plain"] == 0
        else:
            assert reference["cross_frame"] == 0 and reference["plain"] > 0
        plain = _norm_kinds(
            MotionUNet(
                build_motion_unet(tiny_parts.unet, motion.adapter, path=motion.path), kind, "diffusers"
            )
        )
        assert plain["per_frame"] == plain["cross_frame"] == 0


# --- the diffusers internals motion_unet.py relies on -----------------------------------------------------

CHANGED = (
    f"diffusers {diffusers.__version__} changed the internals src/animdiff/models/motion_unet.py relies on "
    "for the reference GroupNorm statistics; pin diffusers to a version that passes this test, or update "
    "motion_unet.py and this test together: "
)


def test_diffusers_motion_module_norm_sees_frames_at_dim_2(models_dir: Path, tiny_parts) -> None:
    """PerFrameGroupNorm replaces `AnimateDiffTransformer3D.norm` and regroups (videos, C, frames, h, w);
    CrossFrameGroupNorm regroups the UNet's (videos * frames) rows video by video. If diffusers
    renames that norm or hands it another layout, the wrappers would normalise the wrong values
    silently, so this fails with a message instead."""
    motion = load_motion_module(models_dir / "AnimateDiff" / "tiny-mm-v2.ckpt")
    unet = build_motion_unet(tiny_parts.unet, motion.adapter, path=motion.path)
    blocks = [m for m in unet.modules() if isinstance(m, AnimateDiffTransformer3D)]
    assert blocks, CHANGED + "UNetMotionModel has no AnimateDiffTransformer3D motion modules"
    first = blocks[0]
    assert isinstance(getattr(first, "norm", None), nn.GroupNorm), (
        CHANGED + "AnimateDiffTransformer3D has no `norm` GroupNorm"
    )
    videos, frames, side = 2, 3, 8
    seen: dict[str, torch.Tensor] = {}
    first.norm.register_forward_pre_hook(lambda module, args: seen.setdefault("norm", args[0]))
    unet.conv_in.register_forward_pre_hook(lambda module, args: seen.setdefault("rows", args[0]))
    sample = torch.randn(videos, 4, frames, side, side)
    embeddings = torch.randn(videos * frames, 77, TINY_TEXT_WIDTH)
    with torch.inference_mode():
        unet(sample, torch.tensor(500), encoder_hidden_states=embeddings)
    shape = tuple(seen["norm"].shape)
    assert len(shape) == 5 and (shape[0], shape[1], shape[2]) == (videos, first.norm.num_channels, frames), (
        CHANGED + f"the motion module's norm saw {shape}, not (videos, channels, frames, h, w)"
    )
    video_major = sample.permute(0, 2, 1, 3, 4).reshape(videos * frames, 4, side, side)
    assert torch.equal(seen["rows"], video_major), (
        CHANGED + "the UNet's rows are no longer the frames of each video in turn"
    )


# --- the tiny models are well-conditioned at the size tests draw -------------------------------------------

FEWEST_VALUES_PER_GROUP = 8


@pytest.mark.numerics
@pytest.mark.parametrize("name", ["tiny-mm-v1.ckpt", "tiny-mm-v2.ckpt"])
def test_every_tiny_norm_normalises_enough_values(models_dir: Path, tiny_parts, name: str) -> None:
    """At 64x64 pixels the deepest UNet level is 1x1: a norm whose groups hold one or two values
    there divides by a spread that can be ~1e-5 and turns float rounding into differences that
    depend on the CPU's kernels. Every norm of the tiny UNet (reference norms, v1 and v2) and VAE
    must see at least FEWEST_VALUES_PER_GROUP values per group and image."""
    motion = load_motion_module(models_dir / "AnimateDiff" / name)
    unet = MotionUNet(build_motion_unet(tiny_parts.unet, motion.adapter, path=motion.path), motion.kind)
    counts: dict[str, int] = {}

    def record(where: str):
        def hook(module: nn.GroupNorm, args: tuple[torch.Tensor, ...]) -> None:
            per_image = args[0][0].numel() // module.num_groups
            counts[where] = min(counts.get(where, per_image), per_image)

        return hook

    models = {"unet": unet, "vae": tiny_parts.vae}
    for label, model in models.items():
        for where, module in model.named_modules():
            if isinstance(module, nn.GroupNorm):
                module.register_forward_pre_hook(record(f"{label}.{where}"))
    with torch.inference_mode():
        unet(torch.randn(2, 4, 4, 8, 8), torch.tensor(500), torch.randn(8, 77, TINY_TEXT_WIDTH))
        tiny_parts.vae.decode(tiny_parts.vae.encode(torch.randn(1, 3, 64, 64)).latent_dist.mean)
    assert len(counts) == sum(
        isinstance(m, nn.GroupNorm) for model in models.values() for m in model.modules()
    )
    worst = min(counts, key=counts.__getitem__)
    assert counts[worst] >= FEWEST_VALUES_PER_GROUP, f"{worst} normalises groups of {counts[worst]} values"
