"""The API's in-memory encodings."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from output_helpers import INFOTEXT, pixels, read_video
from PIL import Image

from animdiff.errors import ParamsError
from animdiff.output import ENCODABLE, OutputOptions, encode, encode_frames_png
from animdiff.output.gif import GIFSICLE_MISSING


@pytest.mark.parametrize("fmt", ENCODABLE)
def test_encode_each_format(tmp_path: Path, frames: list[Image.Image], fmt: str, no_gifsicle: None) -> None:
    data = encode(frames, fmt.upper(), INFOTEXT, OutputOptions(fps=8))
    if fmt in ("gif", "webp"):
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == fmt.upper()
            assert image.n_frames == len(frames)
    else:
        path = tmp_path / f"x.{fmt}"
        path.write_bytes(data)
        info = read_video(path)
        assert (info.codec, info.frames, info.rate) == ({"mp4": "h264", "webm": "vp9"}[fmt], len(frames), 8)


def test_encode_collects_warnings(frames: list[Image.Image], no_gifsicle: None) -> None:
    notes: list[str] = []
    encode(frames, "gif", "", OutputOptions(gif_gifsicle=True), warnings=notes)
    assert notes == [GIFSICLE_MISSING]


@pytest.mark.parametrize("fmt", ["png", "txt", "frame", "avi"])
def test_encode_refuses_non_file_formats(frames: list[Image.Image], fmt: str) -> None:
    with pytest.raises(ParamsError):
        encode(frames, fmt, "", OutputOptions())


def test_encode_frames_png(frames: list[Image.Image]) -> None:
    encoded = encode_frames_png(frames, INFOTEXT)
    assert len(encoded) == len(frames)
    for data, frame in zip(encoded, frames, strict=True):
        with Image.open(io.BytesIO(data)) as png:
            assert png.format == "PNG"
            assert png.info["parameters"] == INFOTEXT
            assert np.array_equal(pixels(png), pixels(frame))
