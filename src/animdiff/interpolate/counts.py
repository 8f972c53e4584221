"""How many frames FILM interpolation produces.

The reference asks Deforum for a number of in-betweens per pair chosen so that the whole
animation grows by roughly Interp X. Those numbers decide the output length (and, since FPS is
not changed, the playing time), so they live here as pure functions that the UI, the infotext
and the interpolator all agree on.
"""

from __future__ import annotations


def _check(n: int, x: int) -> None:
    if n < 1:
        raise ValueError(f"frame interpolation needs at least one frame, got {n}")
    if x < 1:
        raise ValueError(f"Interp X must be at least 1, got {x}")


def inbetweens_per_pair(n: int, x: int) -> int:
    """Frames inserted between each pair of neighbours when `n` frames are stretched by `x`.

    The reference computes round((n * X - n) / (n - 1)) with Python's round (half to even), so
    the total is close to n * X without being exactly it. A single frame has no pairs; the
    reference divides by zero there, we return 0 so that one frame stays one frame.
    """
    _check(n, x)
    if n == 1:
        return 0
    return round((n * x - n) / (n - 1))


def interpolated_count(n: int, x: int, closed: bool) -> int:
    """Length of the animation after interpolation.

    Open animations keep the reference's (n - 1) * (k + 1) + 1: every pair contributes its first
    frame and its in-betweens, and the last frame comes once at the end. A closed loop also fills
    the seam from the last frame back to the first, so all n pairs contribute: n * (k + 1).
    """
    k = inbetweens_per_pair(n, x)
    if n == 1:
        return 1
    if closed:
        return n * (k + 1)
    return (n - 1) * (k + 1) + 1
