"""Resize modes: geometry against A1111's formulas, and where the pixels land."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from animdiff.control import Placement, ResizeMode, placement, resize_frame
from animdiff.errors import ParamsError


def a1111_geometry(source: tuple[int, int], target: tuple[int, int], mode: int) -> Placement:
    """A1111's `resize_image` arithmetic, written out with its float ratio comparisons."""
    sw, sh = source
    tw, th = target
    if mode == 0:
        return Placement((tw, th), (0, 0))
    ratio, src_ratio = tw / th, sw / sh
    if mode == 1:
        w = tw if ratio > src_ratio else sw * th // sh
        h = th if ratio <= src_ratio else sh * tw // sw
    else:
        w = tw if ratio < src_ratio else sw * th // sh
        h = th if ratio >= src_ratio else sh * tw // sw
    return Placement((w, h), (tw // 2 - w // 2, th // 2 - h // 2))


SIZES = [1, 2, 3, 7, 8, 15, 16, 17, 31, 64]


@pytest.mark.parametrize("mode", list(ResizeMode))
def test_geometry_matches_a1111_for_all_small_sizes(mode: ResizeMode) -> None:
    for sw, sh, tw, th in itertools.product(SIZES, repeat=4):
        expected = a1111_geometry((sw, sh), (tw, th), int(mode))
        if min(expected.scaled) == 0:  # A1111 would fail on a 0-pixel side; we keep one pixel
            expected = Placement((max(1, expected.scaled[0]), max(1, expected.scaled[1])), expected.offset)
            expected = Placement(
                expected.scaled, (tw // 2 - expected.scaled[0] // 2, th // 2 - expected.scaled[1] // 2)
            )
        assert placement((sw, sh), (tw, th), mode) == expected, (sw, sh, tw, th)


def test_geometry_invariants() -> None:
    for sw, sh, tw, th in itertools.product(SIZES, repeat=4):
        crop = placement((sw, sh), (tw, th), ResizeMode.CROP_AND_RESIZE)
        (cw, ch), (cx, cy) = crop.scaled, crop.offset
        assert cw >= tw and ch >= th and (cw == tw or ch == th)
        assert cx <= 0 and cy <= 0 and cw + cx >= tw and ch + cy >= th
        fit = placement((sw, sh), (tw, th), ResizeMode.RESIZE_AND_FILL)
        (fw, fh), (fx, fy) = fit.scaled, fit.offset
        assert 1 <= fw <= tw and 1 <= fh <= th and (fw == tw or fh == th)
        assert fx >= 0 and fy >= 0 and fx + fw <= tw and fy + fh <= th


@pytest.mark.parametrize("mode", list(ResizeMode))
@pytest.mark.parametrize("fill", ["edge", "median"])
def test_output_shape_and_channels(mode: ResizeMode, fill: str) -> None:
    rng = np.random.default_rng(0)
    for (sw, sh), (tw, th) in itertools.product([(40, 30), (30, 40), (33, 33), (5, 60)], repeat=2):
        for channels in ((), (1,), (3,), (4,)):
            frame = rng.integers(0, 256, (sh, sw, *channels), dtype=np.uint8)
            out = resize_frame(frame, (tw, th), mode, fill=fill)
            assert out.shape == (th, tw, *channels) and out.dtype == np.uint8


def test_same_size_is_returned_untouched() -> None:
    frame = np.zeros((32, 48, 3), dtype=np.uint8)
    for mode in ResizeMode:
        assert resize_frame(frame, (48, 32), mode) is frame


def test_just_resize_stretches_the_whole_picture() -> None:
    frame = np.zeros((20, 40, 3), dtype=np.uint8)
    frame[:, :20] = 255  # left half white
    out = resize_frame(frame, (30, 30), "Just Resize")
    assert out[:, :13].min() > 200 and out[:, 17:].max() < 50


def test_crop_and_resize_keeps_the_centre() -> None:
    frame = np.arange(128, dtype=np.uint8)[None, :, None].repeat(64, axis=0).repeat(3, axis=2)
    out = resize_frame(frame, (64, 64), ResizeMode.CROP_AND_RESIZE)
    # 128x64 covers 64x64 without scaling: the middle 64 columns, 32..95.
    assert np.array_equal(out, frame[:, 32:96])
    tall = frame.transpose(1, 0, 2)  # 64 wide, 128 high
    assert np.array_equal(resize_frame(tall, (64, 64), 1), tall[32:96])


def test_crop_and_resize_with_scaling_lands_the_centre_marker_in_the_centre() -> None:
    frame = np.zeros((100, 300, 3), dtype=np.uint8)
    frame[40:60, 140:160] = 255  # centre square
    frame[:, :40] = 128  # left strip that the crop removes
    out = resize_frame(frame, (64, 64), "crop_and_resize")
    ys, xs = np.nonzero(out[..., 0] > 200)
    assert abs(xs.mean() - 31.5) < 1 and abs(ys.mean() - 31.5) < 1
    assert out[:, :5].max() < 20  # the grey strip is gone


def test_resize_and_fill_repeats_the_edge_rows() -> None:
    frame = np.zeros((32, 64, 3), dtype=np.uint8)
    frame[0] = (10, 20, 30)
    frame[-1] = (200, 100, 50)
    frame[1:-1] = 77
    out = resize_frame(frame, (64, 64), ResizeMode.RESIZE_AND_FILL)
    # 64x32 fits 64x64 without scaling: rows 16..47 are the frame, each band repeats its edge row.
    assert np.array_equal(out[16:48], frame)
    assert np.all(out[:16] == frame[0]) and np.all(out[48:] == frame[-1])


def test_resize_and_fill_repeats_the_edge_columns() -> None:
    frame = np.full((64, 32, 3), 77, dtype=np.uint8)
    frame[:, 0] = 5
    frame[:, -1] = 250
    out = resize_frame(frame, (64, 64), "Resize and Fill")
    assert np.array_equal(out[:, 16:48], frame)
    assert np.all(out[:, :16] == 5) and np.all(out[:, 48:] == 250)


def test_resize_and_fill_median_uses_one_border_colour() -> None:
    frame = np.full((32, 64, 3), 9, dtype=np.uint8)
    frame[0, :5] = 255  # a few odd border pixels do not move the median
    out = resize_frame(frame, (64, 64), 2, fill="median")
    assert np.array_equal(out[16:48], frame)
    assert np.all(out[:16] == 9) and np.all(out[48:] == 9)


def test_resize_and_fill_with_scaling_centres_the_picture() -> None:
    frame = np.full((50, 200, 3), 255, dtype=np.uint8)
    out = resize_frame(frame, (64, 64), 2, fill="median")
    # 200x50 fits as 64x16 at rows 24..39; the median border colour is white too.
    assert out.shape == (64, 64, 3) and out.min() > 240
    black = np.zeros((50, 200, 3), dtype=np.uint8)
    black[:3], black[-3:] = 255, 255  # light top/bottom edges, dark middle
    banded = resize_frame(black, (64, 64), 2)
    # The bands repeat the edge rows of the *scaled* picture (rows 24 and 39), as A1111 stretches them.
    assert np.all(banded[:24] == banded[24]) and np.all(banded[40:] == banded[39])
    assert banded[24].min() > 150 and banded[39].min() > 150 and banded[31:33].max() < 30


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        (0, ResizeMode.JUST_RESIZE),
        (1, ResizeMode.CROP_AND_RESIZE),
        (2, ResizeMode.RESIZE_AND_FILL),
        ("0", ResizeMode.JUST_RESIZE),
        ("2", ResizeMode.RESIZE_AND_FILL),
        ("Just Resize", ResizeMode.JUST_RESIZE),
        ("crop and resize", ResizeMode.CROP_AND_RESIZE),
        ("RESIZE_AND_FILL", ResizeMode.RESIZE_AND_FILL),
        ("Resize-and-Fill", ResizeMode.RESIZE_AND_FILL),
        ("INNER_FIT", ResizeMode.CROP_AND_RESIZE),
        ("OUTER_FIT", ResizeMode.RESIZE_AND_FILL),
        ("Scale to Fit (Inner Fit)", ResizeMode.CROP_AND_RESIZE),
        ("Envelope (Outer Fit)", ResizeMode.RESIZE_AND_FILL),
        (ResizeMode.CROP_AND_RESIZE, ResizeMode.CROP_AND_RESIZE),
    ],
)
def test_mode_names_and_numbers(value: object, mode: ResizeMode) -> None:
    assert ResizeMode.parse(value) is mode


@pytest.mark.parametrize("value", [3, -1, "3", "stretch", "", True, None, 1.0])
def test_unknown_modes_are_refused_with_the_choices(value: object) -> None:
    with pytest.raises(ParamsError, match=r"Just Resize \(0\), Crop and Resize \(1\), Resize and Fill \(2\)"):
        ResizeMode.parse(value)


def test_labels() -> None:
    assert [m.label for m in ResizeMode] == ["Just Resize", "Crop and Resize", "Resize and Fill"]


def test_bad_sizes_and_frames() -> None:
    frame = np.zeros((8, 8, 3), dtype=np.uint8)
    with pytest.raises(ParamsError, match="0x8"):
        resize_frame(frame, (0, 8))
    with pytest.raises(ValueError):
        resize_frame(frame.astype(np.float32), (4, 4))
