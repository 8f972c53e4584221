"""fp8 weight storage: the UNet's and the motion module's Linear/Conv weights kept as float8.

A1111's "FP8 weight" option (Settings/Optimizations, torch >= 2.1) stores the model's Linear and
Conv2d weights as `torch.float8_e4m3fn` and casts them to the compute dtype layer by layer as the
model runs; the AnimateDiff extension's motion modules are covered too. That halves the device
memory the weights take against float16 (a quarter of float32) at the price of rounding every
weight to 3 mantissa bits.

Here it is one pass over a loaded model (`store_fp8`), done by our own loader code (the model
cache) on the UNet and the motion module before they move to the device:
- every `nn.Linear` and `nn.Conv2d` weight becomes float8_e4m3fn; biases, norms, embeddings and
  buffers (positional encodings) stay in the compute dtype, as their memory is negligible and
  their precision is not;
- the layer's class becomes `Fp8Linear` / `Fp8Conv2d`, subclasses whose only change is that
  `forward` casts the weight to the input's dtype for that call. The parameters, their names and
  their tensors stay the same objects, so the UNet with motion modules, which shares its tensors
  with the cached UNet and motion module, and the LoRA code (which patches `weight` in place, and
  restores the float8 backups exactly) see the float8 tensors themselves.
- `Fp8UNetMotionModel` reports the compute dtype as its `dtype` (diffusers casts the timestep
  embedding to `self.dtype`, which would otherwise read the first weight: float8).

Weights are converted without a scale, as A1111 does: float8_e4m3fn holds magnitudes up to 448,
far above any trained weight; a value's rounding error is at most 1/16 of it (2**-10 below 2**-6).
On the CPU the per-layer cast goes to float32: that saves memory there too, and makes the option
testable without a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from diffusers import UNetMotionModel
from torch import nn

from animdiff.errors import ParamsError

# Largest relative rounding error of a normal float8_e4m3fn value (3 mantissa bits: half an ulp),
# and the absolute one below its smallest normal, 2**-6 (subnormal step 2**-9, half of it).
RELATIVE_ROUNDING = 2.0**-4
SUBNORMAL_ROUNDING = 2.0**-10


def fp8_dtype() -> torch.dtype:
    """torch.float8_e4m3fn, or a ParamsError naming the installed PyTorch where it has none."""
    dtype = getattr(torch, "float8_e4m3fn", None)
    if dtype is None:
        raise ParamsError(
            f"--fp8 needs PyTorch 2.1 or newer (torch.float8_e4m3fn); the installed PyTorch "
            f"{torch.__version__} has no float8 dtypes"
        )
    return dtype


def is_fp8(tensor: torch.Tensor) -> bool:
    dtype = getattr(torch, "float8_e4m3fn", None)
    return dtype is not None and tensor.dtype == dtype


class Fp8Linear(nn.Linear):
    """nn.Linear whose weight is stored as float8 and cast to the input's dtype for each call."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # torch's name: callers pass it by keyword
        return F.linear(input, self.weight.to(input.dtype), self.bias)


class Fp8Conv2d(nn.Conv2d):
    """nn.Conv2d whose weight is stored as float8 and cast to the input's dtype for each call."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # torch's name: callers pass it by keyword
        return self._conv_forward(input, self.weight.to(input.dtype), self.bias)


# Only the exact library classes: a subclass may compute differently, and would then be wrong.
_FP8_CLASSES: dict[type[nn.Module], type[nn.Module]] = {nn.Linear: Fp8Linear, nn.Conv2d: Fp8Conv2d}


def compute_dtype(model: nn.Module) -> torch.dtype:
    """The dtype a model computes in: that of its first floating tensor that is not float8."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point() and not is_fp8(tensor):
            return tensor.dtype
    return torch.float32


class Fp8UNetMotionModel(UNetMotionModel):
    """UNetMotionModel whose `dtype` is the compute dtype, not the first weight's (float8)."""

    @property
    def dtype(self) -> torch.dtype:
        return compute_dtype(self)


def _layers(model: nn.Module) -> Iterator[nn.Module]:
    for module in model.modules():
        if type(module) in _FP8_CLASSES or type(module) in _FP8_CLASSES.values():
            yield module


def store_fp8(model: nn.Module) -> int:
    """Convert every Linear/Conv2d weight of `model` to float8 in place; returns the bytes saved.

    Already converted layers are left alone, so the UNet with motion modules (whose tensors are
    the cached UNet's and motion module's, already float8) only gets its layer classes swapped.
    """
    dtype = fp8_dtype()
    saved = 0
    with torch.inference_mode(False), torch.no_grad():
        for module in _layers(model):
            weight = module.weight
            if not is_fp8(weight):
                saved += weight.numel() * (weight.element_size() - 1)
                weight.data = weight.data.to(dtype)
            module.__class__ = _FP8_CLASSES.get(type(module), type(module))
    return saved


def weight_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of `model`'s parameters and buffers: 'fp8' (float8 tensors) and 'other'."""
    counts = {"fp8": 0, "other": 0}
    for tensor in (*model.parameters(), *model.buffers()):
        counts["fp8" if is_fp8(tensor) else "other"] += tensor.numel() * tensor.element_size()
    return counts
