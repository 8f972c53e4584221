"""What happens to decoded frames before they are written: ping-pong loops and FILM."""

from __future__ import annotations

import numpy as np

from animdiff.interpolate.counts import inbetweens_per_pair


def ping_pong(frames: list[np.ndarray]) -> list[np.ndarray]:
    """Frames, then the same frames backwards without either endpoint: n frames become 2n - 2.

    Closed loop mode A with no more frames than the context batch has no wrapping windows to
    close the loop, so (as the reference does) the animation plays forward and back instead.
    """
    return frames + frames[-2:0:-1]


def uses_ping_pong(closed_loop: str, video_length: int, context: int) -> bool:
    return closed_loop == "A" and video_length <= context


def is_closed_loop(closed_loop: str, video_length: int, context: int) -> bool:
    """Whether the animation's last frame leads back into its first.

    Wrapping context windows (frames > context, any mode but N) make it loop, and so does
    ping-pong. FILM then interpolates the seam from the last frame to the first as well.
    """
    if uses_ping_pong(closed_loop, video_length, context):
        return True
    return video_length > context and closed_loop != "N"


def film_inbetween_count(frames: int, interp_x: int, closed: bool) -> int:
    """In-between frames FILM will compute: the interpolation phase's progress total."""
    pairs = frames if closed else frames - 1
    return max(pairs, 0) * inbetweens_per_pair(frames, interp_x) if frames > 0 else 0
