"""Model-based ControlNet preprocessors ("annotators"), run by the optional `controlnet_aux` package.

`pip install 'animdiff[annotators]'` brings the backend; the weights are never downloaded: they
are read from `<models-dir>/ControlNetAnnotators/` under the file names of the public
lllyasviel/Annotators repository (a copy of that repository, or of the A1111 ControlNet
extension's downloads, can be used as is). Each row of `preprocess.PREPROCESSORS` that names
weight files maps here to the backend's network and detector classes; this module builds them
itself from the local files (the backend's `from_pretrained` would reach for the hub for any name
that is not a folder, and loads some files without `map_location`, which fails on a CPU-only
machine for weights saved from a GPU).

Why only some of the backend's modules are imported: `controlnet_aux/__init__.py` imports every
detector it ships, and several of them import torchvision (and timm). torchvision must be the
build made for the installed torch; the one PyPI serves is a CUDA build, which does not load
beside a CPU torch (and, once installed, breaks transformers' image processors too). So the
package's own `__init__` is skipped and each preprocessor imports just the detector modules it
needs: soft edges, line art, M-LSD and the OpenPose body model need torch, einops, scipy and
scikit-image only (the BAE normal network is built from its own module, skipping the detector's
module, which imports torchvision for one normalisation); `depth_midas` and `openpose_full` (its
face model) need a working torchvision (and timm for depth) as well, and say so when it is missing.

Checks come before any work: `check_annotator` (called where ControlNet units are prepared)
raises `AnnotatorsNotInstalledError` or `AnnotatorWeightsMissingError` naming what to install or
which file to put where. Loaded detectors are cached per (preprocessor, folder, file versions) in
the process, so a 64-frame video loads each model once. Detectors run on the CPU.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from animdiff.control.preprocess import (
    ANNOTATOR_DIR,
    ANNOTATOR_EXTRA,
    PREPROCESSORS,
    HintFn,
    Preprocessor,
    PreprocessorError,
    find_preprocessor,
)
from animdiff.errors import ModelFileError, ModelNotFoundError

#: The backend package (PyPI name controlnet-aux), imported module by module.
BACKEND = "controlnet_aux"
#: Where lllyasviel's annotator weights are published (named in the missing-file message).
WEIGHTS_SOURCE = "the lllyasviel/Annotators repository on Hugging Face"


class AnnotatorsNotInstalledError(PreprocessorError):
    """The packages a model-based preprocessor runs on are not installed (or do not load)."""


class AnnotatorWeightsMissingError(PreprocessorError, ModelNotFoundError):
    """A model-based preprocessor's weight file is not in the annotators folder."""


class AnnotatorWeightsError(PreprocessorError, ModelFileError):
    """A weight file is there but is not the network the preprocessor expects."""


@dataclass(frozen=True)
class _Backend:
    """How one preprocessor runs: the backend modules it imports and how it is built."""

    modules: tuple[str, ...]
    build: Callable[[dict[str, ModuleType], tuple[Path, ...]], HintFn]
    # Packages outside the extra that those modules import (named in the error when they fail).
    needs: str = ""


def annotator_folder(models_root: Path | str | None) -> Path | None:
    """The folder annotator weights are read from: `<models-dir>/ControlNetAnnotators`."""
    return None if models_root is None else Path(models_root).expanduser() / ANNOTATOR_DIR


def is_model_based(entry: Preprocessor) -> bool:
    """Whether the preprocessor needs the annotators extra and weight files."""
    return entry.run is None and entry.weights is not None


def check_annotator(entry: Preprocessor | str, folder: Path | None) -> None:
    """Raise what stops a model-based preprocessor from running here, before any frame is read.

    The backend's modules are imported (that is what tells a missing or broken install apart from
    a working one), then the weight files are looked for. Preprocessors that need no model pass.
    """
    entry = find_preprocessor(entry) if isinstance(entry, str) else entry
    if not is_model_based(entry):
        return
    _import_modules(entry)
    _weight_paths(entry, folder)


def annotator_problem(entry: Preprocessor | str, folder: Path | None) -> str | None:
    """Why the preprocessor cannot run in this installation (None when it can): for listings."""
    try:
        check_annotator(entry, folder)
    except PreprocessorError as exc:
        return str(exc)
    return None


def annotator_hint_fn(entry: Preprocessor | str, folder: Path | None) -> HintFn:
    """The hint function of a model-based preprocessor, its models loaded once per process."""
    entry = find_preprocessor(entry) if isinstance(entry, str) else entry
    if not is_model_based(entry):
        raise ValueError(f"preprocessor {entry.name!r} needs no model")
    modules = _import_modules(entry)
    paths = _weight_paths(entry, folder)
    key = (entry.name, *((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths))
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is None:
            cached = _build(entry, modules, paths)
            _CACHE[key] = cached
        return cached


def annotator_report(models_root: Path | str | None) -> list[tuple[str, str | None]]:
    """Each model-based preprocessor with why it cannot run here (None: it can), for listings."""
    folder = annotator_folder(models_root)
    return [
        (entry.name, annotator_problem(entry, folder))
        for entry in PREPROCESSORS.values()
        if is_model_based(entry)
    ]


def annotator_file_users() -> dict[str, list[str]]:
    """Weight file name -> the preprocessors that read it (to label the files in a listing)."""
    users: dict[str, list[str]] = {}
    for entry in PREPROCESSORS.values():
        for name in entry.weights.files if entry.weights is not None else ():
            users.setdefault(name, []).append(entry.name)
    return users


def clear_annotator_cache() -> None:
    """Drop the loaded detectors (their memory), e.g. when the models folder changed."""
    with _CACHE_LOCK:
        _CACHE.clear()


_CACHE: dict[tuple[Any, ...], HintFn] = {}
_CACHE_LOCK = threading.Lock()
_IMPORT_LOCK = threading.Lock()


def _needs_model_message(entry: Preprocessor) -> str:
    return f"preprocessor {entry.name!r} needs a model"


def _import_modules(entry: Preprocessor) -> dict[str, ModuleType]:
    backend = _BACKENDS[entry.name]
    modules = {}
    for name in backend.modules:
        try:
            modules[name] = _backend_module(name)
        except AnnotatorsNotInstalledError as exc:
            raise AnnotatorsNotInstalledError(f"{_needs_model_message(entry)}: {exc}") from exc
        except (ImportError, RuntimeError, OSError) as exc:
            if backend.needs and not _is_backend_missing(exc):
                raise AnnotatorsNotInstalledError(
                    f"{_needs_model_message(entry)} that runs with {backend.needs}, which cannot be "
                    f"imported here ({type(exc).__name__}: {exc}); install the torchvision build made "
                    f"for the installed torch (from the index torch came from), then "
                    f"pip install 'animdiff[{ANNOTATOR_EXTRA}]'"
                ) from exc
            raise AnnotatorsNotInstalledError(
                f"{_needs_model_message(entry)} run by the optional annotators extra, which is not "
                f"installed or does not load ({type(exc).__name__}: {exc}): "
                f"pip install 'animdiff[{ANNOTATOR_EXTRA}]'"
            ) from exc
    return modules


def _is_backend_missing(exc: BaseException) -> bool:
    extra = (BACKEND, "einops", "scipy", "skimage")  # what `animdiff[annotators]` installs
    return isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in extra


def _backend_module(name: str) -> ModuleType:
    """Import `controlnet_aux.<name>` without running the `__init__` of the packages above it.

    Each missing parent package is put in `sys.modules` as an empty shell (its spec, not its
    code) for the time of the import, so relative imports inside the backend resolve, and taken
    out again, so a later `import controlnet_aux` elsewhere still runs the real package.
    """
    full = f"{BACKEND}.{name}"
    with _IMPORT_LOCK:
        loaded = sys.modules.get(full)
        if loaded is not None:
            return loaded
        if importlib.util.find_spec(BACKEND) is None:
            raise AnnotatorsNotInstalledError(
                f"the optional annotators extra is not installed (no module {BACKEND!r}): "
                f"pip install 'animdiff[{ANNOTATOR_EXTRA}]'"
            )
        shells = []
        parts = full.split(".")
        try:
            for depth in range(1, len(parts)):
                package = ".".join(parts[:depth])
                if package in sys.modules:
                    continue
                spec = importlib.util.find_spec(package)
                if spec is None or spec.submodule_search_locations is None:
                    raise ImportError(f"{package} is not a package", name=package)
                sys.modules[package] = importlib.util.module_from_spec(spec)
                shells.append(package)
            with warnings.catch_warnings():
                # controlnet_aux 0.0.10 imports scipy.ndimage.filters, deprecated in SciPy 1.x.
                warnings.simplefilter("ignore", DeprecationWarning)
                return importlib.import_module(full)
        finally:
            for package in shells:
                sys.modules.pop(package, None)


def _weight_paths(entry: Preprocessor, folder: Path | None) -> tuple[Path, ...]:
    assert entry.weights is not None
    where = f"<models-dir>/{ANNOTATOR_DIR}/" if folder is None else str(folder)
    if folder is None:
        raise AnnotatorWeightsMissingError(
            f"{_needs_model_message(entry)}, read from {where} ({', '.join(entry.weights.files)}), "
            "and no models folder was given (--models-dir)"
        )
    missing = [name for name in entry.weights.files if not (folder / name).is_file()]
    if missing:
        files = ", ".join(str(folder / name) for name in missing)
        noun = "file is" if len(missing) == 1 else "files are"
        raise AnnotatorWeightsMissingError(
            f"{_needs_model_message(entry)}: the weight {noun} missing: {files}; download "
            f"{', '.join(missing)} from {WEIGHTS_SOURCE} into {folder}/"
        )
    return tuple(folder / name for name in entry.weights.files)


def _build(entry: Preprocessor, modules: dict[str, ModuleType], paths: tuple[Path, ...]) -> HintFn:
    try:
        return _BACKENDS[entry.name].build(modules, paths)
    except (RuntimeError, KeyError, ValueError, OSError, EOFError) as exc:
        names = ", ".join(str(p) for p in paths)
        raise AnnotatorWeightsError(
            f"preprocessor {entry.name!r}: {names} cannot be loaded as its model "
            f"({type(exc).__name__}: {str(exc)[:300]}); use the file from {WEIGHTS_SOURCE}"
        ) from exc


# --- loading -----------------------------------------------------------------------------------


def _state(path: Path) -> dict[str, Any]:
    """A weight file's tensors, on the CPU, without running pickled code."""
    import torch

    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(loaded, dict):
        raise ValueError(f"{path.name} holds a {type(loaded).__name__}, not a state dict")
    return loaded


def _strip_module(state: dict[str, Any]) -> dict[str, Any]:
    """Files saved from `nn.DataParallel` prefix every key with `module.`."""
    return {key.removeprefix("module."): value for key, value in state.items()}


def _ready(net: Any, state: dict[str, Any]) -> Any:
    net.load_state_dict(state)
    return net.float().eval()


def _square_call(detector: Any, image: np.ndarray, **options: Any) -> np.ndarray:
    """Run a detector at the image's own size: our frame is already at the processor resolution
    and padded to multiples of 64, so the detector's own resizing is the identity."""
    import torch

    side = min(image.shape[:2])
    with torch.no_grad():
        out = detector(image, detect_resolution=side, image_resolution=side, output_type="np", **options)
    return np.asarray(out, dtype=np.uint8)


def _build_hed(modules: dict[str, ModuleType], paths: tuple[Path, ...], *, safe: bool = False) -> HintFn:
    hed = modules["hed"]
    detector = hed.HEDdetector(_ready(hed.ControlNetHED_Apache2(), _state(paths[0])))
    return lambda image, a, b: _square_call(detector, image, safe=safe)


def _build_pidinet(modules: dict[str, ModuleType], paths: tuple[Path, ...], *, safe: bool = False) -> HintFn:
    pidi = modules["pidi"]
    state = _state(paths[0])
    state = state.get("state_dict", state)
    detector = pidi.PidiNetDetector(_ready(pidi.model.pidinet(), _strip_module(state)))
    return lambda image, a, b: _square_call(detector, image, safe=safe)


def _build_lineart(modules: dict[str, ModuleType], paths: tuple[Path, ...], *, coarse: bool) -> HintFn:
    lineart = modules["lineart"]
    net = _ready(lineart.Generator(3, 1, 3), _state(paths[0]))
    # The detector holds a fine and a coarse model; each row loads only the file it uses.
    detector = lineart.LineartDetector(net, net)
    return lambda image, a, b: _square_call(detector, image, coarse=coarse)


def _lineart_anime_net(module: ModuleType) -> Any:
    """The anime line-art U-Net as the backend builds it (instance norm without statistics)."""
    import functools

    import torch

    norm = functools.partial(torch.nn.InstanceNorm2d, affine=False, track_running_stats=False)
    return module.UnetGenerator(3, 1, 8, 64, norm_layer=norm, use_dropout=False)


def _build_lineart_anime(modules: dict[str, ModuleType], paths: tuple[Path, ...]) -> HintFn:
    anime = modules["lineart_anime"]
    net = _ready(_lineart_anime_net(anime), _strip_module(_state(paths[0])))
    detector = anime.LineartAnimeDetector(net)
    return lambda image, a, b: _square_call(detector, image)


def _build_mlsd(modules: dict[str, ModuleType], paths: tuple[Path, ...]) -> HintFn:
    mlsd = modules["mlsd"]
    net = _ready(mlsd.MobileV2_MLSD_Large(), _state(paths[0]))
    detector = mlsd.MLSDdetector(net)
    return lambda image, a, b: _square_call(detector, image, thr_v=a, thr_d=b)


def _build_openpose(modules: dict[str, ModuleType], paths: tuple[Path, ...]) -> HintFn:
    """Body pose only: the backend's body model and drawing, without its detector class (whose
    module imports the face model, and with it torchvision)."""
    body = modules["open_pose.body"].Body(str(paths[0]))
    draw = modules["open_pose.util"].draw_bodypose

    def run(image: np.ndarray, a: float, b: float) -> np.ndarray:
        import torch

        height, width = image.shape[:2]
        canvas = np.zeros((height, width, 3), dtype=np.uint8)
        with torch.no_grad():
            candidate, subset = body(np.ascontiguousarray(image[:, :, ::-1]))  # the model takes BGR
        for person in body.format_body_result(candidate, subset):
            # The drawing takes coordinates as fractions of the canvas.
            points = [
                None if p is None else p._replace(x=p.x / width, y=p.y / height) for p in person.keypoints
            ]
            canvas = draw(canvas, points)
        return canvas

    return run


def _build_openpose_full(modules: dict[str, ModuleType], paths: tuple[Path, ...]) -> HintFn:
    pose = modules["open_pose"]
    body, hand, face = paths
    detector = pose.OpenposeDetector(pose.Body(str(body)), pose.Hand(str(hand)), pose.Face(str(face)))
    return lambda image, a, b: _square_call(detector, image, include_hand=True, include_face=True)


def _build_midas(modules: dict[str, ModuleType], paths: tuple[Path, ...]) -> HintFn:
    midas = modules["midas"]
    # MiDaSInference builds DPT-Hybrid without ImageNet weights and loads the file (on the CPU).
    inference = midas.api.MiDaSInference(model_type="dpt_hybrid", model_path=str(paths[0]))
    detector = midas.MidasDetector(inference)
    return lambda image, a, b: _square_call(detector, image)


def bae_network(nnet: ModuleType) -> Any:
    """The BAE normal network with the options the published `scannet.pt` was trained with, built
    without the encoder's build messages on stdout (random weights until a file is loaded)."""
    import contextlib
    import io
    import types

    options = types.SimpleNamespace(
        mode="client", architecture="BN", pretrained="scannet", sampling_ratio=0.4, importance_ratio=0.7
    )
    with contextlib.redirect_stdout(io.StringIO()):
        return nnet.NNET(options)


def _build_normal_bae(modules: dict[str, ModuleType], paths: tuple[Path, ...]) -> HintFn:
    """The BAE normal network built from its own module (the detector's module imports
    torchvision for one normalisation, done here instead), the detector's steps otherwise."""
    import torch

    state = _state(paths[0])
    net = _ready(bae_network(modules["normalbae.nets.NNET"]), _strip_module(state.get("model", state)))
    mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)

    def run(image: np.ndarray, a: float, b: float) -> np.ndarray:
        import cv2

        pixels = torch.from_numpy(np.ascontiguousarray(image)).float().permute(2, 0, 1)[None] / 255.0
        with torch.no_grad():
            normal = net((pixels - mean) / std)[0][-1][:, :3]
        normal = ((normal + 1) * 0.5).clip(0, 1)[0].permute(1, 2, 0).numpy()
        out = (normal * 255.0).clip(0, 255).astype(np.uint8)
        height, width = image.shape[:2]
        if out.shape[:2] != (height, width):
            out = cv2.resize(out, (width, height), interpolation=cv2.INTER_LINEAR)
        return out

    return run


#: The ImageNet statistics the BAE network's EfficientNet encoder was trained with.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


_POSE = ("open_pose.util", "open_pose.body")  # util first: the two import each other
_BACKENDS: dict[str, _Backend] = {
    "softedge_hed": _Backend(("hed",), _build_hed),
    "softedge_hedsafe": _Backend(("hed",), lambda m, p: _build_hed(m, p, safe=True)),
    "softedge_pidinet": _Backend(("pidi",), _build_pidinet),
    "softedge_pidisafe": _Backend(("pidi",), lambda m, p: _build_pidinet(m, p, safe=True)),
    "lineart_realistic": _Backend(("lineart",), lambda m, p: _build_lineart(m, p, coarse=False)),
    "lineart_coarse": _Backend(("lineart",), lambda m, p: _build_lineart(m, p, coarse=True)),
    "lineart_anime": _Backend(("lineart_anime",), _build_lineart_anime),
    "mlsd": _Backend(("mlsd",), _build_mlsd),
    "openpose": _Backend(_POSE, _build_openpose),
    "openpose_full": _Backend(("open_pose",), _build_openpose_full, needs="torchvision"),
    "depth_midas": _Backend(("midas",), _build_midas, needs="torchvision and timm"),
    "normal_bae": _Backend(("normalbae.nets.NNET",), _build_normal_bae),
}
