"""Every output format, ping-pong and FILM through the pipeline and the CLI, read back."""

from __future__ import annotations

import io
from pathlib import Path

import av
import pytest
from PIL import Image

from animdiff.cli import main
from animdiff.errors import InterpolationError
from animdiff.interpolate.counts import interpolated_count
from animdiff.output import params_from_infotext
from animdiff.params import make_params
from animdiff.pipeline import Animator, RunOptions, encode_outputs

TINY = [
    "--checkpoint", "tiny-sd15.safetensors", "--motion-module", "tiny-mm-v2.ckpt", "--width", "64",
    "--height", "64", "--steps", "1", "--seed", "7", "--quiet", "--sampler", "DDIM", "--device", "cpu",
]  # fmt: skip

CPU = RunOptions(device="cpu")  # tests run on the CPU, also where CUDA exists


def run_cli(models_dir: Path, out: Path, *args: str) -> dict[str, Path]:
    import contextlib

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert (
            main(["generate", "a corgi", "--models-dir", str(models_dir), "--out", str(out), *TINY, *args])
            == 0
        )
    lines = buffer.getvalue().splitlines()[1:]
    return {k: Path(v) for k, v in (line.split(": ", 1) for line in lines)}


def video_frames(path: Path) -> tuple[str, int, float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return stream.codec_context.name, count, float(stream.average_rate)


def test_all_formats_with_fps_and_loop(models_dir: Path, tmp_path: Path) -> None:
    files = run_cli(
        models_dir, tmp_path, "--frames", "8", "--context", "8", "--fps", "12", "--loop-number", "2",
        "--format", "gif,mp4,webm,webp,png,txt",
    )  # fmt: skip
    assert set(files) == {"gif", "mp4", "webm", "webp", "png", "txt"}
    gif = Image.open(files["gif"])
    assert (gif.n_frames, gif.info["loop"], gif.info["duration"]) == (8, 2, 80)  # GIF keeps 10 ms units
    webp = Image.open(files["webp"])
    webp.load()  # WebP reports a frame's duration once that frame is read
    assert (webp.n_frames, webp.info["loop"], webp.info["duration"]) == (8, 2, 83)
    assert video_frames(files["mp4"]) == ("h264", 8, 12.0)
    assert video_frames(files["webm"]) == ("vp9", 8, 12.0)
    assert len(list(files["png"].glob("*.png"))) == 8
    infotext = files["txt"].read_text().rstrip("\n")
    assert Image.open(files["png"] / "00000.png").text["parameters"] == infotext


def test_infotext_reads_back_as_the_settings(models_dir: Path, tmp_path: Path) -> None:
    params = make_params(
        prompt="head, (detail:1.2)\n0: a corgi\n4: a cat", negative_prompt="blurry", checkpoint="tiny-sd15",
        motion_module="tiny-mm-v3.safetensors", width=64, height=64, steps=1, seed=5, frames=0, context=8,
        overlap=-1, closed_loop="R+P", fuse="pyramid", formats="txt,png", fps=6, clip_skip=2,
        sampler="Euler a",
    )  # fmt: skip
    result = Animator(models_dir, tmp_path, CPU).run(params)
    read = make_params(params_from_infotext(result.infotext), formats="txt,png")
    assert read == params.model_copy(update={"frames": 8, "overlap": 2})


@pytest.mark.parametrize(
    ("frames", "context", "mode", "x", "expected"),
    [
        (8, 8, "R-P", 3, interpolated_count(8, 3, closed=False)),  # one window: not a loop
        (12, 8, "R-P", 3, interpolated_count(12, 3, closed=True)),  # wrapping windows: a loop
        (12, 8, "N", 2, interpolated_count(12, 2, closed=False)),
        (6, 8, "A", 2, interpolated_count(10, 2, closed=True)),  # ping-pong first: 6 -> 10
    ],
)
def test_film_frame_counts(models_dir: Path, tmp_path: Path, frames, context, mode, x, expected) -> None:
    files = run_cli(
        models_dir, tmp_path, "--frames", str(frames), "--context", str(context), "--closed-loop", mode,
        "--interp", "FILM", "--interp-x", str(x), "--format", "png,txt",
    )  # fmt: skip
    assert len(list(files["png"].glob("*.png"))) == expected


def test_ping_pong_without_film(models_dir: Path, tmp_path: Path) -> None:
    result = Animator(models_dir, tmp_path, CPU).run(
        make_params(
            prompt="x",
            checkpoint="tiny-sd15",
            motion_module="tiny-mm-v2.ckpt",
            width=64,
            height=64,
            steps=1,
            frames=5,
            context=8,
            closed_loop="A",
            formats="gif",
        ),
        write=False,
    )
    frames = [f.tobytes() for f in result.frames]
    assert len(frames) == 8
    assert frames[5:] == frames[3:0:-1]


def test_missing_film_model_says_where_to_put_it(tmp_path: Path, models_dir: Path) -> None:
    bare = tmp_path / "models"
    for sub in ("Stable-diffusion", "AnimateDiff"):
        (bare / sub).mkdir(parents=True)
    (bare / "Stable-diffusion" / "m.safetensors").symlink_to(
        models_dir / "Stable-diffusion" / "tiny-sd15.safetensors"
    )
    (bare / "AnimateDiff" / "mm.ckpt").symlink_to(models_dir / "AnimateDiff" / "tiny-mm-v2.ckpt")
    params = make_params(prompt="x", width=64, height=64, steps=1, frames=4, context=4, interp="FILM")
    with pytest.raises(InterpolationError, match="Deforum/film_interpolation"):
        Animator(bare, tmp_path / "out", CPU).run(params)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.*"))


def test_api_bytes_and_frames(models_dir: Path, tmp_path: Path) -> None:
    params = make_params(
        prompt="x", checkpoint="tiny-sd15", motion_module="tiny-mm-v2.ckpt", width=64, height=64, steps=1,
        frames=4, context=4, formats="gif,mp4,frame",
    )  # fmt: skip
    result = Animator(models_dir, None, CPU).run(params)
    encoded = encode_outputs(result, params)
    assert list(encoded) == ["gif", "mp4", "frame"]
    assert Image.open(io.BytesIO(encoded["gif"])).n_frames == 4
    assert len(encoded["frame"]) == 4
    first = Image.open(io.BytesIO(encoded["frame"][0]))
    assert first.text["parameters"] == result.infotext
    assert result.files == {}
