"""Frame counts after FILM: the reference's table, and our closed-loop counterpart."""

from __future__ import annotations

import pytest

from animdiff.interpolate.counts import inbetweens_per_pair, interpolated_count

# n, X, k, open count, closed count
CASES = [
    (16, 10, 10, 166, 176),
    (32, 10, 9, 311, 320),
    (24, 10, 9, 231, 240),
    (8, 10, 10, 78, 88),
    (16, 2, 1, 31, 32),
    (16, 3, 2, 46, 48),
    (16, 4, 3, 61, 64),
    (30, 10, 9, 291, 300),
    (3, 4, 4, 11, 15),  # round(4.5) = 4: half to even
    (16, 1, 0, 16, 16),
    (2, 2, 2, 4, 6),
    (1, 10, 0, 1, 1),  # the reference divides by zero here
]


@pytest.mark.parametrize(("n", "x", "k", "open_count", "closed_count"), CASES)
def test_counts_match_reference_and_closed_loop(n, x, k, open_count, closed_count):
    assert inbetweens_per_pair(n, x) == k
    assert interpolated_count(n, x, closed=False) == open_count
    assert interpolated_count(n, x, closed=True) == closed_count


def test_rounding_is_half_to_even():
    # (5 * 4 - 5) / 4 = 3.75 -> 4; (3 * 2 - 3) / 2 = 1.5 -> 2; (5 * 3 - 5) / 4 = 2.5 -> 2
    assert inbetweens_per_pair(5, 4) == 4
    assert inbetweens_per_pair(3, 2) == 2
    assert inbetweens_per_pair(5, 3) == 2


@pytest.mark.parametrize(("n", "x"), [(0, 10), (16, 0), (-1, 2)])
def test_nonsense_inputs_are_rejected(n, x):
    with pytest.raises(ValueError):
        inbetweens_per_pair(n, x)
