"""A failing writer leaves no trace, and earlier results are never touched."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from output_helpers import listing
from PIL import Image

from animdiff.errors import OutputError
from animdiff.output import OutputOptions, write_animation
from animdiff.output.atomic import Staging
from animdiff.output.naming import date_folder
from animdiff.output.writers import WRITERS, Writer

NOW = datetime(2024, 1, 2, 3, 4, 5)
ALL = ["png", "gif", "mp4", "txt", "webp", "webm"]


class Boom(RuntimeError):
    pass


def _failing(fmt: str, exc: BaseException) -> Writer:
    """The real writer, then a failure after its (partial) file exists on disk."""
    real = WRITERS[fmt]

    def write(frames: list[Image.Image], path: Path, infotext: str, options: OutputOptions) -> list[str]:
        real.write(frames[:3], path, infotext, options)
        raise exc

    return Writer(real.suffix, write)


@pytest.fixture
def earlier(tmp_path: Path, frames: list[Image.Image], no_gifsicle: None) -> dict[str, bytes | list[str]]:
    write_animation(frames, ALL, tmp_path, 1, "earlier", OutputOptions(), now=NOW)
    return listing(date_folder(tmp_path, NOW))


@pytest.mark.parametrize("fmt", ["png", "mp4", "webm"])
def test_failure_midway_leaves_nothing(
    tmp_path: Path,
    frames: list[Image.Image],
    earlier: dict[str, bytes | list[str]],
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
) -> None:
    monkeypatch.setitem(WRITERS, fmt, _failing(fmt, Boom("disk on fire")))
    with pytest.raises(OutputError, match=f"{fmt} output.*disk on fire") as info:
        write_animation(frames, ALL, tmp_path, 2, "later", OutputOptions(), now=NOW)
    assert isinstance(info.value.__cause__, Boom)
    assert listing(date_folder(tmp_path, NOW)) == earlier


def test_user_errors_pass_through_unwrapped(
    tmp_path: Path, frames: list[Image.Image], earlier: dict[str, bytes | list[str]]
) -> None:
    odd = [frame.crop((0, 0, 63, 64)) for frame in frames]  # MP4 refuses odd widths
    with pytest.raises(OutputError, match="even width"):
        write_animation(odd, ALL, tmp_path, 2, "later", OutputOptions(), now=NOW)
    assert listing(date_folder(tmp_path, NOW)) == earlier


def test_interrupt_cleans_up_and_propagates(
    tmp_path: Path,
    frames: list[Image.Image],
    earlier: dict[str, bytes | list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(WRITERS, "webp", _failing("webp", KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        write_animation(frames, ALL, tmp_path, 2, "later", OutputOptions(), now=NOW)
    assert listing(date_folder(tmp_path, NOW)) == earlier


def test_failed_job_does_not_use_up_its_number(
    tmp_path: Path,
    frames: list[Image.Image],
    earlier: dict[str, bytes | list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with monkeypatch.context() as patch:
        patch.setitem(WRITERS, "txt", _failing("txt", Boom("no")))
        with pytest.raises(OutputError):
            write_animation(frames, ["txt"], tmp_path, 2, "x", OutputOptions(), now=NOW)
    result = write_animation(frames, ["txt"], tmp_path, 2, "x", OutputOptions(), now=NOW)
    assert result.files["txt"].name == "00001-2.txt"


def test_commit_never_overwrites_and_rolls_back(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("precious")
    staging = Staging(tmp_path)
    staging.temp_for(tmp_path / "a.txt").write_text("new a")
    staging.temp_for(tmp_path / "b.txt").write_text("new b")
    with pytest.raises(OutputError, match="refusing to overwrite"):
        staging.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt"]  # a.txt was moved, then undone
    assert (tmp_path / "b.txt").read_text() == "precious"


def test_commit_moves_folders_and_files(tmp_path: Path) -> None:
    staging = Staging(tmp_path)
    folder = staging.temp_for(tmp_path / "frames")
    folder.mkdir()
    (folder / "00000.png").write_bytes(b"x")
    staging.temp_for(tmp_path / "a.gif").write_bytes(b"gif")
    assert all(p.name.startswith(".") for p in tmp_path.iterdir())  # hidden while staged
    staging.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif", "frames"]
    assert (tmp_path / "frames" / "00000.png").read_bytes() == b"x"
