"""Model CPU offload: weights live in CPU memory and visit the device only for their phase.

`on_device(module, device)` moves every parameter and buffer of `module` to `device` for the
duration of a block and then puts the *same* CPU tensors back (no copy on the way back), so the
cached model, the tensors it shares with other modules (the UNet with motion modules shares them
with the UNet and the motion module) and LoRA patches applied in place all stay as they were. The
cost is one host-to-device copy of the module per phase and job: the text encoders while encoding,
the UNet while sampling, the VAE while decoding; device memory then holds one of them at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def on_device(module: nn.Module | None, device: torch.device, enabled: bool = True) -> Iterator[None]:
    if module is None or not enabled:
        yield
        return
    tensors = [*module.parameters(), *module.buffers()]
    saved = [t.data for t in tensors]
    with torch.inference_mode(False), torch.no_grad():
        for tensor, data in zip(tensors, saved, strict=True):
            tensor.data = data.to(device, non_blocking=True)
    try:
        yield
    finally:
        with torch.inference_mode(False), torch.no_grad():
            for tensor, data in zip(tensors, saved, strict=True):
                tensor.data = data
