"""Feed-forward slicing: the slice sizes it picks, and the UNet's values unchanged by it."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from hypothesis import given
from hypothesis import strategies as st

from animdiff.models.controlnet import ControlNet
from animdiff.models.detect import Kind
from animdiff.models.feed_forward_slices import FF_SLICE_BYTES, slice_size, sliced_blocks
from animdiff.models.motion_unet import MotionUNet
from animdiff.testing.controlnet import tiny_controlnet
from animdiff.testing.factory import TINY_TEXT_WIDTH


def test_slice_sizes() -> None:
    # SDXL 1024x1024, CFG: a top-level motion module's GEGLU, 32,768 rows x 16 frames x 2560, float16.
    assert slice_size(32768, 16, 2560, 2, 1, FF_SLICE_BYTES) == 1
    # SD1.5 512x512, CFG, 16 frames: a top-level spatial block's GEGLU, 32 frames x 4096 tokens x 2560.
    assert slice_size(32, 4096, 2560, 2, 0, FF_SLICE_BYTES) == 8
    assert slice_size(32, 4096, 2560, 2, 0, None) is None  # no budget: one piece
    assert slice_size(2, 64, 64, 4, 0, FF_SLICE_BYTES) is None  # small: one piece
    assert slice_size(1, 4096, 2560, 2, 0, 1024) == 1  # nothing fits: one entry a piece


@given(
    rows=st.integers(1, 96),
    tokens=st.integers(1, 48),
    widest=st.integers(1, 64),
    value_bytes=st.sampled_from([2, 4, 8]),
    dim=st.sampled_from([0, 1]),
    budget=st.integers(1, 2**20),
)
def test_a_slice_divides_its_dimension_and_is_the_largest_that_fits(
    rows: int, tokens: int, widest: int, value_bytes: int, dim: int, budget: int
) -> None:
    size = slice_size(rows, tokens, widest, value_bytes, dim, budget)
    total = rows * tokens * widest * value_bytes
    if total <= budget:
        assert size is None
        return
    length = (rows, tokens)[dim]
    per_entry = total // length
    assert size is not None and length % size == 0
    assert size == 1 or size * per_entry <= budget
    larger = [d for d in range(size + 1, length) if length % d == 0]
    assert all(d * per_entry > budget for d in larger)


def test_sliced_feed_forwards_give_the_same_noise(tiny_unet: MotionUNet) -> None:
    """The tiny UNet in float64 with a 2 KiB budget (every block sliced) against one piece; at the
    default budget a tiny call runs every feed-forward in one piece, as before."""
    unet = copy.deepcopy(tiny_unet).double()
    generator = torch.Generator().manual_seed(3)
    sample = torch.randn(2, 4, 4, 8, 8, dtype=torch.float64, generator=generator)
    text = torch.randn(8, 77, TINY_TEXT_WIDTH, dtype=torch.float64, generator=generator)
    with torch.no_grad():
        whole = unet(sample, torch.tensor(500), text)
        assert sliced_blocks(unet.unet) == []
        unet.ff_budget.bytes = 2048
        sliced = unet(sample, torch.tensor(500), text)
        blocks = sliced_blocks(unet.unet)
    dims = {block._chunk_dim for block in blocks}
    assert dims == {0, 1}  # spatial blocks by rows, motion modules by frames
    torch.testing.assert_close(sliced, whole, rtol=0, atol=1e-12)


def test_a_controlnet_slices_its_feed_forwards_too() -> None:
    net = ControlNet(tiny_controlnet("canny").double(), Kind.CONTROLNET_SD15, Path("control_canny.pth"))
    generator = torch.Generator().manual_seed(4)
    sample = torch.randn(4, 4, 8, 8, dtype=torch.float64, generator=generator)
    text = torch.randn(4, 77, net.model.config.cross_attention_dim, dtype=torch.float64, generator=generator)
    hint = torch.rand(4, 3, 64, 64, dtype=torch.float64, generator=generator)
    args = dict(timestep=torch.tensor([500] * 4), encoder_hidden_states=text, controlnet_cond=hint)
    with torch.no_grad():
        down, mid = net.model(sample, return_dict=False, **args)
        assert sliced_blocks(net.model) == []
        net.ff_budget.bytes = 2048
        down_sliced, mid_sliced = net.model(sample, return_dict=False, **args)
        assert sliced_blocks(net.model)
    for got, want in zip([*down_sliced, mid_sliced], [*down, mid], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
