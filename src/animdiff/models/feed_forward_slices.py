"""The transformer blocks' feed-forward in slices when its widest activation would be large.

A feed-forward widens every token to 4x its channels, and SD's GEGLU first to 8x (the value half
and the gate half), so its activations are the largest of the UNet: at SDXL's 1024x1024 with 16
frames and CFG, a motion module's feed-forward at the top level holds 2.5 GiB for its projection
alone, and the gate, the product and the output come on top; SD1.5's spatial blocks at 512x512
likewise. Computed a slice of the batch at a time (frames for a motion module, whose batch is
pixels; rows for a spatial block, whose batch is frames), each slice's activations are freed before
the next: the job's peak falls by about a fifth (bench/memory_estimate.py) and every token gets
the same arithmetic, since a feed-forward never mixes tokens. diffusers' blocks do the slicing
themselves (`set_chunk_feed_forward`); a forward pre-hook chooses the slice size per call from the
activation it would hold, so small calls (every tiny-model test, small images) run as one piece,
exactly as before.
"""

from __future__ import annotations

from typing import Any

from diffusers.models.attention import BasicTransformerBlock
from torch import nn

from animdiff.models.motion_parts import inside_motion_modules

#: The most bytes a feed-forward's widest activation may hold in one piece; the piece's whole
#: working set (projection, gate, product) is about twice that.
FF_SLICE_BYTES = 256 * 2**20


def _widest(block: BasicTransformerBlock) -> int:
    """The feed-forward's widest output per token (GEGLU's projection: 8x the channels)."""
    return max(m.weight.shape[0] for m in block.ff.modules() if isinstance(m, nn.Linear))


def slice_size(
    rows: int, tokens: int, widest: int, value_bytes: int, dim: int, budget: int | None
) -> int | None:
    """How many entries of `dim` (0: rows, 1: tokens) one piece takes: None for one piece; else the
    largest divisor of that dimension whose piece stays within `budget` (at least 1)."""
    total = rows * tokens * widest * value_bytes
    if budget is None or total <= budget:
        return None
    length = (rows, tokens)[dim]
    per_entry = total // length
    fitting = [d for d in range(1, length) if length % d == 0 and d * per_entry <= budget]
    return max(fitting, default=1)


class Budget:
    """The byte budget every slicer of one UNet reads (None: never slice), changeable after setup."""

    def __init__(self, nbytes: int | None = FF_SLICE_BYTES) -> None:
        self.bytes = nbytes


class FeedForwardSlicer:
    """The pre-hook of one block: sets its slicing for the call about to run from the input's size."""

    def __init__(self, block: BasicTransformerBlock, dim: int, budget: Budget) -> None:
        self.widest = _widest(block)
        self.dim = dim
        self.budget = budget

    def __call__(self, block: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        rows, tokens = hidden.shape[0], hidden.shape[1]
        size = slice_size(rows, tokens, self.widest, hidden.element_size(), self.dim, self.budget.bytes)
        block.set_chunk_feed_forward(size, self.dim)


def slice_feed_forwards(unet: nn.Module, budget: Budget) -> int:
    """Hooks every transformer block of `unet`: motion modules slice by frames (their rows are
    pixels, which need not divide evenly), spatial blocks by rows (frames). Returns the count."""
    in_motion = {id(block) for block in inside_motion_modules(unet, BasicTransformerBlock)}
    hooked = 0
    for block in unet.modules():
        if isinstance(block, BasicTransformerBlock):
            dim = 1 if id(block) in in_motion else 0
            block.register_forward_pre_hook(FeedForwardSlicer(block, dim, budget), with_kwargs=True)
            hooked += 1
    return hooked


def sliced_blocks(unet: nn.Module) -> list[BasicTransformerBlock]:
    """The blocks whose last call ran in pieces (tests and benches ask)."""
    return [b for b in unet.modules() if isinstance(b, BasicTransformerBlock) and b._chunk_size is not None]
