"""Tiny ControlNets, written the way users' ControlNet files are.

They are diffusers' own `ControlNetModel` at the tiny SD UNet's widths (read from the UNet config
when called, as those widths may change) saved under lllyasviel's original names:
`tiny-controlnet-canny.safetensors` with the `control_model.` prefix (as in the v1.1 `.pth` files
and the pruned v1.0 safetensors) and `tiny-controlnet-inpaint.safetensors` without it (as in the
fp16 safetensors conversions of v1.1). Both layouts therefore pass through the loader in every
test that uses the models folder. Upstream zero-initialises the ControlNet's output convolutions;
random ones make it change the UNet's result, so a test can see it act. Values are rounded to
float16 precision so that every container reloads them exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from safetensors.torch import save_file

from animdiff.models.controlnet import CONTROL_PREFIX, ldm_controlnet_name
from animdiff.testing.factory import TinySD, tiny_unet_config

CONTROLNET_SEEDS = {"canny": 31, "inpaint": 32, "sdxl": 33}
# variant -> (file name in models/ControlNet, key prefix the file uses)
CONTROLNET_FILES = {
    "canny": ("tiny-controlnet-canny.safetensors", CONTROL_PREFIX),
    "inpaint": ("tiny-controlnet-inpaint.safetensors", ""),
}
# The convolutions upstream zero-initialises: one output per resolution, the mid-block output and
# the hint encoder's last convolution.
_ZERO_INITIALISED = (
    "controlnet_down_blocks.",
    "controlnet_mid_block.",
    "controlnet_cond_embedding.conv_out.",
)


def _round_to_half(module: torch.nn.Module) -> torch.nn.Module:
    """float16-representable values (as factory.py does), so float16 files reload bit-exactly."""
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return module.eval().requires_grad_(False)


def _wake_zero_convs(controlnet: ControlNetModel) -> ControlNetModel:
    """Random output convolutions, scaled by fan-in so each adds a visible, bounded residual."""
    with torch.no_grad():
        for name, param in controlnet.named_parameters():
            if not name.startswith(_ZERO_INITIALISED):
                continue
            if param.ndim > 1:
                param.normal_(0.0, 0.5 / param[0].numel() ** 0.5)
            else:
                param.normal_(0.0, 0.01)
    return _round_to_half(controlnet)


def tiny_controlnet(variant: str = "canny", unet_config: Mapping[str, Any] | None = None) -> ControlNetModel:
    """The diffusers ControlNet the tiny file `variant` is written from: the reference for parity tests.

    Deterministic per variant. `unet_config` is the tiny SD UNet's config (default: the factory's
    `tiny_unet_config()`); a real ControlNet is a copy of its checkpoint's encoder half, so the
    widths must be that UNet's. The weights are the ControlNet's own (seeded), not the UNet's.
    """
    if variant == "sdxl":
        return tiny_sdxl_controlnet()
    config = dict(unet_config) if unet_config is not None else tiny_unet_config()
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)  # only its config is read
    torch.manual_seed(CONTROLNET_SEEDS[variant])
    controlnet = ControlNetModel.from_unet(unet, load_weights_from_unet=False)
    return _wake_zero_convs(controlnet)


def tiny_sdxl_controlnet() -> ControlNetModel:
    """Tiny, but an SDXL ControlNet where it shows: 2048-wide cross-attention, SDXL's size/crop ids."""
    torch.manual_seed(CONTROLNET_SEEDS["sdxl"])
    controlnet = ControlNetModel(
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        layers_per_block=2,
        cross_attention_dim=2048,
        attention_head_dim=(1, 2),
        transformer_layers_per_block=(1, 2),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=80,
    )
    return _wake_zero_convs(controlnet)


def controlnet_to_ldm(
    state: Mapping[str, torch.Tensor], config: Mapping[str, Any], *, prefix: str = CONTROL_PREFIX
) -> dict[str, torch.Tensor]:
    """diffusers ControlNetModel tensors under lllyasviel's original names (the loader's inverse)."""
    layers = config["layers_per_block"]
    hint_blocks = 2 * (len(config["conditioning_embedding_out_channels"]) - 1)
    return {prefix + ldm_controlnet_name(k, layers, hint_blocks): v for k, v in state.items()}


def controlnet_file_state(
    controlnet: ControlNetModel, *, prefix: str = CONTROL_PREFIX
) -> dict[str, torch.Tensor]:
    """The contents of an original-layout ControlNet file."""
    state = controlnet_to_ldm(controlnet.state_dict(), controlnet.config, prefix=prefix)
    return {k: v.clone().contiguous() for k, v in state.items()}


def write_controlnet(path: Path, state: Mapping[str, torch.Tensor]) -> Path:
    """`.safetensors` in float16 (as the shared conversions), pickles as a plain float32 dict (`.pth`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(path))
    else:
        torch.save(dict(state), path)
    return path


def write_tiny_controlnets(root: Path, sd: TinySD | None = None) -> dict[str, Path]:
    """The tiny ControlNets in `root/ControlNet`; returns name -> path as `write_models_dir` does.

    Pass `sd` when the tiny SD models are already built so the widths are surely theirs.
    """
    root = Path(root)
    unet_config = sd.unet.config if sd is not None else None
    written = {}
    for variant, (name, prefix) in CONTROLNET_FILES.items():
        state = controlnet_file_state(tiny_controlnet(variant, unet_config), prefix=prefix)
        written[f"controlnet-{variant}"] = write_controlnet(root / "ControlNet" / name, state)
    return written
