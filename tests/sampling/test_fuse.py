"""Fusing window outputs: the reference's overwrite and the weighted means."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from animdiff.sampling.context import context_windows
from animdiff.sampling.fuse import WindowFuser, window_weights


def rows(*values: float) -> torch.Tensor:
    """A window output with one scalar per frame, shaped (frames, 2) to exercise broadcasting."""
    return torch.tensor(values, dtype=torch.float64).unsqueeze(1).expand(-1, 2).contiguous()


# --- weights -----------------------------------------------------------------------------------


def test_pyramid_even_and_odd() -> None:
    assert window_weights("pyramid", 6) == [1, 2, 3, 3, 2, 1]
    assert window_weights("pyramid", 5) == [1, 2, 3, 2, 1]
    assert window_weights("pyramid", 1) == [1]
    assert window_weights("pyramid", 2) == [1, 1]


def test_flat() -> None:
    assert window_weights("flat", 4) == [1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("length", range(1, 40))
def test_weight_shape_and_sum(length: int) -> None:
    pyramid = window_weights("pyramid", length)
    half = length // 2
    assert len(pyramid) == length
    assert pyramid == pyramid[::-1]
    expected = half * (half + 1) if length % 2 == 0 else half * (half + 1) + half + 1
    assert sum(pyramid) == expected
    assert sum(window_weights("flat", length)) == length


def test_weights_errors() -> None:
    with pytest.raises(ValueError, match="no weights"):
        window_weights("overwrite", 4)
    with pytest.raises(ValueError, match="unknown"):
        window_weights("mean", 4)
    with pytest.raises(ValueError, match="at least one"):
        window_weights("flat", 0)


# --- overwrite ---------------------------------------------------------------------------------


def test_overwrite_last_window_wins_and_uncovered_stay_zero() -> None:
    fuser = WindowFuser("overwrite", torch.zeros(6, 2, dtype=torch.float64))
    fuser.add([0, 1, 2], rows(1, 1, 1))
    fuser.add([2, 3], rows(2, 2))
    fuser.add([1], rows(3))
    assert fuser.result()[:, 0].tolist() == [1, 3, 2, 2, 0, 0]


def test_overwrite_repeated_frame_inside_a_window_takes_the_later_position() -> None:
    frames = 64
    indices = [*range(0, frames, 2), 0, 2, 4, 6]
    output = rows(*range(len(indices)))
    fuser = WindowFuser("overwrite", torch.zeros(frames, 2, dtype=torch.float64))
    fuser.add(indices, output)
    result = fuser.result()[:, 0]
    assert result[0:8:2].tolist() == [32, 33, 34, 35]
    assert result[8:frames:2].tolist() == list(range(4, 32))
    assert result[1::2].abs().sum() == 0


def test_overwrite_follows_the_output_dtype() -> None:
    fuser = WindowFuser("overwrite", torch.zeros(3, 2))
    fuser.add([0, 1, 2], rows(1, 2, 3).half())
    assert fuser.result().dtype == torch.float16


# --- weighted ----------------------------------------------------------------------------------


@pytest.mark.numerics
@pytest.mark.parametrize("method", ["flat", "pyramid"])
def test_weighted_mean_by_hand(method: str) -> None:
    fuser = WindowFuser(method, torch.zeros(5, 2, dtype=torch.float64))
    fuser.add([0, 1, 2, 3], rows(1, 2, 3, 4))
    fuser.add([2, 3, 4, 2], rows(10, 20, 30, 40))
    got = fuser.result()[:, 0].tolist()
    if method == "flat":
        expected = [1, 2, (3 + 10 + 40) / 3, (4 + 20) / 2, 30]
    else:  # weights 1, 2, 2, 1 for both windows
        expected = [1, 2, (3 * 2 + 10 * 1 + 40 * 1) / 4, (4 * 1 + 20 * 2) / 3, 30]
    assert got == pytest.approx(expected, rel=1e-12)


def test_weighted_uncovered_frames_stay_zero() -> None:
    fuser = WindowFuser("pyramid", torch.ones(4, 3))
    fuser.add([1, 2], torch.full((2, 3), 5.0))
    result = fuser.result()
    assert result[[0, 3]].abs().sum() == 0
    assert torch.equal(result[[1, 2]], torch.full((2, 3), 5.0))


@pytest.mark.parametrize("method", ["flat", "pyramid"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_a_frame_only_one_window_covered_keeps_its_output_bit_for_bit(
    method: str, dtype: torch.dtype
) -> None:
    """Weighting by 3 and dividing by 3 rounds many float32 values; a video that fits one window
    must come out the same under every fuse method, and so must a frame one window alone holds."""
    values = torch.randn(16, 4, 8, 8, generator=torch.Generator().manual_seed(0)).to(dtype)
    alone = WindowFuser(method, torch.zeros_like(values))
    alone.add(list(range(16)), values)
    assert torch.equal(alone.result(), values)
    if (method, dtype) == ("pyramid", torch.float32):  # the premise: weighting and unweighting rounds
        assert not torch.equal(values * 3 / 3, values)
    shared = WindowFuser(method, torch.zeros(20, 4, 8, 8, dtype=dtype))
    shared.add(list(range(16)), values)
    shared.add(list(range(4, 20)), values.flip(0))
    fused = shared.result()
    assert torch.equal(fused[:4], values[:4]) and torch.equal(fused[16:], values.flip(0)[12:])
    assert not torch.equal(fused[4:16], values[4:16])  # shared frames are still weighted means


@pytest.mark.numerics
def test_weighted_half_outputs_come_back_half() -> None:
    fuser = WindowFuser("flat", torch.zeros(2, 2, dtype=torch.float16))
    fuser.add([0, 1], rows(1, 2).half())
    fuser.add([0, 1], rows(2, 3).half())
    result = fuser.result()
    assert result.dtype == torch.float16
    assert result[:, 0].tolist() == [1.5, 2.5]


def test_mismatched_window_is_refused() -> None:
    fuser = WindowFuser("flat", torch.zeros(4, 2))
    with pytest.raises(ValueError, match="does not fit"):
        fuser.add([0, 1], torch.zeros(3, 2))
    with pytest.raises(ValueError, match="does not fit"):
        fuser.add([0, 1], torch.zeros(2, 3))
    with pytest.raises(ValueError, match="outside"):
        fuser.add([3, 4], torch.zeros(2, 2))
    with pytest.raises(ValueError, match="unknown"):
        WindowFuser("average", torch.zeros(4, 2))


@st.composite
def covered_schedules(draw: st.DrawFn) -> tuple[int, list[list[int]]]:
    """Frames and the windows of a looping-mode schedule (which covers every frame)."""
    context = draw(st.integers(1, 16))
    frames = draw(st.integers(context + 1, 60))
    overlap = draw(st.integers(-1, context - 1))
    windows = context_windows(
        draw(st.integers(0, 64)),
        frames,
        context,
        draw(st.integers(1, 4)),
        overlap,
        draw(st.sampled_from(["R-P", "A"])),
    )
    return frames, windows


@pytest.mark.numerics
@settings(max_examples=150, deadline=None)
@given(
    covered_schedules(),
    st.sampled_from(["flat", "pyramid"]),
    st.floats(-100, 100, allow_nan=False),
)
def test_constant_windows_fuse_to_the_constant(
    schedule: tuple[int, list[list[int]]], method: str, value: float
) -> None:
    frames, windows = schedule
    fuser = WindowFuser(method, torch.zeros(frames, 3, dtype=torch.float64))
    for window in windows:
        fuser.add(window, torch.full((len(window), 3), value, dtype=torch.float64))
    assert torch.allclose(fuser.result(), torch.full((frames, 3), value, dtype=torch.float64))


@settings(max_examples=150, deadline=None)
@given(covered_schedules())
def test_overwrite_matches_a_sequential_replay(schedule: tuple[int, list[list[int]]]) -> None:
    frames, windows = schedule
    fuser = WindowFuser("overwrite", torch.zeros(frames, 1, dtype=torch.float64))
    expected = [0.0] * frames
    for number, window in enumerate(windows):
        values = [number * 1000.0 + position for position in range(len(window))]
        fuser.add(window, torch.tensor(values, dtype=torch.float64).unsqueeze(1))
        for frame, value in zip(window, values, strict=True):
            expected[frame] = value
    assert fuser.result()[:, 0].tolist() == expected
