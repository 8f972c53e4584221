"""Every mistake is caught before any model loads: exit code, one `error:` line, nothing written.

"Before sampling" is checked by the order of events, not a timer: the model cache is replaced by
one that fails the test if anything asks it for a model, so an error that only surfaced after
loading (let alone after the render) would show up as a test failure, not as the expected line.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from animdiff.cli import main

TINY = ["--checkpoint", "tiny-sd15.safetensors", "--motion-module", "tiny-mm-v2.ckpt"]
TINY += ["--width", "64", "--height", "64", "--steps", "2", "--seed", "1", "--quiet"]
DEVICE = ["--device", "cpu"]


@pytest.fixture
def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr("animdiff.models.cache.ModelCache.get", refuse)


def run_bad(argv: list[str], capsys: pytest.CaptureFixture[str], code: int = 1) -> str:
    assert main(argv) == code
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""
    return errors[0]


def generate(models_dir: Path, out: Path, *extra: str, prompt: str = "a corgi") -> list[str]:
    device = [] if "--device" in extra else DEVICE
    return ["generate", prompt, "--models-dir", str(models_dir), "--out", str(out), *TINY, *device, *extra]


CASES = {
    "cfg above range": (["--cfg", "45"], "--cfg 45.0: must be at most 30"),
    "width not a multiple of 8": (["--width", "65"], "--width 65: must be a multiple of 8"),
    "overlap too big": (["--context", "8", "--overlap", "8"], "overlap 8 must be smaller than"),
    "unknown device": (["--device", "tpu"], "device 'tpu'"),
    "window batch 0": (["--window-batch", "0"], "--window-batch must be a whole number of at least 1"),
    "vae chunk 0": (["--vae-chunk", "0"], "--vae-chunk must be a whole number of at least 1"),
    "frame format on the CLI": (["--format", "frame"], "--format frame is for the HTTP API"),
    "txt alone": (["--format", "txt"], "choose at least one of gif"),
    "motion lora strength": (
        ["--motion-lora", "v2_lora_TinyZoomIn.ckpt:abc"],
        "strength 'abc' is not a number",
    ),
    "image lora as motion lora": (["--motion-lora", "tiny-style.safetensors"], "not a motion LoRA"),
    "missing checkpoint": (["--checkpoint", "nope.safetensors"], "checkpoint 'nope.safetensors' not found"),
    "sdxl motion module": (["--motion-module", "tiny-mm-sdxl-beta.safetensors"], "SDXL motion module"),
    "context above the module's limit": (
        ["--motion-module", "tiny-mm-v1.ckpt", "--context", "32"],
        "limit of 24",
    ),
    "missing FILM file": (
        ["--interp", "FILM", "--film-model", "nowhere/film_net_fp16.pt"],
        "film_net_fp16.pt",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_setting_is_one_line_before_loading(
    case: str, models_dir: Path, tmp_path: Path, capsys, no_model_loads
) -> None:
    extra, expected = CASES[case]
    line = run_bad(generate(models_dir, tmp_path / "out", *extra), capsys)
    assert expected in line
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_refused(models_dir: Path, tmp_path: Path, capsys, no_model_loads) -> None:
    assert "device 'cuda'" in run_bad(generate(models_dir, tmp_path, "--device", "cuda"), capsys)


PROMPTS = {
    "missing lora tag": (
        "x <lora:no-such-lora:1>",
        ["<lora:no-such-lora>: LoRA 'no-such-lora' not found", "LoRAs available: tiny-detail.safetensors"],
    ),
    "sdxl lora": ("x <lora:tiny-sdxl-style:1>", ["is an SDXL LoRA"]),
    "space before the colon": ("a\n8 : b", ["looks like a keyframe"]),
    "negative keyframe": ("a\n-3: b", ["looks like a keyframe"]),
    "fractional keyframe": ("a\n8.5: b", ["looks like a keyframe"]),
    "keyframe beyond the end": ("0: a\n99: b", ["keyframe 99 is beyond the last frame"]),
}


@pytest.mark.parametrize("case", sorted(PROMPTS))
def test_bad_prompt_is_one_line_before_loading(
    case: str, models_dir: Path, tmp_path: Path, capsys, no_model_loads
) -> None:
    prompt, expected = PROMPTS[case]
    line = run_bad(generate(models_dir, tmp_path / "out", prompt=prompt), capsys)
    for part in expected:
        assert part in line
    assert not (tmp_path / "out").exists()


def test_missing_film_in_the_models_folder(tmp_path: Path, models_dir: Path, capsys, no_model_loads) -> None:
    bare = tmp_path / "models"
    for folder in ("Stable-diffusion", "AnimateDiff"):
        shutil.copytree(models_dir / folder, bare / folder)
    line = run_bad(generate(bare, tmp_path / "out", "--interp", "FILM"), capsys)
    assert "film_net_fp16.pt" in line and str(bare) in line


def test_output_folder_blocked_by_a_file(models_dir: Path, tmp_path: Path, capsys, no_model_loads) -> None:
    (tmp_path / "taken").write_text("not a folder")
    line = run_bad(generate(models_dir, tmp_path / "taken"), capsys)
    assert "a file of that name is in the way" in line
    assert (tmp_path / "taken").read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_folder_read_only(models_dir: Path, tmp_path: Path, capsys, no_model_loads) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert "not writable" in run_bad(generate(models_dir, locked), capsys)


def test_output_folder_probe_leaves_nothing(models_dir: Path, tmp_path: Path) -> None:
    from animdiff.params import make_params
    from animdiff.pipeline import Animator, RunOptions

    animator = Animator(models_dir, tmp_path / "out", RunOptions(device="cpu"))
    animator.prepare(make_params(prompt="x", checkpoint="tiny-sd15", motion_module="tiny-mm-v2.ckpt"))
    assert list((tmp_path / "out").iterdir()) == []


def test_bad_files_name_the_problem(models_dir: Path, tmp_path: Path, capsys, no_model_loads) -> None:
    models = tmp_path / "models"
    shutil.copytree(models_dir / "Stable-diffusion", models / "Stable-diffusion")
    (models / "AnimateDiff").mkdir()
    (models / "AnimateDiff" / "page.ckpt").write_text("<html>404 Not Found</html>")
    (models / "AnimateDiff" / "empty.ckpt").write_bytes(b"")
    line = run_bad(generate(models, tmp_path / "out", "--motion-module", "page.ckpt"), capsys)
    assert "page.ckpt: a text file" in line and "weights_only" not in line
    line = run_bad(generate(models, tmp_path / "out", "--motion-module", "empty.ckpt"), capsys)
    assert "empty.ckpt: empty file (0 bytes" in line


def test_models_dir_mistakes_say_what_was_given(models_dir: Path, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope"
    assert f"models folder {missing} does not exist" in run_bad(generate(missing, tmp_path / "o"), capsys)
    sub = models_dir / "Stable-diffusion"
    line = run_bad(generate(sub, tmp_path / "o"), capsys)
    assert "is the Stable-diffusion folder itself" in line and f"--models-dir {models_dir}" in line
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "notes.txt").write_text("x")
    line = run_bad(generate(tmp_path / "random", tmp_path / "o"), capsys)
    assert "has none of the folders of an A1111 models folder" in line and "notes.txt" in line


def test_webui_root_is_taken_for_its_models_folder(models_dir: Path, tmp_path: Path, capsys) -> None:
    from animdiff.models.store import ModelStore

    webui = tmp_path / "stable-diffusion-webui"
    webui.mkdir()
    (webui / "models").symlink_to(models_dir)
    store = ModelStore(webui)
    store.check()
    assert store.root == webui / "models" and "models folder inside" in (store.note or "")
    assert main(["models", "--models-dir", str(webui)]) == 0
    assert "Stable-diffusion/tiny-sd15.safetensors" in capsys.readouterr().out


def test_usage_errors_are_short(capsys) -> None:
    line = run_bad(["generate", "x", "--frames", "abc"], capsys, code=2)
    assert "invalid int value" in line and "--help" in line
    assert "usage:" not in capsys.readouterr().err


def test_no_prompt_is_refused(capsys, no_model_loads) -> None:
    assert "no prompt" in run_bad(["generate", "--quiet"], capsys)


def test_version(capsys) -> None:
    from animdiff import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"animdiff {__version__}"


def test_help_does_not_offer_refused_features(capsys) -> None:
    assert main(["generate", "--help"]) == 0
    text = capsys.readouterr().out
    assert "frame" not in text.split("\n  --format", 1)[1].split("\n  --", 1)[0]
    # video inputs feed ControlNet units, so they are offered next to --controlnet
    assert "--video-source FILE" in text and "--video-path DIR" in text and "--controlnet KEY=VALUE" in text
