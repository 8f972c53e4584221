"""Models kept loaded between jobs.

One checkpoint and one motion module are held at a time (the sizes involved are gigabytes);
asking for another replaces it. Files are identified by path, size and modification time, so a
file replaced on disk is reloaded. The UNet with motion modules shares its tensors with the
cached UNet and motion module, so building it for a new combination or GroupNorm mode costs no
memory and almost no time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from animdiff.family import SD15, ModelFamily
from animdiff.models.controlnet import ControlNet
from animdiff.models.files import sha256_of
from animdiff.models.fp8 import store_fp8
from animdiff.models.hub import fetch_checkpoint
from animdiff.models.load import MotionModule, StableDiffusionParts, build_motion_unet
from animdiff.models.motion_unet import MotionUNet
from animdiff.sampling.controlnet import Residuals

FileKey = tuple[str, int, int]


def file_key(path: Path) -> FileKey:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@dataclass
class LoadedModels:
    parts: StableDiffusionParts
    motion: MotionModule
    unet: MotionUNet
    checkpoint_name: str
    checkpoint_hash: str | None
    motion_name: str
    motion_hash: str | None

    def video_model(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        embeddings: torch.Tensor,
        residuals: Residuals | None = None,
        vector: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The UNet call on the model's device and in its dtype, returning float32 eps where the
        sample was: callers never have to know where the model lives. `residuals` are the
        ControlNet outputs for these rows, when a ControlNet acts; `vector` the added conditioning
        of these rows, for models that take one (SDXL)."""
        device, dtype = self.unet.device, self.unet.dtype
        if residuals is not None:
            residuals = Residuals(
                [r.to(device=device, dtype=dtype) for r in residuals.down],
                residuals.mid.to(device=device, dtype=dtype),
            )
        eps = self.unet(
            sample.to(device=device, dtype=dtype),
            timestep.to(device) if isinstance(timestep, torch.Tensor) else timestep,
            embeddings.to(device=device, dtype=dtype),
            residuals,
            vector=None if vector is None else vector.to(device=device, dtype=dtype),
        )
        return eps.to(device=sample.device, dtype=torch.float32)


class ModelCache:
    def __init__(
        self,
        device: torch.device,
        dtype: torch.dtype,
        compute_device: torch.device | None = None,
        fp8: bool = False,
    ) -> None:
        """`device`: where checkpoints and motion modules are kept (the CPU under --offload);
        `compute_device`: where they run, and where ControlNets are kept (default: `device`);
        `fp8`: the UNet's and motion modules' Linear/Conv weights stored as float8 (--fp8), converted
        before they move to `device`, so that device never holds them wider."""
        self.device = device
        self.compute_device = compute_device or device
        self.dtype = dtype
        self.fp8 = fp8
        self._checkpoint: tuple[FileKey, StableDiffusionParts] | None = None
        self._motion: tuple[FileKey, MotionModule] | None = None
        self._unet: tuple[tuple[FileKey, FileKey, str], MotionUNet] | None = None
        self._hashes: dict[FileKey, str] = {}
        self._controlnets: dict[tuple[FileKey, int], ControlNet] = {}

    def checkpoint(self, source: Path | str, family: ModelFamily = SD15) -> StableDiffusionParts:
        path = fetch_checkpoint(source) if isinstance(source, str) else source
        key = file_key(path)
        if self._checkpoint is None or self._checkpoint[0] != key:
            self._checkpoint = None  # release the old one before loading the new one
            self._unet = None
            parts = family.load_checkpoint(path, self.dtype)
            if self.fp8:
                store_fp8(parts.unet)
            for value in vars(parts).values():
                if isinstance(value, torch.nn.Module):
                    value.to(self.device)
            self._checkpoint = (key, parts)
        return self._checkpoint[1]

    def motion_module(self, path: Path, family: ModelFamily = SD15) -> MotionModule:
        key = file_key(path)
        if self._motion is None or self._motion[0] != key:
            self._motion = None
            self._unet = None
            motion = family.load_motion_module(path, self.dtype)
            if self.fp8:
                store_fp8(motion.adapter)
            motion.adapter.to(self.device)
            self._motion = (key, motion)
        return self._motion[1]

    def get(
        self, checkpoint: Path | str, motion_module: Path, groupnorm: str, family: ModelFamily = SD15
    ) -> LoadedModels:
        # Loaded tensors must be ordinary ones even when a caller is in inference mode: inference
        # tensors could not be re-assigned to a new model or patched by LoRAs later.
        with torch.inference_mode(False), torch.no_grad():
            return self._get(checkpoint, motion_module, groupnorm, family)

    def _get(
        self, checkpoint: Path | str, motion_module: Path, groupnorm: str, family: ModelFamily
    ) -> LoadedModels:
        parts = self.checkpoint(checkpoint, family)
        motion = self.motion_module(motion_module, family)
        key = (
            file_key(parts.path if parts.path.is_file() else parts.path / "model_index.json"),
            file_key(motion.path),
            groupnorm,
        )
        if self._unet is None or self._unet[0] != key:
            unet = build_motion_unet(parts.unet, motion.adapter, path=motion.path, fp8=self.fp8)
            self._unet = (key, MotionUNet(unet, motion.kind, groupnorm))
        return LoadedModels(
            parts=parts,
            motion=motion,
            unet=self._unet[1],
            checkpoint_name=_display_name(parts.path),
            checkpoint_hash=self.short_hash(parts.path, 10),
            motion_name=motion.path.name,
            motion_hash=self.short_hash(motion.path, 8),
        )

    def controlnets(self, paths: list[Path]) -> list[ControlNet]:
        """The ControlNets of a job, in order. Those of the previous job that this one does not use
        are released; a file replaced on disk (or a folder whose weights changed) is reloaded."""
        from animdiff.models.controlnet import SDXL_POOLED_WIDTH, load_controlnet

        # A single SDXL ControlNet file is sized for the loaded SDXL checkpoint's pooled text width.
        encoder = getattr(self._checkpoint[1], "text_encoder_2", None) if self._checkpoint else None
        pooled = int(getattr(getattr(encoder, "config", None), "projection_dim", SDXL_POOLED_WIDTH))
        keys = [(_controlnet_key(path), pooled) for path in paths]
        kept = {key: net for key, net in self._controlnets.items() if key in keys}
        self._controlnets = kept
        with torch.inference_mode(False), torch.no_grad():
            for key, path in zip(keys, paths, strict=True):
                if key not in self._controlnets:
                    net = load_controlnet(path, self.dtype, pooled_width=pooled)
                    net.model.to(self.compute_device)
                    self._controlnets[key] = net
        return [self._controlnets[key] for key in keys]

    def short_hash(self, path: Path, digits: int) -> str | None:
        """A1111's short model hash (first hex digits of the file's SHA-256); None for folders."""
        if not path.is_file():
            return None
        key = file_key(path)
        if key not in self._hashes:
            self._hashes[key] = sha256_of(path)
        return self._hashes[key][:digits]


def _controlnet_key(path: Path) -> FileKey:
    if path.is_dir():
        weights = sorted(p for p in path.iterdir() if p.name.startswith("diffusion_pytorch_model"))
        return file_key(weights[0] if weights else path / "config.json")
    return file_key(path)


def _display_name(path: Path) -> str:
    return path.stem if path.is_file() else path.name
