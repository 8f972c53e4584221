"""`animdiff generate --demo`: the shipped model, its own defaults, the user's flags on top."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from animdiff.cli import build_parser, main, params_from_args
from animdiff.demo.defaults import DEMO_DEFAULTS


def test_demo_needs_no_models_folder_and_uses_its_own_defaults(tmp_path: Path, capsys) -> None:
    code = main(
        [
            *("generate", "--demo", "a red ball moving right", "--seed", "0", "--steps", "4", "--quiet"),
            *("--device", "cpu", "--format", "gif,txt", "--out", str(tmp_path)),
        ]
    )
    assert code == 0
    files = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines()[1:])
    gif = Image.open(files["gif"])
    assert gif.size == (DEMO_DEFAULTS["width"], DEMO_DEFAULTS["height"])
    assert gif.n_frames == DEMO_DEFAULTS["frames"]
    text = Path(files["txt"]).read_text()
    assert "Steps: 4" in text  # the user's flag wins
    assert f"CFG scale: {DEMO_DEFAULTS['cfg_scale']}" in text
    assert "Model: animdiff-demo-sd15" in text


def test_flags_override_the_demo_defaults() -> None:
    args = build_parser().parse_args(["generate", "--demo", "x", "--width", "128", "--cfg", "3"])
    params = params_from_args(args)
    assert (params.width, params.height, params.cfg_scale) == (128, DEMO_DEFAULTS["height"], 3.0)
    assert params.sampler == DEMO_DEFAULTS["sampler"] and params.steps == DEMO_DEFAULTS["steps"]


def test_the_demos_long_video_settings_are_its_own_and_flags_still_win() -> None:
    """Its windows are averaged, 4 frames apart, without a loop (demo/defaults.py says why)."""
    args = build_parser().parse_args(["generate", "--demo", "x", "--frames", "48"])
    params = params_from_args(args)
    assert (params.closed_loop, params.fuse, params.overlap) == ("N", "pyramid", 12)
    flags = ["--closed-loop", "R-P", "--fuse", "overwrite", "--overlap", "-1"]
    params = params_from_args(build_parser().parse_args(["generate", "--demo", "x", *flags]))
    assert (params.closed_loop, params.fuse, params.overlap) == ("R-P", "overwrite", -1)


def test_demo_with_a_models_folder_is_refused(tmp_path: Path, capsys) -> None:
    code = main(["generate", "--demo", "x", "--models-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 1
    assert "leave out --models-dir" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
