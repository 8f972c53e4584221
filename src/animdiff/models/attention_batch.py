"""Motion-module attention in batches CUDA can launch: at most 65,535 rows a kernel call.

A motion module attends across the frames of every latent pixel on its own, so its attention
batch is videos x latent height x latent width: 32,768 for SDXL at 1024x1024 with CFG and one
context window a call. PyTorch's FlashAttention (the kernel float16 gets on recent cards) puts the
batch on the second axis of its launch grid, which CUDA caps at 65,535 blocks, and does not split a
larger batch itself; cuDNN's attention declines such batches and leaves them to FlashAttention. So
`--window-batch 2` at 1024x1024, SD1.5 at 768x768 with `--window-batch 4`, or any model past about
1448x1448 would stop with "CUDA error: invalid configuration argument". Rows never attend to one
another, so cutting the batch into equal pieces changes only how many kernels run.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.attention_processor import Attention
from torch import nn

from animdiff.models.motion_parts import inside_motion_modules

#: The most blocks CUDA launches along a grid's y or z axis (where FlashAttention puts the batch).
MAX_ATTENTION_BATCH = 65_535


def _rows(tensor: torch.Tensor | None, rows: int, part: slice) -> torch.Tensor | None:
    """A per-row argument's piece; one shared by every row (or none) is passed whole."""
    if tensor is None or tensor.shape[0] != rows:
        return tensor
    return tensor[part]


class BatchSplitAttention:
    """Runs another attention processor on pieces of at most `max_batch` rows, equal in size."""

    def __init__(self, inner: Any, max_batch: int = MAX_ATTENTION_BATCH) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.inner = inner
        self.max_batch = max_batch

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        rows = hidden_states.shape[0]
        pieces = -(-rows // self.max_batch)
        if pieces <= 1:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        size = -(-rows // pieces)
        out: torch.Tensor | None = None
        for start in range(0, rows, size):
            part = slice(start, start + size)
            piece = self.inner(
                attn,
                hidden_states[part],
                _rows(encoder_hidden_states, rows, part),
                _rows(attention_mask, rows, part),
                _rows(temb, rows, part),
                **kwargs,
            )
            if out is None:  # written piece by piece: no list of pieces and concatenated copy at once
                out = piece.new_empty((rows, *piece.shape[1:]))
            out[part] = piece
        assert out is not None
        return out


def split_motion_attention(unet: nn.Module, max_batch: int = MAX_ATTENTION_BATCH) -> int:
    """Gives every attention inside the motion modules of `unet` batches of at most `max_batch` rows;
    returns how many it changed. Spatial attention keeps its processor (its batch is videos x frames);
    an attention already split is left as it is, so calling this twice changes nothing."""
    changed = 0
    for attn in inside_motion_modules(unet, Attention):
        if not isinstance(attn.processor, BatchSplitAttention):
            attn.set_processor(BatchSplitAttention(attn.processor, max_batch))
            changed += 1
    return changed
