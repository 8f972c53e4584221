"""The context-window schedule against the reference's worked examples and its invariants."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from animdiff.errors import ParamsError
from animdiff.sampling.context import (
    CLOSED_LOOP_MODES,
    context_spacings,
    context_windows,
    main,
    ordered_halving,
    resolve_overlap,
    spacing_windows,
)


def runs(*parts: range) -> list[int]:
    """A window written as runs of consecutive frames, as the reference notes write them."""
    return [frame for part in parts for frame in part]


R = range


# --- worked examples (sd-webui-animatediff.md 4.2, reference-facts.md) -----------------------


def test_ordered_halving_first_steps() -> None:
    assert [ordered_halving(k) for k in range(8)] == [0, 1 / 2, 1 / 4, 3 / 4, 1 / 8, 5 / 8, 3 / 8, 7 / 8]


def test_ordered_halving_is_the_64_bit_reversal() -> None:
    assert ordered_halving(2**63) == 1 / 2**64
    assert ordered_halving(2**64 - 1) == (2**64 - 1) / 2**64


def test_ordered_halving_rejects_negative_steps() -> None:
    with pytest.raises(ParamsError, match="step"):
        ordered_halving(-1)


LOOPING = [
    # (frames, step, R-P / R+P / A windows)
    (32, 0, [runs(R(0, 16)), runs(R(12, 28)), runs(R(24, 32), R(0, 8))]),
    (32, 1, [runs(R(16, 32)), runs(R(28, 32), R(0, 12)), runs(R(8, 24))]),
    (32, 2, [runs(R(8, 24)), runs(R(20, 32), R(0, 4)), runs(R(0, 16))]),
    (24, 0, [runs(R(0, 16)), runs(R(12, 24), R(0, 4))]),
]


@pytest.mark.parametrize("mode", ["R-P", "R+P", "A"])
@pytest.mark.parametrize(("frames", "step", "expected"), LOOPING)
def test_looping_examples(frames: int, step: int, expected: list[list[int]], mode: str) -> None:
    assert context_windows(step, frames, 16, 1, 4, mode) == expected


@pytest.mark.parametrize(
    ("frames", "step", "expected"),
    [
        (32, 0, [runs(R(0, 16)), runs(R(12, 28)), runs(R(16, 32)), runs(R(0, 16))]),
        (32, 1, [runs(R(16, 32)), runs(R(16, 32)), runs(R(0, 16)), runs(R(8, 24))]),
        (24, 0, [runs(R(0, 16)), runs(R(8, 24))]),
    ],
)
def test_mode_n_examples(frames: int, step: int, expected: list[list[int]]) -> None:
    assert context_windows(step, frames, 16, 1, 4, "N") == expected


def test_mode_a_adds_a_wrapping_window_at_28_frames() -> None:
    plain = [runs(R(0, 16)), runs(R(12, 28))]
    assert context_windows(0, 28, 16, 1, 4, "R-P") == plain
    assert context_windows(0, 28, 16, 1, 4, "A") == [*plain, runs(R(24, 28), R(0, 12))]


def test_stride_4_adds_one_spaced_level_at_32_frames() -> None:
    assert context_spacings(32, 16, 4) == [1, 2]
    assert context_windows(0, 32, 16, 4, 4, "R-P") == [*LOOPING[0][2], list(range(0, 32, 2))]


def test_spaced_window_repeats_frames_when_it_spans_more_than_the_animation() -> None:
    windows = context_windows(0, 24, 16, 2, 4, "R-P")
    assert windows[-1] == [*range(0, 24, 2), 0, 2, 4, 6]


def test_pad_rounds_half_to_even() -> None:
    # 20 frames at step 4: offset 1/8, pad round(2.5) = 2 (not 3)
    assert context_windows(4, 20, 16, 1, 4, "R-P")[0] == list(range(2, 18))


def test_mode_n_can_leave_the_first_frames_uncovered() -> None:
    # A reference quirk we keep: at step 4 (pad 4) the second window [16..27, 0..3] wraps late
    # (cut 12 >= 16 - 4), so it becomes [12..27] alone and no window holds frames 0..3.
    windows = context_windows(4, 28, 16, 1, 4, "N")
    assert windows == [runs(R(4, 20)), runs(R(12, 28))]
    assert context_windows(4, 28, 16, 1, 4, "R-P") == [runs(R(4, 20)), runs(R(16, 28), R(0, 4))]


def test_animation_within_one_context_is_one_full_context_window() -> None:
    for mode in CLOSED_LOOP_MODES:
        assert context_windows(5, 10, 16, 3, -1, mode) == [list(range(16))]
        assert context_windows(0, 16, 16, 1, 4, mode) == [list(range(16))]


def test_overlap_minus_one_is_a_quarter_of_the_context() -> None:
    assert resolve_overlap(16, -1) == 4
    assert resolve_overlap(3, -1) == 0
    assert context_windows(0, 32, 16, 1, -1) == context_windows(0, 32, 16, 1, 4)


def test_r_p_and_r_plus_p_share_windows() -> None:
    for step in range(20):
        assert context_windows(step, 50, 16, 3, 4, "R-P") == context_windows(step, 50, 16, 3, 4, "R+P")


def test_levels_match_the_reference_float_formula() -> None:
    for frames in range(2, 600):
        for context in range(1, min(frames, 65)):
            levels = int(np.ceil(np.log2(frames / context))) + 1
            assert context_spacings(frames, context, 99) == [1 << i for i in range(levels)]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, 0, 16, 1, 4, "R-P"), "frames"),
        ((0, 32, 0, 1, 4, "R-P"), "context"),
        ((0, 32, 16, 0, 4, "R-P"), "stride"),
        ((0, 32, 16, 1, -2, "R-P"), "overlap"),
        ((0, 32, 16, 1, 16, "R-P"), "overlap"),
        ((0, 32, 16, 1, 4, "loop"), "closed loop"),
        ((-1, 32, 16, 1, 4, "R-P"), "step"),
    ],
)
def test_invalid_arguments(args: tuple, match: str) -> None:
    with pytest.raises(ParamsError, match=match):
        context_windows(*args)


# --- properties --------------------------------------------------------------------------------


@st.composite
def schedules(draw: st.DrawFn) -> tuple[int, int, int, int, int, str]:
    """(step, frames, context, stride, overlap, mode) over the settings users can choose."""
    context = draw(st.integers(1, 32))
    return (
        draw(st.integers(0, 300)),
        draw(st.integers(1, 200)),
        context,
        draw(st.integers(1, 8)),
        draw(st.integers(-1, context - 1)),
        draw(st.sampled_from(CLOSED_LOOP_MODES)),
    )


def wraps(window: list[int]) -> bool:
    return any(b < a for a, b in itertools.pairwise(window))


@settings(max_examples=400, deadline=None)
@given(schedules())
def test_windows_are_full_contexts(schedule: tuple[int, int, int, int, int, str]) -> None:
    step, frames, context, stride, overlap, mode = schedule
    windows = context_windows(step, frames, context, stride, overlap, mode)
    assert windows
    assert all(len(window) == context for window in windows)
    if frames <= context:
        assert windows == [list(range(context))]
    else:
        assert all(0 <= frame < frames for window in windows for frame in window)


@settings(max_examples=400, deadline=None)
@given(schedules())
def test_every_frame_is_covered(schedule: tuple[int, int, int, int, int, str]) -> None:
    step, frames, context, stride, overlap, mode = schedule
    windows = context_windows(step, frames, context, stride, overlap, mode)
    covered = {frame for window in windows for frame in window}
    if frames <= context:
        assert covered == set(range(context))
    elif mode != "N":
        assert covered == set(range(frames))
    else:
        # The reference's mode N can leave the first frames uncovered: when the last window of
        # the spacing-1 level wraps late (cut >= context - overlap) it becomes the last context
        # only, and the first context it would be followed by never comes (e.g. 28 frames,
        # context 16, overlap 4, step 4: frames 0..3). Those frames keep the buffer's zeros for
        # that evaluation. Only frames among the first `overlap` can be missed; with stride > 1 a
        # sparse window may cover some of them, so the missed ones need not be a prefix (the
        # reference's schedule for step 16, 74 frames, context 8, stride 2, overlap 2 misses
        # frame 1 only).
        resolved = resolve_overlap(context, overlap)
        assert set(range(resolved, frames)) <= covered


def test_mode_n_can_miss_a_frame_that_is_not_a_prefix() -> None:
    windows = context_windows(16, 74, 8, 2, -1, "N")
    assert set(range(74)) - {frame for window in windows for frame in window} == {1}


@settings(max_examples=400, deadline=None)
@given(schedules())
def test_distinct_frames_per_window(schedule: tuple[int, int, int, int, int, str]) -> None:
    # A spacing-s window walks the cycle of frames reachable by steps of s, which has
    # frames / gcd(frames, s) members; it repeats frames exactly when it is longer than that.
    step, frames, context, stride, overlap, mode = schedule
    if frames <= context:
        return
    for spacing in context_spacings(frames, context, stride):
        cycle = frames // math.gcd(frames, spacing)
        for window in spacing_windows(step, frames, context, spacing, overlap, mode):
            assert len(set(window)) == min(context, cycle)
            if spacing == 1:
                assert len(set(window)) == context


@settings(max_examples=400, deadline=None)
@given(schedules())
def test_only_looping_modes_wrap(schedule: tuple[int, int, int, int, int, str]) -> None:
    step, frames, context, _, overlap, mode = schedule
    if frames <= context:
        return
    contiguous = spacing_windows(step, frames, context, 1, overlap, mode)
    if mode == "N":
        assert not any(wraps(window) for window in contiguous)
    for window in contiguous:
        assert all(b == (a + 1) % frames for a, b in itertools.pairwise(window))


@settings(max_examples=300, deadline=None)
@given(schedules())
def test_mode_a_only_appends_windows(schedule: tuple[int, int, int, int, int, str]) -> None:
    # Mode A's windows end one overlap later; everything before is R-P's schedule.
    step, frames, context, stride, overlap, _ = schedule
    if frames <= context:
        return
    resolved = resolve_overlap(context, overlap)
    for spacing in context_spacings(frames, context, stride):
        plain = spacing_windows(step, frames, context, spacing, overlap, "R-P")
        looped = spacing_windows(step, frames, context, spacing, overlap, "A")
        assert looped[: len(plain)] == plain
        assert len(looped) - len(plain) <= -(-resolved // (context * spacing - resolved))


# --- command line ------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "animdiff.sampling.context", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


def test_cli_prints_one_json_line() -> None:
    done = run_cli("--frames", "32", "--context", "16", "--stride", "1", "--overlap", "4")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == LOOPING[0][2]


def test_cli_options() -> None:
    done = run_cli("--frames", "32", "--context", "16", "--closed-loop", "N", "--step", "1")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == context_windows(1, 32, 16, 1, 4, "N")


@pytest.mark.parametrize(
    "args",
    [
        ["--frames", "0", "--context", "16"],
        ["--frames", "32", "--context", "16", "--overlap", "16"],
        ["--frames", "32", "--context", "16", "--closed-loop", "X"],
        ["--frames", "many", "--context", "16"],
        ["--context", "16"],
    ],
)
def test_cli_bad_arguments_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "error" in captured.err


def test_cli_bad_argument_in_a_subprocess() -> None:
    done = run_cli("--frames", "32", "--context", "0")
    assert done.returncode == 2
    assert done.stdout == ""
    assert "context" in done.stderr
