"""Near-duplicate dropping with mpdecimate's rules, checked against a loop written from its description."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from animdiff.control import REFERENCE_DECIMATE, Decimate, drop_near_duplicates, is_near_duplicate
from animdiff.control.decimate import plane_differs, planes


def loop_plane_differs(ref: np.ndarray, cur: np.ndarray, hi: int, lo: int, frac: float) -> bool:
    """mpdecimate's scan, one block at a time: 8x8 blocks every 4 pixels, columns from 8."""
    h, w = cur.shape
    limit = int((w // 16) * (h // 16) * frac)
    count = 0
    for y in range(0, h - 7, 4):
        for x in range(8, w - 7, 4):
            sad = int(np.abs(cur[y : y + 8, x : x + 8].astype(int) - ref[y : y + 8, x : x + 8]).sum())
            if sad > hi:
                return True
            if sad > lo:
                count += 1
                if count > limit:
                    return True
    return False


@settings(max_examples=150, deadline=None)
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 56),
    seed=st.integers(0, 2**32 - 1),
    spread=st.sampled_from([0, 3, 20, 60, 255]),
    hi=st.sampled_from([64 * 12, 64 * 40, 64 * 200]),
    lo=st.sampled_from([64 * 5, 64 * 20, 64 * 50]),
    frac=st.sampled_from([0.0, 0.1, 0.33, 1.0]),
)
def test_vectorised_scan_agrees_with_the_loop(h, w, seed, spread, hi, lo, frac) -> None:
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 256, (h, w)).astype(np.int32)
    noise = rng.integers(-spread, spread + 1, (h, w))
    mask = rng.random((h, w)) < rng.random()  # change a random share of the pixels
    cur = np.clip(ref + noise * mask, 0, 255).astype(np.int32)
    settings_ = Decimate(hi=hi, lo=lo, frac=frac)
    assert plane_differs(ref, cur, settings_) == loop_plane_differs(ref, cur, hi, lo, frac)


def flat(level: int, size: tuple[int, int] = (64, 64)) -> np.ndarray:
    return np.full((size[1], size[0], 3), level, dtype=np.uint8)


def test_identical_and_slightly_noisy_frames_are_duplicates() -> None:
    frame = flat(100)
    assert is_near_duplicate(planes(frame), planes(frame))
    rng = np.random.default_rng(1)
    noisy = np.clip(frame.astype(int) + rng.integers(-10, 11, frame.shape), 0, 255).astype(np.uint8)
    assert is_near_duplicate(planes(frame), planes(noisy))


def test_one_block_changing_completely_makes_a_new_frame() -> None:
    before = flat(0)
    after = before.copy()
    after[20:28, 20:28] = 255  # luma 16 -> 235: 219 * 64 > hi = 200 * 64
    assert not is_near_duplicate(planes(before), planes(after))
    dimmer = before.copy()
    dimmer[20:28, 20:28] = 200  # 172 * 64 on the aligned block: below hi, and only a few blocks
    assert is_near_duplicate(planes(before), planes(dimmer))


def test_many_blocks_changing_moderately_make_a_new_frame() -> None:
    before = flat(100)
    after = flat(170)  # luma +60 everywhere: every block > lo = 50 * 64, none > hi
    assert not is_near_duplicate(planes(before), planes(after))
    # The same change on a small patch stays under the block count t = int(4 * 4 * 0.33) = 5.
    patch = before.copy()
    patch[16:24, 16:24] = 170  # 8x8 aligned: 1 block fully, 8 partly (below lo)
    assert is_near_duplicate(planes(before), planes(patch))


def test_comparison_is_with_the_last_kept_frame_so_a_slow_drift_is_kept() -> None:
    # +20 RGB levels per frame is ~17 luma levels: under lo against the previous frame, but the
    # difference from the last kept frame adds up until it passes lo everywhere.
    frames = [flat(40 + 20 * i) for i in range(10)]
    kept = list(drop_near_duplicates(frames))
    kept_levels = [int(f[0, 0, 0]) for f in kept]
    assert kept_levels == [40, 100, 160, 220]  # every third frame: 3 * 17 luma > 50 per pixel


def test_held_frames_collapse_to_one_each() -> None:
    def square(x: int) -> np.ndarray:
        frame = flat(0, (96, 64))
        frame[20:36, x : x + 16] = 255
        return frame

    held = [square(8 + 12 * i) for i in range(4) for _ in range(3)]
    kept = list(drop_near_duplicates(held, REFERENCE_DECIMATE))
    assert len(kept) == 4
    assert all(a is b for a, b in zip(kept, held[::3], strict=True))


def test_the_first_frame_is_always_kept_and_the_iteration_is_lazy() -> None:
    def frames():
        yield flat(0)
        yield flat(0)
        raise AssertionError("read past what was asked for")

    stream = drop_near_duplicates(frames())
    assert next(stream).shape == (64, 64, 3)


def test_settings_defaults_and_validation() -> None:
    assert (REFERENCE_DECIMATE.hi, REFERENCE_DECIMATE.lo, REFERENCE_DECIMATE.frac) == (12800, 3200, 0.33)
    with pytest.raises(ValueError):
        Decimate(frac=1.5)


def test_planes_have_4_2_0_shapes_and_limited_range() -> None:
    y, cb, cr = planes(np.zeros((5, 7, 3), dtype=np.uint8))
    assert y.shape == (5, 7) and cb.shape == (3, 4) and cr.shape == (3, 4)
    assert int(y.max()) == 16 and int(cb.max()) == 128
    white = planes(np.full((2, 2, 3), 255, dtype=np.uint8))
    assert int(white[0].min()) == 235
