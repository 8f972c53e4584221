"""Which frames the motion module sees together at each model evaluation.

Motion modules are trained on short clips, so an animation longer than the context batch is
denoised as overlapping windows of `context` frames. The A1111 extension moves those windows at
every model evaluation (by a bit-reversed fraction of the frame count) so the seams between
windows never stay in one place, and with a stride above 1 it adds windows of spaced-out frames
so that distant frames see each other. Mode N trades the wrap-around windows (last frames next to
the first ones, which pull the animation into a loop) for plain windows at either end.

This module reproduces that schedule index for index, quirks included (wrapping windows, repeated
frames at wide spacings, mode N's substitutions), because the windows shape the result. It is
plain Python with no torch so it can be tested and printed without a model:

    python -m animdiff.sampling.context --frames 32 --context 16 --overlap 4 --step 0
"""

from __future__ import annotations

import argparse
import json
import sys

from animdiff.choices import CLOSED_LOOP_MODES, resolve_overlap
from animdiff.errors import ParamsError


def ordered_halving(step: int) -> float:
    """Offset of the window grid at model evaluation `step`, as a fraction of the frame count.

    Reversing the bits of the counter visits 0, 1/2, 1/4, 3/4, 1/8, ...: every offset is as far
    as possible from the ones already used, so the seams spread evenly over the animation. The
    reversal is over 64 digits (more for a counter that needs more, as the reference's string
    formatting does) and the division is Python's correctly rounded int / int, like the reference.
    """
    if step < 0:
        raise ParamsError(f"step must be >= 0, got {step}")
    return int(format(step, "064b")[::-1], 2) / (1 << 64)


def context_spacings(frames: int, context: int, stride: int) -> list[int]:
    """Frame spacings of the window levels: 1, 2, 4, ... (`stride` is the number of levels).

    Levels stop at the first spacing whose window spans the whole animation
    (ceil(log2(frames / context)) + 1 levels at most), computed exactly on integers; the
    reference's float log2 agrees for every frame count below about 2**50.
    """
    _check_sizes(frames, context, stride)
    if frames <= context:
        return [1]
    levels_to_span = 1
    while context << (levels_to_span - 1) < frames:
        levels_to_span += 1
    return [1 << level for level in range(min(stride, levels_to_span))]


def spacing_windows(
    step: int, frames: int, context: int, spacing: int, overlap: int = -1, closed_loop: str = "R-P"
) -> list[list[int]]:
    """The windows of one spacing level at `step`, in evaluation order (needs frames > context).

    Kept separate from `context_windows` because what holds for a window (how many distinct
    frames it has, whether it may wrap) depends on its spacing.
    """
    _check_sizes(frames, context, 1)
    overlap = _checked_overlap(context, overlap)
    _check_mode(closed_loop)
    if frames <= context:
        raise ParamsError(f"spacing windows need frames > context, got {frames} <= {context}")
    if spacing < 1:
        raise ParamsError(f"spacing must be >= 1, got {spacing}")
    starts = _window_starts(step, frames, context, spacing, overlap, closed_loop)
    windows = [_strided_window(start, frames, context, spacing) for start in starts]
    if closed_loop == "N" and spacing == 1:
        return _replace_wrapping(windows, frames, context, overlap)
    return windows


def context_windows(
    step: int, frames: int, context: int, stride: int = 1, overlap: int = -1, closed_loop: str = "R-P"
) -> list[list[int]]:
    """Every window the reference evaluates at model evaluation `step`, in order, repeats kept.

    The order matters: window outputs overwrite each other, so the last window covering a frame
    decides it. An animation that fits in one context is one window of `context` frames (not
    `frames`): the reference always feeds the motion module a full context.
    """
    _check_sizes(frames, context, stride)
    overlap = _checked_overlap(context, overlap)
    _check_mode(closed_loop)
    if step < 0:
        raise ParamsError(f"step must be >= 0, got {step}")
    if frames <= context:
        return [list(range(context))]
    windows: list[list[int]] = []
    for spacing in context_spacings(frames, context, stride):
        windows += spacing_windows(step, frames, context, spacing, overlap, closed_loop)
    return windows


def _window_starts(
    step: int, frames: int, context: int, spacing: int, overlap: int, closed_loop: str
) -> range:
    """Window starts, shifted by the step's offset so seams move (unwrapped, not yet mod frames).

    The float arithmetic is the reference's on purpose: `round` is half to even (20 frames at
    offset 1/8 pad 2, not 3) and `int` truncates the sub-frame shift of the spaced levels. Mode A
    runs one overlap further, which can add one more wrapping window.
    """
    offset = ordered_halving(step)
    pad = round(frames * offset)
    end = frames + pad - (0 if closed_loop == "A" else overlap)
    return range(int(offset * spacing) + pad, end, context * spacing - overlap)


def _strided_window(start: int, frames: int, context: int, spacing: int) -> list[int]:
    """`context` frames `spacing` apart from `start`, wrapping past the last frame to the first."""
    return [(start + i * spacing) % frames for i in range(context)]


def _wrap_position(window: list[int]) -> int | None:
    """Position of the first frame that is smaller than its predecessor (where a window wraps)."""
    for position in range(1, len(window)):
        if window[position] < window[position - 1]:
            return position
    return None


def _replace_wrapping(windows: list[list[int]], frames: int, context: int, overlap: int) -> list[list[int]]:
    """Mode N: put the animation's first or last `context` frames in place of wrapping windows.

    A window that wraps would make the motion module treat the end and the start as neighbours,
    which is what closes the loop. The reference's substitute depends on where the wrap falls:
    early (the window is mostly past the start) gives the last then the first window; late gives
    only the last window and marks the next wrapping window, which then becomes the first window.
    """
    first = list(range(context))
    last = list(range(frames - context, frames))
    replaced: list[list[int]] = []
    pending_first = False
    for window in windows:
        cut = _wrap_position(window)
        if cut is None:
            replaced.append(window)
        elif pending_first:
            pending_first = False
            replaced.append(list(first))
        elif cut < context - overlap:
            replaced += [list(last), list(first)]
        else:
            pending_first = True
            replaced.append(list(last))
    return replaced


def _check_sizes(frames: int, context: int, stride: int) -> None:
    """Reject sizes for which the schedule is undefined (empty animation, empty window)."""
    if frames < 1:
        raise ParamsError(f"frames must be >= 1, got {frames}")
    if context < 1:
        raise ParamsError(f"context batch size must be >= 1, got {context}")
    if stride < 1:
        raise ParamsError(f"stride must be >= 1, got {stride}")


def _checked_overlap(context: int, overlap: int) -> int:
    """Resolve -1 and reject overlaps that would stop the windows from advancing."""
    if overlap < -1:
        raise ParamsError(f"overlap must be >= -1 (-1 means context // 4), got {overlap}")
    resolved = resolve_overlap(context, overlap)
    if resolved >= context:
        raise ParamsError(f"overlap must be smaller than the context batch size {context}, got {overlap}")
    return resolved


def _check_mode(closed_loop: str) -> None:
    """Only the four modes of the reference exist; anything else is a typo, not a new mode."""
    if closed_loop not in CLOSED_LOOP_MODES:
        choices = ", ".join(CLOSED_LOOP_MODES)
        raise ParamsError(f"closed loop must be one of {choices}, got {closed_loop!r}")


def _parser() -> argparse.ArgumentParser:
    """Flags named after the CLI's settings so a schedule can be checked for a real job."""
    parser = argparse.ArgumentParser(
        prog="python -m animdiff.sampling.context",
        description="Print the context windows of one model evaluation as one JSON line.",
    )
    parser.add_argument("--frames", type=int, required=True, help="number of frames")
    parser.add_argument("--context", type=int, required=True, help="context batch size")
    parser.add_argument("--stride", type=int, default=1, help="number of spacing levels (default 1)")
    parser.add_argument("--overlap", type=int, default=-1, help="overlap; -1 means context // 4")
    parser.add_argument("--closed-loop", default="R-P", choices=CLOSED_LOOP_MODES, help="default R-P")
    parser.add_argument("--step", type=int, default=0, help="model evaluation counter (default 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Print the windows; exit 2 with a message on stderr for bad arguments (as argparse does)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        windows = context_windows(
            args.step, args.frames, args.context, args.stride, args.overlap, args.closed_loop
        )
    except ParamsError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(windows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
