"""The ControlNet layer of the denoiser: residuals for one UNet call on some context windows.

`guided_windows` slices every per-frame input with the windows' frame indices (latents, prompt
embeddings and, here, each unit's hints) and asks `ControlLayer.residuals` for the residuals of
that call. Each unit whose guidance range covers the current model evaluation runs its
ControlNet on the same rows the UNet gets; the residuals of all units are summed and handed to
the UNet with motion modules as `down_block_additional_residuals` / `mid_block_additional_residual`.
When no unit acts (no units, or outside every unit's range) there are no residuals and the UNet
call is exactly the one without ControlNet.

Control modes, as the ControlNet extension defines them:

- **Balanced**: the residuals times the unit's weight, on the cond and the uncond rows alike.
- **My prompt is more important**: "soft injection": residual `i` of the 13 (12 down-block
  outputs, then the mid block) is scaled by `weight * 0.825 ** (12 - i)`, so the deepest
  features keep the full weight and the shallow ones fade; cond and uncond rows alike.
- **ControlNet is more important**: "CFG injection": the residuals (times the weight) reach the
  cond rows only; the uncond rows get none, so classifier-free guidance amplifies the control
  by the CFG scale. The ControlNet then only runs on the cond rows. ControlNets with global
  average pooling (shuffle) are always applied this way, as the extension does.

SDXL ControlNets take the UNet's added conditioning (pooled text + size/crop features), one row
per frame: `guided_windows` slices it with the same frame indices and hands it here as `vector`,
the input of the size/crop embedding (`add_embedding`) that the UNet gets too (see
`_added_conditioning`).

Without classifier-free guidance (CFG scale 1) only cond rows exist and the modes differ only
by the soft weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch

BALANCED = "Balanced"
PROMPT_MORE_IMPORTANT = "My prompt is more important"
CONTROL_MORE_IMPORTANT = "ControlNet is more important"
SOFT_INJECTION_BASE = 0.825
TIME_IDS = 6  # SDXL's size/crop ids per row


@dataclass
class Residuals:
    """What the UNet adds to its skip connections and to its mid block's output."""

    down: list[torch.Tensor]
    mid: torch.Tensor

    def add(self, other: Residuals) -> Residuals:
        return Residuals([a + b for a, b in zip(self.down, other.down, strict=True)], self.mid + other.mid)


@dataclass
class ControlUnit:
    """One ControlNet ready to run: the model, its per-frame hints and how it is applied."""

    model: torch.nn.Module  # diffusers ControlNetModel
    hints: torch.Tensor  # (frames, 3, H, W): uint8 (0-255) or float in [0, 1]
    weight: float = 1.0
    control_mode: str = BALANCED
    applies: Callable[[int], bool] = lambda step: True  # model evaluation (from 0) -> acts?

    @property
    def cond_only(self) -> bool:
        pooled = bool(getattr(getattr(self.model, "config", None), "global_pool_conditions", False))
        return self.control_mode == CONTROL_MORE_IMPORTANT or pooled

    def scales(self, count: int) -> list[float]:
        """Per-residual multipliers for `count` residuals (down blocks then mid)."""
        if self.control_mode == PROMPT_MORE_IMPORTANT:
            return [self.weight * SOFT_INJECTION_BASE ** float(count - 1 - i) for i in range(count)]
        return [self.weight] * count


def _hint_rows(hints: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    rows = hints.to(device)
    if rows.dtype == torch.uint8:
        return rows.to(torch.float32).div_(255.0).to(dtype)
    return rows.to(dtype)


class ControlLayer:
    """The units of a job; `residuals` is called once per UNet call with the sliced hints."""

    def __init__(self, units: Sequence[ControlUnit]) -> None:
        self.units = list(units)

    @property
    def hints(self) -> list[torch.Tensor]:
        """Each unit's per-frame hints, for the caller that slices per-frame inputs."""
        return [unit.hints for unit in self.units]

    def residuals(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        embeddings: torch.Tensor,
        hints: Sequence[torch.Tensor],
        *,
        step: int,
        guided: bool,
        vector: torch.Tensor | None = None,
    ) -> Residuals | None:
        """Summed residuals for rows `sample` (N, C, h, w) with `embeddings` (N, tokens, width).

        With `guided`, the first half of the rows is cond and the second half uncond (the same
        frames); `hints` are the units' hints of the first half's frames (N/2 rows, or N).
        `vector`: SDXL's added conditioning of the same N rows (None for SD1.5).
        """
        total: Residuals | None = None
        for unit, unit_hints in zip(self.units, hints, strict=True):
            if not unit.applies(step):
                continue
            found = self._run(unit, sample, timestep, embeddings, unit_hints, guided, vector)
            total = found if total is None else total.add(found)
        return total

    def _run(
        self,
        unit: ControlUnit,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        embeddings: torch.Tensor,
        hints: torch.Tensor,
        guided: bool,
        vector: torch.Tensor | None = None,
    ) -> Residuals:
        model = unit.model
        weight = next(model.parameters())
        device, dtype = weight.device, weight.dtype
        cond_only = guided and unit.cond_only
        rows = sample.shape[0] // 2 if cond_only else sample.shape[0]
        hint = _hint_rows(hints, device, dtype)
        if guided and not cond_only:
            hint = torch.cat([hint, hint])
        added, context = _added_conditioning(model, vector, rows, device, dtype)
        with context:
            down, mid = model(
                sample[:rows].to(device=device, dtype=dtype),
                timestep.to(device) if isinstance(timestep, torch.Tensor) else timestep,
                encoder_hidden_states=embeddings[:rows].to(device=device, dtype=dtype),
                controlnet_cond=hint,
                return_dict=False,
                **added,
            )
        scales = unit.scales(len(down) + 1)
        down = [d * s for d, s in zip(down, scales, strict=False)]
        mid = mid * scales[-1]
        if cond_only:
            down = [torch.cat([d, torch.zeros_like(d)]) for d in down]
            mid = torch.cat([mid, torch.zeros_like(mid)])
        return Residuals(list(down), mid)


def _added_conditioning(
    model: torch.nn.Module, vector: torch.Tensor | None, rows: int, device: torch.device, dtype: torch.dtype
) -> tuple[dict, contextlib.AbstractContextManager]:
    """`added_cond_kwargs` for an SDXL ControlNet's call on the first `rows` rows, and the context
    to call it in.

    The job's per-frame vectors are already the input of the size/crop embedding (pooled text
    embedding, then the sinusoids of the size/crop ids, as prompts/encode_xl.py builds them for the
    UNet). diffusers' ControlNetModel builds that same input from `text_embeds` and `time_ids`, with
    the same parameterless sinusoids; rather than recompute it, the vectors' rows are handed to its
    `add_embedding` in place of what it built, so the ControlNet gets exactly the UNet's rows.
    """
    if getattr(getattr(model, "config", None), "addition_embed_type", None) != "text_time":
        return {}, nullcontext()
    if vector is None:
        raise ValueError("an SDXL ControlNet needs the added-conditioning vectors (vector=)")
    rows_vector = vector[:rows].to(device=device, dtype=dtype)
    width = model.add_embedding.linear_1.in_features
    if rows_vector.shape != (rows, width):
        raise ValueError(f"the ControlNet takes {width}-wide added conditioning, got {tuple(vector.shape)}")
    added = {
        "added_cond_kwargs": {
            "text_embeds": rows_vector,
            "time_ids": torch.zeros((rows, TIME_IDS), device=device, dtype=dtype),
        }
    }
    return added, _replaced_input(model.add_embedding, rows_vector)


@contextmanager
def _replaced_input(module: torch.nn.Module, value: torch.Tensor) -> Iterator[None]:
    handle = module.register_forward_pre_hook(lambda _module, _args: (value,))
    try:
        yield
    finally:
        handle.remove()
