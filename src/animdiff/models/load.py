"""Weight files -> diffusers/transformers modules, with every key accounted for.

diffusers' single-file loaders reach for the Hugging Face hub for configs and, given a file with
missing keys, can leave random weights in place without a word. We build each module from our
own config (see convert.py) on the meta device and assign the file's tensors to it, after
checking ourselves that the file provides exactly the keys and shapes the module has. Building on
the meta device also skips the random initialisation of a billion parameters that would be
overwritten anyway.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel, UNetMotionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from animdiff.errors import ModelFileError, ModelTypeError, NotSupportedYetError
from animdiff.models import convert
from animdiff.models.detect import CHECKPOINT_KINDS, MOTION_KINDS, Detected, Kind, detect, detect_file
from animdiff.models.files import read_state_dict
from animdiff.models.tokenizer import PromptTokenizer, clip_tokenizer

LOADABLE_MOTION_KINDS = (Kind.MM_V1, Kind.MM_V2, Kind.MM_V3, Kind.MM_ANIMATELCM)
# SD1.5's VAE overflows to NaN in float16 on some images; it is small, so it always runs in float32.
VAE_DTYPE = torch.float32


@dataclass
class StableDiffusionParts:
    """The pieces of an SD1.5 model animdiff uses (no safety checker, no scheduler)."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: PromptTokenizer
    path: Path
    kind: Kind


@dataclass
class MotionModule:
    adapter: MotionAdapter
    kind: Kind
    pe_length: int
    path: Path


def _fail_coverage(
    path: Path, what: str, missing: list[str], unexpected: list[str], mismatched: list[str]
) -> None:
    def some(names: list[str]) -> str:
        head = ", ".join(names[:5])
        return head + (f" and {len(names) - 5} more" if len(names) > 5 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({some(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({some(unexpected)})")
    if mismatched:
        parts.append(f"{len(mismatched)} with the wrong shape ({some(mismatched)})")
    raise ModelFileError(f"{path}: the {what} weights do not fit its architecture: {'; '.join(parts)}")


def assign_exact(
    module: torch.nn.Module, state: Mapping[str, torch.Tensor], *, what: str, path: Path
) -> None:
    """Load `state` into `module` only if keys and shapes match exactly; name what does not."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or mismatched:
        _fail_coverage(path, what, missing, unexpected, mismatched)
    module.load_state_dict(dict(state), strict=True, assign=True)


def build_on_meta(
    factory: Callable[[], torch.nn.Module],
    state: Mapping[str, torch.Tensor],
    *,
    what: str,
    path: Path,
    dtype: torch.dtype,
) -> Any:
    with torch.device("meta"):
        module = factory()
    assign_exact(module, _cast(state, dtype), what=what, path=path)
    leftover = [name for name, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if leftover:
        raise ModelFileError(f"{path}: the {what} left tensors without values: {', '.join(leftover[:5])}")
    return module.eval().requires_grad_(False)


def _cast(state: Mapping[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}


def _text_encoder(
    config: dict[str, Any], state: Mapping[str, torch.Tensor], path: Path, dtype: torch.dtype
) -> CLIPTextModel:
    # Built normally (not on meta): CLIP's position_ids is a non-persistent buffer that no file provides.
    model = CLIPTextModel(CLIPTextConfig(**config))
    wants_level = any(k.startswith("text_model.") for k in model.state_dict())
    state = {(f"text_model.{k}" if wants_level else k): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    assign_exact(model, _cast(state, dtype), what="text encoder", path=path)
    return model.eval().requires_grad_(False)


# --- checkpoints ---------------------------------------------------------------------------------------


@contextmanager
def _naming_file(path: Path) -> Iterator[None]:
    """Conversion helpers work on tensors and do not know the file; every message must name it."""
    try:
        yield
    except ModelFileError as exc:
        if str(path) in str(exc):
            raise
        raise ModelFileError(f"{path}: {exc}") from exc


def load_checkpoint(path: Path, dtype: torch.dtype = torch.float32) -> StableDiffusionParts:
    """An SD1.5 single-file checkpoint (.safetensors; .ckpt through safe unpickling) or diffusers folder."""
    path = Path(path)
    if path.is_dir():
        return _load_diffusers_folder(path, dtype)
    with _naming_file(path):
        return _load_single_file(path, dtype)


def _load_single_file(path: Path, dtype: torch.dtype) -> StableDiffusionParts:
    sd = read_state_dict(path)
    found = detect({k: tuple(v.shape) for k, v in sd.items()})
    require_sd15_checkpoint(path, found)
    unet_config = convert.unet_config_from_ldm(sd)
    unet = build_on_meta(
        lambda: UNet2DConditionModel(**unet_config),
        convert.unet_from_ldm(sd, unet_config),
        what="UNet",
        path=path,
        dtype=dtype,
    )
    vae_config = convert.vae_config_from_ldm(sd)
    vae = build_on_meta(
        lambda: AutoencoderKL(**vae_config),
        convert.vae_from_ldm(sd, vae_config),
        what="VAE",
        path=path,
        dtype=VAE_DTYPE,
    )
    clip_state = convert.clip_from_ldm(sd)
    text_encoder = _text_encoder(convert.clip_config_from_state(clip_state), clip_state, path, dtype)
    return StableDiffusionParts(unet, vae, text_encoder, PromptTokenizer(clip_tokenizer()), path, found.kind)


def require_sd15_checkpoint(path: Path, found: Detected) -> None:
    if found.kind in (Kind.SD15, Kind.DIFFUSERS_SD15):
        return
    if found.kind in (Kind.SDXL, Kind.DIFFUSERS_SDXL):
        raise ModelTypeError(
            f"{path} is an SDXL checkpoint; models/sdxl.py loads those, not the SD1.5 loader"
        )
    if found.kind in CHECKPOINT_KINDS:
        raise NotSupportedYetError(f"{path}: {found.kind}s are not supported (SD1.5 only)")
    raise ModelTypeError(f"{path} is a {found.kind}, not a Stable Diffusion checkpoint")


def _weights_file(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.safetensors", f"{stem}.fp16.safetensors", f"{stem}.bin", f"{stem}.fp16.bin"):
        if (folder / name).is_file():
            return folder / name
    raise ModelFileError(f"{folder}: no {stem}.safetensors (or .bin) weights")


def _folder_config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{folder}: unreadable config.json ({exc})") from None
    return {k: v for k, v in config.items() if not k.startswith("_")}


def load_folder_module(
    folder: Path, cls: Any, *, what: str, dtype: torch.dtype, stem: str = "diffusion_pytorch_model"
) -> torch.nn.Module:
    """One model of a diffusers folder (config.json + weights), built on meta, checked key by key."""
    config = _folder_config(folder)
    weights = _weights_file(folder, stem)
    return build_on_meta(
        lambda: cls.from_config(config), read_state_dict(weights), what=what, path=weights, dtype=dtype
    )


def _load_diffusers_folder(path: Path, dtype: torch.dtype) -> StableDiffusionParts:
    found = detect_file(path)
    require_sd15_checkpoint(path, found)
    unet = load_folder_module(path / "unet", UNet2DConditionModel, what="UNet", dtype=dtype)
    vae = load_folder_module(path / "vae", AutoencoderKL, what="VAE", dtype=VAE_DTYPE)
    te_file = _weights_file(path / "text_encoder", "model")
    te_state = {k.removeprefix("text_model."): v for k, v in read_state_dict(te_file).items()}
    te_config = {
        k: v for k, v in _folder_config(path / "text_encoder").items() if k in CLIPTextConfig().to_dict()
    }
    text_encoder = _text_encoder(te_config, te_state, te_file, dtype)
    tok_dir = path / "tokenizer"
    tokenizer = (
        CLIPTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
        if (tok_dir / "vocab.json").is_file()
        else clip_tokenizer()
    )
    return StableDiffusionParts(unet, vae, text_encoder, PromptTokenizer(tokenizer), path, found.kind)


# --- motion modules -----------------------------------------------------------------------------------


def load_motion_module(path: Path, dtype: torch.dtype = torch.float32) -> MotionModule:
    """An original-layout (guoyww) motion module: v1, v2 or v3."""
    path = Path(path)
    with _naming_file(path):
        return _load_motion_module(path, dtype)


def _load_motion_module(path: Path, dtype: torch.dtype) -> MotionModule:
    sd = read_state_dict(path)
    found = detect({k: tuple(v.shape) for k, v in sd.items()})
    require_motion_module(path, found)
    pe_length = found.pe_length or 0
    config = convert.motion_config_from_guoyww(sd, pe_length)
    state = convert.motion_from_guoyww(sd, pe_length)
    if found.kind is Kind.MM_ANIMATELCM:
        state.update(computed_positional_encodings(config))
    adapter = build_on_meta(
        lambda: MotionAdapter(**config),
        state,
        what="motion module",
        path=path,
        dtype=dtype,
    )
    return MotionModule(adapter, found.kind, pe_length, path)


def computed_positional_encodings(config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The sinusoid tables a module without stored ones (AnimateLCM) uses, as the reference builds
    them: sin on even channels, cos on odd, base 10000, `motion_max_seq_length` (64) long."""
    from diffusers.models.embeddings import SinusoidalPositionalEmbedding

    with torch.device("meta"):
        adapter = MotionAdapter(**config)
    out = {}
    for name, buffer in adapter.named_buffers():
        if name.endswith("pos_embed.pe"):
            out[name] = SinusoidalPositionalEmbedding(buffer.shape[-1], buffer.shape[-2]).pe
    return out


def require_motion_module(path: Path, found: Detected) -> None:
    if found.kind in LOADABLE_MOTION_KINDS:
        return
    if found.kind in MOTION_KINDS and found.family == "sdxl":
        raise ModelTypeError(
            f"{path} is an SDXL motion module ({found.kind}); it does not fit SD1.5 checkpoints "
            "(models/motion_xl.py loads it for SDXL ones)"
        )
    if found.kind in MOTION_KINDS:
        raise NotSupportedYetError(
            f"{path}: {found.kind} is not supported yet (v1, v2, v3 and AnimateLCM are)"
        )
    raise ModelTypeError(f"{path} is a {found.kind}, not a motion module")


def build_motion_unet(
    unet: UNet2DConditionModel, adapter: MotionAdapter, *, path: Path, fp8: bool = False
) -> UNetMotionModel:
    """The UNet with motion modules, sharing its tensors with `unet` and `adapter` (no copy).

    `fp8`: `unet` and `adapter` hold float8 weights (fp8.store_fp8); the model then casts them
    per layer and reports the compute dtype as its own.
    """
    from animdiff.models.fp8 import Fp8UNetMotionModel, store_fp8

    cls = Fp8UNetMotionModel if fp8 else UNetMotionModel
    with torch.device("meta"):
        model = cls.from_unet2d(unet, adapter, load_weights=False)
    state = {**unet.state_dict(), **adapter.state_dict()}
    assign_exact(model, state, what="UNet with motion modules", path=path)
    if fp8:
        store_fp8(model)  # the tensors are float8 already: only the layer classes change
    return model.eval().requires_grad_(False)
