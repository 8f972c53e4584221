"""LoRAs, motion LoRAs and the v3 domain adapter, merged into the cached model and taken out again.

The models are cached between jobs, so a LoRA is added to the weights in place for one job and
then removed. Subtracting the delta again would leave rounding residue in float16 weights that
grows job after job; instead each weight is copied once before its first change and copied back
afterwards, which returns the cache bit-exactly to what was loaded. The UNet with motion modules
shares its tensors with the cached UNet and motion module, so restoring it restores them too.

Files come in three layouts, all reduced here to the same neutral list of low-rank updates:

* kohya / A1111 (`lora_unet_<path with _>.lora_down.weight`, `.lora_up.weight`, `.alpha`): the
  underscores are ambiguous, so names are looked up in a table built from the model's own module
  names (diffusers names and, for older files, the LDM `input_blocks...` names); scale alpha/rank.
* the original AnimateDiff layout of motion LoRAs and the v3 domain adapter
  (`<path>.processor.to_q_lora.down.weight`): no alpha, the strength multiplies up @ down.
* diffusers/PEFT files (`unet.<path>.lora_A.weight`, `text_encoder.<path>.lora.down.weight`).

Anything that does not land on a layer is an error, never skipped, with one exception shared
with other AnimateDiff front ends: motion-LoRA entries for the mid block when the motion module
has none (v1, v3), which are reported as a warning (as are text-encoder entries when the caller
passes no text encoder).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

import torch
from torch import nn

from animdiff.errors import LoraError
from animdiff.models.detect import Kind, detect
from animdiff.models.files import read_state_dict
from animdiff.models.ldm_names import ldm_unet_name

Part = Literal["unet", "text", "text2", "motion"]
Role = Literal["down", "up", "alpha"]
# How an entry's name is looked up: kohya's underscored names, or dotted UNet / text-encoder paths.
Family = Literal["kohya", "unet", "text", "text2"]

_KOHYA = re.compile(r"(lora_(?:unet|te\d?)_\w+)\.(lora_down\.weight|lora_up\.weight|alpha)")
_ORIGINAL = re.compile(r"(?:unet\.)?(.+)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight")
_PEFT = re.compile(
    r"(unet|text_encoder_2|text_encoder)\.(.+?)\."
    r"(?:(lora_A|lora_B|lora\.down|lora\.up|lora_linear_layer\.down|lora_linear_layer\.up)\.weight|(alpha))"
)
_ROLES: dict[str, Role] = {
    "lora_down.weight": "down",
    "lora_up.weight": "up",
    "alpha": "alpha",
    "down": "down",
    "up": "up",
    "lora_A": "down",
    "lora_B": "up",
    "lora.down": "down",
    "lora.up": "up",
    "lora_linear_layer.down": "down",
    "lora_linear_layer.up": "up",
}
# LyCORIS algorithms other than plain LoRA/LoCon, told by the suffix of their keys.
_LYCORIS = (
    ("hada_", "LoHa (hada)"),
    ("lokr_", "LoKr (lokr)"),
    ("oft_", "OFT (oft)"),
    ("boft_", "BOFT (boft)"),
    ("lora_mid.", "LoCon with Tucker decomposition (lora_mid)"),
    ("dora_scale", "DoRA (dora_scale)"),
    ("diff", "full weight difference (diff)"),
    ("w_norm", "norm-layer training (w_norm)"),
    ("b_norm", "norm-layer training (b_norm)"),
    ("on_input", "IA3 (on_input)"),
    ("a1.weight", "GLoRA (a1/a2/b1/b2)"),
    ("b1.weight", "GLoRA (a1/a2/b1/b2)"),
)
_MOTION_RENAMES = (
    (".temporal_transformer", ""),
    (".attention_blocks.0.", ".attn1."),
    (".attention_blocks.1.", ".attn2."),
)


@dataclass(frozen=True)
class LoraRequest:
    """One LoRA file for one job; motion LoRAs and the v3 adapter use `unet_weight` as strength."""

    path: Path
    unet_weight: float = 1.0
    te_weight: float = 1.0


@dataclass(frozen=True)
class LoraPatch:
    """One low-rank update `scale * up @ down` of one layer, before the user's strength."""

    target: str
    down: torch.Tensor
    up: torch.Tensor
    scale: float
    part: Part
    key: str


@dataclass
class LoraFile:
    """What a LoRA file does to this model, read and checked; nothing applied yet."""

    path: Path
    patches: list[LoraPatch]
    warnings: list[str] = field(default_factory=list)


# --- the model's layers --------------------------------------------------------------------------


@dataclass
class _Group:
    """The tensors of one LoRA entry as found in the file, before its target is known."""

    family: Family
    name: str
    key: str
    tensors: dict[Role, torch.Tensor] = field(default_factory=dict)


class _Layers:
    """The layers of one UNet (+ text encoder) a LoRA can target, under every name files use."""

    def __init__(
        self, unet: nn.Module, text_encoder: nn.Module | None, text_encoder_2: nn.Module | None = None
    ) -> None:
        self.unet = _lora_targets(unet)
        self.text = {_text_name(n): m for n, m in _lora_targets(text_encoder).items()}
        # SDXL's second encoder (OpenCLIP bigG); kohya calls the two `lora_te1_` and `lora_te2_`.
        self.text2 = {_text_name(n): m for n, m in _lora_targets(text_encoder_2).items()}
        self.sdxl = text_encoder_2 is not None
        self.has_text_encoder = text_encoder is not None
        self.has_mid_motion = any(n.startswith("mid_block.motion_modules.") for n in self.unet)
        self.kohya = self._kohya_table(getattr(unet, "config", None))

    def _kohya_table(self, config: object) -> dict[str, tuple[str, str]]:
        table: dict[str, tuple[str, str]] = {}
        for name in self.unet:
            table["lora_unet_" + name.replace(".", "_")] = ("unet", name)
        for name in self.unet:
            ldm = _ldm_name(name, config)
            if ldm is not None:
                table.setdefault("lora_unet_" + ldm.replace(".", "_"), ("unet", name))
        if self.sdxl:
            for model, prefix, names in (
                ("text", "lora_te1_", self.text),
                ("text2", "lora_te2_", self.text2),
            ):
                for name in names:
                    table[prefix + "text_model_" + name.replace(".", "_")] = (model, name)
            return table
        for name in self.text:
            table["lora_te_text_model_" + name.replace(".", "_")] = ("text", name)
        return table

    def resolve(self, group: _Group) -> tuple[str, str] | None:
        """(model, name) of the layer an entry targets: model is "unet" or "text"."""
        if group.family == "kohya":
            return self.kohya.get(group.name)
        if group.family in ("text", "text2"):
            name = _text_name(group.name)
            return (
                (group.family, name)
                if name in (self.text if group.family == "text" else self.text2)
                else None
            )
        name = _from_original_motion(group.name)
        return ("unet", name) if name in self.unet else None

    def is_missing_mid_motion(self, group: _Group) -> bool:
        """An entry for a mid-block motion module the loaded module (v1/v3) does not have."""
        if self.has_mid_motion:
            return False
        if group.family == "kohya":
            return group.name.startswith("lora_unet_mid_block_motion_modules_")
        return group.family == "unet" and group.name.startswith("mid_block.motion_modules.")

    def module(self, model: str, name: str) -> nn.Module:
        return {"unet": self.unet, "text": self.text, "text2": self.text2}[model][name]


def _lora_targets(model: nn.Module | None) -> dict[str, nn.Module]:
    if model is None:
        return {}
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)}


def _text_name(name: str) -> str:
    """transformers 4 had a `text_model.` level that 5 dropped; compare names without it."""
    return name.removeprefix("text_model.")


def _ldm_name(name: str, config: object) -> str | None:
    if config is None:
        return None
    layers = getattr(config, "layers_per_block", None)
    up_types = getattr(config, "up_block_types", None)
    if isinstance(layers, list | tuple):
        layers = layers[0] if len(set(layers)) == 1 else None
    if not isinstance(layers, int) or up_types is None:
        return None
    try:
        return ldm_unet_name(name, layers, up_types)
    except (KeyError, IndexError):
        return None


def _from_original_motion(name: str) -> str:
    """Original AnimateDiff motion-module names -> the diffusers ones (no-op on others)."""
    name = f"{name}."
    for old, new in _MOTION_RENAMES:
        name = name.replace(old, new)
    return name[:-1]


def _unwrap_unet(unet: nn.Module) -> nn.Module:
    """Accept the frame-aware wrapper too: its layers are those of the diffusers model it holds."""
    inner = getattr(unet, "unet", None)
    if getattr(unet, "config", None) is None and isinstance(inner, nn.Module):
        return inner
    return unet


# --- reading ---------------------------------------------------------------------------------------


def read_lora(
    path: Path,
    unet: nn.Module,
    text_encoder: nn.Module | None = None,
    text_encoder_2: nn.Module | None = None,
) -> LoraFile:
    """A LoRA file as patches on these models' layers; raises LoraError for anything that does not fit.

    `text_encoder_2` (SDXL's second encoder) makes it an SDXL LoRA reader (`lora_te1_`/`lora_te2_`)."""
    return _read_lora(Path(path), _Layers(_unwrap_unet(unet), text_encoder, text_encoder_2))


def _read_lora(path: Path, layers: _Layers) -> LoraFile:
    if not path.is_file():
        raise LoraError(f"{path}: LoRA file not found")
    state = read_state_dict(path)
    _check_kind(path, state, layers.sdxl)
    groups, unknown = _group_keys(path, state)
    return _to_patches(path, groups, unknown, layers)


def _check_kind(path: Path, state: dict[str, torch.Tensor], sdxl: bool = False) -> None:
    _refuse_lycoris(path, state)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    found = detect(shapes)
    if found.kind == Kind.LORA_SDXL and not sdxl:
        raise LoraError(f"{path} is an SDXL LoRA; the checkpoint is SD1.5")
    if found.kind in (Kind.LORA_SD15, Kind.MOTION_LORA) and sdxl:
        raise LoraError(f"{path} is a {found.kind}; the checkpoint is SDXL")
    if found.kind not in (Kind.LORA_SD15, Kind.LORA_SDXL, Kind.MOTION_LORA):
        raise LoraError(f"{path} is not a LoRA (detected as: {found.kind})")


def _refuse_lycoris(path: Path, state: dict[str, torch.Tensor]) -> None:
    for key in state:
        if not key.startswith(("lora_unet_", "lora_te")) or _KOHYA.fullmatch(key):
            continue
        suffix = key.partition(".")[2]
        for marker, algorithm in _LYCORIS:
            if suffix.startswith(marker):
                raise LoraError(
                    f"{path}: LyCORIS type {algorithm} is not supported (key {key}); "
                    "animdiff applies plain LoRA and LoCon files"
                )


def _group_keys(path: Path, state: dict[str, torch.Tensor]) -> tuple[list[_Group], list[str]]:
    groups: dict[tuple[str, str], _Group] = {}
    unknown: list[str] = []
    for key, tensor in state.items():
        parsed = _parse_key(key)
        if parsed is None:
            unknown.append(key)
            continue
        family, name, role = parsed
        group = groups.setdefault((family, name), _Group(family, name, key))
        if role in group.tensors:
            raise LoraError(f"{path}: LoRA entry {key} appears twice (under two key layouts)")
        group.tensors[role] = tensor
    return list(groups.values()), unknown


def _parse_key(key: str) -> tuple[Family, str, Role] | None:
    """(family, name, role) of one file key, or None for a key of no known layout."""
    if m := _KOHYA.fullmatch(key):
        return "kohya", m[1], _ROLES[m[2]]
    if m := _ORIGINAL.fullmatch(key):
        projection = "to_out.0" if m[2] == "to_out" else m[2]
        return "unet", f"{m[1]}.{projection}", _ROLES[m[3]]
    if m := _PEFT.fullmatch(key):
        family: Family = {"unet": "unet", "text_encoder": "text", "text_encoder_2": "text2"}[m[1]]
        return family, m[2], _ROLES[m[3] or m[4]]
    return None


def _to_patches(path: Path, groups: list[_Group], unknown: list[str], layers: _Layers) -> LoraFile:
    found = LoraFile(path, [])
    unmatched = list(unknown)
    skipped_mid = skipped_text = 0
    for group in groups:
        target = layers.resolve(group)
        if target is None and layers.is_missing_mid_motion(group):
            skipped_mid += 1
        elif target is None and _is_text_without_encoder(group, layers):
            skipped_text += 1
        elif target is None:
            unmatched.append(group.key)
        else:
            found.patches.append(_patch(path, group, target, layers))
    if unmatched:
        raise _unmatched_error(path, unmatched)
    if skipped_mid:
        found.warnings.append(
            f"{path.name}: skipped {skipped_mid} mid-block motion-LoRA entries; "
            "this motion module has no mid block"
        )
    if skipped_text:
        found.warnings.append(
            f"{path.name}: {skipped_text} text-encoder entries not applied (no text encoder given)"
        )
    return found


def _unmatched_error(path: Path, keys: list[str]) -> LoraError:
    shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    return LoraError(
        f"{path}: {len(keys)} LoRA entries match no layer of the model ({shown}); "
        "is the file made for another base model?"
    )


def _is_text_without_encoder(group: _Group, layers: _Layers) -> bool:
    """A text-encoder entry when no text encoder was given (it cannot be matched, only set aside)."""
    if layers.has_text_encoder:
        return False
    return group.family in ("text", "text2") or group.name.startswith("lora_te")


def _patch(path: Path, group: _Group, target: tuple[str, str], layers: _Layers) -> LoraPatch:
    model, name = target
    down, up = group.tensors.get("down"), group.tensors.get("up")
    if down is None or up is None:
        missing = "down" if down is None else "up"
        raise LoraError(f"{path}: LoRA entry {group.key} has no {missing} weight")
    weight = layers.module(model, name).weight
    _check_shapes(path, group.key, down, up, name, weight)
    part: Part = model if model in ("text", "text2") else ("motion" if ".motion_modules." in name else "unet")
    return LoraPatch(name, down, up, _scale(path, group, down.shape[0]), part, group.key)


def _scale(path: Path, group: _Group, rank: int) -> float:
    """kohya: alpha/rank (alpha defaults to rank); PEFT: alpha/rank when stored; original: 1."""
    alpha = group.tensors.get("alpha")
    if alpha is None:
        return 1.0
    if alpha.numel() != 1:
        raise LoraError(f"{path}: LoRA entry {group.key} has an alpha that is not a single number")
    return float(alpha.float().item()) / rank


def _check_shapes(
    path: Path, key: str, down: torch.Tensor, up: torch.Tensor, name: str, weight: torch.Tensor
) -> None:
    rank = down.shape[0] if down.ndim in (2, 4) else -1
    fits = (
        rank > 0
        and up.ndim in (2, 4)
        and (up.ndim == 2 or tuple(up.shape[2:]) == (1, 1))
        and up.shape[1] == rank
        and up.shape[0] == weight.shape[0]
        and math.prod(down.shape[1:]) == math.prod(weight.shape[1:])
        and (down.ndim == 2 or weight.ndim == 2 or tuple(down.shape[1:]) == tuple(weight.shape[1:]))
    )
    if not fits:
        raise LoraError(
            f"{path}: LoRA entry {key} (down {tuple(down.shape)}, up {tuple(up.shape)}) "
            f"does not fit {name} (weight {tuple(weight.shape)})"
        )


# --- applying and undoing ------------------------------------------------------------------------


@contextmanager
def _writable(tensor: torch.Tensor) -> Iterator[None]:
    """In-place edits must happen in the inference mode the tensor was made in, whichever the caller's."""
    with torch.inference_mode(tensor.is_inference()), torch.no_grad():
        yield


def low_rank_delta(patch: LoraPatch, strength: float, weight: torch.Tensor) -> torch.Tensor:
    """strength * scale * up @ down in float32 on the weight's device, shaped like the weight."""
    down = patch.down.to(device=weight.device, dtype=torch.float32).flatten(1)
    up = patch.up.to(device=weight.device, dtype=torch.float32).flatten(1)
    return ((strength * patch.scale) * (up @ down)).reshape(weight.shape)


class AppliedLoras:
    """LoRAs merged into a model; `restore()` (or leaving the `with` block) puts every weight back."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.changed: list[str] = []
        self._backups: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __enter__(self) -> AppliedLoras:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.restore()

    def restore(self) -> None:
        """Copy the saved weights back (into the same storage, so shared tensors follow)."""
        while self._backups:
            weight, backup = self._backups.pop()
            with _writable(weight):
                weight.copy_(backup)
        self.changed.clear()

    def _add(self, label: str, weight: torch.Tensor, delta: torch.Tensor) -> None:
        with _writable(weight):
            self._backups.append((weight, weight.clone()))
            self.changed.append(label)
            weight.copy_((weight.float() + delta).to(weight.dtype))


def apply_loras(
    unet: nn.Module,
    text_encoder: nn.Module | None,
    items: list[LoraRequest],
    text_encoder_2: nn.Module | None = None,
) -> AppliedLoras:
    """Merge `items` into the models in place; on any error, everything changed so far is undone.

    All files are read and checked before the first weight changes. Several LoRAs on one layer
    are summed in float32 and added once, so their order does not matter.
    """
    applied = AppliedLoras()
    if not items:
        return applied  # most jobs: no need to index the model's layers
    layers = _Layers(_unwrap_unet(unet), text_encoder, text_encoder_2)
    try:
        files = [(request, _read_lora(Path(request.path), layers)) for request in items]
        for _, lora in files:
            applied.warnings.extend(lora.warnings)
        for (model, name), terms in _by_layer(files).items():
            weight = layers.module(model, name).weight.data
            applied._add(f"{model}:{name}", weight, _summed_delta(terms, weight))
    except BaseException:
        applied.restore()
        raise
    return applied


def _summed_delta(terms: list[tuple[LoraPatch, float]], weight: torch.Tensor) -> torch.Tensor:
    total = low_rank_delta(*terms[0], weight)
    for patch, strength in terms[1:]:
        total += low_rank_delta(patch, strength, weight)
    return total


def _by_layer(
    files: list[tuple[LoraRequest, LoraFile]],
) -> dict[tuple[str, str], list[tuple[LoraPatch, float]]]:
    """Each layer's updates with their strengths; zero strengths are left out (bit-identical)."""
    terms: dict[tuple[str, str], list[tuple[LoraPatch, float]]] = {}
    for request, lora in files:
        for patch in lora.patches:
            text = patch.part in ("text", "text2")
            strength = request.te_weight if text else request.unet_weight
            if strength != 0:
                model = patch.part if text else "unet"
                terms.setdefault((model, patch.target), []).append((patch, float(strength)))
    return terms
