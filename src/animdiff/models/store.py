"""Finding model files in a models folder laid out like A1111's (or ComfyUI's).

Users pass names the way their tools show them: a file name (`mm_sd_v15_v2.ckpt`), a path
relative to the right folder (`SD15/realisticVision.safetensors`), a name without extension,
A1111's display form with a hash (`realisticVision.safetensors [abcd1234]`), or a plain path.
Each kind of model has its usual folders; the extension's own `model/` folder beside the web UI's
`models/` is searched for motion modules too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from animdiff.errors import AnimdiffError, ModelNotFoundError
from animdiff.models.detect import Detected, Kind, detect_file
from animdiff.models.files import WEIGHT_SUFFIXES

FOLDERS: dict[str, tuple[str, ...]] = {
    "checkpoint": ("Stable-diffusion", "checkpoints"),
    "motion_module": ("AnimateDiff", "animatediff_models"),
    "motion_lora": ("AnimateDiff", "animatediff_motion_lora", "Lora"),
    "lora": ("Lora", "LyCORIS", "loras"),
    "controlnet": ("ControlNet", "controlnet"),
    "vae": ("VAE", "vae"),
}
# The A1111 extension keeps its motion modules in <webui>/extensions/sd-webui-animatediff/model.
EXTENSION_FOLDERS = ("../extensions/sd-webui-animatediff/model",)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DISPLAY_HASH = re.compile(r"\s*\[[0-9a-fA-F]{6,64}\]$")


@dataclass(frozen=True)
class ModelEntry:
    path: Path
    relative: str
    detected: Detected | None
    problem: str | None = None

    def describe(self) -> str:
        return str(self.detected) if self.detected is not None else f"damaged: {self.problem}"


class ModelStore:
    def __init__(self, root: Path | None) -> None:
        self.root = Path(root).expanduser() if root is not None else None

    def folders(self, category: str) -> list[Path]:
        if self.root is None:
            return []
        names = FOLDERS[category] + (
            EXTENSION_FOLDERS if category in ("motion_module", "motion_lora") else ()
        )
        return [(self.root / n).resolve() for n in names if (self.root / n).is_dir()]

    def candidates(self, category: str) -> list[Path]:
        """Weight files (and diffusers folders, for checkpoints) of a category, sorted."""
        found: list[Path] = []
        for folder in self.folders(category):
            found.extend(sorted(p for p in folder.rglob("*") if _is_weight_file(p)))
            if category == "checkpoint":
                found.extend(sorted(p.parent for p in folder.rglob("model_index.json")))
        return list(dict.fromkeys(found))

    def resolve(self, name: str, category: str) -> Path:
        """The file a user-given name refers to, or ModelNotFoundError saying where we looked."""
        name = DISPLAY_HASH.sub("", name.strip())
        direct = Path(name).expanduser()
        if direct.exists():
            return direct.resolve()
        for folder in self.folders(category):
            for guess in (folder / name, *(folder / f"{name}{s}" for s in WEIGHT_SUFFIXES)):
                if guess.exists():
                    return guess.resolve()
        matches = [p for p in self.candidates(category) if name in (p.name, p.stem)]
        if matches:
            return matches[0]
        looked = ", ".join(str(f) for f in self.folders(category)) or "no models folder given"
        available = ", ".join(p.name for p in self.candidates(category)[:8]) or "none"
        raise ModelNotFoundError(
            f"{category.replace('_', ' ')} {name!r} not found (looked in: {looked}; available: {available})"
        )

    def default(self, category: str, kinds: frozenset[Kind] | tuple[Kind, ...]) -> Path:
        """The first file of the category whose detected kind is one of `kinds` (sorted by path)."""
        for path in self.candidates(category):
            try:
                if detect_file(path).kind in kinds:
                    return path
            except AnimdiffError:
                continue
        looked = ", ".join(str(f) for f in self.folders(category)) or "no models folder given"
        raise ModelNotFoundError(
            f"no {category.replace('_', ' ')} found (looked in: {looked}); name one explicitly"
        )

    def inventory(self) -> list[ModelEntry]:
        """Every weight file and diffusers folder under the root, with what it is."""
        if self.root is None or not self.root.is_dir():
            raise ModelNotFoundError(f"models folder {self.root} does not exist")
        paths = sorted(p for p in self.root.rglob("*") if _is_weight_file(p))
        paths += sorted(p.parent for p in self.root.rglob("model_index.json"))
        entries = []
        for path in sorted(paths):
            relative = path.relative_to(self.root).as_posix()
            try:
                entries.append(ModelEntry(path, relative, detect_file(path)))
            except AnimdiffError as exc:
                entries.append(ModelEntry(path, relative, None, str(exc).removeprefix(f"{path}: ")))
        return entries


def _is_weight_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in WEIGHT_SUFFIXES and not path.name.startswith(".")


def looks_like_hub_id(name: str) -> bool:
    """`owner/name` that is not a local path: only then may a checkpoint come from the hub."""
    return bool(HUB_ID.match(name)) and not Path(name).expanduser().exists()
