"""The UNet with motion modules, with the GroupNorm statistics the reference uses.

diffusers' `UNetMotionModel` and the original AnimateDiff (which the A1111 extension follows)
agree on every layer except where GroupNorm takes its statistics:

| where                       | original / A1111 extension       | diffusers          |
|-----------------------------|----------------------------------|--------------------|
| motion module's own norm    | per frame                        | across all frames  |
| UNet norms, v1 / HotShot-XL | across all frames of each video  | per frame          |
| UNet norms, v2 / v3         | per frame                        | per frame          |

`groupnorm="reference"` reproduces the left column by swapping the affected `GroupNorm` modules
of one model instance for thin wrappers that regroup the frames; `groupnorm="diffusers"` leaves
the model exactly as diffusers builds it (our parity tests compare with diffusers that way).
Nothing outside this instance is patched.

SDXL's added conditioning (pooled text embedding + size ids, `label_emb`) is per video in diffusers'
`UNetMotionModel` (one vector per video, repeated over its frames), but per frame in the reference,
where every frame is a row of its own: prompt travel gives each frame its own pooled embedding. So
this instance takes the vectors per row (`vector=`): its own config drops the per-video path, and
the time embedding every block receives gets `add_embedding(vector)` added row by row. With equal
rows within a video that is the per-video sum diffusers computes, value for value.

Its motion modules' attention runs in batches CUDA can launch (`attention_batch`), and large
feed-forward calls run in slices (`feed_forward_slices`, `ff_budget`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from diffusers import UNetMotionModel
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from torch import nn

from animdiff.models.attention_batch import split_motion_attention
from animdiff.models.detect import Kind
from animdiff.models.feed_forward_slices import Budget, slice_feed_forwards

if TYPE_CHECKING:
    from animdiff.sampling.controlnet import Residuals

CROSS_FRAME_KINDS = (Kind.MM_V1, Kind.MM_HOTSHOT)


@dataclass
class FrameCount:
    """Frames per video of the call in progress; the cross-frame norms need it to regroup rows."""

    value: int = 1


class PerFrameGroupNorm(nn.Module):
    """A motion module's GroupNorm on (videos, channels, frames, h, w), with statistics per frame.

    diffusers hands the norm a permuted view of (videos, frames, channels, h, w) rows, so turning
    it back into rows is a view, not a copy, and PyTorch's own GroupNorm kernel then reads the
    activation once and writes it once: cheaper than diffusers' own cross-frame call, which has
    to make that permuted view contiguous first. Statistics computed on the 5-D view instead
    (`var_mean` over two dims) would need no layout at all but are ten times slower on the CPU.
    """

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        videos, channels, frames, height, width = x.shape
        rows = x.transpose(1, 2).reshape(videos * frames, channels, height, width)
        out = self.norm(rows)
        return out.reshape(videos, frames, channels, height, width).transpose(1, 2)


class CrossFrameGroupNorm(nn.Module):
    """A UNet GroupNorm on (videos*frames, channels, ...), with statistics over each whole video.

    The frames of a group are not adjacent in frame-major rows, so the kernel gets a transposed
    copy and its output is transposed back (two copies). The alternatives measured slower on the
    CPU: statistics over the strided view (`var_mean`: ~10x the whole call), or per-frame
    statistics merged afterwards (an extra full pass).
    """

    def __init__(self, norm: nn.GroupNorm, frames: FrameCount) -> None:
        super().__init__()
        self.norm = norm
        self.frames = frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = self.frames.value
        rows, channels = x.shape[:2]
        rest = x.shape[2:]
        video = x.reshape(rows // frames, frames, channels, *rest).transpose(1, 2)
        out = self.norm(video)
        return out.transpose(1, 2).reshape(rows, channels, *rest)


def _replace_child(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


class MotionUNet(nn.Module):
    """Calls the motion UNet on whole videos: sample (videos, C, frames, h, w) -> eps of that shape."""

    def __init__(self, unet: UNetMotionModel, kind: Kind, groupnorm: str = "reference") -> None:
        super().__init__()
        self.unet = unet
        self.frames = FrameCount()
        self.groupnorm = groupnorm
        self._row_embedding: torch.Tensor | None = None
        self.takes_vector = unet.config.get("addition_embed_type") == "text_time"
        split_motion_attention(unet)
        self.ff_budget = Budget()  # bytes a feed-forward slice may hold; .bytes = None: one piece
        slice_feed_forwards(unet, self.ff_budget)
        if self.takes_vector:
            self._add_embedding_per_row()
        if groupnorm == "reference":
            self._use_reference_norms(kind)
        elif groupnorm != "diffusers":
            raise ValueError(f"unknown groupnorm mode {groupnorm!r}")

    def _use_reference_norms(self, kind: Kind) -> None:
        motion_norms = {
            f"{name}.norm" for name, m in self.unet.named_modules() if isinstance(m, AnimateDiffTransformer3D)
        }
        cross_frame = kind in CROSS_FRAME_KINDS
        for name, module in list(self.unet.named_modules()):
            if not isinstance(module, nn.GroupNorm):
                continue
            if name in motion_norms:
                _replace_child(self.unet, name, PerFrameGroupNorm(module))
            elif cross_frame:
                _replace_child(self.unet, name, CrossFrameGroupNorm(module, self.frames))

    def _add_embedding_per_row(self) -> None:
        # Only this instance's config changes (build_motion_unet makes one per MotionUNet).
        self.unet.register_to_config(addition_embed_type=None)
        blocks = [*self.unet.down_blocks, *self.unet.up_blocks]
        if self.unet.mid_block is not None:
            blocks.append(self.unet.mid_block)
        for block in blocks:
            block.register_forward_pre_hook(self._add_row_embedding, with_kwargs=True)

    def _add_row_embedding(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        rows = self._row_embedding
        if rows is None:
            return None
        if "temb" in kwargs:
            kwargs["temb"] = kwargs["temb"] + rows
        else:  # the mid block gets it positionally
            args = (args[0], args[1] + rows, *args[2:])
        return args, kwargs

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        residuals: Residuals | None = None,
        vector: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`residuals`: ControlNet outputs for the UNet's rows (video-major, as diffusers flattens);
        `vector`: SDXL's added conditioning for those rows (pooled text + size features)."""
        self.frames.value = sample.shape[2]
        if self.takes_vector:
            if vector is None or vector.shape[0] != sample.shape[0] * sample.shape[2]:
                raise ValueError("this UNet needs one added-conditioning vector per frame (vector=)")
            embedding = self.unet.add_embedding
            self._row_embedding = embedding(vector.to(self.dtype))  # not the weight's: it may be float8
        try:
            return self._call(sample, timestep, encoder_hidden_states, residuals)
        finally:
            self._row_embedding = None

    def _call(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        residuals: Residuals | None,
    ) -> torch.Tensor:
        control = {}
        if residuals is not None:
            control = {
                "down_block_additional_residuals": tuple(residuals.down),
                "mid_block_additional_residual": residuals.mid,
            }
        return self.unet(
            sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False, **control
        )[0]
