"""What a computation would hold in GPU memory, counted on PyTorch's `meta` device, without a GPU.

Tensors on `meta` have shapes, dtypes and storages but no values, so a real-size model runs on it
in seconds and in no memory, through the same Python code as on a card. `LiveBytes` watches every
operation and adds up the bytes of the storages alive at each moment, the way CUDA's caching
allocator counts allocated memory (each block rounded up to 512 bytes): its `peak` is what
`torch.cuda.max_memory_allocated` would report for the same work, less what no operator returns:
the CUDA context, cuBLAS and cuDNN workspaces, and the allocator's unused reserve.

One thing differs on `meta` by default: PyTorch's `scaled_dot_product_attention` has no fused
kernel there and falls back to the explicit softmax(QK^T)V, which holds the whole attention matrix.
`CudaAttention` routes it to the kernel CUDA picks instead (FlashAttention for float16/bfloat16
with head size up to 256, memory-efficient attention otherwise), whose meta functions allocate
exactly what those kernels return (the output and its log-sum-exp). It also refuses, as CUDA
does, a FlashAttention batch longer than its launch grid takes (`MAX_ATTENTION_BATCH`).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from animdiff.models.attention_batch import MAX_ATTENTION_BATCH

#: CUDA's caching allocator hands out blocks in multiples of this.
BLOCK = 512
FLASH_DTYPES = (torch.float16, torch.bfloat16)
FLASH_MAX_HEAD = 256


def _block_bytes(nbytes: int) -> int:
    return -(-nbytes // BLOCK) * BLOCK


class LiveBytes(TorchDispatchMode):
    """Bytes of tensor storages alive now (`current`) and at most (`peak`) while it is active.

    A storage is counted once, however many views share it, from the operation that returned it
    until it is freed; storages made before the mode are counted only once `hold` is given them
    (weights, inputs kept across phases).
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def hold(self, tensors: Iterable[torch.Tensor]) -> None:
        for tensor in tensors:
            self._count(tensor)

    def hold_modules(self, *modules: torch.nn.Module) -> None:
        for module in modules:
            self.hold([*module.parameters(), *module.buffers()])

    def _count(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._sizes:
            return
        size = _block_bytes(storage.nbytes())
        self._sizes[key] = size
        self.current += size
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.current -= self._sizes.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self._count(leaf)
        return out


class CudaAttention(TorchFunctionMode):
    """`scaled_dot_product_attention` on `meta` tensors as the CUDA kernel would allocate it.

    Only meta tensors are redirected; anything else runs as usual. Dropout is not modelled (the
    models here run in eval mode).
    """

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and args and args[0].is_meta:
            return _fused_attention(*args, **kwargs)
        return func(*args, **kwargs)


def _fused_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    aten = torch.ops.aten
    flash = (
        attn_mask is None
        and query.dtype in FLASH_DTYPES
        and query.shape[-1] <= FLASH_MAX_HEAD
        and value.shape[-1] == query.shape[-1]
    )
    if flash:
        if max(query.shape[0], query.shape[1]) > MAX_ATTENTION_BATCH:
            raise RuntimeError(
                "CUDA error: invalid configuration argument (FlashAttention launches its batch and heads "
                f"on grid axes of at most {MAX_ATTENTION_BATCH:,} blocks; got {tuple(query.shape[:2])})"
            )
        out = aten._scaled_dot_product_flash_attention(query, key, value, 0.0, is_causal, False, scale=scale)
    else:
        out = aten._scaled_dot_product_efficient_attention(
            query, key, value, attn_mask, False, 0.0, is_causal, scale=scale
        )
    return out[0]
