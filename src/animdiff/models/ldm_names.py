"""diffusers UNet2D names -> the CompVis/LDM names (`input_blocks`, `middle_block`, `output_blocks`).

Single-file checkpoints and some LoRAs name the UNet's layers the LDM way, while the modules we
run are diffusers'. The LDM numbering is positional (a running index over resnets, attentions and
samplers), so it depends on `layers_per_block` and on which up blocks have attention; both come
from the UNet's config. The function works on module names and on parameter names alike, so the
LoRA loader can map modules and the test factory can map state-dict keys with the same table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_TAIL = r"(?:\.(.*))?"


def _join(*parts: str | None) -> str:
    return ".".join(p for p in parts if p)


def _resnet(rest: str | None) -> str:
    if not rest:
        return ""
    head, _, tail = rest.partition(".")
    return _join(_RESNET[head], tail)


def _fixed(name: str) -> str | None:
    for diffusers, ldm in _FIXED.items():
        if name == diffusers or name.startswith(diffusers + "."):
            return ldm + name[len(diffusers) :]
    return None


def ldm_unet_name(name: str, layers_per_block: int, up_block_types: Sequence[str]) -> str:
    """The LDM name of a diffusers UNet2D module or parameter; KeyError where LDM has none.

    Motion modules and anything else outside the SD UNet have no LDM name.
    """
    if (fixed := _fixed(name)) is not None:
        return fixed
    stride = layers_per_block + 1
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)" + _TAIL, name):
        index = int(m[1]) * stride + int(m[3]) + 1
        return _block_member("input_blocks", index, m[2], m[4])
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv" + _TAIL, name):
        return _join(f"input_blocks.{(int(m[1]) + 1) * stride}.0.op", m[2])
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)" + _TAIL, name):
        return _join(f"middle_block.{2 * int(m[1])}", _resnet(m[2]))
    if m := re.fullmatch(r"mid_block\.attentions\.0" + _TAIL, name):
        return _join("middle_block.1", m[1])
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)" + _TAIL, name):
        index = int(m[1]) * stride + int(m[3])
        return _block_member("output_blocks", index, m[2], m[4])
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv" + _TAIL, name):
        block = int(m[1])
        slot = 2 if up_block_types[block].startswith("CrossAttn") else 1
        return _join(f"output_blocks.{block * stride + layers_per_block}.{slot}.conv", m[2])
    raise KeyError(f"no LDM name for UNet key {name}")


def _block_member(group: str, index: int, kind: str, rest: str | None) -> str:
    if kind == "resnets":
        return _join(f"{group}.{index}.0", _resnet(rest))
    return _join(f"{group}.{index}.1", rest)
