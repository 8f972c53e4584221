"""ControlNet preprocessors without weights, the registry, and the processor-resolution rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from control_helpers import SQUARE, TOP, bright_box, square_frame, square_left

from animdiff.control import (
    DEFAULT_PROCESSOR_RES,
    PREPROCESSORS,
    PROCESSOR_RES_SLIDER,
    PreprocessorError,
    find_preprocessor,
    pixel_perfect_resolution,
    preprocess_frames,
    read_video_frames,
    run_preprocessor,
)
from animdiff.errors import ParamsError

RUNNABLE = [name for name, entry in PREPROCESSORS.items() if entry.available]


def test_registry_rows_are_consistent() -> None:
    assert RUNNABLE == [
        "none",
        "invert",
        "canny",
        "binary",
        "color",
        "scribble_xdog",
        "lineart_standard",
        "tile_resample",
    ]
    seen: set[str] = set()
    for name, entry in PREPROCESSORS.items():
        assert entry.name == name and entry.description
        for key in (name, *entry.aliases):
            assert key.lower() not in seen
            seen.add(key.lower())
        for slider in (entry.threshold_a, entry.threshold_b):
            if slider is not None:
                assert slider.minimum <= slider.default <= slider.maximum and slider.step > 0
        if entry.available:
            assert entry.weights is None
        else:
            assert entry.weights is not None and entry.weights.files and entry.weights.extra == "annotators"


def test_canny_defaults_are_the_extensions() -> None:
    canny = PREPROCESSORS["canny"]
    assert (canny.threshold_a.default, canny.threshold_b.default) == (100, 200)
    assert (canny.threshold_a.minimum, canny.threshold_a.maximum) == (1, 255)
    assert PREPROCESSORS["binary"].threshold_a.default == 0
    assert DEFAULT_PROCESSOR_RES == PROCESSOR_RES_SLIDER.default == 512
    assert (PROCESSOR_RES_SLIDER.minimum, PROCESSOR_RES_SLIDER.maximum) == (64, 2048)


def test_lookup_by_alias_and_case() -> None:
    assert find_preprocessor("Canny") is PREPROCESSORS["canny"]
    assert find_preprocessor("invert (from white bg & black line)") is PREPROCESSORS["invert"]
    assert find_preprocessor("t2ia_color_grid") is PREPROCESSORS["color"]
    assert find_preprocessor("depth") is PREPROCESSORS["depth_midas"]
    message = r"unknown preprocessor 'sobel'; choose one of: none, invert, canny"
    with pytest.raises(ParamsError, match=message):
        find_preprocessor("sobel")


@pytest.mark.parametrize("name", RUNNABLE)
@pytest.mark.parametrize("size", [(96, 64), (64, 96), (70, 50)])
@pytest.mark.parametrize("resolution", [64, 100, 512])
def test_every_hint_is_rgb_uint8_of_the_frames_size(name: str, size: tuple[int, int], resolution: int):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    hint = run_preprocessor(name, frame, processor_res=resolution)
    assert hint.shape == frame.shape and hint.dtype == np.uint8
    assert np.array_equal(hint[..., 0], hint[..., 1]) or name in ("none", "invert", "color", "tile_resample")


def test_none_and_invert() -> None:
    frame = square_frame(2)
    assert np.array_equal(run_preprocessor("none", frame), frame)
    assert np.array_equal(run_preprocessor("invert", frame), 255 - frame)


@pytest.fixture(scope="module")
def square_clip(square_videos: dict[str, Path]) -> list[np.ndarray]:
    return read_video_frames(square_videos["mp4"])


@pytest.mark.parametrize("resolution", [64, 128, 48])
def test_canny_edges_follow_the_square(square_clip: list[np.ndarray], resolution: int) -> None:
    # 64 is the clip's short side (no scaling), 128 enlarges before and shrinks after, 48 the reverse.
    for index, hint in enumerate(preprocess_frames("canny", square_clip, processor_res=resolution)):
        assert set(np.unique(hint)) <= {0, 255}
        left, top, right, bottom = bright_box(hint)
        expected = (square_left(index), TOP, square_left(index) + SQUARE - 1, TOP + SQUARE - 1)
        tolerance = 1 if resolution == 64 else 3
        box = (left, top, right, bottom)
        close = all(abs(a - b) <= tolerance for a, b in zip(box, expected, strict=True))
        assert close, (index, box, expected)
        # Edges only: the square's inside is dark in the hint.
        middle = TOP + SQUARE // 2, square_left(index) + SQUARE // 2
        assert hint[middle[0], middle[1]].max() == 0


def test_canny_thresholds_change_what_counts_as_an_edge() -> None:
    frame = np.zeros((64, 64, 3), dtype=np.uint8)
    frame[:, 32:] = 60  # a faint step: Sobel gives 4 * 60 = 240, between 200 and 250
    assert run_preprocessor("canny", frame, processor_res=64).max() == 255
    assert run_preprocessor("canny", frame, processor_res=64, threshold_a=250, threshold_b=255).max() == 0


def test_binary_turns_dark_strokes_white() -> None:
    frame = np.full((64, 64, 3), 230, dtype=np.uint8)
    frame[30:34, 8:56] = 20  # a dark stroke on white paper
    for threshold in (0, 128):  # Otsu, then a fixed threshold
        hint = run_preprocessor("binary", frame, processor_res=64, threshold_a=threshold)
        assert hint[31, 30].min() == 255 and hint[5, 5].max() == 0


def test_color_grid_is_uniform_per_64_pixel_cell() -> None:
    frame = np.zeros((128, 128, 3), dtype=np.uint8)
    frame[:64, :64] = (255, 0, 0)
    frame[64:, 64:] = (0, 0, 255)
    hint = run_preprocessor("color", frame, processor_res=128)
    for y in (0, 64):
        for x in (0, 64):
            cell = hint[y : y + 64, x : x + 64].reshape(-1, 3)
            assert (cell == cell[0]).all()
    assert tuple(hint[0, 0]) == (255, 0, 0) and tuple(hint[127, 127]) == (0, 0, 255)


def test_scribble_xdog_outlines_the_square() -> None:
    hint = run_preprocessor("scribble_xdog", square_frame(3), processor_res=64)
    assert set(np.unique(hint)) <= {0, 255}
    # The strokes lie on the dark side of each edge (where the wide blur exceeds the narrow one),
    # so they ring the square from just outside it.
    left, top, right, bottom = bright_box(hint)
    x0, x1, y0, y1 = square_left(3), square_left(3) + SQUARE - 1, TOP, TOP + SQUARE - 1
    assert x0 - 10 <= left < x0 and y0 - 10 <= top < y0 and x1 < right <= x1 + 10 and y1 < bottom <= y1 + 10
    assert hint[TOP + 8, x0 - 1].max() == 255 and hint[TOP + 8, x1 + 1].max() == 255
    assert hint[TOP + 8, square_left(3) + 8].max() == 0  # the inside is not a stroke


def test_lineart_standard_finds_dark_lines_on_white() -> None:
    frame = np.full((64, 64, 3), 255, dtype=np.uint8)
    frame[:, 30:32] = 0
    hint = run_preprocessor("lineart_standard", frame, processor_res=64)
    assert hint[:, 30:32].min() > 100 and hint[:, :20].max() == 0


def test_tile_resample_blurs_by_its_rate() -> None:
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert np.array_equal(run_preprocessor("tile_resample", frame), frame)
    blurred = run_preprocessor("tile_resample", frame, threshold_a=4)
    assert blurred.shape == frame.shape and blurred.std() < frame.std() / 2


def test_threshold_ranges_are_checked_before_any_frame_is_read() -> None:
    def frames():
        raise AssertionError("should not be read")
        yield

    message = r"canny threshold_a \(Canny Low Threshold\) 0 must be between 1 and 255"
    with pytest.raises(ParamsError, match=message):
        preprocess_frames("canny", frames(), threshold_a=0)
    with pytest.raises(ParamsError, match="processor resolution 0"):
        run_preprocessor("canny", square_frame(0), processor_res=0)
    # A value for a slider the preprocessor does not have is ignored, as the extension ignores it.
    assert run_preprocessor("invert", square_frame(0), threshold_a=999).shape == (64, 96, 3)


def test_model_based_preprocessors_say_what_they_need(tmp_path: Path) -> None:
    # Without a models folder, or without the extra: either way the message says what is missing.
    message = r"preprocessor 'softedge_hed' needs a model.*(ControlNetHED\.pth|animdiff\[annotators\])"
    with pytest.raises(PreprocessorError, match=message):
        run_preprocessor("softedge_hed", square_frame(0))
    with pytest.raises(PreprocessorError, match=r"preprocessor 'depth_midas' needs a model"):
        preprocess_frames("depth_midas", [square_frame(0)], annotators=tmp_path)
    assert "body_pose_model.pth" in PREPROCESSORS["openpose"].weights.install_hint()


def test_frames_must_be_rgb_uint8() -> None:
    with pytest.raises(PreprocessorError, match="HxWx3 uint8"):
        run_preprocessor("canny", np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(PreprocessorError, match="HxWx3 uint8"):
        run_preprocessor("canny", np.zeros((8, 8, 3), dtype=np.float32))


@pytest.mark.parametrize(
    ("source", "target", "mode", "expected"),
    [
        ((1920, 1080), (512, 512), "Just Resize", 512),
        ((1920, 1080), (512, 512), "Crop and Resize", 512),
        ((1920, 1080), (512, 512), "Resize and Fill", 288),
        ((1080, 1920), (512, 768), 1, 512),
        ((1080, 1920), (768, 512), 2, 288),
        ((640, 480), (512, 768), 0, 768),
        ((512, 768), (512, 768), 2, 512),  # frames already at the generation size: their short side
    ],
)
def test_pixel_perfect_resolution(source, target, mode, expected) -> None:
    assert pixel_perfect_resolution(source, target, mode) == expected
