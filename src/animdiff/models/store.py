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
# How many names an error message lists per kind before saying how many more there are.
LISTED = 8
KIND_WORDS = {
    "checkpoint": ("checkpoint", "checkpoints"),
    "motion_module": ("motion module", "motion modules"),
    "motion_lora": ("motion LoRA", "motion LoRAs"),
    "lora": ("LoRA", "LoRAs"),
    "controlnet": ("ControlNet", "ControlNets"),
    "vae": ("VAE", "VAEs"),
}


@dataclass(frozen=True)
class ModelEntry:
    path: Path
    relative: str
    detected: Detected | None
    problem: str | None = None

    def describe(self) -> str:
        return str(self.detected) if self.detected is not None else f"damaged: {self.problem}"


def locate_models_root(given: Path) -> tuple[Path, str | None]:
    """The models folder a user meant, and a note when it is not the folder they typed.

    A1111 users often give the web UI's root (which holds `models/`); that is used as they meant
    it. Anything else is kept as given and `ModelStore.check` explains what is wrong with it.
    """
    given = Path(given).expanduser()
    if given.is_dir() and not _has_model_folders(given) and _has_model_folders(given / "models"):
        return given / "models", f"using {given / 'models'} (the models folder inside {given})"
    return given, None


def _has_model_folders(folder: Path) -> bool:
    names = {name for names in FOLDERS.values() for name in names}
    return folder.is_dir() and any((folder / name).is_dir() for name in names)


class ModelStore:
    def __init__(self, root: Path | None) -> None:
        self.given = Path(root).expanduser() if root is not None else None
        self.root, self.note = locate_models_root(self.given) if self.given is not None else (None, None)

    def check(self) -> None:
        """Refuse a models folder that cannot be what the user meant, saying what is there."""
        if self.root is None:
            return
        given = self.given
        if not self.root.exists():
            raise ModelNotFoundError(f"models folder {given} does not exist")
        if not self.root.is_dir():
            raise ModelNotFoundError(f"models folder {given} is a file, not a folder")
        if _has_model_folders(self.root):
            return
        category = next((c for c, names in FOLDERS.items() if self.root.name in names), None)
        if category is not None:
            raise ModelNotFoundError(
                f"models folder {given} is the {self.root.name} folder itself; give the folder that "
                f"holds it: --models-dir {self.root.parent}"
            )
        expected = ", ".join(("Stable-diffusion", "AnimateDiff", "Lora", "ControlNet"))
        entries = sorted(p.name for p in self.root.iterdir())[:LISTED]
        there = ", ".join(entries) if entries else "nothing"
        raise ModelNotFoundError(
            f"models folder {given} has none of the folders of an A1111 models folder ({expected}, ...); "
            f"found there: {there}"
        )

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

    def find(self, name: str, category: str) -> Path | None:
        """The file a user-given name refers to, or None.

        Every form a user types or `animdiff models` prints works: a path, a path relative to
        the models folder (`Stable-diffusion/x.safetensors`) or to the kind's folder, a name with
        or without extension, A1111's display form with a hash; case does not matter.
        """
        name = DISPLAY_HASH.sub("", name.strip())
        if not name:
            return None
        direct = Path(name).expanduser()
        if direct.exists():
            return direct.resolve()
        bases = ([self.root] if self.root is not None else []) + self.folders(category)
        for base in bases:
            for guess in (base / name, *(base / f"{name}{s}" for s in WEIGHT_SUFFIXES)):
                if guess.exists() and (guess.is_file() or (guess / "model_index.json").is_file()):
                    return guess.resolve()
        wanted = _fold(name)
        for path in self.candidates(category):
            if wanted in {_fold(form) for form in self._forms(path, category)}:
                return path
        return None

    def _forms(self, path: Path, category: str) -> list[str]:
        forms = [path.name, path.stem]
        for base in ([self.root.resolve()] if self.root is not None else []) + self.folders(category):
            if path.is_relative_to(base):
                relative = path.relative_to(base).as_posix()
                forms += [relative, relative.removesuffix(path.suffix)]
        return forms

    def resolve(self, name: str, category: str) -> Path:
        """The file a user-given name refers to, or ModelNotFoundError saying where we looked."""
        found = self.find(name, category)
        if found is None:
            raise self.not_found(name, category)
        return found

    def resolve_first(self, name: str, categories: tuple[str, ...], asked_as: str) -> Path:
        """The first category that has `name`; the error lists every category's files, in order."""
        for category in categories:
            found = self.find(name, category)
            if found is not None:
                return found
        raise self.not_found(name, categories[0], also=categories[1:], asked_as=asked_as)

    def not_found(
        self, name: str, category: str, also: tuple[str, ...] = (), asked_as: str | None = None
    ) -> ModelNotFoundError:
        what = f"{asked_as}: " if asked_as else ""
        singular = KIND_WORDS[category][0]
        if self.root is None:
            return ModelNotFoundError(
                f"{what}{singular} {name!r} is not a file, and no models folder was given (--models-dir)"
            )
        looked = ", ".join(str(f) for f in self.folders(category)) or f"no {singular} folder in {self.root}"
        listing = "; ".join(self._available(c) for c in (category, *also))
        return ModelNotFoundError(f"{what}{singular} {name!r} not found (looked in: {looked}); {listing}")

    def _available(self, category: str) -> str:
        names = [p.name for p in self.candidates(category)]
        if category == "motion_lora":
            # The motion LoRA folders include AnimateDiff/, which mostly holds motion modules.
            names = [n for n in names if "lora" in n.lower()]
        plural = KIND_WORDS[category][1]
        if not names:
            return f"no {plural} available"
        shown = ", ".join(names[:LISTED])
        more = f" and {len(names) - LISTED} more" if len(names) > LISTED else ""
        return f"{plural} available: {shown}{more}"

    def default(self, category: str, kinds: frozenset[Kind] | tuple[Kind, ...]) -> Path:
        """The first file of the category whose detected kind is one of `kinds` (sorted by path)."""
        for path in self.candidates(category):
            try:
                if detect_file(path).kind in kinds:
                    return path
            except AnimdiffError:
                continue
        singular = KIND_WORDS[category][0]
        if self.root is None:
            raise ModelNotFoundError(
                f"no {singular} given, and no models folder (--models-dir) to pick one from"
            )
        looked = ", ".join(str(f) for f in self.folders(category)) or f"no {singular} folder in {self.root}"
        raise ModelNotFoundError(f"no {singular} found (looked in: {looked}); name one explicitly")

    def inventory(self) -> list[ModelEntry]:
        """Every weight file and diffusers folder under the root, with what it is."""
        if self.root is None:
            raise ModelNotFoundError("no models folder given")
        self.check()
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


def _fold(name: str) -> str:
    return name.replace("\\", "/").lower()


def _is_weight_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in WEIGHT_SUFFIXES and not path.name.startswith(".")


def looks_like_hub_id(name: str) -> bool:
    """`owner/name` with no weight-file extension that is not a local path: only then may a
    checkpoint come from the hub (`Stable-diffusion/x.safetensors` is a local name)."""
    name = name.strip()
    if Path(name).suffix.lower() in WEIGHT_SUFFIXES:
        return False
    return bool(HUB_ID.match(name)) and not Path(name).expanduser().exists()
