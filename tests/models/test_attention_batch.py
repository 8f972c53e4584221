"""Motion-module attention split into batches CUDA can launch: the same values, in pieces, only where
the batch is videos x pixels."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from animdiff.models.attention_batch import MAX_ATTENTION_BATCH, BatchSplitAttention, split_motion_attention
from animdiff.models.motion_parts import inside_motion_modules
from animdiff.models.motion_unet import MotionUNet
from animdiff.testing.factory import TINY_TEXT_WIDTH
from animdiff.testing.meta_memory import CudaAttention


class Recording:
    """An attention processor that notes the batch of every call it passes on."""

    def __init__(self) -> None:
        self.inner = AttnProcessor2_0()
        self.batches: list[int] = []

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        self.batches.append(hidden_states.shape[0])
        return self.inner(attn, hidden_states, *args, **kwargs)


def _attention() -> Attention:
    torch.manual_seed(0)
    return Attention(query_dim=16, heads=2, dim_head=8).double().eval()


@pytest.mark.parametrize(
    ("rows", "max_batch", "batches"), [(11, 4, [4, 4, 3]), (12, 4, [4, 4, 4]), (9, 9, [9])]
)
def test_pieces_are_equal_and_give_the_whole_call(rows: int, max_batch: int, batches: list[int]) -> None:
    attn = _attention()
    frames = torch.randn(rows, 5, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = AttnProcessor2_0()(attn, frames)
        recording = Recording()
        split = BatchSplitAttention(recording, max_batch)(attn, frames)
    assert recording.batches == batches
    torch.testing.assert_close(split, whole, rtol=0, atol=1e-12)


def test_per_row_masks_and_context_are_cut_with_the_rows() -> None:
    attn = Attention(query_dim=16, cross_attention_dim=12, heads=2, dim_head=8).double().eval()
    generator = torch.Generator().manual_seed(2)
    frames = torch.randn(7, 5, 16, dtype=torch.float64, generator=generator)
    context = torch.randn(7, 3, 12, dtype=torch.float64, generator=generator)
    mask = torch.zeros(7, 1, 3, dtype=torch.float64)
    mask[::2, :, 0] = -1e4  # every other row ignores its first context token
    with torch.no_grad():
        whole = AttnProcessor2_0()(attn, frames, context, mask)
        split = BatchSplitAttention(AttnProcessor2_0(), 3)(attn, frames, context, mask)
    torch.testing.assert_close(split, whole, rtol=0, atol=1e-12)


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BatchSplitAttention(AttnProcessor2_0(), 0)


def _processors(unet: MotionUNet) -> tuple[list[object], list[object]]:
    motion, spatial = [], []
    in_motion = {id(attn) for attn in inside_motion_modules(unet.unet, Attention)}
    for attn in unet.unet.modules():
        if isinstance(attn, Attention):
            (motion if id(attn) in in_motion else spatial).append(attn.processor)
    return motion, spatial


def test_the_motion_unet_splits_motion_attention_only(tiny_unet: MotionUNet) -> None:
    motion, spatial = _processors(tiny_unet)
    assert motion and spatial
    assert all(isinstance(p, BatchSplitAttention) and p.max_batch == MAX_ATTENTION_BATCH for p in motion)
    assert not any(isinstance(p, BatchSplitAttention) for p in spatial)
    assert split_motion_attention(tiny_unet.unet) == 0  # already split: nothing wrapped twice


def test_the_unet_gives_the_same_noise_in_small_pieces(tiny_unet: MotionUNet) -> None:
    """The whole UNet in float64 with pieces of 7 rows (a 2-video 8x8 latent has 128 rows at the
    first level) against one piece: the split sits where the batch is videos x pixels."""
    unet = copy.deepcopy(tiny_unet).double()
    generator = torch.Generator().manual_seed(3)
    sample = torch.randn(2, 4, 3, 8, 8, dtype=torch.float64, generator=generator)
    text = torch.randn(6, 77, TINY_TEXT_WIDTH, dtype=torch.float64, generator=generator)
    motion, _ = _processors(unet)
    with torch.no_grad():
        whole = unet(sample, torch.tensor(500), text)
        for processor in motion:
            processor.max_batch = 7
        recording = Recording()
        motion[0].inner = recording
        split = unet(sample, torch.tensor(500), text)
    assert recording.batches and max(recording.batches) <= 7
    torch.testing.assert_close(split, whole, rtol=0, atol=1e-12)


def test_cuda_attention_refuses_what_flash_attention_cannot_launch() -> None:
    ok = torch.empty(MAX_ATTENTION_BATCH, 8, 16, 40, device="meta", dtype=torch.float16)
    too_many = torch.empty(MAX_ATTENTION_BATCH + 1, 8, 16, 40, device="meta", dtype=torch.float16)
    with CudaAttention():
        assert F.scaled_dot_product_attention(ok, ok, ok).shape == ok.shape
        with pytest.raises(RuntimeError, match="invalid configuration argument"):
            F.scaled_dot_product_attention(too_many, too_many, too_many)


def test_a_motion_batch_past_the_grid_limit_launches_in_pieces(tiny_unet: MotionUNet) -> None:
    """Two videos of a 184x184 latent (1472x1472 pixels) are 67,712 rows at the first motion module:
    in float16 on meta, with the kernel CUDA would pick, the split UNet runs through and the unsplit
    one stops where CUDA would."""
    unet = copy.deepcopy(tiny_unet).to("meta").half()
    sample = torch.empty(2, 4, 2, 184, 184, device="meta", dtype=torch.float16)
    text = torch.empty(4, 77, TINY_TEXT_WIDTH, device="meta", dtype=torch.float16)
    timestep = torch.tensor(500, device="meta")
    with torch.no_grad(), CudaAttention():
        assert unet(sample, timestep, text).shape == sample.shape
        motion, _ = _processors(unet)
        for processor in motion:
            processor.max_batch = 2**31 - 1
        with pytest.raises(RuntimeError, match="invalid configuration argument"):
            unet(sample, timestep, text)
