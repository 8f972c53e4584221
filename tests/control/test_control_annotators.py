"""Model-based preprocessors through the annotators extra, on weight files with random weights.

Each weight file is the backend's own network with random weights, saved under the file name of
lllyasviel/Annotators, so loading checks the real architecture and the key layout of the
published files (prefixes included) while the test stays small. Skipped where the extra is not
installed; `depth_midas` and `openpose_full` need a torchvision that loads beside the installed
torch and are skipped where it does not.
"""

from __future__ import annotations

import functools
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animdiff.control import (
    PREPROCESSORS,
    AnnotatorsNotInstalledError,
    AnnotatorWeightsError,
    AnnotatorWeightsMissingError,
    annotator_problem,
    check_annotator,
    preprocess_frames,
    run_preprocessor,
)
from animdiff.control.annotators import (
    _backend_module,
    annotator_hint_fn,
    bae_network,
    clear_annotator_cache,
)
from animdiff.errors import ModelNotFoundError

torch = pytest.importorskip("torch")
try:
    _backend_module("hed")
except AnnotatorsNotInstalledError as exc:  # pragma: no cover - depends on the installation
    pytest.skip(f"the annotators extra is not installed: {exc}", allow_module_level=True)


def _torchvision_loads() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # a CUDA build beside a CPU torch raises RuntimeError, not ImportError
        return False
    return True


needs_torchvision = pytest.mark.skipif(
    not _torchvision_loads(), reason="torchvision does not load beside this torch build"
)


def _save(state: dict, path: Path) -> None:
    torch.save(state, path)


def _random_state(net: torch.nn.Module) -> dict:
    return {key: value.detach().clone() for key, value in net.state_dict().items()}


def _hed(folder: Path) -> None:
    _save(_random_state(_backend_module("hed").ControlNetHED_Apache2()), folder / "ControlNetHED.pth")


def _pidinet(folder: Path) -> None:
    state = _random_state(_backend_module("pidi").model.pidinet())
    # Large output weights: a random net's edge map is otherwise a flat 0.5 everywhere.
    state["classifier.weight"] *= 200.0
    # The published file is a training checkpoint of a DataParallel model.
    checkpoint = {"epoch": 1, "state_dict": {f"module.{key}": value for key, value in state.items()}}
    _save(checkpoint, folder / "table5_pidinet.pth")


def _lineart(folder: Path) -> None:
    lineart = _backend_module("lineart")
    _save(_random_state(lineart.Generator(3, 1, 3)), folder / "sk_model.pth")
    _save(_random_state(lineart.Generator(3, 1, 3)), folder / "sk_model2.pth")


def _lineart_anime(folder: Path) -> None:
    anime = _backend_module("lineart_anime")
    norm = functools.partial(torch.nn.InstanceNorm2d, affine=False, track_running_stats=False)
    net = anime.UnetGenerator(3, 1, 8, 64, norm_layer=norm, use_dropout=False)
    _save({f"module.{key}": value for key, value in _random_state(net).items()}, folder / "netG.pth")


def _mlsd(folder: Path) -> None:
    net = _backend_module("mlsd").MobileV2_MLSD_Large()
    _save(_random_state(net), folder / "mlsd_large_512_fp32.pth")


def _openpose_net(folder: Path, network: str, name: str) -> None:
    _backend_module("open_pose.util")
    net = getattr(_backend_module("open_pose.model"), network)()
    state = _random_state(net)
    # Flat output maps: a random net finds hundreds of joint candidates, slow to pair up for nothing.
    for key in state:
        if "Mconv7_stage6" in key:
            state[key].zero_()
    # The published files name tensors without the network's first key level ("conv1_1.weight").
    _save({key.split(".", 1)[1]: value for key, value in state.items()}, folder / name)


def _openpose_body(folder: Path) -> None:
    _openpose_net(folder, "bodypose_model", "body_pose_model.pth")


def _openpose_hand_and_face(folder: Path) -> None:
    """Only where torchvision loads: the face network's module imports it."""
    _openpose_net(folder, "handpose_model", "hand_pose_model.pth")
    _save(_random_state(_backend_module("open_pose.face").FaceNet()), folder / "facenet.pth")


def _midas(folder: Path) -> None:
    """Only where torchvision and timm load. DPT-Hybrid at its real size (123 M parameters),
    stored in float16 to keep the file at 250 MB; the loader converts."""
    net = _backend_module("midas.midas.dpt_depth").DPTDepthModel(
        path=None, backbone="vitb_rn50_384", non_negative=True
    )
    state = {
        key: value.half() if value.is_floating_point() else value for key, value in _random_state(net).items()
    }
    _save(state, folder / "dpt_hybrid-midas-501f0c75.pt")


def _normal_bae(folder: Path) -> None:
    net = bae_network(_backend_module("normalbae.nets.NNET"))
    # The published file is a training checkpoint of a DataParallel model, stored in float16 here to
    # keep the test small (the loader takes either).
    state = {
        f"module.{key}": value.half() if value.is_floating_point() else value
        for key, value in _random_state(net).items()
    }
    _save({"model": state}, folder / "scannet.pt")


WRITERS: dict[str, Callable[[Path], None]] = {
    "ControlNetHED.pth": _hed,
    "table5_pidinet.pth": _pidinet,
    "sk_model.pth": _lineart,
    "netG.pth": _lineart_anime,
    "mlsd_large_512_fp32.pth": _mlsd,
    "body_pose_model.pth": _openpose_body,
    "scannet.pt": _normal_bae,
}


@pytest.fixture(scope="module")
def annotators(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ControlNetAnnotators folder with every file the torchvision-free preprocessors read."""
    folder = tmp_path_factory.mktemp("models") / "ControlNetAnnotators"
    folder.mkdir()
    torch.manual_seed(0)
    for write in WRITERS.values():
        write(folder)
    if _torchvision_loads():
        _openpose_hand_and_face(folder)
        _midas(folder)
    yield folder
    clear_annotator_cache()


def shapes() -> tuple[np.ndarray, np.ndarray]:
    """Two different 64x64 frames: a white box on black and a dark diagonal band on grey."""
    first = np.zeros((64, 64, 3), dtype=np.uint8)
    first[16:48, 20:52] = 255
    second = np.full((64, 64, 3), 160, dtype=np.uint8)
    for i in range(64):
        second[i, max(0, i - 8) : i + 8] = 20
    return first, second


EDGE_ROWS = [
    "softedge_hed",
    "softedge_hedsafe",
    "softedge_pidinet",
    "softedge_pidisafe",
    "lineart_realistic",
    "lineart_coarse",
    "lineart_anime",
    "mlsd",
    "normal_bae",
]


@pytest.mark.parametrize("name", EDGE_ROWS)
def test_model_preprocessors_run_end_to_end(name: str, annotators: Path) -> None:
    first, second = shapes()
    assert annotator_problem(name, annotators) is None
    hints = list(preprocess_frames(name, [first, second, first], processor_res=64, annotators=annotators))
    for hint in hints:
        assert hint.shape == (64, 64, 3) and hint.dtype == np.uint8
    assert not np.array_equal(hints[0], hints[1]), "the hint does not depend on the frame"
    np.testing.assert_array_equal(hints[0], hints[2])
    # A frame of another size is scaled to the processor resolution and back.
    wide = run_preprocessor(
        name, np.zeros((48, 80, 3), dtype=np.uint8), processor_res=64, annotators=annotators
    )
    assert wide.shape == (48, 80, 3)


def test_mlsd_thresholds_reach_the_detector(annotators: Path) -> None:
    first, _ = shapes()
    loose = run_preprocessor("mlsd", first, processor_res=64, threshold_a=0.01, annotators=annotators)
    strict = run_preprocessor("mlsd", first, processor_res=64, threshold_a=2.0, annotators=annotators)
    assert np.count_nonzero(strict) < np.count_nonzero(loose)


def test_models_load_once_per_folder_and_again_when_a_file_changes(annotators: Path, tmp_path: Path) -> None:
    entry = PREPROCESSORS["softedge_hed"]
    assert annotator_hint_fn(entry, annotators) is annotator_hint_fn("softedge_hed", annotators)
    other = tmp_path / "ControlNetAnnotators"
    other.mkdir()
    shutil.copy(annotators / "ControlNetHED.pth", other / "ControlNetHED.pth")
    copied = annotator_hint_fn(entry, other)
    assert copied is not annotator_hint_fn(entry, annotators)
    torch.manual_seed(1)
    _hed(other)  # new weights under the same name are read again
    assert annotator_hint_fn(entry, other) is not copied


def test_openpose_draws_the_bodies_the_model_finds(annotators: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = np.full((64, 64, 3), 128, dtype=np.uint8)
    # The real body model on random (flat) output maps: nobody found, an empty pose map.
    hint = run_preprocessor("openpose", frame, processor_res=64, annotators=annotators)
    assert hint.shape == (64, 64, 3) and hint.dtype == np.uint8 and not hint.any()

    # What the adapter does with a detection: a neck (joint 1) at (16, 8) and a right shoulder
    # (joint 2) at (48, 40) in processor pixels, joined by the first limb's colour.
    body_module = _backend_module("open_pose.body")
    seen: list[np.ndarray] = []

    def found(self: object, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        seen.append(image)
        candidate = np.array([[16.0, 8.0, 1.0, 0.0], [48.0, 40.0, 1.0, 1.0]])
        person = np.full(20, -1.0)
        person[1], person[2], person[18], person[19] = 0, 1, 2.0, 2
        return candidate, person[None]

    monkeypatch.setattr(body_module.Body, "__call__", found)
    monkeypatch.setattr("animdiff.control.annotators._CACHE", {})
    frame[:, :32] = (255, 0, 0)
    hint = run_preprocessor("openpose", frame, processor_res=64, annotators=annotators)
    assert seen[0][0, 0].tolist() == [0, 0, 255], "the body model takes BGR"
    assert hint[8, 16].any() and hint[40, 48].any() and hint[24, 32].any()  # both joints, the limb between
    assert not hint[60, 4].any() and not hint[4, 60].any()


def test_a_missing_file_names_it_and_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ControlNetAnnotators"
    folder.mkdir()
    message = (
        rf"preprocessor 'softedge_hed' needs a model: the weight file is missing: "
        rf"{folder}/ControlNetHED\.pth; download ControlNetHED\.pth from the lllyasviel/Annotators "
        rf"repository on Hugging Face into {folder}/"
    )
    with pytest.raises(AnnotatorWeightsMissingError, match=message) as caught:
        check_annotator("softedge_hed", folder)
    assert isinstance(caught.value, ModelNotFoundError) and caught.value.http_status == 404
    with pytest.raises(AnnotatorWeightsMissingError, match=r"no models folder was given"):
        run_preprocessor("lineart_realistic", shapes()[0])
    # Nothing is read before the check: the frames are never pulled.

    def frames():
        raise AssertionError("a frame was read before the missing file was reported")
        yield

    with pytest.raises(AnnotatorWeightsMissingError, match=r"sk_model2\.pth"):
        preprocess_frames("lineart_coarse", frames(), annotators=folder)


def test_a_file_of_another_network_is_refused_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "ControlNetAnnotators"
    folder.mkdir()
    _mlsd(folder)
    (folder / "mlsd_large_512_fp32.pth").rename(folder / "ControlNetHED.pth")
    with pytest.raises(AnnotatorWeightsError, match=r"ControlNetHED\.pth cannot be loaded as its model"):
        run_preprocessor("softedge_hed", shapes()[0], processor_res=64, annotators=folder)


def test_without_the_extra_the_error_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(sys.modules):
        if name.startswith("controlnet_aux."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "controlnet_aux", None)  # what an uninstalled package looks like
    message = r"preprocessor 'softedge_pidinet' needs a model: .*pip install 'animdiff\[annotators\]'"
    with pytest.raises(AnnotatorsNotInstalledError, match=message):
        check_annotator("softedge_pidinet", tmp_path)
    assert "animdiff[annotators]" in annotator_problem("openpose", tmp_path)
    assert annotator_problem("canny", None) is None


@needs_torchvision
@pytest.mark.parametrize("name", ["depth_midas", "openpose_full"])
def test_torchvision_rows_check_their_files(name: str, tmp_path: Path) -> None:
    with pytest.raises(AnnotatorWeightsMissingError, match=PREPROCESSORS[name].weights.files[0]):
        check_annotator(name, tmp_path)


@needs_torchvision
def test_depth_midas_runs_end_to_end(annotators: Path) -> None:
    first, second = shapes()
    hints = list(preprocess_frames("depth_midas", [first, second], processor_res=64, annotators=annotators))
    for hint in hints:
        assert hint.shape == (64, 64, 3) and hint.dtype == np.uint8
        assert np.array_equal(hint[..., 0], hint[..., 1]) and np.array_equal(hint[..., 0], hint[..., 2])
    assert not np.array_equal(hints[0], hints[1]), "the hint does not depend on the frame"


@needs_torchvision
def test_normal_bae_equals_the_backends_own_detector(annotators: Path) -> None:
    """Ours builds the network without the detector's module (which imports torchvision); where
    torchvision loads, the detector itself runs on the same file and must draw the same map."""
    detector = _backend_module("normalbae").NormalBaeDetector.from_pretrained(
        str(annotators), filename="scannet.pt"
    )
    for frame in shapes():
        ours = run_preprocessor("normal_bae", frame, processor_res=64, annotators=annotators)
        theirs = np.asarray(detector(frame, detect_resolution=64, image_resolution=64, output_type="np"))
        assert ours.shape == theirs.shape
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


@needs_torchvision
def test_openpose_full_loads_its_three_networks_and_draws_nobody_on_a_plain_frame(annotators: Path) -> None:
    frame = np.full((64, 64, 3), 128, dtype=np.uint8)
    hint = run_preprocessor("openpose_full", frame, processor_res=64, annotators=annotators)
    assert hint.shape == (64, 64, 3) and hint.dtype == np.uint8 and not hint.any()


@pytest.mark.skipif(_torchvision_loads(), reason="torchvision loads here")
def test_torchvision_rows_say_what_they_need(annotators: Path) -> None:
    for name in ("depth_midas", "openpose_full"):
        with pytest.raises(
            AnnotatorsNotInstalledError, match=rf"'{name}' needs a model that runs with torchvision"
        ):
            check_annotator(name, annotators)


# --- through prepare and the CLI -------------------------------------------------------------------


@pytest.fixture
def cli_models(models_dir: Path, tmp_path: Path) -> Path:
    models = tmp_path / "models"
    for folder in ("Stable-diffusion", "AnimateDiff", "ControlNet"):
        (models / folder).parent.mkdir(parents=True, exist_ok=True)
        (models / folder).symlink_to(models_dir / folder, target_is_directory=True)
    return models


def _argv(models: Path, out: Path, frames: Path, module: str) -> list[str]:
    argv = ["generate", "a box", "--models-dir", str(models), "--out", str(out), "--device", "cpu"]
    argv += ["--checkpoint", "tiny-sd15.safetensors", "--motion-module", "tiny-mm-v2.ckpt", "--quiet"]
    argv += ["--width", "64", "--height", "64", "--steps", "1", "--seed", "1", "--frames", "2"]
    argv += ["--format", "png,txt", "--video-path", str(frames)]
    return [*argv, "--controlnet", f"model=tiny-controlnet-canny,module={module}"]


@pytest.fixture
def frames(tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(shapes()):
        Image.fromarray(frame).save(folder / f"{i}.png")
    return folder


@pytest.mark.parametrize("missing", ["file", "extra"])
def test_the_cli_reports_before_loading_any_model(
    missing: str, cli_models: Path, frames: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    from animdiff.cli import main

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a model was loaded before the problem was reported")

    monkeypatch.setattr("animdiff.models.cache.ModelCache.get", refuse)
    if missing == "file":
        (cli_models / "ControlNetAnnotators").mkdir()
        expected = f"the weight file is missing: {cli_models / 'ControlNetAnnotators' / 'netG.pth'}"
    else:
        for name in list(sys.modules):
            if name.startswith("controlnet_aux."):
                monkeypatch.delitem(sys.modules, name)
        monkeypatch.setitem(sys.modules, "controlnet_aux", None)
        expected = "pip install 'animdiff[annotators]'"
    out = tmp_path / "out"
    assert main(_argv(cli_models, out, frames, "lineart_anime")) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], captured.err
    assert "ControlNet unit 0: preprocessor 'lineart_anime' needs a model" in errors[0]
    assert "Traceback" not in captured.err and not out.exists()


def test_a_cli_run_with_a_model_preprocessor(
    cli_models: Path, annotators: Path, frames: Path, tmp_path: Path, capsys
) -> None:
    from animdiff.cli import main

    (cli_models / "ControlNetAnnotators").symlink_to(annotators, target_is_directory=True)
    out = tmp_path / "out"
    assert main(_argv(cli_models, out, frames, "softedge_hed")) == 0
    files = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines() if ": " in line)
    assert (
        'ControlNet 0: "Module: softedge_hed, Model: tiny-controlnet-canny ['
        in Path(files["txt"]).read_text()
    )
    assert len(sorted(out.rglob("*.png"))) == 2


def test_models_lists_the_preprocessors_and_their_files(cli_models: Path, annotators: Path, capsys) -> None:
    import os

    from animdiff.cli import main

    shutil.copytree(annotators, cli_models / "ControlNetAnnotators", copy_function=os.link)
    assert main(["models", "--models-dir", str(cli_models)]) == 0
    lines = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    assert lines["ControlNetAnnotators/ControlNetHED.pth"] == (
        "ControlNet preprocessor weights (softedge_hed, softedge_hedsafe)"
    )
    assert lines["preprocessor softedge_hed"] == lines["preprocessor openpose"] == "ready"
    assert lines["preprocessor normal_bae"] == "ready"
    if _torchvision_loads():
        assert lines["preprocessor depth_midas"] == lines["preprocessor openpose_full"] == "ready"
    else:
        assert lines["preprocessor depth_midas"].startswith(
            "not available: preprocessor 'depth_midas' needs a model"
        )


def test_the_ui_schema_marks_ready_model_preprocessors(annotators: Path) -> None:
    from types import SimpleNamespace

    pytest.importorskip("fastapi")
    from animdiff.server.ui.routes import ui_schema

    limits = SimpleNamespace(max_frames=64, max_size=512, max_steps=50)
    ctx = SimpleNamespace(settings=limits, previews=None, models=SimpleNamespace(root=annotators.parent))
    available = {p["name"]: p["available"] for p in ui_schema(ctx)["preprocessors"]}
    assert available["canny"] and available["softedge_hed"] and available["mlsd"]
    assert available["normal_bae"]
    assert not available["depth_midas"] or _torchvision_loads()
    bare = SimpleNamespace(settings=limits, previews=None, models=SimpleNamespace(root=None))
    available = {p["name"]: p["available"] for p in ui_schema(bare)["preprocessors"]}
    assert available["canny"] and not available["softedge_hed"]
