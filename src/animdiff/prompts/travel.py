"""Prompt travel: keyframed prompts whose embeddings blend from frame to frame.

A travel prompt has up to three parts, one item per line:

    masterpiece, best quality        <- head: lines before the first keyframe
    0: a girl standing               <- keyframes: `N: text`, consecutive lines
    8: a girl jumping
    16: a girl falling
    outdoors, sunny                  <- tail: every line after the keyframes

Each keyframe's prompt is the head lines joined by ", ", then ", ", the keyframe's text, ", ",
and the tail lines joined by ", ". That gives a leading ", " when there is no head and a trailing
", " when there is no tail; the seed extension builds them this way and its embeddings (hence
its animations) depend on those commas, so animdiff keeps them. Frames between two keyframes get
an embedding interpolated between the keyframes' (slerp over the whole embedding, as the seed
extension does, or linear); frames outside the keyframe range hold the nearest keyframe, or with
closed-loop prompts blend across the wrap from the last keyframe back to the first.

Where animdiff deliberately differs from the seed extension (its behaviour there is a trap):
  * Blank lines are ignored everywhere. The seed made a blank line after the keyframes start the
    tail (so later keyframes silently became tail text) and added empty ", ," elements.
  * A line that starts like a keyframe but is not `N: text` (`8:text`, `8:  ` at the end,
    an indented `  8: text`) is an error naming the line; the seed turned it into the tail.
  * A keyframe line after the tail has started is an error (keyframe lines must be
    consecutive); the seed read it as tail text.
  * A repeated keyframe number is an error (the seed kept the later text silently), and
    keyframes out of order are sorted (the seed failed an assertion).
  * Keyframes are checked against the frame count with an error message, not an assertion.

The command line prints the parsed keyframes and the per-frame blend plan without any model:

    python -m animdiff.prompts.travel --frames 16 --context 8 --closed-loop R+P < prompt.txt
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from animdiff.choices import CLOSED_LOOP_MODES
from animdiff.errors import AnimdiffError, ParamsError, PromptError

if TYPE_CHECKING:
    import torch

DOT_THRESHOLD = 0.9995

_KEYFRAME_LINE = re.compile(r"([0-9]+): (.+)")
# Anything that starts like a frame number and a colon: "8:b", "8 : b", "-3: b", "8.5: b".
_LOOKS_LIKE_KEYFRAME = re.compile(r"\s*[-+]?[0-9]+(?:[.,][0-9]*)?\s*:")

Plan = list[tuple[int, int, float]]


@dataclass(frozen=True)
class TravelPrompt:
    """A parsed travel prompt: head lines, sorted (frame, text) keyframes, tail lines."""

    head: tuple[str, ...]
    keyframes: tuple[tuple[int, str], ...]
    tail: tuple[str, ...]

    @property
    def frames(self) -> list[int]:
        """The keyframe numbers, ascending."""
        return [frame for frame, _ in self.keyframes]

    def keyframe_prompts(self) -> dict[int, str]:
        """Each keyframe's full prompt, joined exactly as the seed extension joins it."""
        head = ", ".join(self.head)
        tail = ", ".join(self.tail)
        return {frame: f"{head}, {text}, {tail}" for frame, text in self.keyframes}


def parse_travel(prompt: str) -> TravelPrompt | None:
    """Read a travel prompt; None when it has no keyframe line (an ordinary prompt).

    Errors name the line as counted in the prompt as given (1-based).
    """
    stripped = prompt.strip()
    first_line = prompt[: len(prompt) - len(prompt.lstrip())].count("\n") + 1
    head: list[str] = []
    keyframes: dict[int, tuple[int, str]] = {}  # frame -> (line number, text)
    tail: list[str] = []
    tail_start = 0
    for number, line in enumerate(stripped.split("\n"), start=first_line):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        match = _KEYFRAME_LINE.fullmatch(line)
        if match is None:
            _check_not_keyframe_like(number, line)
            if keyframes:
                tail_start = tail_start or number
                tail.append(line)
            else:
                head.append(line)
            continue
        if tail_start:
            raise PromptError(
                f"prompt travel line {number} ({line!r}) is a keyframe after the tail that starts at "
                f"line {tail_start}: keyframe lines must be consecutive"
            )
        _add_keyframe(keyframes, number, int(match.group(1)), match.group(2))
    if not keyframes:
        return None
    ordered = tuple((frame, keyframes[frame][1]) for frame in sorted(keyframes))
    return TravelPrompt(tuple(head), ordered, tuple(tail))


def _check_not_keyframe_like(number: int, line: str) -> None:
    if _LOOKS_LIKE_KEYFRAME.match(line):
        raise PromptError(
            f"prompt travel line {number} ({line!r}) looks like a keyframe but is not 'N: text' "
            "(the frame number at the start of the line, a colon, one space, then the prompt)"
        )


def _add_keyframe(keyframes: dict[int, tuple[int, str]], number: int, frame: int, text: str) -> None:
    if frame in keyframes:
        raise PromptError(
            f"prompt travel keyframe {frame} appears twice (lines {keyframes[frame][0]} and {number})"
        )
    keyframes[frame] = (number, text)


def check_keyframes(travel: TravelPrompt, video_length: int) -> None:
    """Every keyframe must be a frame of the video (checked against the resolved frame count)."""
    for frame in travel.frames:
        if frame >= video_length:
            raise PromptError(
                f"prompt travel keyframe {frame} is beyond the last frame "
                f"(video has {video_length} frames: 0..{video_length - 1})"
            )


def closed_loop_prompts(frames: int, context: int, closed_loop: str) -> bool:
    """Whether prompts blend across the wrap (last keyframe back to the first).

    The seed extension does this only when the windows wrap around (more frames than the
    context batch) and the mode asks for a looping prompt (R+P or A).
    """
    return frames > context and closed_loop in ("R+P", "A")


def schedule(keyframes: Sequence[int], total: int, closed_loop: bool) -> Plan:
    """Per generated frame: (previous keyframe, next keyframe, blend rate towards the next).

    `total` is the generated batch (max(frames, context)), the count distances wrap around.
    The rate is the fraction of the way from the previous keyframe to the next; it is 0.0
    on a keyframe and wherever previous and next are the same keyframe.
    """
    keys = sorted(set(keyframes))
    if not keys:
        raise ValueError("schedule needs at least one keyframe")
    if keys[0] < 0 or keys[-1] >= total:
        raise ValueError(f"keyframes {keys} must lie in 0..{total - 1}")
    return [_frame_blend(frame, keys, total, closed_loop) for frame in range(total)]


def _frame_blend(frame: int, keys: list[int], total: int, closed_loop: bool) -> tuple[int, int, float]:
    prev, nxt = (keys[-1], keys[0]) if closed_loop else (keys[0], keys[-1])
    for key in keys:
        if key > frame:
            nxt = key
            break
        prev = key
    if prev == nxt:
        return prev, nxt, 0.0
    d_prev = frame - prev
    d_next = nxt - frame
    d_prev += total if d_prev < 0 else 0
    d_next += total if d_next < 0 else 0
    if d_prev + d_next == 0:
        return prev, nxt, 0.0
    return prev, nxt, d_prev / (d_prev + d_next)


# --- embedding interpolation ---------------------------------------------------------------------


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    import torch

    return torch.promote_types(tensor.dtype, torch.float32)


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """(1 - t) * a + t * b, computed in at least float32 and returned in a's dtype."""
    dtype = _compute_dtype(a)
    out = (1.0 - t) * a.to(dtype) + t * b.to(dtype=dtype, device=a.device)
    return out.to(a.dtype)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation over the whole tensor, as the seed extension blends prompts.

    Both tensors are treated as one vector each (tokens x channels flattened): the angle comes
    from their normalised dot product, and the result is the usual slerp of the unnormalised
    tensors, so its norm follows the inputs'. Nearly parallel (|dot| > 0.9995) or zero tensors
    fall back to linear interpolation, where the angle formula loses precision or is undefined.
    """
    import torch

    dtype = _compute_dtype(a)
    a32 = a.to(dtype)
    b32 = b.to(dtype=dtype, device=a.device)
    norm_a = torch.linalg.vector_norm(a32)
    norm_b = torch.linalg.vector_norm(b32)
    if norm_a == 0 or norm_b == 0:
        return lerp(a, b, t)
    dot = ((a32 / norm_a) * (b32 / norm_b)).sum()
    if dot.abs() > DOT_THRESHOLD:
        return lerp(a, b, t)
    omega = torch.acos(dot)
    out = (torch.sin((1.0 - t) * omega) * a32 + torch.sin(t * omega) * b32) / torch.sin(omega)
    return out.to(a.dtype)


def interpolate_embeddings(
    keyframe_embeddings: Mapping[int, torch.Tensor],
    plan: Sequence[tuple[int, int, float]],
    method: Literal["slerp", "linear"] = "slerp",
) -> torch.Tensor:
    """Stack one embedding per frame of `plan` (frames on a new first dimension).

    A frame with rate 0 (a keyframe, or a frame holding one keyframe) gets that keyframe's
    embedding unchanged.
    """
    import torch

    blend = {"slerp": slerp, "linear": lerp}.get(method)
    if blend is None:
        raise ValueError(f"unknown prompt interpolation {method!r}; use 'slerp' or 'linear'")
    rows = []
    for prev, nxt, rate in plan:
        if rate == 0.0 or prev == nxt:
            rows.append(keyframe_embeddings[prev])
        else:
            rows.append(blend(keyframe_embeddings[prev], keyframe_embeddings[nxt], rate))
    return torch.stack(rows)


# --- command line ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m animdiff.prompts.travel",
        description="Read a prompt on stdin and print its travel keyframes and per-frame blend plan "
        "as one JSON object. A prompt without keyframe lines prints empty keyframes and frames.",
    )
    parser.add_argument("--frames", type=int, default=0, help="number of frames; 0 = the context size")
    parser.add_argument("--context", type=int, default=16, help="context batch size")
    parser.add_argument(
        "--closed-loop",
        type=str.upper,
        default="R-P",
        choices=CLOSED_LOOP_MODES,
        help="closed loop mode (R+P and A blend the prompt across the loop when frames > context)",
    )
    return parser


def travel_plan(prompt: str, frames: int, context: int, closed_loop: str) -> dict:
    """The CLI's JSON object: keyframe prompts and one [prev, next, rate] per generated frame."""
    if frames < 0:
        raise ParamsError(f"frames must be >= 0, got {frames}")
    if context < 1:
        raise ParamsError(f"context must be >= 1, got {context}")
    travel = parse_travel(prompt)
    if travel is None:
        return {"keyframes": {}, "frames": []}
    video_length = frames or context
    check_keyframes(travel, video_length)
    total = max(video_length, context)
    plan = schedule(travel.frames, total, closed_loop_prompts(video_length, context, closed_loop))
    return {
        "keyframes": {str(frame): text for frame, text in travel.keyframe_prompts().items()},
        "frames": [list(row) for row in plan],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result = travel_plan(sys.stdin.read(), args.frames, args.context, args.closed_loop)
    except AnimdiffError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
