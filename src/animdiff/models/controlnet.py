"""ControlNet weight files -> diffusers `ControlNetModel`, offline, with every key accounted for.

Users' SD1.5 ControlNets come in these layouts, all loaded here:
- lllyasviel's original one (`control_v11p_sd15_*.pth`, the pruned v1.0 `control_*.safetensors`): the
  LDM names of the UNet's encoder half (`input_blocks`, `middle_block`, `time_embed`) plus `zero_convs`,
  `middle_block_out` and `input_hint_block`, all under `control_model.`;
- the full v1.0 files (`control_sd15_canny.pth`), which hold the SD checkpoint the ControlNet was
  trained with beside it; like the A1111 extension we read only `control_model.*`;
- the same names without the `control_model.` prefix (the fp16 safetensors conversions of v1.1);
- diffusers' names, as a folder (`config.json` + `diffusion_pytorch_model.safetensors`) or as a
  single file in `models/ControlNet`.

SDXL ControlNets load as diffusers folders or diffusers-named single files (`diffusers_xl_*.safetensors`);
a single file's config is SDXL base's (the shipped `sdxl_unet.json`) with widths and depths re-read
from its shapes, as sdxl.py does for the UNet. SDXL files with original names are refused.

No file carries a config. As for the UNet (see convert.py), the shipped `controlnet_sd15.json` holds
what shapes cannot tell (head count, norm groups) and everything else is read from the file's
shapes. The module is built on the meta device from that config; its own key list decides which
file keys are needed, so missing and unexpected keys are named the way the user's file names them.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel

from animdiff.errors import ModelFileError, ModelTypeError, NotSupportedYetError
from animdiff.models import convert, sdxl
from animdiff.models.detect import Detected, Kind, detect
from animdiff.models.feed_forward_slices import Budget, slice_feed_forwards
from animdiff.models.files import read_state_dict
from animdiff.models.ldm_names import ldm_unet_name
from animdiff.models.load import build_on_meta

CONTROL_PREFIX = "control_model."
SDXL_TEXT_WIDTH = 2048
SD2_TEXT_WIDTH = 1024
# Width of SDXL's pooled text embedding (the second encoder's projection); the rest of the size/crop
# embedding's input is the 6 size/crop ids' sinusoids, whose width no weight records.
SDXL_POOLED_WIDTH = 1280
# Names diffusers gives the ControlNet-only parts; any of them marks a diffusers-named file.
_DIFFUSERS_MARKERS = ("controlnet_down_blocks.", "controlnet_cond_embedding.", "controlnet_mid_block.")
# What a full v1.0 file carries beside `control_model.*`: the SD checkpoint and its DDPM buffers.
_CHECKPOINT_PREFIXES = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.", "model_ema.")
_SCHEDULE_BUFFERS = frozenset(
    {
        "betas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod",
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
        "posterior_variance",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
        "logvar",
    }
)
# "Difference" ControlNets store their weights relative to SD1.5's UNet and mark that with this key;
# loading them as they are would give a ControlNet that silently does nonsense.
_DIFFERENCE_MARKER = "difference"
# Stability's Control-LoRAs (SDXL) hold low-rank deltas to the UNet's encoder, marked with this key.
_CONTROL_LORA_MARKER = "lora_controlnet"
_FOLDER_WEIGHTS = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.bin",
)
_TAIL = r"(?:\.(.*))?"

Tensors = Mapping[str, torch.Tensor]


@dataclass
class ControlNet:
    """A loaded ControlNet and what it was loaded from. Its large feed-forward calls run in slices,
    as the UNet's do (`feed_forward_slices`; `ff_budget.bytes = None`: one piece)."""

    model: ControlNetModel
    kind: Kind
    path: Path
    ff_budget: Budget = field(default_factory=Budget)

    def __post_init__(self) -> None:
        slice_feed_forwards(self.model, self.ff_budget)

    @property
    def hint_channels(self) -> int:
        """Channels of the hint image it takes (3 for every published SD1.5 ControlNet)."""
        return int(self.model.config.conditioning_channels)


# --- names -------------------------------------------------------------------------------------------


def ldm_controlnet_name(name: str, layers_per_block: int, hint_blocks: int) -> str:
    """The original (lllyasviel) name, without `control_model.`, of a diffusers ControlNetModel key.

    The encoder half is the SD UNet's, so its names come from the UNet table (ldm_names.py). The
    hint encoder is an `nn.Sequential` with a SiLU between convolutions, hence the even indices;
    `hint_blocks` (six in every published file) fixes where its last convolution sits.
    Raises KeyError for names the original layout does not have.
    """
    fixed = {
        "controlnet_cond_embedding.conv_in": "input_hint_block.0",
        "controlnet_cond_embedding.conv_out": f"input_hint_block.{2 * (hint_blocks + 1)}",
        "controlnet_mid_block": "middle_block_out.0",
        # SDXL ControlNets only; named so that their files can be written and recognised.
        "add_embedding.linear_1": "label_emb.0.0",
        "add_embedding.linear_2": "label_emb.0.2",
    }
    for diffusers, ldm in fixed.items():
        if name == diffusers or name.startswith(diffusers + "."):
            return ldm + name[len(diffusers) :]
    if m := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)" + _TAIL, name):
        return _join(f"input_hint_block.{2 * (int(m[1]) + 1)}", m[2])
    if m := re.fullmatch(r"controlnet_down_blocks\.(\d+)" + _TAIL, name):
        return _join(f"zero_convs.{m[1]}.0", m[2])
    if name.startswith("up_blocks."):
        raise KeyError(f"a ControlNet has no decoder half: {name}")
    return ldm_unet_name(name, layers_per_block, ())


def _join(head: str, tail: str | None) -> str:
    return f"{head}.{tail}" if tail else head


def _count(keys: list[str], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m[1] for k in keys if (m := regex.match(k))})


def _is_diffusers_named(keys: list[str]) -> bool:
    return any(k.startswith(_DIFFUSERS_MARKERS) for k in keys)


def _ldm_view_of_diffusers(sd: Tensors) -> dict[str, torch.Tensor]:
    """A diffusers-named state under original names (keys without one keep theirs)."""
    keys = list(sd)
    layers = _count(keys, r"down_blocks\.0\.resnets\.(\d+)\.")
    hint_blocks = _count(keys, r"controlnet_cond_embedding\.blocks\.(\d+)\.")
    out = {}
    for key, value in sd.items():
        try:
            out[ldm_controlnet_name(key, layers, hint_blocks)] = value
        except KeyError:
            out[key] = value
    return out


@dataclass
class _Original:
    """The ControlNet's tensors under original names without the prefix, and how the file names them."""

    tensors: dict[str, torch.Tensor]
    prefix: str
    strays: list[str]  # file keys that belong neither to the ControlNet nor to a v1.0 file's extras


def _split_original(sd: Tensors) -> _Original:
    if not any(k.startswith(CONTROL_PREFIX) for k in sd):
        return _Original(dict(sd), "", [])
    tensors, strays = {}, []
    for key, value in sd.items():
        if key.startswith(CONTROL_PREFIX):
            tensors[key.removeprefix(CONTROL_PREFIX)] = value
        elif not (key.startswith(_CHECKPOINT_PREFIXES) or key in _SCHEDULE_BUFFERS):
            strays.append(key)
    return _Original(tensors, CONTROL_PREFIX, strays)


# --- config --------------------------------------------------------------------------------------------


def controlnet_config_from_ldm(control: Tensors) -> dict[str, Any]:
    """ControlNetModel config for original-named tensors (prefix removed), widths from their shapes."""
    config = convert.shipped_config("controlnet_sd15.json")
    for required in ("input_blocks.0.0.weight", "input_hint_block.0.weight"):
        if required not in control:
            raise ModelFileError(f"not a complete ControlNet: it has no {required}")
    # A ControlNet is a copy of the UNet's encoder half, so the UNet reader sizes it (widths, depth,
    # attention, cross-attention width). That reader also looks at the output convolution, which a
    # ControlNet lacks; a shape-only stand-in answers it and its answer (out_channels) is not used.
    view: dict[str, torch.Tensor] = {convert.UNET_PREFIX + k: v for k, v in control.items()}
    view[convert.UNET_PREFIX + "out.2.weight"] = torch.empty((0,), device="meta")
    try:
        unet = convert.unet_config_from_ldm(view)
    except KeyError as exc:
        raise ModelFileError(f"not a complete ControlNet: it has no {exc.args[0]}") from None
    for key in (
        "block_out_channels",
        "norm_num_groups",
        "layers_per_block",
        "down_block_types",
        "in_channels",
        "cross_attention_dim",
        "use_linear_projection",
        "norm_num_groups",  # the UNet's, whatever rule sets it: a ControlNet copies its encoder
    ):
        config[key] = unet[key]
    hint = sorted(int(m[1]) for k in control if (m := re.fullmatch(r"input_hint_block\.(\d+)\.weight", k)))
    outs = [control[f"input_hint_block.{i}.weight"].shape[0] for i in hint[:-1]]
    config["conditioning_channels"] = control["input_hint_block.0.weight"].shape[1]
    # conv_in, then pairs (same width, then wider with stride 2): every other output is a new width.
    config["conditioning_embedding_out_channels"] = outs[0::2] or [
        control["input_hint_block.0.weight"].shape[0]
    ]
    return config


def _uses_global_pooling(path: Path, given: bool | None) -> bool | None:
    """Shuffle ControlNets average their output over the image, which no key shows.

    lllyasviel ships that setting in the `.yaml` beside `control_v11e_sd15_shuffle.pth`, and the
    A1111 extension and ComfyUI go by the file name; we do both. None means "keep the config's".
    """
    if given is not None:
        return given
    sidecar = path.with_suffix(".yaml")
    if sidecar.is_file():
        text = sidecar.read_text(errors="replace")
        if re.search(r"^\s*global_average_pooling\s*:\s*true\s*$", text, re.IGNORECASE | re.MULTILINE):
            return True
    return True if "shuffle" in path.stem.lower() else None


# --- loading -------------------------------------------------------------------------------------------


def load_controlnet(
    path: Path,
    dtype: torch.dtype = torch.float32,
    *,
    global_pool: bool | None = None,
    pooled_width: int = SDXL_POOLED_WIDTH,
) -> ControlNet:
    """An SD1.5 ControlNet file (original or diffusers names) or diffusers folder, checked key by key;
    or an SDXL ControlNet as a diffusers folder or a diffusers-named single file.

    `global_pool` forces the shuffle-style global average pooling on or off; by default it follows
    the file's `.yaml` sidecar or name (see `_uses_global_pooling`). `pooled_width` is the SDXL
    checkpoint's pooled text width, which sizes a single SDXL file's size/crop sinusoids.
    """
    path = Path(path)
    with _naming_file(path):
        if path.is_dir():
            return _load_folder(path, dtype, global_pool)
        return _load_file(path, dtype, global_pool, pooled_width)


@contextmanager
def _naming_file(path: Path) -> Iterator[None]:
    """The conversion helpers see tensors, not files; every message must still name the file."""
    try:
        yield
    except (ModelFileError, ModelTypeError, NotSupportedYetError) as exc:
        if str(path) in str(exc):
            raise
        raise type(exc)(f"{path}: {exc}") from exc


def require_controlnet(path: Path, found: Detected) -> None:
    """Refuse everything but an SD1.5 or SDXL ControlNet, saying what the file is instead.

    Whether it fits the job's checkpoint is the caller's check (control_inputs.py), made before loading.
    """
    if found.kind in (Kind.CONTROLNET_SD15, Kind.CONTROLNET_SDXL):
        return
    raise ModelTypeError(f"{path} is a {found.kind}, not a ControlNet")


def _shapes(sd: Tensors) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


def _require_sd15_width(path: Path, config: Mapping[str, Any]) -> None:
    if config.get("cross_attention_dim") == SD2_TEXT_WIDTH:
        raise ModelTypeError(
            f"{path} is an SD2.x ControlNet (1024-wide cross-attention); it does not fit SD1.5 checkpoints"
        )


def _load_file(path: Path, dtype: torch.dtype, global_pool: bool | None, pooled_width: int) -> ControlNet:
    sd = read_state_dict(path)
    if _DIFFERENCE_MARKER in sd or CONTROL_PREFIX + _DIFFERENCE_MARKER in sd:
        raise NotSupportedYetError(
            f"{path} is a 'difference' ControlNet (weights stored relative to SD1.5's UNet); "
            "these are not supported: use the ordinary file of the same ControlNet"
        )
    if _CONTROL_LORA_MARKER in sd:
        raise NotSupportedYetError(f"{path} is a Control-LoRA (SDXL); these are not supported")
    diffusers_named = _is_diffusers_named(list(sd))
    if diffusers_named:
        found = detect(_shapes(sd))
        if found.kind is Kind.CONTROLNET_SDXL:
            return _load_sdxl_file(path, sd, dtype, global_pool, pooled_width)
        original = _Original(_ldm_view_of_diffusers(sd), "", [])
    else:
        original = _split_original(sd)
        # The detector is asked about the ControlNet's own keys in their canonical (prefixed) form,
        # so a bare v1.1 file and a full v1.0 file (which also holds a checkpoint) are judged alike.
        found = detect({CONTROL_PREFIX + k: s for k, s in _shapes(original.tensors).items()})
    require_controlnet(path, found)
    if found.kind is Kind.CONTROLNET_SDXL:
        raise NotSupportedYetError(
            f"{path} is an SDXL ControlNet with original (LDM) names; SDXL ControlNets load as diffusers "
            "folders (config.json) or single files with diffusers names"
        )
    config = controlnet_config_from_ldm(original.tensors)
    _require_sd15_width(path, config)
    pooling = _uses_global_pooling(path, global_pool)
    if pooling is not None:
        config["global_pool_conditions"] = pooling
    with torch.device("meta"):
        model = ControlNetModel(**config)
    state = dict(sd) if diffusers_named else _from_original(original, model, path)
    model = build_on_meta(lambda: model, state, what="ControlNet", path=path, dtype=dtype)
    return ControlNet(model, found.kind, path)


def _from_original(original: _Original, model: ControlNetModel, path: Path) -> dict[str, torch.Tensor]:
    """diffusers-named tensors for `model`, after checking the file has exactly what it needs."""
    config = model.config
    hint_blocks = 2 * (len(config.conditioning_embedding_out_channels) - 1)
    wanted = model.state_dict()
    names = {ldm_controlnet_name(k, config.layers_per_block, hint_blocks): k for k in wanted}
    got = original.tensors
    missing = [original.prefix + n for n in names if n not in got]
    unexpected = [original.prefix + n for n in got if n not in names] + original.strays
    mismatched = [
        f"{original.prefix}{n} {tuple(got[n].shape)}, needs {tuple(wanted[k].shape)}"
        for n, k in names.items()
        if n in got and tuple(got[n].shape) != tuple(wanted[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = [
            f"{len(found)} {what} ({_some(found)})"
            for what, found in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("with the wrong shape", mismatched),
            )
            if found
        ]
        raise ModelFileError(
            f"{path}: the ControlNet weights do not fit its architecture: {'; '.join(parts)}"
        )
    return {k: got[n] for n, k in names.items()}


def _some(names: list[str], shown: int = 5) -> str:
    head = ", ".join(sorted(names)[:shown])
    return head + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _load_folder(path: Path, dtype: torch.dtype, global_pool: bool | None) -> ControlNet:
    try:
        raw = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a diffusers ControlNet folder (config.json: {exc})") from None
    if not isinstance(raw, dict):
        raise ModelFileError(f"{path}: config.json does not hold a config")
    if raw.get("_class_name", "ControlNetModel") != "ControlNetModel":
        raise ModelTypeError(f"{path} holds a {raw['_class_name']}, not a ControlNet")
    weights = next((path / n for n in _FOLDER_WEIGHTS if (path / n).is_file()), None)
    if weights is None:
        raise ModelFileError(f"{path}: no diffusion_pytorch_model.safetensors (or .bin) weights")
    state = read_state_dict(weights)
    found = detect(_shapes(state))
    require_controlnet(path, found)
    config = {k: v for k, v in raw.items() if not k.startswith("_")}
    if found.kind is Kind.CONTROLNET_SD15:
        _require_sd15_width(path, config)
    if global_pool is not None:
        config["global_pool_conditions"] = global_pool
    model = build_on_meta(
        lambda: ControlNetModel.from_config(config),
        state,
        what="ControlNet",
        path=weights,
        dtype=dtype,
    )
    return ControlNet(model, found.kind, path)


# --- SDXL ----------------------------------------------------------------------------------------------


_HINT_IN = "controlnet_cond_embedding.conv_in.weight"


def sdxl_controlnet_config(sd: Tensors, *, pooled_width: int = SDXL_POOLED_WIDTH) -> dict[str, Any]:
    """ControlNetModel config for a diffusers-named SDXL ControlNet: SDXL base's numbers (the shipped
    `sdxl_unet.json`) with levels, widths, depths and embedding widths re-read from the shapes, as
    the SDXL UNet loader (sdxl.py) does."""
    keys = list(sd)
    for required in ("conv_in.weight", _HINT_IN, "add_embedding.linear_1.weight"):
        if required not in sd:
            raise ModelFileError(f"not a complete SDXL ControlNet: it has no {required}")
    accepted = set(inspect.signature(ControlNetModel.__init__).parameters)
    config = {k: v for k, v in convert.shipped_config("sdxl_unet.json").items() if k in accepted}
    levels = _count(keys, r"down_blocks\.(\d+)\.")
    widths, types, depths = [], [], []
    cross = config["cross_attention_dim"]
    linear = config["use_linear_projection"]
    for level in range(levels):
        conv = sd.get(f"down_blocks.{level}.resnets.0.conv2.weight")
        if conv is None:
            raise ModelFileError(f"not a complete SDXL ControlNet: it has no down_blocks.{level}.resnets.0.*")
        widths.append(int(conv.shape[0]))
        depth = _count(keys, rf"down_blocks\.{level}\.attentions\.0\.transformer_blocks\.(\d+)\.")
        types.append("CrossAttnDownBlock2D" if depth else "DownBlock2D")
        depths.append(depth or 1)  # a level without attention: diffusers wants a placeholder
        if depth:
            attention = f"down_blocks.{level}.attentions.0."
            cross = int(sd[attention + "transformer_blocks.0.attn2.to_k.weight"].shape[1])
            linear = sd[attention + "proj_in.weight"].ndim == 2
    config.update(
        block_out_channels=widths,
        down_block_types=types,
        transformer_layers_per_block=depths,
        attention_head_dim=[max(1, c // sdxl.HEAD_WIDTH) for c in widths],
        layers_per_block=_count(keys, r"down_blocks\.0\.resnets\.(\d+)\."),
        in_channels=int(sd["conv_in.weight"].shape[1]),
        cross_attention_dim=cross,
        use_linear_projection=linear,
        norm_num_groups=convert.norm_groups(widths),
        conditioning_channels=int(sd[_HINT_IN].shape[1]),
    )
    hint_blocks = _count(keys, r"controlnet_cond_embedding\.blocks\.(\d+)\.")
    config["conditioning_embedding_out_channels"] = [
        int(sd[_HINT_IN].shape[0]),
        *(int(sd[f"controlnet_cond_embedding.blocks.{i}.weight"].shape[0]) for i in range(1, hint_blocks, 2)),
    ]
    added = int(sd["add_embedding.linear_1.weight"].shape[1])
    extra = added - pooled_width
    if extra <= 0 or extra % sdxl.TIME_IDS:
        raise ModelFileError(
            f"the ControlNet's size/crop embedding takes {added} inputs, which does not fit a "
            f"{pooled_width}-wide pooled text embedding plus {sdxl.TIME_IDS} size/crop ids"
        )
    config["projection_class_embeddings_input_dim"] = added
    config["addition_time_embed_dim"] = extra // sdxl.TIME_IDS
    config["addition_embed_type"] = "text_time"
    return config


def _load_sdxl_file(
    path: Path, sd: Tensors, dtype: torch.dtype, global_pool: bool | None, pooled_width: int
) -> ControlNet:
    config = sdxl_controlnet_config(sd, pooled_width=pooled_width)
    pooling = _uses_global_pooling(path, global_pool)
    if pooling is not None:
        config["global_pool_conditions"] = pooling
    model = build_on_meta(
        lambda: ControlNetModel(**config), dict(sd), what="ControlNet", path=path, dtype=dtype
    )
    return ControlNet(model, Kind.CONTROLNET_SDXL, path)
