"""Model families: what differs between SD1.5 and SDXL, in one small object chosen from the checkpoint.

The sampling loop, the context windows, guidance and the writers never ask which model runs: they
get a text conditioner (prompt text -> token embeddings, plus for SDXL one added-conditioning
vector per prompt), a noise schedule and a default context from here. What differs:

- checkpoint loading: models/load.py (SD1.5), models/sdxl.py (SDXL);
- motion modules: v1 / v2 / v3 / AnimateLCM, or AnimateDiff-XL / HotShot-XL (motion_xl.py);
- text conditioning: CLIP-L with clip skip (SD1.5), or CLIP-L + OpenCLIP-bigG penultimate states,
  the pooled embedding and the size / crop / target-size ids (SDXL, prompts/encode_xl.py);
- LoRA kinds the prompt may name (SD1.5 image and motion LoRAs, or SDXL LoRAs).

The motion module's own family (`MotionFamily`: training betas, whether the UNet's GroupNorms
take statistics across frames, trained clip length, longest window) comes from its detected kind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from animdiff.errors import ModelTypeError
from animdiff.models.detect import Detected, Kind
from animdiff.models.motion_xl import FAMILIES as XL_FAMILIES
from animdiff.models.motion_xl import LINEAR_BETAS, BetaSchedule, MotionFamily

# The clip length every SD1.5 motion module was trained on: the default context batch size.
SD15_TRAINED_LENGTH = 16

MOTION_FAMILIES: dict[Kind, MotionFamily] = {
    Kind.MM_V1: MotionFamily("AnimateDiff v1", Kind.MM_V1, LINEAR_BETAS, True, SD15_TRAINED_LENGTH, 24),
    Kind.MM_V2: MotionFamily("AnimateDiff v2", Kind.MM_V2, LINEAR_BETAS, False, SD15_TRAINED_LENGTH, 32),
    Kind.MM_V3: MotionFamily("AnimateDiff v3", Kind.MM_V3, LINEAR_BETAS, False, SD15_TRAINED_LENGTH, 32),
    # No stored positional encoding; the reference computes a 64-long one.
    Kind.MM_ANIMATELCM: MotionFamily(
        "AnimateLCM", Kind.MM_ANIMATELCM, LINEAR_BETAS, False, SD15_TRAINED_LENGTH, 64
    ),
    **XL_FAMILIES,
}


def motion_family(kind: Kind) -> MotionFamily:
    """The family data of a loadable motion-module kind."""
    try:
        return MOTION_FAMILIES[kind]
    except KeyError:
        raise ModelTypeError(f"no motion-module family for {kind}") from None


class TextConditioner(Protocol):
    """Prompt texts -> (token embeddings (n, tokens, width), added vectors (n, width2) or None)."""

    def encode_embeds(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]: ...


class ModelFamily:
    """One base-model family; `family_for` picks the instance (`SD15` or `SDXL`) from a checkpoint kind."""

    name: str
    checkpoint_kinds: frozenset[Kind]
    motion_kinds: frozenset[Kind]
    default_motion_kinds: frozenset[Kind]  # tried first when no module is named
    lora_kinds: frozenset[Kind]

    def fits(self, kind: Kind) -> bool:
        return kind in self.checkpoint_kinds

    def load_checkpoint(self, path: Path, dtype: torch.dtype) -> Any:
        raise NotImplementedError

    def load_motion_module(self, path: Path, dtype: torch.dtype) -> Any:
        raise NotImplementedError

    def text_conditioner(self, parts: Any, *, clip_skip: int, width: int, height: int) -> TextConditioner:
        raise NotImplementedError

    def require_motion_module(self, path: Path, found: Detected, checkpoint: Path | str) -> None:
        """Refuse, before any weight loads, a module of the other family (naming both files)."""
        if found.kind in self.motion_kinds:
            return
        for other in (SD15, SDXL):
            if other is not self and found.kind in other.motion_kinds:
                raise ModelTypeError(
                    f"{path} is an {other.name} motion module ({found.kind}) and {checkpoint} is an "
                    f"{self.name} checkpoint: they do not fit together"
                )
        from animdiff.models.load import require_motion_module

        require_motion_module(path, found)  # names what the file is instead

    @staticmethod
    def betas(motion: MotionFamily | None) -> BetaSchedule:
        """The schedule sampling runs with: the motion module's training schedule."""
        return motion.betas if motion is not None else LINEAR_BETAS


class SD15Family(ModelFamily):
    name = "SD1.5"
    checkpoint_kinds = frozenset({Kind.SD15, Kind.DIFFUSERS_SD15})
    motion_kinds = frozenset({Kind.MM_V1, Kind.MM_V2, Kind.MM_V3, Kind.MM_ANIMATELCM})
    default_motion_kinds = frozenset({Kind.MM_V1, Kind.MM_V2, Kind.MM_V3})
    lora_kinds = frozenset({Kind.LORA_SD15, Kind.MOTION_LORA})

    def load_checkpoint(self, path: Path, dtype: torch.dtype) -> Any:
        from animdiff.models.load import load_checkpoint

        return load_checkpoint(path, dtype)

    def load_motion_module(self, path: Path, dtype: torch.dtype) -> Any:
        from animdiff.models.load import load_motion_module

        return load_motion_module(path, dtype)

    def text_conditioner(self, parts: Any, *, clip_skip: int, width: int, height: int) -> TextConditioner:
        from animdiff.prompts.encode import PromptEncoder

        return PromptEncoder(parts.text_encoder, parts.tokenizer, clip_skip)


class SDXLFamily(ModelFamily):
    name = "SDXL"
    checkpoint_kinds = frozenset({Kind.SDXL, Kind.DIFFUSERS_SDXL})
    motion_kinds = frozenset(XL_FAMILIES)
    default_motion_kinds = frozenset(XL_FAMILIES)
    lora_kinds = frozenset({Kind.LORA_SDXL})

    def load_checkpoint(self, path: Path, dtype: torch.dtype) -> Any:
        from animdiff.models.sdxl import load_sdxl_checkpoint

        return load_sdxl_checkpoint(path, dtype)

    def load_motion_module(self, path: Path, dtype: torch.dtype) -> Any:
        from animdiff.models.motion_xl import load_xl_motion_module

        return load_xl_motion_module(path, dtype)

    def text_conditioner(self, parts: Any, *, clip_skip: int, width: int, height: int) -> TextConditioner:
        """A1111's SDXL conditioning; clip skip does not apply (A1111 ignores it for SDXL by default)."""
        from animdiff.prompts.encode_xl import SDXLPromptEncoder

        return SDXLPromptEncoder.for_parts(parts, width=width, height=height)


SD15 = SD15Family()
SDXL = SDXLFamily()


def family_for(checkpoint_kind: Kind | None) -> ModelFamily:
    """The family of a detected checkpoint kind; a hub id (kind unknown until downloaded) is SD1.5."""
    if checkpoint_kind is not None and SDXL.fits(checkpoint_kind):
        return SDXL
    return SD15
