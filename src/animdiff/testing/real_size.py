"""Random weights at the real SD1.5 and AnimateDiff v2 sizes, in the real on-disk layouts.

The tiny models answer "is it correct"; these answer "how fast, how much memory" at the sizes
users run: the SD1.5 UNet (320/640/1280/1280), the CLIP ViT-L/14 text encoder and the KL VAE
from the shipped configs, and a v2 motion module (mid block, positional encoding 32). The files
are written exactly as the tiny ones are (the same `factory` writers and `layouts` renames): a
float16 single-file `.safetensors` checkpoint of about 2.1 GB and a float32 guoyww `.ckpt`
motion module of about 1.8 GB. The weights are the libraries' default random initialisation
under a fixed seed, so a run's numbers mean nothing but its speed and memory do.

Writing takes about 30 s on two cores and 4.5 GB of memory at its peak: each model is built on
the CPU without autograd, cast to float16 before the checkpoint's state is assembled, and dropped
before the next one is built. `REAL_FILES` are the names inside the models folder; a `realsize.json` manifest
written last marks a complete folder, so a folder can be reused by the benchmarks.

`sdxl=True` writes SDXL base at its published sizes instead (`REAL_SDXL_FILES`, its own manifest,
so one folder can hold both): the UNet (320/640/1280, transformer depths 0/2/10, 2048-wide cross
attention, the 2816-wide size/crop embedding), CLIP ViT-L and OpenCLIP ViT-bigG text encoders and
the SDXL VAE, as one float16 `.safetensors` in Stability's SGM layout (the tiny SDXL writer's
renames, testing/sdxl.py) of about 6.9 GB, and an AnimateDiff-XL motion module (float32 plain
`.ckpt`, 0.95 GB, as mm_sdxl_v10_beta). Built in float32 the UNet alone would take 10 GB, so each
part is made directly in float16 with a seeded initialisation of our own (the bounds PyTorch's
defaults use: uniform within 1/sqrt(fan-in) for Linear/Conv, ones and zeros for norms, N(0, 0.02)
for embeddings) and streamed into the file one part at a time: the peak is the UNet in float16,
about 5.5 GB, and the file's header is written first from the same parts built on `meta`.
"""

from __future__ import annotations

import json
import math
import struct
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from animdiff.models.convert import shipped_config
from animdiff.testing import layouts
from animdiff.testing.factory import (
    TinySD,
    motion_module_state,
    sd_checkpoint_state,
    write_checkpoint,
    write_motion_module,
)
from animdiff.testing.sdxl import clip_l_to_sgm, open_clip_to_sgm, unet_to_sgm

REAL_FILES = {
    "sd15": "Stable-diffusion/realsize-sd15.safetensors",
    "mm-v2": "AnimateDiff/realsize-mm-v2.ckpt",
}
REAL_SDXL_FILES = {
    "sdxl": "Stable-diffusion/realsize-sdxl.safetensors",
    "mm-sdxl": "AnimateDiff/realsize-mm-sdxl-v10-beta.ckpt",
}
MANIFEST = "realsize.json"
SDXL_MANIFEST = "realsize-sdxl.json"
# Bump when what is written changes, so that folders written by an older version are rewritten.
FORMAT = 1
SD_SEED = 1500
MOTION_SEED = 1502
SDXL_SEED = 1510
SDXL_MOTION_SEED = 1512


def real_unet_config() -> dict[str, Any]:
    return shipped_config("sd15_unet.json")


def real_vae_config() -> dict[str, Any]:
    return shipped_config("sd15_vae.json")


def real_text_config() -> dict[str, Any]:
    return shipped_config("sd15_text_encoder.json")


def real_motion_config() -> dict[str, Any]:
    """mm_sd_v15_v2: the published widths, a mid block and a positional encoding of 32 frames."""
    config = shipped_config("motion_adapter.json")
    config.update(use_motion_mid_block=True, motion_max_seq_length=32)
    return config


def _build(factory: Callable[[], torch.nn.Module], device: str | torch.device) -> Any:
    with torch.no_grad(), torch.device(device):
        module = factory()
    return module.eval().requires_grad_(False)


def real_size_sd(seed: int = SD_SEED, device: str | torch.device = "cpu") -> TinySD:
    """UNet, VAE and text encoder at SD1.5 size (on `meta`: shapes only, no memory, no time)."""
    torch.manual_seed(seed)
    unet = _build(lambda: UNet2DConditionModel(**real_unet_config()), device)
    vae = _build(lambda: AutoencoderKL(**real_vae_config()), device)
    text_encoder = _build(lambda: CLIPTextModel(CLIPTextConfig(**real_text_config())), device)
    return TinySD(unet, vae, text_encoder)


def real_size_motion_adapter(seed: int = MOTION_SEED, device: str | torch.device = "cpu") -> MotionAdapter:
    torch.manual_seed(seed)
    return _build(lambda: MotionAdapter(**real_motion_config()), device)


def real_size_states(device: str | torch.device = "meta") -> dict[str, dict[str, torch.Tensor]]:
    """The file contents by `REAL_FILES` name; on `meta` a free way to check names and shapes."""
    return {
        "sd15": sd_checkpoint_state(real_size_sd(device=device)),
        "mm-v2": motion_module_state("v2", real_size_motion_adapter(device=device)),
    }


def _manifest_ok(root: Path, name: str = MANIFEST, files: Mapping[str, str] = REAL_FILES) -> bool:
    try:
        manifest = json.loads((root / name).read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("format") == FORMAT and all((root / f).is_file() for f in files.values())


def _partial(path: Path) -> Path:
    """Where a file is written before it is complete (same suffix: the writers look at it)."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def write_real_size_dir(
    root: Path, *, reuse: bool = True, log: Callable[[str], None] | None = None, sdxl: bool = False
) -> dict[str, Path]:
    """An A1111-layout models folder holding `REAL_FILES` (`REAL_SDXL_FILES` with `sdxl`); an
    already complete one is kept."""
    root = Path(root)
    say = log or (lambda _message: None)
    if sdxl:
        return _write_real_size_sdxl_dir(root, reuse=reuse, say=say)
    paths = {key: root / name for key, name in REAL_FILES.items()}
    if reuse and _manifest_ok(root):
        say(f"reusing the real-size models in {root}")
        return paths
    (root / MANIFEST).unlink(missing_ok=True)
    start = time.perf_counter()

    sd = real_size_sd()
    for module in (sd.unet, sd.vae, sd.text_encoder):
        module.half()  # the file is float16 anyway; halves the memory the state below needs
    state = sd_checkpoint_state(sd)
    del sd
    write_checkpoint(_partial(paths["sd15"]), state).replace(paths["sd15"])
    del state
    say(f"wrote {paths['sd15']} ({time.perf_counter() - start:.0f} s)")

    _write_motion(paths["mm-v2"], "v2", real_size_motion_adapter)
    say(f"wrote {paths['mm-v2']} ({time.perf_counter() - start:.0f} s)")

    _write_manifest(
        root / MANIFEST,
        paths,
        REAL_FILES,
        {"sd15": SD_SEED, "mm-v2": MOTION_SEED},
        "random weights at real SD1.5 / AnimateDiff v2 sizes, for benchmarks only",
    )
    return paths


def _write_manifest(
    path: Path, paths: dict[str, Path], names: dict[str, str], seeds: dict[str, int], note: str
) -> None:
    """What was written (names, sizes, seeds), read back by `_manifest_ok` to reuse the files."""
    files = {key: {"path": names[key], "bytes": p.stat().st_size} for key, p in paths.items()}
    manifest = {"format": FORMAT, "seeds": seeds, "files": files, "note": note}
    path.write_text(json.dumps(manifest, indent=2) + "\n")


# --- SDXL -----------------------------------------------------------------------------------------------

SDXL_CONFIG_FILES = {
    "unet": "sdxl_unet.json",
    "vae": "sdxl_vae.json",
    "text_encoder": "sdxl_text_encoder.json",
    "text_encoder_2": "sdxl_text_encoder_2.json",
}


def real_sdxl_configs() -> dict[str, dict[str, Any]]:
    """SDXL base's published architecture, as shipped with the loader (models/configs)."""
    return {part: shipped_config(name) for part, name in SDXL_CONFIG_FILES.items()}


def real_sdxl_motion_config() -> dict[str, Any]:
    """mm_sdxl_v10_beta: three levels at the UNet's widths, no mid block, positional encoding 32."""
    return shipped_config("sdxl_motion_adapter.json")


def build_sdxl_part(part: str, config: Mapping[str, Any], device: str | torch.device) -> torch.nn.Module:
    """One of `SDXL_CONFIG_FILES`' parts from its config, with the library's initialisation (on
    `meta`: shapes and dtypes only, no memory; the memory estimate and the file header use that)."""
    with torch.device(device):
        if part == "unet":
            return UNet2DConditionModel(**config)
        if part == "vae":
            return AutoencoderKL(**config)
        if part == "text_encoder":
            return CLIPTextModel(CLIPTextConfig(**config))
        return CLIPTextModelWithProjection(CLIPTextConfig(**config))


def _sgm_state(part: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """One part's tensors under the SGM single-file names (the tiny SDXL writer's renames)."""
    state = module.state_dict()
    if part == "unet":
        return unet_to_sgm(state, module.config)
    if part == "vae":
        return layouts.vae_to_ldm(state, module.config)
    if part == "text_encoder":
        return clip_l_to_sgm(state, module.config.max_position_embeddings)
    return open_clip_to_sgm(state)


def _fill_random_(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Seeded values within the bounds of PyTorch's default initialisation, in the module's dtype.

    Every parameter gets one; a module type this does not know is an error, not left empty.
    """
    with torch.no_grad():
        for name, sub in module.named_modules():
            params = dict(sub.named_parameters(recurse=False))
            if not params:
                continue
            if isinstance(sub, torch.nn.Linear | torch.nn.Conv2d):
                bound = 1 / math.sqrt(sub.weight[0].numel())
                for tensor in params.values():
                    tensor.uniform_(-bound, bound, generator=generator)
            elif isinstance(sub, torch.nn.GroupNorm | torch.nn.LayerNorm):
                sub.weight.fill_(1.0)
                sub.bias.zero_()
            elif isinstance(sub, torch.nn.Embedding):
                sub.weight.normal_(0.0, 0.02, generator=generator)
            else:
                raise TypeError(f"no initialisation for {name} ({type(sub).__name__})")


def _safetensors_dtype(dtype: torch.dtype) -> str:
    names = {torch.float16: "F16", torch.float32: "F32", torch.int64: "I64", torch.bfloat16: "BF16"}
    return names[dtype]


def _file_dtype(tensor: torch.Tensor) -> torch.dtype:
    return torch.float16 if tensor.is_floating_point() else tensor.dtype


def _safetensors_header(layout: Mapping[str, torch.Tensor]) -> bytes:
    """The header for tensors written in `layout`'s order (shapes and dtypes read, never values)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, tensor in layout.items():
        size = tensor.numel() * torch.empty((), dtype=_file_dtype(tensor)).element_size()
        header[name] = {
            "dtype": _safetensors_dtype(_file_dtype(tensor)),
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    return struct.pack("<Q", len(text)) + text


def write_sdxl_checkpoint_streamed(
    path: Path, configs: Mapping[str, Mapping[str, Any]], seed: int = SDXL_SEED
) -> Path:
    """An SGM-layout float16 `.safetensors` SDXL checkpoint, one part in memory at a time.

    The header comes from the parts built on `meta`; then each part is built in float16, filled
    (`_fill_random_`), renamed to SGM names and its bytes appended in the header's order.
    """
    parts = list(SDXL_CONFIG_FILES)
    layouts_by_part = {p: _sgm_state(p, build_sdxl_part(p, configs[p], "meta")) for p in parts}
    layout = {k: v for p in parts for k, v in layouts_by_part[p].items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(_safetensors_header(layout))
        for part, state in sdxl_parts_filled(configs, seed):
            expected = layouts_by_part[part]
            if list(state) != list(expected) or any(state[k].shape != v.shape for k, v in expected.items()):
                raise RuntimeError(f"the {part}'s SGM tensors differ from the header written for them")
            for name in expected:
                tensor = state.pop(name).to(_file_dtype(expected[name])).contiguous().reshape(-1)
                handle.write(tensor.view(torch.uint8).numpy().data)
            del state
    return path


def sdxl_parts_filled(
    configs: Mapping[str, Mapping[str, Any]], seed: int = SDXL_SEED
) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
    """(part, its SGM-named tensors) for UNet, VAE, CLIP-L and OpenCLIP, each built in float16 and
    filled from one generator in that order; a part is dropped before the next one is built."""
    generator = torch.Generator().manual_seed(seed)
    default = torch.get_default_dtype()
    for part in SDXL_CONFIG_FILES:
        try:
            torch.set_default_dtype(torch.float16)  # built in float16: the UNet is 10 GB in float32
            module = build_sdxl_part(part, configs[part], "cpu")
        finally:
            torch.set_default_dtype(default)
        module.requires_grad_(False)
        _fill_random_(module, generator)
        state = _sgm_state(part, module)
        del module
        yield part, state


def real_size_sdxl_motion_adapter(
    seed: int = SDXL_MOTION_SEED, device: str | torch.device = "cpu"
) -> MotionAdapter:
    torch.manual_seed(seed)
    return _build(lambda: MotionAdapter(**real_sdxl_motion_config()), device)


def real_size_sdxl_states(device: str | torch.device = "meta") -> dict[str, dict[str, torch.Tensor]]:
    """The SDXL files' contents by `REAL_SDXL_FILES` name, float16 where the checkpoint is; on
    `meta` a free way to check names, shapes and sizes (the checkpoint's values never are)."""
    configs = real_sdxl_configs()
    checkpoint = {}
    for part in SDXL_CONFIG_FILES:
        state = _sgm_state(part, build_sdxl_part(part, configs[part], device))
        checkpoint.update({k: v.to(_file_dtype(v)) for k, v in state.items()})
    motion = motion_module_state("sdxl-beta", real_size_sdxl_motion_adapter(device=device))
    return {"sdxl": checkpoint, "mm-sdxl": motion}


def _write_motion(path: Path, version: str, build: Callable[[], Any]) -> None:
    """A motion module built by `build`, written under a partial name and renamed when complete."""
    state = motion_module_state(version, build())
    write_motion_module(_partial(path), state).replace(path)


def _write_real_size_sdxl_dir(root: Path, *, reuse: bool, say: Callable[[str], None]) -> dict[str, Path]:
    paths = {key: root / name for key, name in REAL_SDXL_FILES.items()}
    if reuse and _manifest_ok(root, SDXL_MANIFEST, REAL_SDXL_FILES):
        say(f"reusing the real-size SDXL models in {root}")
        return paths
    (root / SDXL_MANIFEST).unlink(missing_ok=True)
    start = time.perf_counter()
    write_sdxl_checkpoint_streamed(_partial(paths["sdxl"]), real_sdxl_configs()).replace(paths["sdxl"])
    say(f"wrote {paths['sdxl']} ({time.perf_counter() - start:.0f} s)")
    _write_motion(paths["mm-sdxl"], "sdxl-beta", real_size_sdxl_motion_adapter)
    say(f"wrote {paths['mm-sdxl']} ({time.perf_counter() - start:.0f} s)")
    _write_manifest(
        root / SDXL_MANIFEST,
        paths,
        REAL_SDXL_FILES,
        {"sdxl": SDXL_SEED, "mm-sdxl": SDXL_MOTION_SEED},
        "random weights at real SDXL base / AnimateDiff-XL sizes, for benchmarks only",
    )
    return paths
