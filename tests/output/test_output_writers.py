"""Every format written to disk and read back with an independent reader."""

from __future__ import annotations

import os
import stat
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from output_helpers import INFOTEXT, gif_blocks, gradient_frames, pixels, read_video
from PIL import Image

from animdiff.errors import OutputError, ParamsError
from animdiff.output import OutputOptions, write_animation
from animdiff.output.frames import check_frames
from animdiff.output.gif import GIFSICLE_MISSING, find_gifsicle
from animdiff.output.webp import read_user_comment
from animdiff.params import make_params

NOW = datetime(2024, 5, 17, 12, 0, 0)


def write(tmp_path: Path, frames: list[Image.Image], fmt: str, options: OutputOptions, **kw: object) -> Path:
    result = write_animation(frames, [fmt], tmp_path, 42, INFOTEXT, options, now=NOW, **kw)
    return result.files[fmt]


# --- GIF ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("palette", [False, True])
@pytest.mark.parametrize(("fps", "loop", "duration"), [(8, 0, 120), (10, 3, 100), (4, 1, 250)])
def test_gif_timing_loop_and_comment(
    tmp_path: Path,
    frames: list[Image.Image],
    no_gifsicle: None,
    palette: bool,
    fps: int,
    loop: int,
    duration: int,
) -> None:
    path = write(tmp_path, frames, "gif", OutputOptions(fps=fps, loop_number=loop, gif_palette=palette))
    with Image.open(path) as gif:
        assert gif.n_frames == len(frames)
        assert gif.size == (64, 64)
        # The palette path honours the loop number too (the reference's drops it).
        assert gif.info["loop"] == loop
        assert gif.info["comment"] == INFOTEXT.encode()
        for index in range(gif.n_frames):
            gif.seek(index)
            assert gif.info["duration"] == duration


def test_gif_palette_is_one_global_table(
    tmp_path: Path, frames: list[Image.Image], no_gifsicle: None
) -> None:
    plain = write(tmp_path / "a", frames, "gif", OutputOptions())
    shared = write(tmp_path / "b", frames, "gif", OutputOptions(gif_palette=True))
    assert any(local for kind, local in gif_blocks(plain.read_bytes()) if kind == "image")
    blocks = gif_blocks(shared.read_bytes())
    assert blocks[0] == ("global", True)
    assert [local for kind, local in blocks if kind == "image"] == [False] * len(frames)


def test_gif_palette_frames_stay_close_to_the_source(
    tmp_path: Path, frames: list[Image.Image], no_gifsicle: None
) -> None:
    path = write(tmp_path, frames, "gif", OutputOptions(gif_palette=True))
    with Image.open(path) as gif:
        for index, frame in enumerate(frames):
            gif.seek(index)
            assert np.abs(pixels(gif) - pixels(frame)).mean() < 12


def test_gif_without_infotext_has_no_comment(
    tmp_path: Path, frames: list[Image.Image], no_gifsicle: None
) -> None:
    result = write_animation(frames, ["gif"], tmp_path, 1, "", OutputOptions(), now=NOW)
    with Image.open(result.files["gif"]) as gif:
        assert "comment" not in gif.info


def test_gifsicle_missing_warns_and_still_writes(
    tmp_path: Path, frames: list[Image.Image], no_gifsicle: None
) -> None:
    result = write_animation(
        frames, ["gif"], tmp_path, 42, INFOTEXT, OutputOptions(gif_gifsicle=True), now=NOW
    )
    assert result.warnings == [GIFSICLE_MISSING]
    with Image.open(result.files["gif"]) as gif:
        assert gif.n_frames == len(frames)


def _fake_gifsicle(folder: Path, body: str) -> Path:
    folder.mkdir()
    script = folder / "gifsicle"
    script.write_text(f"#!{sys.executable}\nimport sys, shutil, pathlib\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return folder


def test_gifsicle_runs_on_the_staged_file(
    tmp_path: Path, frames: list[Image.Image], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "args.txt"
    body = (
        f"pathlib.Path({str(log)!r}).write_text(' '.join(sys.argv[1:]))\n"
        "shutil.copyfile(sys.argv[2], sys.argv[4])"
    )
    monkeypatch.setenv("PATH", str(_fake_gifsicle(tmp_path / "bin", body)) + os.pathsep + os.environ["PATH"])
    result = write_animation(
        frames, ["gif"], tmp_path, 42, INFOTEXT, OutputOptions(gif_gifsicle=True), now=NOW
    )
    assert result.warnings == []
    args = log.read_text().split()
    assert args[0] == "-O3" and args[2] == "-o"
    assert Path(args[1]).parent == result.files["gif"].parent
    assert Path(args[1]).name.startswith(".")  # it ran before the rename into place
    assert not Path(args[3]).exists()
    with Image.open(result.files["gif"]) as gif:
        assert gif.n_frames == len(frames)


def test_gifsicle_failure_warns_and_keeps_the_gif(
    tmp_path: Path, frames: list[Image.Image], monkeypatch: pytest.MonkeyPatch
) -> None:
    body = "sys.stderr.write('broken on purpose'); sys.exit(3)"
    monkeypatch.setenv("PATH", str(_fake_gifsicle(tmp_path / "bin", body)) + os.pathsep + os.environ["PATH"])
    result = write_animation(
        frames, ["gif"], tmp_path, 42, INFOTEXT, OutputOptions(gif_gifsicle=True), now=NOW
    )
    assert len(result.warnings) == 1 and "broken on purpose" in result.warnings[0]
    assert sorted(p.name for p in result.files["gif"].parent.iterdir()) == [result.files["gif"].name]


@pytest.mark.skipif(find_gifsicle() is None, reason="gifsicle is not installed")
def test_real_gifsicle_keeps_loop_and_comment(tmp_path: Path, frames: list[Image.Image]) -> None:
    path = write(tmp_path, frames, "gif", OutputOptions(loop_number=2, gif_gifsicle=True))
    with Image.open(path) as gif:
        assert (gif.n_frames, gif.info["loop"], gif.info["comment"]) == (len(frames), 2, INFOTEXT.encode())


# --- MP4 / WEBM ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("fps", "preset", "tune"), [(8, "", ""), (12, "ultrafast", "animation")])
def test_mp4(tmp_path: Path, frames: list[Image.Image], fps: int, preset: str, tune: str) -> None:
    options = OutputOptions(fps=fps, mp4_crf=18, mp4_preset=preset, mp4_tune=tune)
    info = read_video(write(tmp_path, frames, "mp4", options))
    assert info.codec == "h264"
    assert info.frames == len(frames)
    assert info.rate == fps
    assert info.duration_s == pytest.approx(len(frames) / fps, abs=0.01)
    assert info.size == (64, 64)
    assert info.pix_fmt == "yuv420p"
    assert info.metadata["comment"] == INFOTEXT


def test_mp4_rejects_odd_sizes(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="even width and height"):
        write(tmp_path, gradient_frames(2, 66, 65), "mp4", OutputOptions())


def test_webm(tmp_path: Path, frames: list[Image.Image]) -> None:
    info = read_video(write(tmp_path, frames, "webm", OutputOptions(fps=16)))
    assert info.codec == "vp9"
    assert info.frames == len(frames)
    assert info.rate == 16
    assert info.duration_s == pytest.approx(len(frames) / 16, abs=0.01)
    assert info.size == (64, 64)
    assert info.metadata["title"] == INFOTEXT
    assert info.metadata["comment"] == INFOTEXT


def test_webm_accepts_odd_sizes(tmp_path: Path) -> None:
    info = read_video(write(tmp_path, gradient_frames(3, 66, 65), "webm", OutputOptions()))
    assert (info.frames, info.size) == (3, (66, 65))


# --- WEBP ------------------------------------------------------------------------------------------


def test_webp_lossless_is_pixel_exact(tmp_path: Path, frames: list[Image.Image]) -> None:
    path = write(tmp_path, frames, "webp", OutputOptions(fps=8, loop_number=4, webp_lossless=True))
    with Image.open(path) as webp:
        assert webp.n_frames == len(frames)
        assert webp.info["loop"] == 4
        assert read_user_comment(webp) == INFOTEXT
        for index, frame in enumerate(frames):
            webp.seek(index)
            assert np.array_equal(pixels(webp), pixels(frame))
            assert webp.info["duration"] == 125  # int(1000 / 8); known once the frame is loaded


def test_webp_lossy_quality(tmp_path: Path, frames: list[Image.Image]) -> None:
    low = write(tmp_path / "a", frames, "webp", OutputOptions(fps=3, webp_quality=10))
    high = write(tmp_path / "b", frames, "webp", OutputOptions(fps=3, webp_quality=95))
    assert low.stat().st_size < high.stat().st_size
    with Image.open(high) as webp:
        assert (webp.n_frames, webp.info["loop"]) == (len(frames), 0)
        webp.seek(1)
        assert np.abs(pixels(webp) - pixels(frames[1])).mean() < 8
        assert webp.info["duration"] == 333


# --- PNG / TXT ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("infotext", [INFOTEXT, "plain latin-1 text, ok: yes", ""])
def test_png_frames(tmp_path: Path, frames: list[Image.Image], infotext: str) -> None:
    result = write_animation(frames, ["png"], tmp_path, 42, infotext, OutputOptions(), now=NOW)
    folder = result.files["png"]
    assert folder.is_dir() and folder == result.base
    assert sorted(p.name for p in folder.iterdir()) == [f"{i:05}.png" for i in range(len(frames))]
    for index, frame in enumerate(frames):
        with Image.open(folder / f"{index:05}.png") as png:
            assert png.info["parameters"] == infotext
            assert np.array_equal(pixels(png), pixels(frame))


def test_txt(tmp_path: Path, frames: list[Image.Image]) -> None:
    path = write(tmp_path, frames, "txt", OutputOptions())
    assert path.read_bytes() == (INFOTEXT + "\n").encode("utf-8")


# --- all together ------------------------------------------------------------------------------------


def test_all_formats_in_one_result(tmp_path: Path, frames: list[Image.Image], no_gifsicle: None) -> None:
    formats = ["WEBM", "txt", "frame", "gif", "webp", "png", "mp4"]
    result = write_animation(frames, formats, tmp_path, 7, INFOTEXT, OutputOptions(), now=NOW)
    assert list(result.files) == ["png", "gif", "mp4", "txt", "webp", "webm"]  # the reference's order
    folder = tmp_path / "AnimateDiff" / "2024-05-17"
    assert result.base == folder / "00000-7"
    assert sorted(p.name for p in folder.iterdir()) == [
        "00000-7",
        "00000-7.gif",
        "00000-7.mp4",
        "00000-7.txt",
        "00000-7.webm",
        "00000-7.webp",
    ]


def test_options_from_params() -> None:
    params = make_params(
        fps=12, loop_number=2, gif_palette=True, mp4_crf=30, mp4_preset=" Slow", webp_lossless=True
    )
    options = OutputOptions.from_params(params)
    assert options == OutputOptions(
        fps=12, loop_number=2, gif_palette=True, mp4_crf=30, mp4_preset="slow", webp_lossless=True
    )


@pytest.mark.parametrize(
    "bad", [{"mp4_preset": "turbo"}, {"mp4_tune": "anime"}, {"fps": 0}, {"loop_number": 70_000}]
)
def test_options_reject_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ParamsError):
        OutputOptions(**bad)  # type: ignore[arg-type]


def test_frame_checks() -> None:
    with pytest.raises(OutputError, match="no frames"):
        check_frames([])
    with pytest.raises(OutputError, match="same size"):
        check_frames([Image.new("RGB", (8, 8)), Image.new("RGB", (8, 16))])
    converted = check_frames([Image.new("RGBA", (8, 8), (1, 2, 3, 4))])
    assert converted[0].mode == "RGB" and converted[0].getpixel((0, 0)) == (1, 2, 3)


def test_unknown_format_is_rejected(tmp_path: Path, frames: list[Image.Image]) -> None:
    with pytest.raises(ParamsError, match="unknown output format"):
        write_animation(frames, ["gif", "avi"], tmp_path, 1, "", OutputOptions(), now=NOW)
    with pytest.raises(ParamsError, match="no output format"):
        write_animation(frames, ["frame"], tmp_path, 1, "", OutputOptions(), now=NOW)
    assert not (tmp_path / "AnimateDiff").exists()
