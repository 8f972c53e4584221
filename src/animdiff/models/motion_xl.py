"""SDXL motion modules (AnimateDiff-XL, HotShot-XL) -> diffusers `MotionAdapter`, with their family's data.

Layouts users have:
- AnimateDiff-XL, `mm_sdxl_v10_beta.ckpt`: guoyww's layout (`{down|up}_blocks.N.motion_modules.M.
  temporal_transformer.*`, `pos_encoder.pe` of length 32), 3 levels, no mid block; a plain pickled
  state dict, read through safe unpickling.
- HotShot-XL as published, `hsxl_temporal_layers.safetensors`: `{down|up}_blocks.N.temporal_attentions.M.*`
  (no `temporal_transformer` level) and `pos_encoder.positional_encoding` (length 24). The reference
  cannot read it and asks for its own re-keyed copy;
- that re-keyed copy (`mm_sdxl_hs.safetensors`): guoyww's names with a length-24 `pe`.
Both HotShot layouts hold the same network and load to identical adapters.

The two families differ in more than weights, and that difference is data here (`MotionFamily`): the
noise schedule the module was trained with (the reference swaps the sampler's betas while it is in
use), whether the UNet's GroupNorms take statistics across frames, the clip length it was trained
on (the default context when the user gives none) and the longest window it accepts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import MotionAdapter

from animdiff.errors import ModelFileError, ModelTypeError, NotSupportedYetError
from animdiff.models import convert
from animdiff.models.detect import MOTION_KINDS, Detected, Kind, detect
from animdiff.models.files import read_state_dict
from animdiff.models.load import MotionModule, _naming_file, build_on_meta

LAYOUT_GUOYWW = "guoyww"
LAYOUT_HOTSHOT = "hotshot"


@dataclass(frozen=True)
class BetaSchedule:
    """A training noise schedule in diffusers' terms (scheduler config keys)."""

    beta_schedule: str
    beta_start: float
    beta_end: float
    num_train_timesteps: int = 1000

    def scheduler_config(self) -> dict[str, Any]:
        """The keys to set on any diffusers scheduler config."""
        return {
            "beta_schedule": self.beta_schedule,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "num_train_timesteps": self.num_train_timesteps,
        }

    def alphas_cumprod(self) -> torch.Tensor:
        """ᾱ for every training step (float32, as diffusers' schedulers compute them)."""
        if self.beta_schedule == "linear":
            betas = torch.linspace(
                self.beta_start, self.beta_end, self.num_train_timesteps, dtype=torch.float32
            )
        elif self.beta_schedule == "scaled_linear":
            betas = (
                torch.linspace(
                    self.beta_start**0.5, self.beta_end**0.5, self.num_train_timesteps, dtype=torch.float32
                )
                ** 2
            )
        else:
            raise ValueError(f"unknown beta schedule {self.beta_schedule!r}")
        return torch.cumprod(1.0 - betas, dim=0)


# AnimateDiff's (and HotShot-XL's) schedule: betas linear from 0.00085 to 0.012 (sigma_max ~25.1).
LINEAR_BETAS = BetaSchedule("linear", 0.00085, 0.012)
# AnimateDiff-XL's: linear in sqrt(beta) from 0.00085 to 0.020 (LDM's "linear"; sigma_max ~65.9).
SDXL_BETA_BETAS = BetaSchedule("scaled_linear", 0.00085, 0.020)


@dataclass(frozen=True)
class MotionFamily:
    """What a motion-module family needs beyond its weights.

    `cross_frame_group_norm`: the UNet's GroupNorms take statistics over all frames of a video (the
    reference's GroupNorm hack) instead of per frame. `trained_length`: the clip length it was
    trained on, the default context batch size. `max_context`: the longest window (its positional
    encoding's length); more is an error.
    """

    name: str
    kind: Kind
    betas: BetaSchedule
    cross_frame_group_norm: bool
    trained_length: int
    max_context: int


FAMILIES: dict[Kind, MotionFamily] = {
    Kind.MM_SDXL_BETA: MotionFamily("AnimateDiff-XL", Kind.MM_SDXL_BETA, SDXL_BETA_BETAS, False, 16, 32),
    Kind.MM_HOTSHOT: MotionFamily("HotShot-XL", Kind.MM_HOTSHOT, LINEAR_BETAS, True, 8, 24),
}
XL_MOTION_KINDS = frozenset(FAMILIES)
SD15_MOTION_KINDS = frozenset({Kind.MM_V1, Kind.MM_V2, Kind.MM_V3, Kind.MM_ANIMATELCM})


@dataclass
class XLMotionModule(MotionModule):
    """A loaded SDXL motion module: a `MotionModule` plus its family's data and the file's layout."""

    family: MotionFamily
    layout: str


def load_xl_motion_module(path: Path, dtype: torch.dtype = torch.float32) -> XLMotionModule:
    """AnimateDiff-XL or HotShot-XL (either layout) as a diffusers MotionAdapter at SDXL widths."""
    path = Path(path)
    with _naming_file(path):
        return _load(path, dtype)


def _load(path: Path, dtype: torch.dtype) -> XLMotionModule:
    sd = read_state_dict(path)
    found = xl_kind(detect({k: tuple(v.shape) for k, v in sd.items()}), sd)
    require_xl_motion_module(path, found)
    layout = motion_layout(sd)
    guoyww = hotshot_to_guoyww(sd) if layout == LAYOUT_HOTSHOT else dict(sd)
    pe_length = _pe_length(guoyww)
    if pe_length is None:
        raise ModelFileError(f"{path}: the motion module has no positional encoding (pos_encoder.pe)")
    config = motion_config_xl(guoyww, pe_length)
    adapter = build_on_meta(
        lambda: MotionAdapter(**config),
        convert.motion_from_guoyww(guoyww, pe_length),
        what="motion module",
        path=path,
        dtype=dtype,
    )
    return XLMotionModule(adapter, found.kind, pe_length, path, FAMILIES[found.kind], layout)


def xl_kind(found: Detected, sd: dict[str, torch.Tensor]) -> Detected:
    """HotShot-XL's re-keyed copy (guoyww names, 3 levels, pe 24), which detect.py calls unknown.

    The reference's rule: an SDXL-shaped module whose pe length is not 32 is HotShot-XL. Kept here
    until detect.py has it (then this returns `found` unchanged).
    """
    if found.kind is not Kind.MM_UNKNOWN or found.pe_length != 24:
        return found
    if any(k.startswith("down_blocks.3.") for k in sd) or any(k.startswith("mid_block.") for k in sd):
        return found
    return Detected(Kind.MM_HOTSHOT, 24)


def require_xl_motion_module(path: Path, found: Detected) -> None:
    """Refuse, naming the file, anything but an SDXL motion module, before any weight is built."""
    if found.kind in XL_MOTION_KINDS:
        return
    if found.kind in SD15_MOTION_KINDS:
        raise ModelTypeError(
            f"{path} is a {found.kind} for SD1.5 checkpoints; SDXL checkpoints need an SDXL motion "
            "module (AnimateDiff-XL mm_sdxl_v10_beta or HotShot-XL)"
        )
    if found.kind in MOTION_KINDS:
        raise NotSupportedYetError(
            f"{path} is a {found.kind}; for SDXL, animdiff reads AnimateDiff-XL (mm_sdxl_v10_beta) "
            "and HotShot-XL files in their published layouts"
        )
    article = "an" if str(found.kind).startswith(("SD", "unknown")) else "a"
    raise ModelTypeError(f"{path} is {article} {found.kind}, not an SDXL motion module")


def motion_layout(sd: dict[str, torch.Tensor]) -> str:
    """'hotshot' for HotShot-XL's published names, 'guoyww' for AnimateDiff's (and the re-keyed copy)."""
    if any(".temporal_attentions." in k or k.endswith("pos_encoder.positional_encoding") for k in sd):
        return LAYOUT_HOTSHOT
    return LAYOUT_GUOYWW


def hotshot_to_guoyww(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HotShot-XL's published names -> guoyww's; the tensors are the same, only two names differ."""
    out = {}
    for key, value in sd.items():
        new = re.sub(r"\.temporal_attentions\.(\d+)\.", r".motion_modules.\1.temporal_transformer.", key)
        new = re.sub(r"pos_encoder\.positional_encoding$", "pos_encoder.pe", new)
        out[new] = value
    return out


def motion_config_xl(sd: dict[str, torch.Tensor], pe_length: int) -> dict[str, Any]:
    """MotionAdapter config: the shipped SDXL one, with what the file's shapes tell re-read from it."""
    shared = convert.motion_config_from_guoyww(sd, pe_length)
    config = convert.shipped_config("sdxl_motion_adapter.json")
    for key in (
        "block_out_channels",
        "motion_layers_per_block",
        "use_motion_mid_block",
        "motion_max_seq_length",
    ):
        config[key] = shared[key]
    config["motion_norm_num_groups"] = shared["motion_norm_num_groups"]
    return config


def _pe_length(sd: dict[str, torch.Tensor]) -> int | None:
    for key, value in sd.items():
        if key.endswith("pos_encoder.pe") and value.ndim == 3:
            return int(value.shape[1])
    return None


def require_same_family(module: Path, module_kind: Kind, checkpoint: Path, checkpoint_kind: Kind) -> None:
    """Refuse an SD1.5 motion module with an SDXL checkpoint and the reverse, naming both files.

    Needs only the detected kinds, so it runs before any weight is loaded.
    """
    sdxl_checkpoint = checkpoint_kind in (Kind.SDXL, Kind.DIFFUSERS_SDXL)
    sdxl_module = module_kind in XL_MOTION_KINDS
    if sdxl_checkpoint != sdxl_module:
        module_family = "an SDXL" if sdxl_module else "an SD1.5"
        raise ModelTypeError(
            f"{module} is {module_family} motion module ({module_kind}) and {checkpoint} is an "
            f"{checkpoint_kind}: they do not fit together"
        )


def require_same_widths(module: MotionModule, unet_config: Any, checkpoint: Path) -> None:
    """Refuse a module whose levels are not the UNet's widths (a tiny module on a real model, say)."""
    module_widths = list(module.adapter.config.block_out_channels)
    unet_widths = list(unet_config.block_out_channels)
    if module_widths != unet_widths:
        raise ModelTypeError(
            f"{module.path} has motion modules {module_widths} channels wide, but the UNet of {checkpoint} "
            f"has levels {unet_widths} wide: they do not fit together"
        )
