"""What a weight file is, told from its keys and shapes alone.

Users' folders mix checkpoints, motion modules, LoRAs and ControlNets under arbitrary names, so the
kind is decided from the state dict, never from the file name. The order of the checks matters:
a kohya LoRA contains the text `mid_block` and no positional encoding, which the reference's
detector mistakes for AnimateLCM, so LoRA-shaped keys are recognised first.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

Shapes = Mapping[str, tuple[int, ...]]


class Kind(StrEnum):
    SD15 = "SD1.5 checkpoint"
    SD15_INPAINT = "SD1.5 inpainting checkpoint"
    SD2 = "SD2 checkpoint"
    SDXL = "SDXL checkpoint"
    DIFFUSERS_SD15 = "SD1.5 diffusers folder"
    DIFFUSERS_SDXL = "SDXL diffusers folder"
    MM_V1 = "motion module v1"
    MM_V2 = "motion module v2"
    MM_V3 = "motion module v3"
    MM_SDXL_BETA = "motion module SDXL beta"
    MM_HOTSHOT = "motion module HotShot-XL"
    MM_ANIMATELCM = "motion module AnimateLCM"
    MM_DIFFUSERS = "motion module (diffusers format)"
    MM_UNKNOWN = "motion module (unknown version)"
    SPARSECTRL = "SparseCtrl encoder"
    MOTION_LORA = "motion LoRA"
    LORA_SD15 = "LoRA (SD1.5)"
    LORA_SDXL = "LoRA (SDXL)"
    CONTROLNET_SD15 = "ControlNet (SD1.5)"
    CONTROLNET_SDXL = "ControlNet (SDXL)"
    VAE = "VAE"
    FILM = "FILM interpolation model"
    TORCHSCRIPT = "TorchScript program"
    UNKNOWN = "unknown"


MOTION_KINDS = frozenset(
    {
        Kind.MM_V1,
        Kind.MM_V2,
        Kind.MM_V3,
        Kind.MM_SDXL_BETA,
        Kind.MM_HOTSHOT,
        Kind.MM_ANIMATELCM,
        Kind.MM_DIFFUSERS,
        Kind.MM_UNKNOWN,
    }
)
CHECKPOINT_KINDS = frozenset(
    {Kind.SD15, Kind.SD15_INPAINT, Kind.SD2, Kind.SDXL, Kind.DIFFUSERS_SD15, Kind.DIFFUSERS_SDXL}
)
SDXL_KINDS = frozenset(
    {Kind.SDXL, Kind.DIFFUSERS_SDXL, Kind.MM_SDXL_BETA, Kind.MM_HOTSHOT, Kind.LORA_SDXL, Kind.CONTROLNET_SDXL}
)

# Longest window (positional-encoding length) each motion module type accepts.
PE_LENGTH = {
    Kind.MM_V1: 24,
    Kind.MM_V2: 32,
    Kind.MM_V3: 32,
    Kind.MM_SDXL_BETA: 32,
    Kind.MM_HOTSHOT: 24,
    Kind.MM_ANIMATELCM: 64,
}


@dataclass(frozen=True)
class Detected:
    kind: Kind
    pe_length: int | None = None

    @property
    def family(self) -> str | None:
        """'sdxl', 'sd15' or None for kinds that belong to no base model."""
        if self.kind in SDXL_KINDS:
            return "sdxl"
        if self.kind in (Kind.FILM, Kind.TORCHSCRIPT, Kind.UNKNOWN, Kind.VAE, Kind.SD2):
            return None
        return "sd15"

    def __str__(self) -> str:
        return str(self.kind)


def detect(shapes: Shapes) -> Detected:
    """Classify a state dict by its key names and a few tensor shapes."""
    keys = list(shapes)
    for check in (_lora, _checkpoint, _motion_module, _controlnet, _vae):
        found = check(keys, shapes)
        if found is not None:
            return found
    return Detected(Kind.UNKNOWN)


def _lora(keys: list[str], shapes: Shapes) -> Detected | None:
    lora_keys = [k for k in keys if _is_lora_key(k)]
    if not lora_keys:
        return None
    if any("motion_modules" in k for k in lora_keys):
        return Detected(Kind.MOTION_LORA)
    # LDM-style UNet names (`lora_unet_input_blocks_...`) occur in SDXL LoRAs and in older SD1.5
    # ones alike; SDXL's two text encoders and its 2048-wide cross-attention are what tell them apart.
    sdxl = any(k.startswith(("lora_te1_", "lora_te2_")) for k in keys)
    sdxl = sdxl or _cross_attention_width(lora_keys, shapes) == 2048
    return Detected(Kind.LORA_SDXL if sdxl else Kind.LORA_SD15)


def _is_lora_key(key: str) -> bool:
    return (
        ".lora_down." in key
        or ".lora_up." in key
        or "_lora.down." in key
        or "_lora.up." in key
        or ".lora_A." in key
        or ".lora_B." in key
        or (key.startswith(("lora_unet_", "lora_te")) and key.endswith(".alpha"))
    )


def _cross_attention_width(keys: list[str], shapes: Shapes) -> int | None:
    for key in keys:
        if "attn2" in key and "to_k" in key and ("lora_down" in key or "lora_A" in key):
            shape = shapes[key]
            return shape[1] if len(shape) >= 2 else None
    return None


def _checkpoint(keys: list[str], shapes: Shapes) -> Detected | None:
    # A v1.0 ControlNet (`control_sd15_canny.pth`) also holds the SD checkpoint it was trained from.
    if not any(k.startswith("model.diffusion_model.") for k in keys) or any(
        k.startswith("control_model.") for k in keys
    ):
        return None
    if any(k.startswith("conditioner.embedders.") for k in keys) or any(
        k.startswith("model.diffusion_model.label_emb.") for k in keys
    ):
        return Detected(Kind.SDXL)
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return Detected(Kind.SD2)
    conv_in = shapes.get("model.diffusion_model.input_blocks.0.0.weight")
    if conv_in is not None and len(conv_in) == 4 and conv_in[1] == 9:
        return Detected(Kind.SD15_INPAINT)
    return Detected(Kind.SD15)


def _motion_module(keys: list[str], shapes: Shapes) -> Detected | None:
    if any(".temporal_attentions." in k or k.endswith("positional_encoding") for k in keys):
        return Detected(Kind.MM_HOTSHOT, PE_LENGTH[Kind.MM_HOTSHOT])
    motion = [k for k in keys if ".motion_modules." in k]
    if not motion:
        return None
    if any(k.startswith("controlnet_cond_embedding") for k in keys):
        return Detected(Kind.SPARSECTRL)
    if not any(".temporal_transformer." in k for k in motion):
        return Detected(Kind.MM_DIFFUSERS)
    sd15 = any(k.startswith("down_blocks.3.") for k in motion)
    has_mid = any(k.startswith("mid_block.") for k in motion)
    pe = _pe_length(keys, shapes)
    if sd15 and has_mid:
        return Detected(Kind.MM_V2, pe) if pe else Detected(Kind.MM_ANIMATELCM, PE_LENGTH[Kind.MM_ANIMATELCM])
    if sd15 and pe == 32:
        return Detected(Kind.MM_V3, pe)
    if sd15 and pe == 24:
        return Detected(Kind.MM_V1, pe)
    if not sd15 and pe == 32:
        return Detected(Kind.MM_SDXL_BETA, pe)
    # HotShot-XL re-keyed to guoyww's names (the reference's `mm_sdxl_hs.safetensors`): SDXL-shaped, pe 24.
    if not sd15 and not has_mid and pe == 24:
        return Detected(Kind.MM_HOTSHOT, pe)
    return Detected(Kind.MM_UNKNOWN, pe)


def _pe_length(keys: list[str], shapes: Shapes) -> int | None:
    for key in keys:
        if key.endswith("pos_encoder.pe"):
            shape = shapes[key]
            return shape[1] if len(shape) == 3 else None
    return None


def _controlnet(keys: list[str], shapes: Shapes) -> Detected | None:
    if not (
        any(k.startswith("control_model.") for k in keys)
        or any(k.startswith("controlnet_down_blocks.") for k in keys)
        # The fp16 safetensors conversions of v1.1 drop the `control_model.` prefix.
        or ("input_hint_block.0.weight" in shapes and any(k.startswith("zero_convs.") for k in keys))
    ):
        return None
    width = next(
        (shapes[k][1] for k in keys if k.endswith("attn2.to_k.weight") and len(shapes[k]) == 2),
        None,
    )
    # SDXL's size/crop embedding (diffusers' `add_embedding`, LDM's `label_emb`) marks SDXL too: SD1.5
    # ControlNets have none, whatever their width.
    added = any(k.startswith(("add_embedding.", "label_emb.", "control_model.label_emb.")) for k in keys)
    return Detected(Kind.CONTROLNET_SDXL if width == 2048 or added else Kind.CONTROLNET_SD15)


def _vae(keys: list[str], shapes: Shapes) -> Detected | None:
    markers = ("encoder.down.0.block.0.norm1.weight", "encoder.down_blocks.0.resnets.0.norm1.weight")
    if any(k.removeprefix("first_stage_model.") in markers for k in keys):
        return Detected(Kind.VAE)
    return None


def detect_file(path: Path) -> Detected:
    """Classify a file or a diffusers folder; raises ModelFileError for unreadable files.

    Results are remembered per file identity (path, size, modification time): a `.ckpt` has to
    be unpickled whole to be classified, and prepare, the model listing and a server's submit
    ask about the same files again and again.
    """
    path = Path(path)
    if path.is_dir():
        return _detect_folder(path)
    try:
        stat = path.stat()
    except OSError:
        return _detect_uncached(path)  # reading it will say what is wrong
    return _detect_remembered(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _detect_remembered(path: str, size: int, mtime_ns: int) -> Detected:
    return _detect_uncached(Path(path))


def _detect_uncached(path: Path) -> Detected:
    from animdiff.models.files import is_torchscript, read_shapes

    if is_torchscript(path):
        return Detected(Kind.FILM if path.name.lower().startswith("film") else Kind.TORCHSCRIPT)
    return detect(read_shapes(path))


def _detect_folder(path: Path) -> Detected:
    import json

    if not (path / "model_index.json").is_file():
        return _detect_model_folder(path)
    try:
        unet_config = json.loads((path / "unet" / "config.json").read_text())
    except (OSError, ValueError):
        return Detected(Kind.UNKNOWN)
    sdxl = unet_config.get("addition_embed_type") == "text_time"
    return Detected(Kind.DIFFUSERS_SDXL if sdxl else Kind.DIFFUSERS_SD15)


def _detect_model_folder(path: Path) -> Detected:
    """One diffusers model (config.json + weights) rather than a pipeline: so far, a ControlNet."""
    import json

    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return Detected(Kind.UNKNOWN)
    if not isinstance(config, dict) or config.get("_class_name") != "ControlNetModel":
        return Detected(Kind.UNKNOWN)
    sdxl = config.get("addition_embed_type") == "text_time" or config.get("cross_attention_dim") == 2048
    return Detected(Kind.CONTROLNET_SDXL if sdxl else Kind.CONTROLNET_SD15)
