"""The `animdiff` command, in-process (same code path as the console script)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from animdiff.cli import build_parser, main, params_from_args
from animdiff.params import Params

TINY = [
    "--checkpoint",
    "tiny-sd15.safetensors",
    "--motion-module",
    "tiny-mm-v2.ckpt",
    "--width",
    "64",
    "--height",
    "64",
    "--steps",
    "2",
    "--seed",
    "42",
    "--quiet",
    "--device",
    "cpu",
]


def test_generate_writes_the_requested_files(models_dir: Path, tmp_path: Path, capsys) -> None:
    code = main(
        [
            "generate",
            "a corgi running on the beach",
            "--models-dir",
            str(models_dir),
            "--out",
            str(tmp_path),
            "--frames",
            "8",
            "--context",
            "8",
            "--fps",
            "8",
            "--format",
            "gif,png,txt",
            "--sampler",
            "Euler a",
            *TINY,
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "seed 42"
    files = dict(line.split(": ", 1) for line in lines[1:])
    assert set(files) == {"gif", "png", "txt"}
    assert Image.open(files["gif"]).n_frames == 8
    assert "Sampler: Euler a" in Path(files["txt"]).read_text()


def test_every_settings_field_has_a_flag() -> None:
    parser = build_parser()
    generate = parser._subparsers._group_actions[0].choices["generate"]
    dests = {action.dest for action in generate._actions}
    assert set(Params.model_fields) <= dests


def test_flags_map_onto_the_settings_model(tmp_path: Path) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("head\n0: a\n8: b\n")
    args = build_parser().parse_args(
        [
            "generate",
            "--prompt-file",
            str(prompt),
            "--negative",
            "ugly",
            "--cfg",
            "5",
            "--loop-number",
            "2",
            "--context",
            "8",
            "--overlap",
            "2",
            "--closed-loop",
            "R+P",
            "--format",
            "mp4,txt",
            "--interp",
            "FILM",
            "--interp-x",
            "3",
            "--motion-lora",
            "v2_lora_ZoomIn.ckpt:0.7",
            "--gif-palette",
            "--stride",
            "2",
        ]
    )
    params = params_from_args(args)
    assert params.prompt == "head\n0: a\n8: b"  # the file's final newline is not prompt
    assert (params.negative_prompt, params.cfg_scale, params.loop_number) == ("ugly", 5.0, 2)
    assert (params.context, params.overlap, params.closed_loop, params.stride) == (8, 2, "R+P", 2)
    assert params.formats == ["mp4", "txt"]
    assert (params.interp, params.interp_x, params.gif_palette) == ("FILM", 3, True)
    assert params.motion_loras[0].name == "v2_lora_ZoomIn.ckpt"
    assert params.motion_loras[0].strength == pytest.approx(0.7)
    assert params_from_args(build_parser().parse_args(["generate", "x"])) == Params(prompt="x")


def test_bad_settings_exit_with_a_message(capsys) -> None:
    assert main(["generate", "x", "--context", "8", "--overlap", "8"]) == 1
    assert "overlap 8 must be smaller than context batch size 8" in capsys.readouterr().err


def test_missing_model_is_named(models_dir: Path, tmp_path: Path, capsys) -> None:
    code = main(
        [
            "generate",
            "x",
            "--models-dir",
            str(models_dir),
            "--out",
            str(tmp_path),
            "--checkpoint",
            "nope.safetensors",
            "--quiet",
        ]
    )
    assert code == 1
    assert "checkpoint 'nope.safetensors' not found" in capsys.readouterr().err


def test_models_lists_each_file_with_its_kind(models_dir: Path, capsys) -> None:
    assert main(["models", "--models-dir", str(models_dir)]) == 0
    lines = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    assert lines["Stable-diffusion/tiny-sd15.safetensors"] == "SD1.5 checkpoint"
    assert lines["AnimateDiff/tiny-mm-v1.ckpt"] == "motion module v1"
    assert lines["AnimateDiff/tiny-mm-v2.ckpt"] == "motion module v2"
    assert lines["AnimateDiff/tiny-mm-v3.safetensors"] == "motion module v3"
    assert lines["AnimateDiff/tiny-hotshotxl.safetensors"] == "motion module HotShot-XL"
    assert lines["AnimateDiff/tiny-mm-sdxl-hs.safetensors"] == "motion module HotShot-XL"
    assert lines["AnimateDiff/tiny-mm-sdxl-v10-beta.ckpt"] == "motion module SDXL beta"
    assert lines["AnimateDiff/tiny-mm-sdxl-beta.safetensors"] == "motion module SDXL beta"
    assert lines["AnimateDiff/tiny-animatelcm.safetensors"] == "motion module AnimateLCM"
    assert lines["Stable-diffusion/tiny-sdxl.safetensors"] == "SDXL checkpoint"
    assert lines["Lora/tiny-sdxl-lora.safetensors"] == "LoRA (SDXL)"


def test_models_reports_damaged_files(tmp_path: Path, capsys) -> None:
    (tmp_path / "AnimateDiff").mkdir()
    (tmp_path / "AnimateDiff" / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    assert main(["models", "--models-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("AnimateDiff/broken.safetensors\tdamaged:")


def test_testing_module_writes_the_documented_files(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "animdiff.testing", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    for relative in (
        "Stable-diffusion/tiny-sd15.safetensors",
        "AnimateDiff/tiny-mm-v1.ckpt",
        "AnimateDiff/tiny-mm-v2.ckpt",
        "AnimateDiff/tiny-mm-v3.safetensors",
        "AnimateDiff/tiny-mm-sdxl-beta.safetensors",
        "AnimateDiff/tiny-hotshotxl.safetensors",
        "AnimateDiff/tiny-animatelcm.safetensors",
    ):
        assert (tmp_path / relative).is_file(), relative
