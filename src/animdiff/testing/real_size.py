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
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from animdiff.models.convert import shipped_config
from animdiff.testing.factory import (
    TinySD,
    motion_module_state,
    sd_checkpoint_state,
    write_checkpoint,
    write_motion_module,
)

REAL_FILES = {
    "sd15": "Stable-diffusion/realsize-sd15.safetensors",
    "mm-v2": "AnimateDiff/realsize-mm-v2.ckpt",
}
MANIFEST = "realsize.json"
# Bump when what is written changes, so that folders written by an older version are rewritten.
FORMAT = 1
SD_SEED = 1500
MOTION_SEED = 1502


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


def _manifest_ok(root: Path) -> bool:
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("format") == FORMAT and all((root / name).is_file() for name in REAL_FILES.values())


def _partial(path: Path) -> Path:
    """Where a file is written before it is complete (same suffix: the writers look at it)."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def write_real_size_dir(
    root: Path, *, reuse: bool = True, log: Callable[[str], None] | None = None
) -> dict[str, Path]:
    """An A1111-layout models folder holding `REAL_FILES`; an already complete one is kept."""
    root = Path(root)
    say = log or (lambda _message: None)
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

    state = motion_module_state("v2", real_size_motion_adapter())
    write_motion_module(_partial(paths["mm-v2"]), state).replace(paths["mm-v2"])
    del state
    say(f"wrote {paths['mm-v2']} ({time.perf_counter() - start:.0f} s)")

    manifest = {
        "format": FORMAT,
        "seeds": {"sd15": SD_SEED, "mm-v2": MOTION_SEED},
        "files": {key: {"path": REAL_FILES[key], "bytes": p.stat().st_size} for key, p in paths.items()},
        "note": "random weights at real SD1.5 / AnimateDiff v2 sizes, for benchmarks only",
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return paths
